package store

// IDRuns exports idRuns to the tests.
var IDRuns = idRuns
