package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// waitSampler samples what the run's PostgreSQL sessions are doing
// (pg_stat_activity's state and wait event) every interval: a cheap profile
// of where the database's time goes.
type waitSampler struct {
	mu      sync.Mutex
	counts  map[string]int
	samples int
	stop    func()
	done    chan struct{}
}

func (h *harness) sampleWaits(ctx context.Context, apps ...string) *waitSampler {
	s := &waitSampler{counts: map[string]int{}, done: make(chan struct{})}
	ctx, s.stop = context.WithCancel(ctx)
	go func() {
		defer close(s.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rows, err := h.db.Query(ctx, `SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU'), left(query, 30)
				FROM pg_stat_activity WHERE application_name = ANY($1) AND pid <> pg_backend_pid() AND state <> 'idle'`, apps)
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.samples++
			for rows.Next() {
				var state, wait, q string
				if rows.Scan(&state, &wait, &q) == nil {
					if state == "active" {
						q = strings.Join(strings.Fields(q), " ")
						s.counts[wait+" "+q]++
					} else {
						s.counts[state+" "+wait]++
					}
				}
			}
			rows.Close()
			s.mu.Unlock()
		}
	}()
	return s
}

// result stops the sampler and returns its top events: the average number
// of sessions in each state over the run.
func (s *waitSampler) result(top int) string {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range s.counts {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(a, b kv) int { return b.v - a.v })
	var out []string
	for i, x := range all {
		if i == top {
			break
		}
		out = append(out, fmt.Sprintf("%.2f %s", float64(x.v)/float64(max(s.samples, 1)), x.k))
	}
	return strings.Join(out, "; ")
}
