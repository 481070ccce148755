package export

// SetNetCDFBlockBytes sets how many bytes of slabs the NetCDF writer
// process holds at once, for tests of its blocks; it returns the old value.
func SetNetCDFBlockBytes(n int) int {
	old := netcdfBlockBytes
	netcdfBlockBytes = n
	return old
}
