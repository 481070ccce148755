package store

import (
	"context"
	"time"
)

// DeadLetter is a dead_letters row: a task that reached asynq's archive.
type DeadLetter struct {
	TaskID     string     `json:"task_id"`
	Type       string     `json:"type"`
	Queue      string     `json:"queue"`
	BatchID    *string    `json:"batch_id"`
	Chunk      *int       `json:"chunk"`
	Payload    []byte     `json:"payload"`
	LastError  string     `json:"last_error"`
	Retries    int        `json:"retries"`
	FailedAt   time.Time  `json:"failed_at"`
	RequeuedAt *time.Time `json:"requeued_at"`
	RecordedAt time.Time  `json:"recorded_at"`
}

// RecordDeadLetter stores d once per task ID; it reports whether d was new.
func (s *Store) RecordDeadLetter(ctx context.Context, d DeadLetter) (bool, error) {
	tag, err := s.Pool.Exec(ctx, `
		INSERT INTO dead_letters (task_id, task_type, queue, batch_id, chunk, payload, last_error, retries, failed_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (task_id) DO NOTHING`,
		d.TaskID, d.Type, d.Queue, d.BatchID, d.Chunk, d.Payload, d.LastError, d.Retries, d.FailedAt)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}
