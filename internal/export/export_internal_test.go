package export

// SetNetCDFBlockBytes sets how many bytes of slabs the NetCDF writer
// process holds at once, for tests of its blocks; it returns the old value.
func SetNetCDFBlockBytes(n int) int {
	old := netcdfBlockBytes
	netcdfBlockBytes = n
	return old
}

// SetNetCDFChunks sets whether a compressed NetCDF variable's chunks are
// compressed by the writer (true) or by HDF5 in the writer process (false);
// it returns the old value.
func SetNetCDFChunks(on bool) bool {
	old := netcdfChunks
	netcdfChunks = on
	return old
}
