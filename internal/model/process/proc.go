package process

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gridbatch/gridbatch/internal/model"
)

// proc is one running model process: its supervisor (or itself, without
// one) leads a process group of its own, which is what a kill hits.
type proc struct {
	spec model.Spec
	log  *slog.Logger
	cmd  *exec.Cmd
	pgid int
	pid  atomic.Int64 // the model's own pid, from READY (the group's until then)

	req    *os.File // fd 3 of the model: we write
	reqBuf *bufio.Writer
	rep    *os.File // fd 4 of the model: we read
	repBuf *bufio.Reader
	buf    []byte

	home     string        // its HOME, removed once it has been reaped
	exited   chan struct{} // closed once the process has been reaped
	exitDesc string        // how it ended, once exited is closed
	killOnce sync.Once
	killMu   sync.Mutex
	killed   string // why we killed it; empty when it ended by itself
	chunks   int
}

// startProc starts spec's command under the supervisor at shimPath (none
// when empty), as u (nil: as the worker), and shakes hands with it within
// startTimeout.
func startProc(ctx context.Context, spec model.Spec, shimPath string, u *User, startTimeout time.Duration, log *slog.Logger) (*proc, error) {
	argv := spec.Command
	if shimPath != "" {
		argv = append([]string{shimPath, shimArg}, spec.Command...)
	}
	home, err := makeHome(spec.Kind, u)
	if err != nil { // a read-only root without a writable temporary folder
		log.Warn("model process runs without HOME", "kind", spec.Kind, "error", err.Error())
	}
	var closeAfterStart, closeOnError []*os.File
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			closeOnError = append(closeOnError, r, w)
		}
		return r, w, err
	}
	fail := func(err error) (*proc, error) {
		for _, f := range closeOnError {
			_ = f.Close()
		}
		removeHome(home)
		return nil, err
	}
	reqR, reqW, err := pipe()
	if err != nil {
		return fail(err)
	}
	repR, repW, err := pipe()
	if err != nil {
		return fail(err)
	}
	outR, outW, err := pipe()
	if err != nil {
		return fail(err)
	}
	errR, errW, err := pipe()
	if err != nil {
		return fail(err)
	}
	closeAfterStart = append(closeAfterStart, reqR, repW, outW, errW)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = spec.Workdir
	// Nothing of the worker's environment but the allow-list (contain.go).
	cmd.Env = modelEnv(spec, home, os.Environ())
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.ExtraFiles = []*os.File{reqR, repW}
	// The group is what a kill hits. Without a supervisor the model itself
	// dies with the worker, and runs as u from the start; with one, the
	// supervisor is told (SIGTERM) and kills the group and every process
	// descended from it, and the supervisor keeps the worker's user (so the
	// model, as u, can neither signal nor trace it) and starts the model as
	// u.
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: u.credential()}
	var statusR *os.File
	if shimPath != "" {
		var statusW *os.File
		statusR, statusW, err = pipe()
		if err != nil {
			return fail(err)
		}
		cmd.ExtraFiles = append(cmd.ExtraFiles, statusW)
		closeAfterStart = append(closeAfterStart, statusW)
		attr.Pdeathsig, attr.Credential = syscall.SIGTERM, nil
		cmd.Env = append(cmd.Env, parentEnv+"="+strconv.Itoa(os.Getpid()))
		if u != nil {
			cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d:%d", userEnv, u.UID, u.GID))
		}
	} else {
		closeOnExecAbove(2)
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %q: %w", spec.Command[0], unwrapPath(err)))
	}
	for _, f := range closeAfterStart {
		_ = f.Close()
	}
	p := &proc{spec: spec, log: log, cmd: cmd, pgid: cmd.Process.Pid, req: reqW, reqBuf: bufio.NewWriterSize(reqW, 1<<16),
		rep: repR, repBuf: bufio.NewReaderSize(repR, 1<<16), home: home, exited: make(chan struct{})}
	p.pid.Store(int64(cmd.Process.Pid))
	var streams sync.WaitGroup
	streams.Add(2)
	go p.logLines(outR, "stdout", &streams)
	go p.logLines(errR, "stderr", &streams)
	go func() {
		werr := cmd.Wait()
		desc := ""
		if statusR != nil {
			b, _ := io.ReadAll(io.LimitReader(statusR, 4096))
			_ = statusR.Close()
			desc = string(b)
		}
		if desc == "" {
			desc = "exit status 0"
			if werr != nil {
				desc = exitStatus(cmd.ProcessState, werr)
			}
		}
		p.exitDesc = desc
		removeHome(p.home)
		close(p.exited)
		streams.Wait()
	}()
	if spec.MemoryLimit > 0 {
		go p.meter()
	}

	hctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	f, err := p.roundTrip(hctx, 0, frameHello, helloMeta{Protocol: protocolVersion, Kind: spec.Kind, Inputs: spec.Inputs,
		Series: spec.Series, FirstYear: spec.FirstYear, Years: spec.Years}, nil)
	if err != nil {
		if hctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no READY within %s", startTimeout)
		}
		p.kill("handshake failed")
		return nil, fmt.Errorf("handshake: %w", err)
	}
	switch f.typ {
	case frameReady:
		var m readyMeta
		if err := json.Unmarshal(f.meta, &m); err != nil || m.Protocol != protocolVersion {
			p.kill("handshake failed")
			return nil, fmt.Errorf("handshake: READY %s: want protocol %d", f.meta, protocolVersion)
		}
		if m.PID > 0 {
			p.pid.Store(int64(m.PID))
		}
		return p, nil
	case frameError:
		p.kill("handshake refused")
		return nil, fmt.Errorf("handshake refused: %s", errorText(f.meta))
	}
	p.kill("handshake failed")
	return nil, fmt.Errorf("handshake: got %s, want READY", frameName(f.typ))
}

// compute hands the chunk's cells to the process and reads back its
// values. An error that leaves the process unusable kills it first (see
// alive).
func (p *proc) compute(ctx context.Context, chunk string, c model.Cells) ([]float64, error) {
	n := c.Len()
	cols := append([]string{"grid_id", "lat", "lon"}, p.spec.Inputs...)
	data := make([][]byte, 0, len(cols))
	data = append(data, int64Bytes(c.GridID), float64Bytes(c.Lat), float64Bytes(c.Lon))
	for _, in := range c.Inputs {
		data = append(data, float64Bytes(in))
	}
	// The one reply size that can be right: anything larger is refused
	// before it is read (roundTrip).
	want := []int{n, len(p.spec.Series), p.spec.Years}
	size := uint64(n) * uint64(want[1]) * uint64(want[2]) * 8
	f, err := p.roundTrip(ctx, size, frameChunk, chunkMeta{Chunk: chunk, N: n, Columns: cols}, data...)
	if tooBig := (*sizeError)(nil); errors.As(err, &tooBig) {
		if tooBig.part == "data" {
			err = fmt.Errorf("%w; the chunk's %s float64 values are %d bytes", err, shape(want), size)
		}
		return nil, fmt.Errorf("%w: %w", err, model.ErrInvalid)
	}
	if err != nil {
		return nil, err
	}
	p.chunks++
	switch f.typ {
	case frameResult:
	case frameError:
		return nil, computeError(f.meta)
	default:
		p.kill("protocol violation")
		return nil, fmt.Errorf("model replied %s to a CHUNK, want RESULT or ERROR", frameName(f.typ))
	}
	var m resultMeta
	if err := json.Unmarshal(f.meta, &m); err != nil {
		p.kill("protocol violation")
		return nil, fmt.Errorf("model's RESULT meta %q: %v", f.meta, err)
	}
	if m.DType != "float64" || !slices.Equal(m.Shape, want) {
		return nil, fmt.Errorf("model replied a %s array of shape %s; want float64 of shape %s (cells, series, years): %w",
			m.DType, shape(m.Shape), shape(want), model.ErrInvalid)
	}
	if uint64(len(f.data)) != size {
		p.kill("protocol violation")
		return nil, fmt.Errorf("model's RESULT of shape %s carries %d bytes, want %d: %w", shape(want), len(f.data), size, model.ErrInvalid)
	}
	return decodeFloat64s(f.data), nil
}

// roundTrip writes a frame and reads the reply, bounded by ctx. A reply
// whose data would be over maxData bytes, or whose meta over maxMeta, is
// not read: the process is killed and the error (a *sizeError) names both
// sizes. When ctx ends first, or the process dies, it kills the
// process group, waits for it (at most a second) and returns why.
func (p *proc) roundTrip(ctx context.Context, maxData uint64, typ uint32, meta any, data ...[]byte) (frame, error) {
	type reply struct {
		f   frame
		err error
	}
	ch := make(chan reply, 1)
	go func() {
		err := writeFrame(p.reqBuf, typ, meta, data...)
		if err != nil {
			ch <- reply{err: err}
			return
		}
		f, err := readFrame(p.repBuf, p.buf, maxData)
		if err == nil && cap(f.data) > cap(p.buf) {
			p.buf = f.data
		}
		ch <- reply{f, err}
	}()
	for {
		select {
		case r := <-ch:
			var tooBig *sizeError
			if errors.As(r.err, &tooBig) {
				p.kill("protocol violation: " + tooBig.Error())
				return frame{}, fmt.Errorf("model process (pid %d) killed: %w", p.pid.Load(), tooBig)
			}
			if r.err != nil {
				select { // a broken pipe is the process dying: say how
				case <-p.exited:
				case <-time.After(time.Second):
					p.kill("protocol violation")
				}
				<-p.exited
				if why := p.killReason(); why != "" {
					if over, ok := strings.CutPrefix(why, memoryKill); ok {
						return frame{}, fmt.Errorf("model process (pid %d) killed: %w: %s", p.pid.Load(), model.ErrMemoryLimit, over)
					}
					return frame{}, fmt.Errorf("model process (pid %d) killed: %s", p.pid.Load(), why)
				}
				return frame{}, &ExitError{PID: int(p.pid.Load()), Status: p.exitDesc}
			}
			return r.f, nil
		case <-ctx.Done():
			why := "chunk cancelled"
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				why = "chunk timeout"
			}
			p.kill(why)
			<-ch
			return frame{}, fmt.Errorf("model process (pid %d) killed: %s: %w", p.pid.Load(), why, ctx.Err())
		}
	}
}

// memoryPoll is how often a process tree's RSS is read.
const memoryPoll = 200 * time.Millisecond

// memoryKill starts the reason of a kill over the memory limit; roundTrip
// turns it into model.ErrMemoryLimit, which splits the chunk.
const memoryKill = "memory limit: "

// meter reads the RSS of the process tree every memoryPoll for as long as
// the process lives, computing or idle between chunks, and kills it over
// its memory limit. The tree is the process group and every process
// descended from its leader (treeRSS), so a grandchild that left the group
// with setsid() counts all the same. A chunk waiting for the process's
// reply then fails with the reason (roundTrip).
func (p *proc) meter() {
	t := time.NewTicker(memoryPoll)
	defer t.Stop()
	for {
		select {
		case <-p.exited:
			return
		case <-t.C:
			if rss := treeRSS(p.pgid); rss > p.spec.MemoryLimit {
				p.kill(fmt.Sprintf("%sRSS %d MiB over %d MiB", memoryKill, rss>>20, p.spec.MemoryLimit>>20))
				return
			}
		}
	}
}

// kill SIGKILLs every process descended from the group's leader, then the
// group (the leader last, so that under a supervisor an orphan is still
// its descendant when found), closes the pipes (so a blocked read or write
// returns) and waits up to a second for the process to be reaped.
func (p *proc) kill(why string) {
	p.killOnce.Do(func() {
		p.killMu.Lock()
		p.killed = why
		p.killMu.Unlock()
		killTree(p.pgid)
		_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
		_ = p.req.Close()
		_ = p.rep.Close()
		p.log.Warn("model process killed", "kind", p.spec.Kind, "pid", p.pid.Load(), "reason", why, "chunks_served", p.chunks)
	})
	select {
	case <-p.exited:
	case <-time.After(time.Second):
	}
}

// close ends an idle process: end of file on its requests, then a kill if
// it has not exited within grace.
func (p *proc) close(grace time.Duration) {
	_ = p.req.Close()
	select {
	case <-p.exited:
		_ = p.rep.Close()
	case <-time.After(grace):
		p.kill("did not exit after its requests ended")
	}
	// Whatever it left in its group goes with it.
	_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
}

// alive reports whether the process can take another chunk.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return p.killReason() == ""
	}
}

// killReason is why the worker killed the process; empty when it did not.
func (p *proc) killReason() string {
	p.killMu.Lock()
	defer p.killMu.Unlock()
	return p.killed
}

// logLines logs each line the model writes to one of its standard streams.
func (p *proc) logLines(r *os.File, stream string, wg *sync.WaitGroup) {
	defer wg.Done()
	defer r.Close()
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 || (err == nil && !isPrefix) {
			p.log.Info("model output", "kind", p.spec.Kind, "pid", p.pid.Load(), "stream", stream, "line", string(line))
		}
		if isPrefix { // a line over 64 KiB: the rest is dropped
			for isPrefix && err == nil {
				_, isPrefix, err = br.ReadLine()
			}
		}
		if err != nil {
			return
		}
	}
}

// ExitError is a model process that ended by itself while the worker
// waited for its reply.
type ExitError struct {
	PID    int
	Status string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("model process (pid %d) ended: %s", e.PID, e.Status)
}

// Is makes an ExitError match model.ErrCrashed.
func (e *ExitError) Is(target error) bool { return target == model.ErrCrashed }

// ComputeError is the model's own ERROR reply: an exception in compute.
// Permanent is the model's word that no retry will fix it
// (gridbatch_model.Permanent): it then matches model.ErrPermanent.
type ComputeError struct {
	Text, Traceback string
	Permanent       bool
}

func (e *ComputeError) Error() string { return e.Text }

// Is makes a ComputeError match model.ErrRaised and, when permanent,
// model.ErrPermanent.
func (e *ComputeError) Is(target error) bool {
	return target == model.ErrRaised || (e.Permanent && target == model.ErrPermanent)
}

func computeError(meta []byte) *ComputeError {
	var m errorMeta
	_ = json.Unmarshal(meta, &m)
	return &ComputeError{Text: errorText(meta), Traceback: m.Traceback, Permanent: m.Permanent}
}

func errorText(meta []byte) string {
	var m errorMeta
	if err := json.Unmarshal(meta, &m); err != nil || (m.Type == "" && m.Message == "") {
		return fmt.Sprintf("model error %s", meta)
	}
	if m.Type == "" {
		return m.Message
	}
	return m.Type + ": " + m.Message
}

func shape(s []int) string {
	b := []byte("(")
	for i, v := range s {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendInt(b, int64(v), 10)
	}
	return string(append(b, ')'))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// unwrapPath turns exec's "fork/exec /x: no such file or directory" into its
// cause.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
