package testutil

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/store"
)

// WorkerName is the name a worker process records in chunk_runs.worker: host:pid.
func WorkerName(p *Proc) string {
	return batch.WorkerName(p.Pid())
}

// OrphanedTasks returns the IDs of the tasks of queue that a worker killed a
// moment ago still holds: active now and still active after wait, while the
// other workers go on (their tasks take milliseconds; a killed worker's stay
// active until their 30 s lease expires).
func OrphanedTasks(t testing.TB, insp *asynq.Inspector, queue string, wait time.Duration) []string {
	t.Helper()
	active := func() []string {
		infos, err := insp.ListActiveTasks(queue, asynq.PageSize(10000))
		require.NoError(t, err)
		var ids []string
		for _, ti := range infos {
			ids = append(ids, ti.ID)
		}
		return ids
	}
	before := active()
	time.Sleep(wait)
	var still []string
	for _, id := range active() {
		if slices.Contains(before, id) {
			still = append(still, id)
		}
	}
	return still
}

var requeuedLine = regexp.MustCompile(`Pushed task id=(\S+) back to queue`)

// RequeuedTasks returns the IDs of the tasks a worker's shutdown pushed back
// to their queue (asynq logs each), from the worker's log.
func RequeuedTasks(log string) []string {
	var ids []string
	for _, m := range requeuedLine.FindAllStringSubmatch(log, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// Handover is a worker stopped mid-batch, for RequireHandedOver.
type Handover struct {
	// Batch is the batch's ID.
	Batch string
	// Worker is the stopped worker's name (WorkerName).
	Worker string
	// Queue and Tasks are the queue and IDs of the tasks it had in flight:
	// OrphanedTasks after a SIGKILL, RequeuedTasks after a SIGTERM.
	Queue string
	Tasks []string
	// Computing are the chunks of Tasks the stopped worker had not
	// committed and could not commit any more when it was stopped (the
	// test held their rows' locks): each must be finished by another worker.
	Computing []int
	// Retried says whether the handover counts a retry: after a SIGKILL
	// asynq's recoverer retries a task whose lease expired, so its chunk
	// finishes on attempt 2 or later (and no other chunk may have been
	// retried); a SIGTERM's shutdown requeues without counting one.
	Retried bool
}

// RequireHandedOver checks, once the batch has ended, that the stopped
// worker had chunk tasks of the batch in flight and that other workers
// completed them: each task is run to success within 3 minutes (asynq
// deletes it then; the stopped worker is gone, so another one ran it), and
// each chunk has succeeded, finished by another worker on the attempt
// h.Retried gives, unless the stopped worker committed it just before it
// stopped (it keeps its name, and the re-run changes nothing). At least one
// chunk, and each of h.Computing, must have been finished by another
// worker: a stop that handed nothing over proves nothing. It returns a
// summary for the scenario's report.
func (bs Batches) RequireHandedOver(t testing.TB, insp *asynq.Inspector, h Handover) string {
	t.Helper()
	var inFlight []int
	for _, tid := range h.Tasks {
		if b, c, ok := batch.ParseChunkTaskID(tid); ok && b == h.Batch {
			inFlight = append(inFlight, c)
		}
	}
	require.NotEmpty(t, inFlight, "worker %s had no chunk task of batch %s in flight when it was stopped (its tasks: %v)",
		h.Worker, h.Batch, h.Tasks)
	for _, c := range h.Computing {
		require.Contains(t, inFlight, c, "chunk %d, computing on %s when it was stopped, is one of its tasks in flight", c, h.Worker)
	}
	Eventually(t, 3*time.Minute, fmt.Sprintf("the chunk tasks %v in flight on %s to be run to success elsewhere", inFlight, h.Worker), func() bool {
		for _, c := range inFlight {
			if _, err := insp.GetTaskInfo(h.Queue, batch.ChunkTaskID(h.Batch, c)); !errors.Is(err, asynq.ErrTaskNotFound) {
				return false
			}
		}
		return true
	})
	runs, err := bs.Store.ChunkRuns(context.Background(), h.Batch)
	require.NoError(t, err)
	elsewhere := 0
	for _, c := range inFlight {
		r := runs[c]
		require.Equal(t, store.ChunkSucceeded, r.Status, "chunk %d, in flight on %s", c, h.Worker)
		if r.Worker == h.Worker {
			require.NotContains(t, h.Computing, c, "chunk %d, computing on %s when it was stopped, was finished by it", c, h.Worker)
			continue
		}
		elsewhere++
		if h.Retried {
			require.GreaterOrEqual(t, r.Attempts, 2, "chunk %d was recovered from %s and retried on %s", c, h.Worker, r.Worker)
		} else {
			require.Equal(t, 1, r.Attempts, "chunk %d was requeued by %s without counting a retry", c, h.Worker)
		}
	}
	require.True(t, elsewhere > 0, "no chunk in flight on %s (%v) was finished by another worker: each was committed before the stop, so nothing was handed over",
		h.Worker, inFlight)
	if h.Retried {
		for c, r := range runs {
			require.True(t, r.Attempts < 2 || slices.Contains(inFlight, c),
				"chunk %d was retried (attempts %d) though %s did not have it in flight", c, r.Attempts, h.Worker)
		}
	}
	slices.Sort(inFlight)
	return fmt.Sprintf("in_flight_on_stopped=%d computing_at_stop=%d finished_elsewhere=%d committed_before_stop=%d chunks=%s",
		len(inFlight), len(h.Computing), elsewhere, len(inFlight)-elsewhere, strings.ReplaceAll(strings.Trim(fmt.Sprint(inFlight), "[]"), " ", ","))
}
