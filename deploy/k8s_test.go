package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/tasks"
)

const (
	// namespace holds every gridbatch object.
	namespace = "gridbatch"
	// secretExample is the Secret every container and KEDA read, with
	// placeholders. It is in no kustomization, so an apply never overwrites
	// the operator's real Secret.
	secretExample = "secret.example.yaml"
	// pgConnectionBudget is PostgreSQL's default max_connections (100) less
	// its superuser_reserved_connections (3). Every replica of every
	// Deployment at its maximum must fit, or scaling up ends in "too many
	// connections". Raise it only with the server's max_connections.
	pgConnectionBudget = 100 - 3
	// pythonImage is the kustomization's image name of the Dockerfile's
	// worker-python target, which the workers run.
	pythonImage = "gridbatch-python"
	// modelsConfigMap is made by the base's configMapGenerator from the
	// models file, and mounted in every pod.
	modelsConfigMap = "gridbatch-models"
)

// The asynq lists of the chunk queue that KEDA scales the workers on.
var (
	pendingList = "asynq:{" + tasks.QueueGrid + "}:pending"
	activeList  = "asynq:{" + tasks.QueueGrid + "}:active"
)

// kustomization mirrors the fields of a kustomize.config.k8s.io/v1beta1
// Kustomization that this repository uses. Decoding is strict, so a field
// used in a kustomization.yaml must be added here first.
type kustomization struct {
	metav1.TypeMeta `json:",inline"`
	Namespace       string           `json:"namespace,omitempty"`
	Resources       []string         `json:"resources,omitempty"`
	Images          []kustomizeImage `json:"images,omitempty"`
	// ConfigMapGenerator makes ConfigMaps of files that are not manifests
	// (the models file); k8sManifests leaves those files out.
	ConfigMapGenerator []configMapGenerator `json:"configMapGenerator,omitempty"`
}

// configMapGenerator is a kustomize ConfigMap generator of files: one key per
// file, its name, or KEY=FILE.
type configMapGenerator struct {
	Name     string   `json:"name"`
	Behavior string   `json:"behavior,omitempty"`
	Files    []string `json:"files"`
}

// generatorFile splits a generator's files entry into its key and its path.
func generatorFile(entry string) (key, file string) {
	if k, f, ok := strings.Cut(entry, "="); ok {
		return k, f
	}
	return path.Base(entry), entry
}

type kustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// scaledObject mirrors KEDA's keda.sh/v1alpha1 ScaledObject (KEDA 2.x,
// github.com/kedacore/keda/v2/apis/keda/v1alpha1), whose module is too large
// to import for its types.
type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef        *kedaScaleTarget `json:"scaleTargetRef"`
	PollingInterval       *int32           `json:"pollingInterval,omitempty"`
	InitialCooldownPeriod *int32           `json:"initialCooldownPeriod,omitempty"`
	CooldownPeriod        *int32           `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount      *int32           `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32           `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32           `json:"maxReplicaCount,omitempty"`
	Advanced              *kedaAdvanced    `json:"advanced,omitempty"`
	Triggers              []kedaTrigger    `json:"triggers"`
	Fallback              *kedaFallback    `json:"fallback,omitempty"`
}

type kedaScaleTarget struct {
	Name                   string `json:"name"`
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type kedaAdvanced struct {
	HorizontalPodAutoscalerConfig *kedaHPAConfig        `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool                  `json:"restoreToOriginalReplicaCount,omitempty"`
	ScalingModifiers              *kedaScalingModifiers `json:"scalingModifiers,omitempty"`
}

type kedaHPAConfig struct {
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
	Name     string                                         `json:"name,omitempty"`
}

type kedaScalingModifiers struct {
	Formula          string `json:"formula,omitempty"`
	Target           string `json:"target,omitempty"`
	ActivationTarget string `json:"activationTarget,omitempty"`
	MetricType       string `json:"metricType,omitempty"`
}

type kedaTrigger struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	UseCachedMetrics  bool              `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	AuthenticationRef *kedaAuthRef      `json:"authenticationRef,omitempty"`
	MetricType        string            `json:"metricType,omitempty"`
}

type kedaAuthRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

type kedaFallback struct {
	FailureThreshold int32  `json:"failureThreshold"`
	Replicas         int32  `json:"replicas"`
	Behavior         string `json:"behavior,omitempty"`
}

// triggerAuthentication mirrors the parts of KEDA's keda.sh/v1alpha1
// TriggerAuthentication that take values from the cluster itself.
type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretTargetRef    []kedaTargetRef `json:"secretTargetRef,omitempty"`
		ConfigMapTargetRef []kedaTargetRef `json:"configMapTargetRef,omitempty"`
		Env                []struct {
			Parameter     string `json:"parameter"`
			Name          string `json:"name"`
			ContainerName string `json:"containerName,omitempty"`
		} `json:"env,omitempty"`
	} `json:"spec"`
}

type kedaTargetRef struct {
	Parameter string `json:"parameter"`
	Name      string `json:"name"`
	Key       string `json:"key"`
}

// redisTriggerMetadata are the metadata keys KEDA's redis scaler reads
// (pkg/scalers/redis_scaler.go); anything else is a typo it would ignore.
var redisTriggerMetadata = []string{
	"listName", "listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl",
	"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
	"username", "usernameFromEnv", "passwordFromEnv",
}

// newObject is an empty value of the API type of apiVersion and kind.
func newObject(apiVersion, kind string) any {
	switch apiVersion + " " + kind {
	case "kustomize.config.k8s.io/v1beta1 Kustomization":
		return &kustomization{}
	case "v1 Namespace":
		return &corev1.Namespace{}
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}
	case "v1 Secret":
		return &corev1.Secret{}
	case "v1 Service":
		return &corev1.Service{}
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "keda.sh/v1alpha1 ScaledObject":
		return &scaledObject{}
	case "keda.sh/v1alpha1 TriggerAuthentication":
		return &triggerAuthentication{}
	}
	return nil
}

// k8sManifests decodes every YAML document under deploy/k8s strictly —
// unknown, duplicate or wrongly cased fields fail, as in the API server — into
// its API type. It returns the objects by file, relative to deploy/k8s.
func k8sManifests(t *testing.T) map[string][]any {
	t.Helper()
	root := filepath.Join(repoRoot(t), "deploy", "k8s")
	var rels []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		require.Contains(t, []string{".yaml", ".yml"}, path.Ext(rel), "deploy/k8s/%s: only YAML manifests belong here", rel)
		rels = append(rels, rel)
		return nil
	})
	require.NoError(t, err)
	files := map[string][]any{}
	generated := map[string]bool{} // inputs of a configMapGenerator, not manifests
	for _, rel := range rels {
		if path.Base(rel) != "kustomization.yaml" {
			continue
		}
		files[rel] = decodeManifests(t, filepath.Join(root, filepath.FromSlash(rel)), rel)
		for _, obj := range files[rel] {
			if k, ok := obj.(*kustomization); ok {
				for _, g := range k.ConfigMapGenerator {
					for _, entry := range g.Files {
						_, f := generatorFile(entry)
						generated[path.Join(path.Dir(rel), f)] = true
					}
				}
			}
		}
	}
	for _, rel := range rels {
		if files[rel] == nil && !generated[rel] {
			files[rel] = decodeManifests(t, filepath.Join(root, filepath.FromSlash(rel)), rel)
		}
	}
	require.NotEmpty(t, files)
	return files
}

func decodeManifests(t *testing.T, file, rel string) []any {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	var objs []any
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "deploy/k8s/%s", rel)
		j, err := yaml.YAMLToJSONStrict(doc)
		require.NoError(t, err, "deploy/k8s/%s, document %d", rel, i)
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			continue // only comments
		}
		var tm metav1.TypeMeta
		require.NoError(t, json.Unmarshal(j, &tm), "deploy/k8s/%s, document %d", rel, i)
		obj := newObject(tm.APIVersion, tm.Kind)
		require.NotNil(t, obj, "deploy/k8s/%s, document %d: no type known for apiVersion %q kind %q", rel, i, tm.APIVersion, tm.Kind)
		strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
		require.NoError(t, err, "deploy/k8s/%s, document %d", rel, i)
		require.Empty(t, strict, "deploy/k8s/%s, document %d (%s)", rel, i, tm.Kind)
		objs = append(objs, obj)
	}
	require.NotEmpty(t, objs, "deploy/k8s/%s has no manifest", rel)
	return objs
}

// kustomizeFiles is the manifest files the kustomization in dir (relative to
// deploy/k8s) builds from, following directory resources.
func kustomizeFiles(t *testing.T, manifests map[string][]any, dir string) []string {
	t.Helper()
	kpath := path.Join(dir, "kustomization.yaml")
	objs := manifests[kpath]
	require.Len(t, objs, 1, "deploy/k8s/%s", kpath)
	k, ok := objs[0].(*kustomization)
	require.True(t, ok, "deploy/k8s/%s is not a Kustomization", kpath)
	require.Equal(t, namespace, k.Namespace, "deploy/k8s/%s", kpath)
	var files []string
	for _, res := range k.Resources {
		p := path.Join(dir, res)
		require.False(t, p == ".." || strings.HasPrefix(p, "../"), "deploy/k8s/%s: resource %s is outside deploy/k8s", kpath, res)
		_, isFile := manifests[p]
		switch {
		case manifests[path.Join(p, "kustomization.yaml")] != nil:
			files = append(files, kustomizeFiles(t, manifests, p)...)
		case isFile:
			files = append(files, p)
		default:
			t.Fatalf("deploy/k8s/%s lists %s, which is neither a manifest nor a kustomization directory", kpath, res)
		}
	}
	slices.Sort(files)
	require.Equal(t, slices.Compact(slices.Clone(files)), files, "deploy/k8s/%s includes a file twice", kpath)
	return files
}

// variant is one way to deploy: the objects of one kustomization root.
type variant struct {
	name    string
	objects []any
}

func newVariant(t *testing.T, manifests map[string][]any, dir string) variant {
	t.Helper()
	v := variant{name: path.Join("deploy/k8s", dir)}
	seen := map[string]bool{}
	var objs []any
	for _, f := range kustomizeFiles(t, manifests, dir) {
		objs = append(objs, manifests[f]...)
	}
	for _, cm := range kustomizeGenerated(t, manifests, dir) {
		objs = append(objs, cm)
	}
	for _, obj := range objs {
		key := kindOf(obj) + "/" + metaOf(obj).GetName()
		require.False(t, seen[key], "%s has %s twice", v.name, key)
		seen[key] = true
		v.objects = append(v.objects, obj)
	}
	return v
}

// kustomizeGenerated is the ConfigMaps that the configMapGenerators of the
// kustomization in dir and of those it includes make, named as in the
// kustomization (kustomize adds a hash of the content to the name, and to
// every reference to it).
func kustomizeGenerated(t *testing.T, manifests map[string][]any, dir string) []*corev1.ConfigMap {
	t.Helper()
	kpath := path.Join(dir, "kustomization.yaml")
	k := manifests[kpath][0].(*kustomization)
	var out []*corev1.ConfigMap
	for _, res := range k.Resources {
		if p := path.Join(dir, res); manifests[path.Join(p, "kustomization.yaml")] != nil {
			out = append(out, kustomizeGenerated(t, manifests, p)...)
		}
	}
	for _, g := range k.ConfigMapGenerator {
		require.Empty(t, g.Behavior, "deploy/k8s/%s: generator %s: the repository's kustomizations create, overlays replace", kpath, g.Name)
		cm := &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: g.Name, Namespace: k.Namespace},
			Data:       map[string]string{},
		}
		require.NotEmpty(t, g.Files, "deploy/k8s/%s: generator %s", kpath, g.Name)
		for _, entry := range g.Files {
			key, f := generatorFile(entry)
			_, dup := cm.Data[key]
			require.False(t, dup, "deploy/k8s/%s: generator %s has the key %s twice", kpath, g.Name, key)
			cm.Data[key] = string(readRepoFile(t, path.Join("deploy/k8s", dir, f)))
		}
		out = append(out, cm)
	}
	return out
}

func kindOf(obj any) string {
	return obj.(interface{ GetObjectKind() schema.ObjectKind }).GetObjectKind().GroupVersionKind().Kind
}

func metaOf(obj any) metav1.Object {
	return obj.(metav1.Object)
}

// all returns the objects of type T in v.
func all[T any](v variant) []T {
	var out []T
	for _, obj := range v.objects {
		if o, ok := obj.(T); ok {
			out = append(out, o)
		}
	}
	return out
}

// one returns the object of type T named name in v.
func one[T metav1.Object](t *testing.T, v variant, name string) T {
	t.Helper()
	for _, o := range all[T](v) {
		if o.GetName() == name {
			return o
		}
	}
	var zero T
	t.Fatalf("%s has no %T named %s", v.name, zero, name)
	return zero
}

// cluster is what a container's environment is resolved from: the
// ConfigMaps of a variant and the example Secret.
type cluster struct {
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func newCluster(t *testing.T, manifests map[string][]any, v variant) cluster {
	t.Helper()
	c := cluster{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	for _, cm := range all[*corev1.ConfigMap](v) {
		c.configMaps[cm.Name] = cm
	}
	for _, obj := range manifests[secretExample] {
		s, ok := obj.(*corev1.Secret)
		require.True(t, ok, "deploy/k8s/%s holds Secrets only", secretExample)
		c.secrets[s.Name] = s
	}
	require.Empty(t, all[*corev1.Secret](v), "%s must not apply a Secret over the operator's", v.name)
	return c
}

func (c cluster) secretValue(t *testing.T, name, key string) string {
	t.Helper()
	s := c.secrets[name]
	require.NotNil(t, s, "no Secret %s in deploy/k8s/%s", name, secretExample)
	v, ok := s.StringData[key]
	require.True(t, ok, "the Secret %s in deploy/k8s/%s has no key %s", name, secretExample, key)
	return v
}

// env is a container's environment as the kubelet would build it.
func (c cluster) env(t *testing.T, ctr corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range ctr.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := c.configMaps[from.ConfigMapRef.Name]
			require.NotNil(t, cm, "container %s: no ConfigMap %s", ctr.Name, from.ConfigMapRef.Name)
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		case from.SecretRef != nil:
			s := c.secrets[from.SecretRef.Name]
			require.NotNil(t, s, "container %s: no Secret %s", ctr.Name, from.SecretRef.Name)
			for k, v := range s.StringData {
				env[from.Prefix+k] = v
			}
		}
	}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = c.secretValue(t, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			cm := c.configMaps[e.ValueFrom.ConfigMapKeyRef.Name]
			require.NotNil(t, cm, "container %s: no ConfigMap %s", ctr.Name, e.ValueFrom.ConfigMapKeyRef.Name)
			v, ok := cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]
			require.True(t, ok, "container %s: ConfigMap %s has no key %s", ctr.Name, cm.Name, e.ValueFrom.ConfigMapKeyRef.Key)
			env[e.Name] = v
		default:
			t.Fatalf("container %s: %s comes from a source this test cannot resolve", ctr.Name, e.Name)
		}
	}
	return env
}

// containerPort resolves a probe's or Service's port, by number or name.
func containerPort(t *testing.T, ctr corev1.Container, p intstr.IntOrString) string {
	t.Helper()
	if p.Type == intstr.Int {
		return strconv.Itoa(p.IntValue())
	}
	for _, cp := range ctr.Ports {
		if cp.Name == p.StrVal {
			return strconv.Itoa(int(cp.ContainerPort))
		}
	}
	t.Fatalf("container %s has no port named %s", ctr.Name, p.StrVal)
	return ""
}

func requireHTTPProbe(t *testing.T, ctr corev1.Container, probe *corev1.Probe, kind, wantPath, wantPort string) {
	t.Helper()
	require.NotNil(t, probe, "container %s has no %s probe", ctr.Name, kind)
	require.NotNil(t, probe.HTTPGet, "container %s: the %s probe must be an HTTP GET", ctr.Name, kind)
	require.Equal(t, wantPath, probe.HTTPGet.Path, "container %s: %s probe path", ctr.Name, kind)
	require.Equal(t, wantPort, containerPort(t, ctr, probe.HTTPGet.Port), "container %s: %s probe port", ctr.Name, kind)
}

func container(t *testing.T, d *appsv1.Deployment, name string) corev1.Container {
	t.Helper()
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("Deployment %s has no container %s", d.Name, name)
	return corev1.Container{}
}

func common(cfg binaryConfig) config.Common {
	switch c := cfg.(type) {
	case *config.Worker:
		return c.Common
	case *config.Scheduler:
		return c.Common
	case *config.Enqueuer:
		return c.Common
	case *config.Monitor:
		return c.Common
	}
	panic("unknown configuration type")
}

func selects(sel *metav1.LabelSelector, labels map[string]string) bool {
	if sel == nil || len(sel.MatchLabels) == 0 || len(sel.MatchExpressions) > 0 {
		return false
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	t.Parallel()
	manifests := k8sManifests(t)
	keda := newVariant(t, manifests, ".")
	hpa := newVariant(t, manifests, "hpa")
	variants := []variant{keda, hpa}
	binDir := parseDockerfile(t).binDir(t)

	t.Run("every manifest is deployed by a kustomization", func(t *testing.T) {
		t.Parallel()
		var want []string
		for f := range manifests {
			if path.Base(f) != "kustomization.yaml" && f != secretExample {
				want = append(want, f)
			}
		}
		slices.Sort(want)
		got := append(kustomizeFiles(t, manifests, "."), kustomizeFiles(t, manifests, "hpa")...)
		slices.Sort(got)
		require.Equal(t, want, slices.Compact(got))
	})

	t.Run("KEDA and the HPA never scale the workers together", func(t *testing.T) {
		t.Parallel()
		require.Len(t, all[*scaledObject](keda), 1)
		require.Empty(t, all[*autoscalingv2.HorizontalPodAutoscaler](keda))
		require.Len(t, all[*autoscalingv2.HorizontalPodAutoscaler](hpa), 1)
		require.Empty(t, all[*scaledObject](hpa))
		require.Empty(t, all[*triggerAuthentication](hpa))

		h := one[*autoscalingv2.HorizontalPodAutoscaler](t, hpa, "worker")
		require.Equal(t, autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "worker"}, h.Spec.ScaleTargetRef)
		require.NotNil(t, h.Spec.MinReplicas)
		require.GreaterOrEqual(t, *h.Spec.MinReplicas, int32(1))
		require.NotEmpty(t, h.Spec.Metrics)
	})

	t.Run("every object is in the gridbatch namespace", func(t *testing.T) {
		t.Parallel()
		for _, v := range variants {
			ns := one[*corev1.Namespace](t, v, namespace)
			require.Equal(t, "restricted", ns.Labels["pod-security.kubernetes.io/enforce"])
			for _, obj := range v.objects {
				if _, isNS := obj.(*corev1.Namespace); !isNS {
					require.Equal(t, namespace, metaOf(obj).GetNamespace(), "%s: %T %s", v.name, obj, metaOf(obj).GetName())
				}
			}
		}
	})

	t.Run("worker probes match its health endpoints", func(t *testing.T) {
		t.Parallel()
		for _, v := range variants {
			c := newCluster(t, manifests, v)
			ctr := container(t, one[*appsv1.Deployment](t, v, "worker"), "worker")
			cfg, err := settings(binaryOf(t, binDir, ctr.Command), c.env(t, ctr))
			require.NoError(t, err)
			p := port(t, cfg.(*config.Worker).HTTPAddr)
			requireHTTPProbe(t, ctr, ctr.LivenessProbe, "liveness", "/healthz", p)
			requireHTTPProbe(t, ctr, ctr.ReadinessProbe, "readiness", "/readyz", p)
		}
	})

	t.Run("worker requeues its tasks before it is killed", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, manifests, keda)
		d := one[*appsv1.Deployment](t, keda, "worker")
		cfg, err := settings("worker", c.env(t, container(t, d, "worker")))
		require.NoError(t, err)
		shutdown := cfg.(*config.Worker).ShutdownTimeout
		require.NotNil(t, d.Spec.Template.Spec.TerminationGracePeriodSeconds, "the default 30s is too close to the shutdown timeout")
		grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		require.GreaterOrEqual(t, grace, shutdown+graceMargin,
			"terminationGracePeriodSeconds %s must exceed GRIDBATCH_SHUTDOWN_TIMEOUT %s by %s", grace, shutdown, graceMargin)
	})

	t.Run("worker replicas belong to the autoscaler", func(t *testing.T) {
		t.Parallel()
		d := one[*appsv1.Deployment](t, keda, "worker")
		require.Nil(t, d.Spec.Replicas, "each kubectl apply would reset what the autoscaler chose")
		require.Len(t, d.Spec.Template.Spec.InitContainers, 1)
		require.Equal(t, "migrate", d.Spec.Template.Spec.InitContainers[0].Name)
		require.Equal(t, []string{binDir + "enqueuer", "migrate"}, d.Spec.Template.Spec.InitContainers[0].Command)
	})

	t.Run("KEDA scales the workers on the grid queue", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, manifests, keda)
		so := one[*scaledObject](t, keda, "worker")
		require.NotNil(t, so.Spec.ScaleTargetRef)
		require.Equal(t, "worker", so.Spec.ScaleTargetRef.Name)
		require.Contains(t, []string{"", "Deployment"}, so.Spec.ScaleTargetRef.Kind)
		require.NotNil(t, so.Spec.MinReplicaCount)
		require.GreaterOrEqual(t, *so.Spec.MinReplicaCount, int32(1), "a worker always runs: batch control tasks are not in the grid queue")
		require.NotNil(t, so.Spec.MaxReplicaCount)

		cfg, err := settings("worker", c.env(t, container(t, one[*appsv1.Deployment](t, keda, "worker"), "worker")))
		require.NoError(t, err)
		concurrency := cfg.(*config.Worker).Concurrency
		redisURL := c.secretValue(t, "gridbatch", "GRIDBATCH_REDIS_URL")
		opt, err := asynq.ParseRedisURI(redisURL)
		require.NoError(t, err)
		clientOpt, ok := opt.(asynq.RedisClientOpt)
		require.True(t, ok, "the example GRIDBATCH_REDIS_URL is a plain redis:// or rediss:// URL")

		lists := map[string]int{}
		for _, tr := range so.Spec.Triggers {
			require.Equal(t, "redis", tr.Type, "trigger %s", tr.Name)
			for k := range tr.Metadata {
				require.Contains(t, redisTriggerMetadata, k, "trigger %s: KEDA's redis scaler has no metadata %q", tr.Name, k)
			}
			n, err := strconv.Atoi(tr.Metadata["listLength"])
			require.NoError(t, err, "trigger %s: listLength", tr.Name)
			require.Positive(t, n, "trigger %s: listLength", tr.Name)
			lists[tr.Metadata["listName"]] = n
			require.Equal(t, strconv.Itoa(clientOpt.DB), tr.Metadata["databaseIndex"], "trigger %s: the database of GRIDBATCH_REDIS_URL", tr.Name)
			require.Equal(t, strconv.FormatBool(clientOpt.TLSConfig != nil), tr.Metadata["enableTLS"], "trigger %s: TLS as in GRIDBATCH_REDIS_URL", tr.Name)

			require.NotNil(t, tr.AuthenticationRef, "trigger %s: KEDA needs the Redis address and password", tr.Name)
			ta := one[*triggerAuthentication](t, keda, tr.AuthenticationRef.Name)
			params := map[string]string{}
			for _, ref := range ta.Spec.SecretTargetRef {
				params[ref.Parameter] = c.secretValue(t, ref.Name, ref.Key)
			}
			require.Equal(t, clientOpt.Addr, params["address"], "trigger %s: the Redis of GRIDBATCH_REDIS_URL", tr.Name)
			require.Equal(t, clientOpt.Password, params["password"], "trigger %s: the password of GRIDBATCH_REDIS_URL", tr.Name)
		}
		require.ElementsMatch(t, []string{pendingList, activeList}, slices.Collect(maps.Keys(lists)))
		require.LessOrEqual(t, lists[activeList], concurrency,
			"listLength of %s must not exceed GRIDBATCH_CONCURRENCY (%d), or a scale-down could stop busy workers", activeList, concurrency)
	})

	t.Run("two schedulers, probes on their health endpoints", func(t *testing.T) {
		t.Parallel()
		for _, v := range variants {
			d := one[*appsv1.Deployment](t, v, "scheduler")
			require.NotNil(t, d.Spec.Replicas)
			require.Equal(t, int32(2), *d.Spec.Replicas)
			ctr := container(t, d, "scheduler")
			require.Equal(t, "scheduler", binaryOf(t, binDir, ctr.Command))
			c := newCluster(t, manifests, v)
			cfg, err := settings("scheduler", c.env(t, ctr))
			require.NoError(t, err)
			p := port(t, cfg.(*config.Scheduler).HTTPAddr)
			requireHTTPProbe(t, ctr, ctr.LivenessProbe, "liveness", "/healthz", p)
			requireHTTPProbe(t, ctr, ctr.ReadinessProbe, "readiness", "/readyz", p)
		}
	})

	t.Run("monitor is served on its listen port", func(t *testing.T) {
		t.Parallel()
		c := newCluster(t, manifests, keda)
		d := one[*appsv1.Deployment](t, keda, "monitor")
		ctr := container(t, d, "monitor")
		env := c.env(t, ctr)
		cfg, err := settings(binaryOf(t, binDir, ctr.Command), env)
		require.NoError(t, err)
		require.NotEmpty(t, env["GRIDBATCH_MONITOR_USER"], "the monitor needs credentials")
		require.NotEmpty(t, env["GRIDBATCH_MONITOR_PASSWORD"], "the monitor needs credentials")
		p := port(t, cfg.(*config.Monitor).Addr)
		requireHTTPProbe(t, ctr, ctr.LivenessProbe, "liveness", "/healthz", p)
		requireHTTPProbe(t, ctr, ctr.ReadinessProbe, "readiness", "/healthz", p)

		svc := one[*corev1.Service](t, keda, "monitor")
		require.True(t, selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, d.Spec.Template.Labels), "the Service must select the monitor's pods")
		require.NotEmpty(t, svc.Spec.Ports)
		for _, sp := range svc.Spec.Ports {
			require.Equal(t, p, containerPort(t, ctr, sp.TargetPort), "Service port %d", sp.Port)
		}
	})

	t.Run("disruption budgets select their pods", func(t *testing.T) {
		t.Parallel()
		worker := one[*policyv1.PodDisruptionBudget](t, keda, "worker")
		require.True(t, selects(worker.Spec.Selector, one[*appsv1.Deployment](t, keda, "worker").Spec.Template.Labels))
		require.NotNil(t, worker.Spec.MaxUnavailable, "minAvailable would block every drain while one worker runs")
		require.Nil(t, worker.Spec.MinAvailable)
		for _, pdb := range all[*policyv1.PodDisruptionBudget](keda) {
			d := one[*appsv1.Deployment](t, keda, pdb.Name)
			require.True(t, selects(pdb.Spec.Selector, d.Spec.Template.Labels), "PodDisruptionBudget %s", pdb.Name)
		}
	})

	t.Run("every container runs as non-root, unprivileged, read-only", func(t *testing.T) {
		t.Parallel()
		for _, d := range all[*appsv1.Deployment](keda) {
			pod := d.Spec.Template.Spec
			require.True(t, selects(d.Spec.Selector, d.Spec.Template.Labels), "Deployment %s: selector", d.Name)
			psc := pod.SecurityContext
			if psc == nil {
				psc = &corev1.PodSecurityContext{}
			}
			for _, ctr := range slices.Concat(pod.InitContainers, pod.Containers) {
				where := "Deployment " + d.Name + ", container " + ctr.Name
				sc := ctr.SecurityContext
				require.NotNil(t, sc, where)

				nonRoot := cmpOr(sc.RunAsNonRoot, psc.RunAsNonRoot)
				require.True(t, nonRoot != nil && *nonRoot, "%s: runAsNonRoot", where)
				if uid := cmpOr(sc.RunAsUser, psc.RunAsUser); uid != nil {
					require.NotZero(t, *uid, "%s: runAsUser", where)
				}
				require.True(t, sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation, "%s: allowPrivilegeEscalation false", where)
				require.True(t, sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem, "%s: readOnlyRootFilesystem", where)
				require.True(t, sc.Privileged == nil || !*sc.Privileged, "%s: privileged", where)
				require.NotNil(t, sc.Capabilities, "%s: capabilities", where)
				require.Contains(t, sc.Capabilities.Drop, corev1.Capability("ALL"), "%s: drop ALL capabilities", where)
				require.Empty(t, sc.Capabilities.Add, "%s: no added capabilities", where)
				seccomp := cmpOr(sc.SeccompProfile, psc.SeccompProfile)
				require.True(t, seccomp != nil && seccomp.Type == corev1.SeccompProfileTypeRuntimeDefault, "%s: seccompProfile RuntimeDefault", where)

				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					require.Contains(t, ctr.Resources.Requests, r, "%s: resources.requests", where)
					require.Contains(t, ctr.Resources.Limits, r, "%s: resources.limits", where)
				}
			}
		}
	})

	t.Run("every container runs the gridbatch image with valid settings", func(t *testing.T) {
		t.Parallel()
		var images []string
		for _, obj := range manifests["base/kustomization.yaml"] {
			for _, im := range obj.(*kustomization).Images {
				images = append(images, im.Name)
			}
		}
		for _, v := range variants {
			c := newCluster(t, manifests, v)
			for _, cm := range c.configMaps {
				requireKnownVariables(t, "ConfigMap "+cm.Name, slices.Sorted(maps.Keys(cm.Data)))
			}
			for _, d := range all[*appsv1.Deployment](v) {
				pod := d.Spec.Template.Spec
				for _, ctr := range slices.Concat(pod.InitContainers, pod.Containers) {
					repo, _, _ := strings.Cut(ctr.Image, ":")
					require.Contains(t, images, repo, "Deployment %s, container %s: image %s is not set by the kustomization's images", d.Name, ctr.Name, ctr.Image)
					_, err := settings(binaryOf(t, binDir, ctr.Command), c.env(t, ctr))
					require.NoError(t, err, "Deployment %s, container %s", d.Name, ctr.Name)
				}
			}
		}
	})

	t.Run("every container reads the models file of its ConfigMap", func(t *testing.T) {
		t.Parallel()
		for _, v := range variants {
			c := newCluster(t, manifests, v)
			for _, d := range all[*appsv1.Deployment](v) {
				pod := d.Spec.Template.Spec
				runsModels := false
				for _, ctr := range slices.Concat(pod.InitContainers, pod.Containers) {
					where := v.name + ": Deployment " + d.Name + ", container " + ctr.Name
					file := c.env(t, ctr)["GRIDBATCH_MODELS_FILE"]
					require.True(t, path.IsAbs(file), "%s: GRIDBATCH_MODELS_FILE %q: an absolute path in the container", where, file)
					content := podFile(t, c, pod, ctr, file, where)
					local := filepath.Join(t.TempDir(), path.Base(file))
					require.NoError(t, os.WriteFile(local, []byte(content), 0o600))
					set, err := model.Load(local)
					require.NoError(t, err, "%s: the models file", where)
					if binaryOf(t, binDir, ctr.Command) != "worker" {
						continue
					}
					repo, _, _ := strings.Cut(ctr.Image, ":")
					require.Equal(t, pythonImage, repo, "%s: the worker runs the model processes: the image of the Dockerfile's %s target", where, pythonTarget)
					for _, spec := range set.Specs() {
						if spec.Process() {
							runsModels = true
							requireModelCommandInImage(t, spec, where+", kind "+spec.Kind)
						}
					}
				}
				if runsModels {
					require.True(t, pod.ShareProcessNamespace != nil && *pod.ShareProcessNamespace,
						"Deployment %s: shareProcessNamespace, so that the worker is not PID 1 and killed model processes are reaped", d.Name)
				}
			}
		}
	})

	t.Run("the models file mirrors examples/models.yaml", func(t *testing.T) {
		t.Parallel()
		cm := one[*corev1.ConfigMap](t, keda, modelsConfigMap)
		local := filepath.Join(t.TempDir(), "models.yaml")
		require.NoError(t, os.WriteFile(local, []byte(cm.Data["models.yaml"]), 0o600))
		inCluster, err := model.Load(local)
		require.NoError(t, err)
		examples, err := model.Load(filepath.Join(repoRoot(t), "examples", "models.yaml"))
		require.NoError(t, err)
		require.Equal(t, examples.Kinds(), inCluster.Kinds())
		for _, want := range examples.Specs() {
			got, err := inCluster.Spec(want.Kind)
			require.NoError(t, err)
			// The image holds examples/ at imageExamples; the scripts are
			// named there, the workdir left to its default.
			for i, arg := range want.Command {
				if i > 0 && strings.HasSuffix(arg, ".py") && !path.IsAbs(arg) {
					rel, err := filepath.Rel(filepath.Join(repoRoot(t), "examples"), filepath.Join(want.Workdir, arg))
					require.NoError(t, err)
					want.Command[i] = imageExamples + filepath.ToSlash(rel)
				}
			}
			want.Workdir, want.File = got.Workdir, got.File
			require.Equal(t, want, got, "kind %s: deploy/k8s/base/models.yaml differs from examples/models.yaml beyond its paths", want.Kind)
		}
	})

	t.Run("PostgreSQL connections stay within max_connections at full scale", func(t *testing.T) {
		t.Parallel()
		for _, v := range variants {
			c := newCluster(t, manifests, v)
			var maxWorkers int32
			for _, so := range all[*scaledObject](v) {
				maxWorkers = *so.Spec.MaxReplicaCount
			}
			for _, h := range all[*autoscalingv2.HorizontalPodAutoscaler](v) {
				maxWorkers = h.Spec.MaxReplicas
			}
			require.Positive(t, maxWorkers, "%s scales the workers without a maximum", v.name)
			total := 0
			for _, d := range all[*appsv1.Deployment](v) {
				replicas := int32(1)
				if d.Spec.Replicas != nil {
					replicas = *d.Spec.Replicas
				}
				if d.Name == "worker" {
					replicas = maxWorkers
				}
				for _, ctr := range d.Spec.Template.Spec.Containers {
					cfg, err := settings(binaryOf(t, binDir, ctr.Command), c.env(t, ctr))
					require.NoError(t, err)
					total += int(replicas) * common(cfg).DBMaxConns
				}
			}
			require.LessOrEqual(t, total, pgConnectionBudget, "%s: PostgreSQL connections at full scale", v.name)
		}
	})

	t.Run("documented Redis URL forms are accepted", func(t *testing.T) {
		t.Parallel()
		urls := regexp.MustCompile(`(?m)^#.*?\b((?:redis|rediss|redis-sentinel)://\S+)`).FindAllStringSubmatch(string(readRepoFile(t, "deploy/k8s/"+secretExample)), -1)
		schemes := map[string]bool{}
		for _, m := range urls {
			u := m[1]
			_, err := asynq.ParseRedisURI(u)
			require.NoError(t, err, u)
			_, err = settings("enqueuer", map[string]string{"GRIDBATCH_REDIS_URL": u})
			require.NoError(t, err, u)
			scheme, _, _ := strings.Cut(u, "://")
			schemes[scheme] = true
		}
		require.Equal(t, map[string]bool{"redis": true, "rediss": true, "redis-sentinel": true}, schemes,
			"deploy/k8s/%s documents a plain, a TLS and a Sentinel URL", secretExample)
	})
}

// podFile is the content of the file at the absolute path file in
// container ctr of pod: it must come from a read-only mount of a ConfigMap
// volume over one of file's folders, without subPath (a subPath mount never
// sees a change of the ConfigMap).
func podFile(t *testing.T, c cluster, pod corev1.PodSpec, ctr corev1.Container, file, where string) string {
	t.Helper()
	for _, m := range ctr.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if err != nil || strings.HasPrefix(rel, "..") || rel == "." {
			continue
		}
		require.True(t, m.ReadOnly, "%s: mount %s read-only", where, m.MountPath)
		require.Empty(t, m.SubPath, "%s: mount %s without subPath", where, m.MountPath)
		i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		require.GreaterOrEqual(t, i, 0, "%s: no volume %s", where, m.Name)
		src := pod.Volumes[i].ConfigMap
		require.NotNil(t, src, "%s: %s must come from a ConfigMap", where, file)
		cm := c.configMaps[src.Name]
		require.NotNil(t, cm, "%s: no ConfigMap %s", where, src.Name)
		key := filepath.ToSlash(rel)
		if len(src.Items) > 0 { // only the listed keys are projected
			j := slices.IndexFunc(src.Items, func(it corev1.KeyToPath) bool { return it.Path == key })
			require.GreaterOrEqual(t, j, 0, "%s: volume %s projects no item at %s", where, m.Name, key)
			key = src.Items[j].Key
		}
		content, ok := cm.Data[key]
		require.True(t, ok, "%s: ConfigMap %s has no key %s, so %s would not exist", where, cm.Name, key, file)
		return content
	}
	t.Fatalf("%s: no volume mounted over %s", where, file)
	return ""
}

// cmpOr is the container-level setting when set, else the pod-level one.
func cmpOr[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

func TestKubernetesVerifiesPostgreSQLAndSetsTheHTTPAddress(t *testing.T) {
	t.Parallel()
	manifests := k8sManifests(t)
	v := newVariant(t, manifests, ".")
	c := newCluster(t, manifests, v)
	for _, d := range all[*appsv1.Deployment](v) {
		pod := d.Spec.Template.Spec
		for _, ctr := range slices.Concat(pod.InitContainers, pod.Containers) {
			where := "Deployment " + d.Name + ", container " + ctr.Name
			env := c.env(t, ctr)
			u, err := url.Parse(env["GRIDBATCH_DATABASE_URL"])
			require.NoError(t, err, where)
			require.Equal(t, "verify-full", u.Query().Get("sslmode"), "%s: the server's certificate and name are verified", where)
			ca := u.Query().Get("sslrootcert")
			require.True(t, path.IsAbs(ca), "%s: sslrootcert %q", where, ca)
			i := slices.IndexFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path.Dir(ca) })
			require.GreaterOrEqual(t, i, 0, "%s: the CA's folder %s is mounted", where, path.Dir(ca))
			require.True(t, ctr.VolumeMounts[i].ReadOnly, where)
			j := slices.IndexFunc(pod.Volumes, func(vol corev1.Volume) bool { return vol.Name == ctr.VolumeMounts[i].Name })
			require.GreaterOrEqual(t, j, 0, where)
			require.NotNil(t, pod.Volumes[j].ConfigMap, "%s: the CA comes from a ConfigMap", where)
			require.Equal(t, "gridbatch-postgres-ca", pod.Volumes[j].ConfigMap.Name, where)
			if bin := binaryOf(t, parseDockerfile(t).binDir(t), ctr.Command); bin == "worker" || bin == "scheduler" {
				require.NotEmpty(t, env["GRIDBATCH_HTTP_ADDR"], "%s: set, since outside a container the default is loopback", where)
			}
		}
	}
}
