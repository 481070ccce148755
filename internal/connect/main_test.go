package connect_test

import (
	"testing"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }
