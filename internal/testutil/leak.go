package testutil

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// VerifyTestMain runs the package's tests, closes the shared admin pool
// (the one pool NewDB and NewEmptyDB use for the whole test binary), then
// fails the test binary when a goroutine is left running, beside the ones
// opts ignore (goleak). Everything a test opens must be closed by the time
// it ends: a pool's health check, a Redis client's connections or an asynq
// server's loops left behind fail the package. Call it from TestMain.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	closeAdmin()
	if code == 0 {
		if err := goleak.Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: Errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
