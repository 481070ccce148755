package store

import "testing"

// IDRuns exports idRuns to the tests.
var IDRuns = idRuns

// SetCellSlabBytes sets the size of CellReader's slabs until the test ends.
func SetCellSlabBytes(t testing.TB, n int) {
	old := cellSlabBytes
	cellSlabBytes = n
	t.Cleanup(func() { cellSlabBytes = old })
}
