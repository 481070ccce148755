package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// WriteChunk writes a chunk's series (Values[0] being firstYear's) into its
// batch's own table and records the chunk succeeded, in one transaction:
// binary COPY straight into the table (no staging table, no upsert, no
// index to maintain), then the chunk's outcome. The chunk's row lock orders
// duplicate deliveries of the task (at-least-once): the second waits for
// the first, then finds the chunk succeeded and writes nothing, so each row
// is stored once. When the batch has already ended (cancelled, timed out)
// nothing is written and the returned Transition has BatchRunning false;
// allowEnded writes anyway (a requeued dead letter of an ended batch). The
// Transition's counts are read after the commit.
func (s *Store) WriteChunk(ctx context.Context, kind string, step float64, firstYear int, series []grid.Series, o ChunkOutcome, allowEnded bool) (Transition, error) {
	var t Transition
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var table string
		var err error
		t, table, err = lockBatchForChunk(ctx, tx, o.BatchID)
		if err != nil || (!t.BatchRunning && !allowEnded) {
			return err
		}
		if table == "" {
			return fmt.Errorf("%w: %s has no table for its rows (retention dropped them, or it started before the schema had them): run it again",
				ErrBatchNotFound, o.BatchID)
		}
		var status string
		err = tx.QueryRow(ctx, `SELECT status FROM chunk_runs WHERE batch_id = $1 AND chunk = $2 FOR UPDATE`, o.BatchID, o.Chunk).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s has no chunk %d", ErrBatchNotFound, o.BatchID, o.Chunk)
		}
		if err != nil {
			return fmt.Errorf("lock chunk %d of %s: %w", o.Chunk, o.BatchID, err)
		}
		if status != ChunkPending && status != ChunkFailed {
			return nil // done already (a duplicate delivery), or timed out or cancelled
		}
		fy := int16(firstYear)
		_, err = tx.CopyFrom(ctx, pgx.Identifier{table}, []string{"step", "grid_id", "scenario", "first_year", "series"},
			pgx.CopyFromSlice(len(series), func(i int) ([]any, error) {
				return []any{step, series[i].GridID, series[i].Scenario, fy, float8Array(series[i].Values)}, nil
			}))
		if err != nil {
			return fmt.Errorf("copy %d series into %s: %w", len(series), table, err)
		}
		t, err = markChunk(ctx, tx, o, ChunkSucceeded, allowEnded)
		return err
	})
	if err == nil && t.Changed {
		err = s.countChunks(ctx, o.BatchID, &t, false)
	}
	return t, err
}

// float8Array is a series as WriteChunk copies it: float8Codec encodes it in
// PostgreSQL's binary array format directly. pgx's generic array encoder
// boxes every element into an interface (an allocation per value), which
// was a fifth of a chunk task's CPU.
type float8Array []float64

// float8ArrayCodec is pgx's float8[] codec with the fast path for
// float8Array; everything else goes to the wrapped codec. Open registers it
// on every connection.
type float8ArrayCodec struct{ pgtype.Codec }

// PlanEncode implements pgtype.Codec.
func (c float8ArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if _, ok := value.(float8Array); ok && format == pgtype.BinaryFormatCode {
		return encodeFloat8Array{}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

type encodeFloat8Array struct{}

// Encode appends a one-dimensional float8[] without NULLs in the binary
// format of array_recv: ndim, has-null flag, element type, then the length
// and lower bound of the dimension, then each element's length and bits. A
// nil slice is SQL NULL, as in pgx.
func (encodeFloat8Array) Encode(value any, buf []byte) ([]byte, error) {
	a := value.(float8Array)
	if a == nil {
		return nil, nil
	}
	buf = slices.Grow(buf, 20+12*len(a))
	buf = binary.BigEndian.AppendUint32(buf, 1) // ndim
	buf = binary.BigEndian.AppendUint32(buf, 0) // no NULLs
	buf = binary.BigEndian.AppendUint32(buf, pgtype.Float8OID)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(a)))
	buf = binary.BigEndian.AppendUint32(buf, 1) // lower bound
	for _, v := range a {
		buf = binary.BigEndian.AppendUint32(buf, 8)
		buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(v))
	}
	return buf, nil
}

// registerCodecs installs gridbatch's codecs on a connection's type map.
func registerCodecs(m *pgtype.Map) {
	if t, ok := m.TypeForOID(pgtype.Float8ArrayOID); ok {
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: float8ArrayCodec{t.Codec}})
	}
}
