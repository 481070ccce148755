// Package grid is the pure core of gridbatch: the global lattice of cells, the
// bounding box that selects a region of it, the chunking of a region into
// batch tasks, and the model kernels that turn a cell's GEV parameters into
// 80-year series per warming scenario.
//
// The package does no I/O: no Redis, no SQL, no network. Everything in it is
// deterministic and safe for concurrent use, except Register, which is meant
// to be called from init functions.
package grid
