package process

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/model"
)

// TestReadFrameChecksLengthsFirst: a header claiming more meta than maxMeta
// or more data than its reader allows is refused before anything is read
// or allocated; within the bounds the frame is read.
func TestReadFrameChecksLengthsFirst(t *testing.T) {
	t.Parallel()
	header := func(metaLen uint32, dataLen uint64) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint32(b[0:], frameResult)
		binary.LittleEndian.PutUint32(b[4:], metaLen)
		binary.LittleEndian.PutUint64(b[8:], dataLen)
		return b
	}
	for _, tc := range []struct {
		name    string
		meta    uint32
		data    uint64
		maxData uint64
		want    string
	}{
		{"meta over 16 KiB", 1 << 30, 0, 0, "RESULT frame claims 1073741824 bytes of meta; at most 16384 allowed"},
		{"data over its request", 2, 6 << 30, 19200, "RESULT frame claims 6442450944 bytes of data; at most 19200 allowed"},
		{"data on a frame that carries none", 2, 8, 0, "RESULT frame claims 8 bytes of data; at most 0 allowed"},
		{"the largest uint64", 2, 1<<64 - 1, 19200, "RESULT frame claims 18446744073709551615 bytes of data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := readFrame(bytes.NewReader(header(tc.meta, tc.data)), nil, tc.maxData)
			var se *sizeError
			require.True(t, errors.As(err, &se), "%v", err)
			require.ErrorContains(t, err, tc.want)
		})
	}
	in := append(header(2, 16), []byte("{}0123456789abcdef")...)
	f, err := readFrame(bytes.NewReader(in), nil, 16)
	require.NoError(t, err)
	require.Equal(t, "{}", string(f.meta))
	require.Equal(t, "0123456789abcdef", string(f.data))
}

// TestModelEnvIsAnAllowList: nothing of the worker's environment but the
// allow-list; HOME and the protocol's variables set; the entry's env last,
// overriding.
func TestModelEnvIsAnAllowList(t *testing.T) {
	t.Parallel()
	worker := []string{"GRIDBATCH_DATABASE_URL=postgres://u:pw@db/x", "GRIDBATCH_REDIS_URL=redis://:pw@r", "AWS_SECRET_ACCESS_KEY=k",
		"PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8", "LC_NUMERIC=de_DE", "TZ=Asia/Seoul", "HOME=/root", "PYTHONPATH=/opt/sdk", "LD_PRELOAD=/x.so"}
	spec := model.Spec{Kind: "k", Env: map[string]string{"OMP_NUM_THREADS": "1", "TZ": "UTC"}}
	require.Equal(t, []string{"PATH=/opt/bin:/usr/bin", "LANG=C.UTF-8", "LC_NUMERIC=de_DE", "PYTHONPATH=/opt/sdk",
		"HOME=/tmp/h", "GRIDBATCH_MODEL_FDS=3,4", "GRIDBATCH_MODEL_KIND=k", "GRIDBATCH_MODEL_PROTOCOL=1", "OMP_NUM_THREADS=1", "TZ=UTC"},
		modelEnv(spec, "/tmp/h", worker))
	require.Equal(t, []string{"PATH=" + defaultPath, "HOME=/h", "GRIDBATCH_MODEL_FDS=3,4", "GRIDBATCH_MODEL_KIND=k",
		"GRIDBATCH_MODEL_PROTOCOL=1"}, modelEnv(model.Spec{Kind: "k"}, "/h", nil), "a worker without PATH")
	require.Equal(t, []string{"PATH=" + defaultPath, "GRIDBATCH_MODEL_FDS=3,4", "GRIDBATCH_MODEL_KIND=k",
		"GRIDBATCH_MODEL_PROTOCOL=1"}, modelEnv(model.Spec{Kind: "k"}, "", []string{"HOME=/root"}), "no HOME of its own: none")
}
