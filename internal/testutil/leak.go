package testutil

import (
	"testing"

	"go.uber.org/goleak"
)

// VerifyTestMain runs the package's tests, then fails the test binary when a
// goroutine is left running (goleak), beside the ones opts ignore. It always
// ignores the health check of the shared admin pool, which lives for the
// whole test process. Call it from TestMain.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, append(opts,
		goleak.IgnoreTopFunction("github.com/jackc/pgx/v5/pgxpool.(*Pool).backgroundHealthCheck"))...)
}
