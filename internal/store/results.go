package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// stageTable is a per-connection temporary table the chunk rows are copied
// into with the binary COPY protocol before one upsert moves them. Each
// connection creates it once, on its first WriteChunk (see ensureStage).
const stageTable = "gridbatch_stage"

// stageCreated is the pgconn.CustomData key recording that the connection
// has committed the creation of stageTable.
const stageCreated = "gridbatch.stage_created"

// WriteChunk writes a chunk's series (Values[0] being firstYear's) and records the chunk succeeded, in one
// transaction: COPY into a temporary table, one INSERT … ON CONFLICT DO
// UPDATE into the kind's table, then the chunk's outcome and the batch
// counters. A re-run rewrites the same rows and counts nothing twice. When the
// batch has already ended (cancelled, timed out) nothing is written and the
// returned Transition has BatchRunning false; allowEnded writes anyway (a
// requeued dead letter of an ended batch).
func (s *Store) WriteChunk(ctx context.Context, kind string, step float64, firstYear int, series []grid.Series, o ChunkOutcome, allowEnded bool) (Transition, error) {
	table, err := ResultsTable(kind)
	if err != nil {
		return Transition{}, err
	}
	var t Transition
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return t, err
	}
	defer conn.Release()
	custom := conn.Conn().PgConn().CustomData()
	created := custom[stageCreated] != nil
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if !created {
			// In the transaction, so a rollback also undoes it and the next
			// transaction creates it again.
			if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS `+stageTable+
				` (grid_id bigint, scenario text, series float8[]) ON COMMIT DELETE ROWS`); err != nil {
				return fmt.Errorf("create staging table: %w", err)
			}
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{stageTable}, []string{"grid_id", "scenario", "series"},
			pgx.CopyFromSlice(len(series), func(i int) ([]any, error) {
				return []any{series[i].GridID, series[i].Scenario, float8Array(series[i].Values)}, nil
			}))
		if err != nil {
			return fmt.Errorf("copy %d series: %w", len(series), err)
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO `+table+` (step, grid_id, scenario, first_year, series, batch_id, computed_at)
			SELECT $1, grid_id, scenario, $2, series, $3, now() FROM `+stageTable+`
			ORDER BY grid_id, scenario -- one lock order, so duplicate deliveries never deadlock
			ON CONFLICT (step, grid_id, scenario) DO UPDATE SET
				first_year = EXCLUDED.first_year, series = EXCLUDED.series,
				batch_id = EXCLUDED.batch_id, computed_at = EXCLUDED.computed_at`,
			step, firstYear, o.BatchID)
		if err != nil {
			return fmt.Errorf("upsert into %s: %w", table, err)
		}
		t, err = markChunk(ctx, tx, o, ChunkSucceeded, allowEnded)
		if err != nil {
			return err
		}
		if !t.BatchRunning && !allowEnded {
			return errBatchEnded
		}
		return nil
	})
	if err == nil {
		custom[stageCreated] = true
	}
	if err == errBatchEnded {
		return t, nil
	}
	return t, err
}

var errBatchEnded = fmt.Errorf("batch ended")

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
