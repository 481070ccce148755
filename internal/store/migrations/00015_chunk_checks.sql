-- +goose Up
-- What the declared checks of its kind found in a chunk's values, recorded
-- by the worker with the chunk's success, in the transaction that writes
-- its rows (store.ChunkChecks, JSON): the gate adds these up instead of
-- reading the batch's rows again. NULL for a chunk written without checks
-- (or before this migration); the gate then reads the rows.
ALTER TABLE chunk_runs ADD COLUMN checks jsonb;

-- +goose Down
ALTER TABLE chunk_runs DROP COLUMN checks;
