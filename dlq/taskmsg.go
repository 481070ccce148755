package dlq

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// taskMsg is the part of asynq's task message (the protobuf TaskMessage of
// asynq/internal/proto/asynq.proto, stored in the "msg" field of a task's
// hash) the dead-letter queue reads. asynq keeps its codec internal, so the
// fields are read with protowire by their numbers, which asynq's
// compatibility depends on as much as ours.
type taskMsg struct {
	Type         string // 1
	Payload      []byte // 2
	ID           string // 3
	Queue        string // 4
	Retry        int    // 5: the task's max retry
	Retried      int    // 6
	ErrorMsg     string // 7
	LastFailedAt int64  // 11: Unix seconds
}

// TaskMessage field numbers.
const (
	fieldType         protowire.Number = 1
	fieldPayload      protowire.Number = 2
	fieldID           protowire.Number = 3
	fieldQueue        protowire.Number = 4
	fieldRetry        protowire.Number = 5
	fieldRetried      protowire.Number = 6
	fieldErrorMsg     protowire.Number = 7
	fieldLastFailedAt protowire.Number = 11
)

// decodeTaskMsg reads an encoded TaskMessage; unknown fields are skipped.
func decodeTaskMsg(b []byte) (taskMsg, error) {
	var m taskMsg
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return m, fmt.Errorf("decode asynq task message: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == fieldType || num == fieldPayload || num == fieldID || num == fieldQueue || num == fieldErrorMsg):
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			switch num {
			case fieldType:
				m.Type = string(v)
			case fieldPayload:
				m.Payload = append([]byte(nil), v...)
			case fieldID:
				m.ID = string(v)
			case fieldQueue:
				m.Queue = string(v)
			case fieldErrorMsg:
				m.ErrorMsg = string(v)
			}
		case typ == protowire.VarintType && (num == fieldRetry || num == fieldRetried || num == fieldLastFailedAt):
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			switch num {
			case fieldRetry:
				m.Retry = int(int32(v))
			case fieldRetried:
				m.Retried = int(int32(v))
			case fieldLastFailedAt:
				m.LastFailedAt = int64(v)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return m, fmt.Errorf("decode asynq task message field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return m, nil
}

// failTaskMsg returns the encoded message b with retried, the error message
// and the failure time replaced, every other field kept byte for byte: what
// asynq's RDB.Retry and RDB.Archive store when a task fails.
func failTaskMsg(b []byte, retried int, errMsg string, failedAt int64) ([]byte, error) {
	out := make([]byte, 0, len(b)+len(errMsg)+16)
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, fmt.Errorf("decode asynq task message: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return nil, fmt.Errorf("decode asynq task message field %d: %w", num, protowire.ParseError(m))
		}
		if num != fieldRetried && num != fieldErrorMsg && num != fieldLastFailedAt {
			out = append(out, rest[:n+m]...)
		}
		rest = rest[n+m:]
	}
	if retried != 0 {
		out = protowire.AppendTag(out, fieldRetried, protowire.VarintType)
		out = protowire.AppendVarint(out, uint64(int64(int32(retried))))
	}
	if errMsg != "" {
		out = protowire.AppendTag(out, fieldErrorMsg, protowire.BytesType)
		out = protowire.AppendString(out, errMsg)
	}
	if failedAt != 0 {
		out = protowire.AppendTag(out, fieldLastFailedAt, protowire.VarintType)
		out = protowire.AppendVarint(out, uint64(failedAt))
	}
	return out, nil
}
