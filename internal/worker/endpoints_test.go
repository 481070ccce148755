package worker

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPprofNeverServesTheCommandLine(t *testing.T) {
	t.Parallel()
	h := endpoints(nil, nil, nil, nil, http.NotFoundHandler(), true)
	for path, want := range map[string]int{
		"/debug/pprof/cmdline":   http.StatusNotFound,
		"/debug/pprof/goroutine": http.StatusOK,
		"/debug/pprof/":          http.StatusOK,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		require.Equal(t, want, rec.Code, path)
		require.NotContains(t, rec.Body.String(), "worker.test", path)
	}
}
