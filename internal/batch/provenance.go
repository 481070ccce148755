package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Build returns gridbatch's version as this binary's build info has it:
// the module version and the VCS revision, time and modified flag.
func Build() store.BuildInfo {
	var b store.BuildInfo
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.Version, b.Go = info.Main.Version, info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// ModelProvenance returns what a batch of spec records of its model: its
// declaration, the sha256 of the declaration's JSON (keys sorted), and
// the sha256 of its program files (model.Spec.ProgramFiles); for a
// built-in model the binary's revision instead.
func ModelProvenance(spec model.Spec) (store.ModelProvenance, error) {
	m := store.ModelProvenance{Kind: spec.Kind, Declaration: spec.Declaration(), Files: []store.FileDigest{}}
	js, err := json.Marshal(m.Declaration)
	if err != nil {
		return m, err
	}
	// Read back as the JSON it is stored as, so that what status shows is
	// what was digested.
	if err := json.Unmarshal(js, &m.Declaration); err != nil {
		return m, err
	}
	sum := sha256.Sum256(js)
	m.Digest = hex.EncodeToString(sum[:])
	if !spec.Process() {
		m.BuiltinRevision = Build().Revision
	}
	for _, p := range spec.ProgramFiles() {
		d, err := FileSHA256(p)
		if err != nil {
			return m, fmt.Errorf("digest the program file %s of model %s: %w", p, spec.Kind, err)
		}
		m.Files = append(m.Files, d)
	}
	return m, nil
}

// FileSHA256 returns the sha256 of the file at path, lowercase hex.
func FileSHA256(path string) (store.FileDigest, error) {
	d := store.FileDigest{Path: path}
	f, err := os.Open(path)
	if err != nil {
		return d, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return d, err
	}
	d.SHA256, d.Bytes = hex.EncodeToString(h.Sum(nil)), n
	return d, nil
}

// recordProvenance records what makes batch b's values, once, when it is
// planned: gridbatch's build, its model (ModelProvenance) and the digest of
// its cells' inputs as they are now.
func (s *Service) recordProvenance(ctx context.Context, b store.Batch) error {
	if b.Provenance != nil {
		return nil
	}
	spec, err := s.cfg.Models.Spec(b.Kind)
	if err != nil {
		return err
	}
	p, err := s.provenance(ctx, b, spec)
	if err != nil {
		return err
	}
	return s.store.SetProvenance(ctx, b.ID, p)
}

func (s *Service) provenance(ctx context.Context, b store.Batch, spec model.Spec) (store.Provenance, error) {
	p := store.Provenance{Gridbatch: Build(), PlannedBy: s.cfg.Worker, PlannedAt: time.Now().UTC()}
	var err error
	if p.Model, err = ModelProvenance(spec); err != nil {
		return p, err
	}
	r, err := b.Region()
	if err != nil {
		return p, err
	}
	if p.Inputs, err = s.store.InputsDigest(ctx, r, spec.Inputs); err != nil {
		return p, err
	}
	return p, nil
}
