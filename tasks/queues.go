// Package tasks is gridbatch's task contract: the queues, the task types,
// their payloads and constructors, and the handlers that run them.
package tasks

// The asynq queues. Workers serve both; chunk tasks go to QueueGrid and the
// per-batch control tasks (plan, deadline/lock) to QueueBatch.
const (
	QueueGrid  = "grid"
	QueueBatch = "batch"
)

// Queues maps each queue to its asynq priority weight: control tasks are few
// and must not wait behind thousands of chunks.
var Queues = map[string]int{QueueBatch: 6, QueueGrid: 4}

// QueueNames returns both queues, grid first: the queues whose archives the
// dead-letter queue sweeps (dlq.Config.Queues).
func QueueNames() []string { return []string{QueueGrid, QueueBatch} }
