// Package gridbatch is a map of the project: for each rule a batch obeys, the
// one file that holds it today. It has no code; the binaries are in cmd/,
// each connecting to Redis and PostgreSQL through internal/connect/conn.go
// (Open), and CONTRIBUTING.md says where a change goes.
//
// A batch computes a model over every cell of a region as chunk tasks on
// Redis (asynq), run by any number of workers, with its rows and its state in
// PostgreSQL. The rules, each with its file (and, where a second file still
// takes a part of it, that part):
//
// # The kind lock
//
// One running batch per kind: tasks/broker.go (Broker.AcquireLock,
// LockHolder, ReleaseLock). The lock is an asynq task unique per kind,
// processed at the batch's deadline and held for the lock TTL; the same task
// is the deadline timer (tasks/handlers.go ProcessLock calls
// batch.Service.EndTimedOut). batch.Service.Trigger (internal/batch/batch.go)
// takes it and refuses a second batch with a *batch.RefusedError; ending a
// batch releases it (Service.end).
//
// # Classify, retry, split
//
// What becomes of a failed task run (retried, retried uncounted, split in
// halves, dead-lettered): internal/batch/classify.go, batch.Classify, the one
// decider. internal/batch/split.go (Service.ChunkFailed) carries out its
// verdict for a chunk; tasks/handlers.go turns a dead letter into
// asynq.SkipRetry, and the worker's asynq server counts a retry unless
// batch.Counted says not (internal/worker/worker.go).
//
// # Retry delay
//
// How long a retried task waits: tasks/handlers.go, RetryDelay ("linear"
// base·(n+1), "exponential" base·2^n with jitter, capped at 10 minutes;
// GRIDBATCH_RETRY_POLICY, GRIDBATCH_RETRY_BASE). Also: while the database
// breaker is open the wait is the breaker's instead, in
// internal/worker/worker.go (retryDelay).
//
// # Final status
//
// How a batch all of whose cells have an outcome ends, succeeded, partial or
// failed, from its completed and dead-lettered cells:
// internal/store/counters.go, store.FinalStatus, for the end
// (store.FinishBatch) and for the healing after a requeue
// (store.HealEndedBatch) alike. Also: the other ends are given in
// internal/batch/batch.go: timed_out at the deadline (Service.EndTimedOut),
// cancelled by an operator (Service.Cancel), failed at once by fail and
// failFast (an unknown model kind, a database without the schema, the first
// FailFastAfter chunks all failing the same way); held is the quality gate's
// (below).
//
// # Publication and the quality gate
//
// What makes a batch's rows the published values of its kind:
// internal/batch/publish.go, batch.Gate's decide, the only decider: a batch
// that ends succeeded, one a requeue heals to succeeded, a partial one whose
// kind opts in (min_coverage below 1), or an operator's 'enqueuer publish';
// a kind's declared checks must pass, else it ends held. The checks run in
// internal/batch/checks.go (RunChecks) and are declared in
// internal/model/checks.go; the store executes the decision inside the
// transaction that ends, heals or publishes the batch
// (internal/store/publish.go (Ending, publish)).
//
// # Retention
//
// Which ended batches keep their own rows: internal/batch/retain.go,
// batch.Retain, the only decider (every batch the published values still
// show, plus the GRIDBATCH_KEEP_BATCHES newest others per kind; the rest
// lose them). batch.Prune ties it to the store, which reads the candidates
// and the fact whether each still shows (internal/store/publish.go,
// RetentionCandidates) and drops their rows by DROP TABLE
// (internal/store/publish.go, DropBatchRows). It runs from the worker
// holding the reconciler's lease, at most once a minute
// (internal/worker/worker.go, reconcileLoop), and on 'enqueuer prune'
// (cmd/enqueuer/publish.go).
//
// # Dead letters
//
// The dead-letter queue: dlq/dlq.go, package dlq. asynq's archive is the
// DLQ, but capped and silently trimmed, so each archived task is also
// recorded in PostgreSQL (dead_letters), once per task ID and requeue
// generation: by the worker's error handler when a failure is final
// (tasks/handlers.go, HandleError) and by a periodic sweep of the archive
// (dlq/sweep.go). Requeue and purge are dlq/requeue.go; tasks stranded in
// asynq's active list without a lease are dlq/orphans.go. When a failure is
// final is Classify's verdict (above) or asynq's retries running out.
//
// # What is asynq's
//
// asynq delivers the tasks, counts and schedules their retries, archives
// what will not be retried, enforces task IDs and unique tasks, and cancels
// a run at its timeout. Every call by which a batch uses it goes through
// tasks/broker.go (tasks.Broker implements batch.Broker: the lock, the plan
// and chunk tasks with their IDs, retries and timeouts, removing a batch's
// tasks); the task types, queues and payloads are the rest of tasks/, and
// the server's settings (queues, retry delay, what counts as a failure, the
// error handler) are internal/worker/worker.go. What gridbatch keeps itself,
// in PostgreSQL: the batch and chunk states, their outcomes and figures, and
// the durable dead letters.
package gridbatch
