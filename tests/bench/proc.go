package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// env is the environment of a binary of this run: cfg.Env with the run's
// Redis and PostgreSQL on top.
func (h *harness) env(extra ...string) []string {
	env := append([]string{}, h.cfg.Env...)
	env = append(env, "GRIDBATCH_REDIS_URL="+h.cfg.RedisURL, "GRIDBATCH_DATABASE_URL="+h.cfg.DatabaseURL,
		"GRIDBATCH_LOG_FORMAT=json", "GRIDBATCH_MODELS_FILE="+h.cfg.ModelsFile)
	return append(env, extra...)
}

// workerEnv is the workers' environment. They log at debug level, for the
// "chunk task started" lines that carry each task's start latency.
func (h *harness) workerEnv(pprof bool) []string {
	env := h.env("GRIDBATCH_HTTP_ADDR=127.0.0.1:0", "GRIDBATCH_LOG_LEVEL=debug")
	if pprof {
		env = append(env, "GRIDBATCH_PPROF=true")
	}
	for _, e := range h.cfg.WorkerEnv {
		if h.ownConcurrency && e == h.cfg.addedConcurrency {
			continue
		}
		env = append(env, e)
	}
	return env
}

// output runs a command to its end and returns its standard output.
func (h *harness) output(ctx context.Context, bin string, env []string, args ...string) (string, error) {
	out, _, err := h.outputCPU(ctx, bin, env, args...)
	return out, err
}

// outputCPU is output that also returns the CPU time the command used.
func (h *harness) outputCPU(ctx context.Context, bin string, env []string, args ...string) (string, time.Duration, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Dir = h.cfg.RepoRoot
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return string(out), cpu, fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, lastLines(stderr.String(), 30))
	}
	return string(out), cpu, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pickSettings returns the KEY=value lines of out for the given keys, joined by ", ".
func pickSettings(out string, keys ...string) string {
	var got []string
	for _, line := range strings.Split(out, "\n") {
		for _, k := range keys {
			if strings.HasPrefix(line, k+"=") {
				got = append(got, line)
			}
		}
	}
	return strings.Join(got, ", ")
}

// workerProc is a running worker binary. Its JSON log is written to a file
// and read for the lines the harness needs.
type workerProc struct {
	cmd      *exec.Cmd
	logPath  string
	started  chan string // the HTTP address, once "worker started" is logged
	httpAddr string
	done     chan struct{}
	waitErr  error
	mu       sync.Mutex
	latency  map[string][]float64 // start_latency_seconds by batch_id
	starts   map[string]int       // "model process started" lines by kind
	finished map[string]finishedLine
}

// finishedLine is a batch's "batch finished" log line: when the worker
// logged it (after the finish transaction's commit) and, from binaries that
// log it, how long that transaction took (-1 otherwise).
type finishedLine struct {
	At            time.Time
	FinishSeconds float64
}

// logLine is the part of a worker's JSON log line the harness reads.
type logLine struct {
	Msg       string    `json:"msg"`
	HTTPAddr  string    `json:"http_addr"`
	BatchID   string    `json:"batch_id"`
	Latency   *float64  `json:"start_latency_seconds"`
	Level     string    `json:"level"`
	Component string    `json:"component"`
	Kind      string    `json:"kind"`
	Time      time.Time `json:"time"`
	Finish    *float64  `json:"finish_seconds"`
}

// startWorker starts a worker and waits until it has started its asynq server.
func (h *harness) startWorker(ctx context.Context, name string, pprof bool) (*workerProc, error) {
	return h.startWorkerWith(ctx, name, filepath.Join(h.cfg.BinDir, "worker"), h.workerEnv(pprof))
}

// startWorkerWith starts the worker binary bin with env.
func (h *harness) startWorkerWith(ctx context.Context, name, bin string, env []string) (*workerProc, error) {
	logPath := filepath.Join(h.logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = f, pw
	w := &workerProc{cmd: cmd, logPath: logPath, started: make(chan string, 1), done: make(chan struct{}),
		latency: map[string][]float64{}, starts: map[string]int{}, finished: map[string]finishedLine{}}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start worker: %w", err)
	}
	go func() {
		defer f.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = f.Write(line)
			_, _ = f.Write([]byte{'\n'})
			var l logLine
			if json.Unmarshal(line, &l) != nil {
				continue
			}
			switch {
			case l.Msg == "worker started":
				select {
				case w.started <- l.HTTPAddr:
				default:
				}
			case l.Msg == "model process started":
				w.mu.Lock()
				w.starts[l.Kind]++
				w.mu.Unlock()
			case l.Msg == "batch finished" && l.BatchID != "":
				fl := finishedLine{At: l.Time, FinishSeconds: -1}
				if l.Finish != nil {
					fl.FinishSeconds = *l.Finish
				}
				w.mu.Lock()
				w.finished[l.BatchID] = fl
				w.mu.Unlock()
			case l.Msg == "chunk task started" && l.Latency != nil:
				w.mu.Lock()
				w.latency[l.BatchID] = append(w.latency[l.BatchID], *l.Latency)
				w.mu.Unlock()
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		w.waitErr = cmd.Wait()
		pw.Close()
		close(w.done)
	}()
	select {
	case w.httpAddr = <-w.started:
		return w, nil
	case <-w.done:
		return nil, fmt.Errorf("worker exited at start (%v); its log:\n%s", w.waitErr, tail(logPath))
	case <-time.After(30 * time.Second):
		w.kill()
		return nil, fmt.Errorf("worker did not start within 30s; its log:\n%s", tail(logPath))
	case <-ctx.Done():
		w.kill()
		return nil, ctx.Err()
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	return lastLines(string(b), 30)
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

// addr is the worker's HTTP address.
func (w *workerProc) addr() string { return w.httpAddr }

func (w *workerProc) kill() {
	_ = w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
}

// stop sends SIGTERM and waits for a clean exit, killing it after 40s.
func (w *workerProc) stop() error {
	_ = w.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-w.done:
		if w.waitErr != nil {
			return fmt.Errorf("worker exited with %v; its log:\n%s", w.waitErr, tail(w.logPath))
		}
		return nil
	case <-time.After(40 * time.Second):
		w.kill()
		return fmt.Errorf("worker did not stop within 40s of SIGTERM")
	}
}

// latencies returns the start latencies the worker logged for a batch.
func (w *workerProc) latencies(batchID string) []float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]float64{}, w.latency[batchID]...)
}

// procStatus reads a "Name:   value kB" field of /proc/pid/status in bytes.
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			if len(f) > 1 && f[1] == "kB" {
				n *= 1024
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// clockTick is USER_HZ, the unit of /proc's CPU times: 100 on every Linux
// architecture Go supports.
const clockTick = 100

// cpuSample is the machine's CPU time from /proc/stat, in ticks.
type cpuSample struct{ busy, total int64 }

func readCPU() cpuSample {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var s cpuSample
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i >= 8 { // guest and guest_nice are already counted in user and nice
			break
		}
		s.total += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	return s
}

// busySince is the share of the machine's CPU time that was busy since s.
func busySince(s cpuSample) float64 {
	now := readCPU()
	if now.total <= s.total {
		return 0
	}
	return float64(now.busy-s.busy) / float64(now.total-s.total)
}
