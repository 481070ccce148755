package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine is what the figures were measured on.
type Machine struct {
	CPUModel      string
	Cores         int
	MemoryBytes   int64
	Kernel        string
	Go            string
	Redis         string
	Postgres      string
	LoadBefore    string // /proc/loadavg's 1, 5 and 15 minute averages when the run began
	LoadAfter     string // and when it ended
	PostgresNotes string // settings that bear on write speed
}

func (h *harness) machine(ctx context.Context) (Machine, error) {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	var err error
	if m.LoadBefore, err = loadAverage(); err != nil {
		return m, err
	}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if mem := procField("/proc/meminfo", "MemTotal"); mem != "" {
		f := strings.Fields(mem)
		n, _ := strconv.ParseInt(f[0], 10, 64)
		m.MemoryBytes = n * 1024
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	info, err := h.rdb.Info(ctx, "server").Result()
	if err != nil {
		return m, fmt.Errorf("redis INFO server: %w", err)
	}
	m.Redis = infoField(info, "redis_version")
	if err := h.db.QueryRow(ctx, `SHOW server_version`).Scan(&m.Postgres); err != nil {
		return m, fmt.Errorf("postgres version: %w", err)
	}
	var notes []string
	for _, name := range []string{"shared_buffers", "max_wal_size", "synchronous_commit", "full_page_writes"} {
		var v string
		if err := h.db.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&v); err == nil {
			notes = append(notes, name+"="+v)
		}
	}
	m.PostgresNotes = strings.Join(notes, ", ")
	return m, nil
}

func loadAverage() (string, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "", fmt.Errorf("malformed /proc/loadavg: %q", b)
	}
	return strings.Join(f[:3], " "), nil
}

// procField returns the value of the first "name : value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// infoField returns a field of a Redis INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// commandStats are Redis's per-command call counts (INFO commandstats).
type commandStats map[string]int64

func (h *harness) commandStats(ctx context.Context) commandStats {
	info, err := h.rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil
	}
	out := commandStats{}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, fields, _ := strings.Cut(rest, ":")
		for _, kv := range strings.Split(fields, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				out[name], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out
}

// sub returns the calls made since before, in all and of the named command.
func (s commandStats) sub(before commandStats, name string) (all, named int64) {
	for k, v := range s {
		d := v - before[k]
		all += d
		if k == name {
			named = d
		}
	}
	return all, named
}
