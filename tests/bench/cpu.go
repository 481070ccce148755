package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU is where a run's CPU time went, in core-seconds, from /proc and
// Redis's INFO cpu. Machine is every busy core-second; the rest is what the
// named processes used, and Other is the remainder (the kernel's own work,
// other processes).
type CPU struct {
	Machine  float64
	Postgres float64 // the postmaster and all its children, exited ones included
	// PostgresBackground is the part of Postgres spent outside client
	// backends (autovacuum, checkpointer, background and WAL writers), as
	// far as the processes lived through the run.
	PostgresBackground float64
	// PostgresSessions is the part of Postgres spent in the run's own
	// sessions (application_name gridbatch-worker or gridbatch-bench),
	// as far as they lived to the end of the run.
	PostgresSessions float64
	Redis            float64
	Workers          float64 // the pipeline's worker processes
	Models           float64 // the workers' model processes (and their supervisors)
	Enqueuer         float64 // enqueuer run --wait
	Harness          float64 // this process: the lower bound's own work
}

// Other is the machine's busy time no named process accounts for.
func (c CPU) Other() float64 {
	return c.Machine - c.Postgres - c.Redis - c.Workers - c.Models - c.Enqueuer - c.Harness
}

// cpuMeter takes the samples a CPU is the difference of.
type cpuMeter struct {
	machine   cpuSample
	postgres  time.Duration
	children  map[int]time.Duration
	redis     float64
	harness   time.Duration
	postmastr int
}

func (h *harness) startCPU(ctx context.Context) *cpuMeter {
	m := &cpuMeter{machine: readCPU(), postmastr: h.postmaster(ctx)}
	m.postgres, m.children = treeCPU(m.postmastr)
	m.redis = h.redisCPU(ctx)
	m.harness, _ = procCPU(os.Getpid())
	return m
}

// stop returns the CPU used since start; workers and enqueuer are added by the caller.
func (m *cpuMeter) stop(ctx context.Context, h *harness) CPU {
	var c CPU
	now := readCPU()
	c.Machine = float64(now.busy-m.machine.busy) / clockTick
	pg, children := treeCPU(m.postmastr)
	c.Postgres = (pg - m.postgres).Seconds()
	// Split by session: background processes, and the run's own sessions.
	rows, err := h.db.Query(ctx, `SELECT pid, backend_type <> 'client backend', application_name IN ('gridbatch-worker', 'gridbatch-bench')
		FROM pg_stat_activity`)
	if err == nil {
		for rows.Next() {
			var pid int
			var background, own bool
			if rows.Scan(&pid, &background, &own) == nil {
				cur, ok := children[pid]
				if !ok {
					continue
				}
				d := (cur - m.children[pid]).Seconds()
				switch {
				case background:
					c.PostgresBackground += d
				case own:
					c.PostgresSessions += d
				}
			}
		}
		rows.Close()
	}
	c.Redis = h.redisCPU(ctx) - m.redis
	hc, _ := procCPU(os.Getpid())
	c.Harness = (hc - m.harness).Seconds()
	return c
}

// postmaster is the pid of the PostgreSQL server: the parent of this
// session's backend. 0 when it is not on this machine's /proc.
func (h *harness) postmaster(ctx context.Context) int {
	var backend int
	if err := h.db.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return 0
	}
	stat, err := readStat(backend)
	if err != nil || len(stat) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(stat[1])
	return ppid
}

// treeCPU is the CPU time of pid, its reaped children, and its live
// children, and that of each live child.
func treeCPU(pid int) (time.Duration, map[int]time.Duration) {
	children := map[int]time.Duration{}
	if pid <= 0 {
		return 0, children
	}
	stat, err := readStat(pid)
	if err != nil {
		return 0, children
	}
	total := statCPU(stat, true)
	entries, _ := os.ReadDir("/proc")
	parent := strconv.Itoa(pid)
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := readStat(child)
		if err == nil && len(s) > 1 && s[1] == parent {
			c := statCPU(s, false)
			children[child] = c
			total += c
		}
	}
	return total, children
}

// readStat returns the fields of /proc/pid/stat after the command name:
// index 0 is the state (field 3), index 1 the ppid (field 4).
func readStat(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, errors.New("short /proc stat")
	}
	return f, nil
}

// statCPU is utime+stime (fields 14 and 15), plus cutime+cstime (16 and 17,
// the reaped children) when children is set.
func statCPU(f []string, children bool) time.Duration {
	idx := []int{11, 12}
	if children {
		idx = append(idx, 13, 14)
	}
	var ticks int64
	for _, i := range idx {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTick
}

// procCPU is the user+system CPU time of a process.
func procCPU(pid int) (time.Duration, error) {
	f, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return statCPU(f, false), nil
}

// redisCPU is the Redis server's CPU seconds so far (INFO cpu).
func (h *harness) redisCPU(ctx context.Context) float64 {
	info, err := h.rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, k := range []string{"used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children"} {
		v, _ := strconv.ParseFloat(infoField(info, k), 64)
		total += v
	}
	return total
}
