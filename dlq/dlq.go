// Package dlq is gridbatch's dead-letter queue: every task that reaches
// asynq's archive is recorded durably in PostgreSQL (dead_letters), since
// the archive itself is capped and trims silently.
package dlq

import (
	"context"
	"fmt"

	"github.com/gridbatch/gridbatch/internal/store"
)

// Record stores a dead letter once per task ID and reports whether it was new.
func Record(ctx context.Context, st *store.Store, d store.DeadLetter) (bool, error) {
	ok, err := st.RecordDeadLetter(ctx, d)
	if err != nil {
		return false, fmt.Errorf("record dead letter %s: %w", d.TaskID, err)
	}
	return ok, nil
}
