"""Writes one gridbatch export as NetCDF-4 (CF-1.8), for `enqueuer export`.

Run by internal/export (NetCDFWriter) with Debian's /usr/bin/python3 and
python3-netcdf4 (netCDF4-python over libnetcdf and HDF5); not a file users run.
Protocol, on standard input:
  1. one line of JSON: path, kind, units, long_name, scenarios, first_year,
     years, lat and lon (the cell centres, ascending), lat_bounds and
     lon_bounds (each cell's edges), attributes, block_bytes (how much of
     the slabs to hold and write at once) and compression (the zlib level,
     0 for none);
  2. len(lat) slabs, south to north, each len(scenarios)*years*len(lon)
     little-endian float64 in C order (scenario, year, lon), NaN where a
     cell has no value; then end of file.
It answers "ready" on standard output once the file is created, and exits 0
once the file is complete and closed. Errors go to standard error; exit 3
means a module is missing.
"""
import datetime
import json
import signal
import sys

# The parent stops this process (SIGKILL) on an interrupt and removes the file.
signal.signal(signal.SIGINT, signal.SIG_IGN)

try:
    import numpy as np
    import netCDF4
except ImportError as e:
    sys.stderr.write("missing module %s: %s\n" % (e.name, e))
    sys.exit(3)

def read_exactly(f, view):
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            return got
        got += n
    return got


def main():
    stdin = sys.stdin.buffer
    h = json.loads(stdin.readline())
    ns, ny = len(h["scenarios"]), h["years"]
    lat = np.asarray(h["lat"], dtype="f8")
    lon = np.asarray(h["lon"], dtype="f8")
    nlat, nlon = len(lat), len(lon)
    row_values = ns * ny * nlon
    # A block of latitude rows (block_bytes of them at most) is written at
    # once; the variable is chunked the same way, (1, 1, rows, lon), which is
    # also how a map (one scenario and year) is read back. The rows of a
    # chunk divide the grid's as evenly as they can: the last chunk is not
    # mostly padding.
    most = max(1, min(nlat, h["block_bytes"] // (8 * row_values)))
    chunks = -(-nlat // most)
    block = -(-nlat // chunks)

    ds = netCDF4.Dataset(h["path"], "w", format="NETCDF4")
    ds.set_fill_on()
    ds.Conventions = "CF-1.8"
    ds.title = "%s computed by gridbatch" % (h.get("long_name") or h["kind"])
    for k, v in sorted(h["attributes"].items()):
        ds.setncattr(k, v)

    ds.createDimension("scenario", ns)
    ds.createDimension("time", ny)
    ds.createDimension("lat", nlat)
    ds.createDimension("lon", nlon)
    ds.createDimension("bnds", 2)

    v = ds.createVariable("scenario", str, ("scenario",))
    v.long_name = "scenario"
    for i, s in enumerate(h["scenarios"]):
        v[i] = s
    # CF time: one value a year, at its middle, with bounds covering it.
    first = h["first_year"]
    epoch = datetime.date(first, 1, 1)
    edges = np.array([(datetime.date(first + i, 1, 1) - epoch).days for i in range(ny + 1)], dtype="f8")
    v = ds.createVariable("time", "f8", ("time",))
    v.units = "days since %04d-01-01 00:00:00" % first
    v.calendar = "proleptic_gregorian"
    v.standard_name, v.long_name, v.axis, v.bounds = "time", "time (middle of the year)", "T", "time_bnds"
    v[:] = (edges[:-1] + edges[1:]) / 2
    v = ds.createVariable("time_bnds", "f8", ("time", "bnds"))
    v[:] = np.stack([edges[:-1], edges[1:]], axis=1)
    v = ds.createVariable("year", "i4", ("time",))
    v.long_name = "year"
    v[:] = np.arange(first, first + ny, dtype="i4")
    v = ds.createVariable("lat", "f8", ("lat",))
    v.units, v.standard_name, v.long_name, v.axis = "degrees_north", "latitude", "latitude of the cell centre", "Y"
    v.bounds = "lat_bnds"
    v[:] = lat
    v = ds.createVariable("lat_bnds", "f8", ("lat", "bnds"))
    v[:] = np.asarray(h["lat_bounds"], dtype="f8").reshape(nlat, 2)
    v = ds.createVariable("lon", "f8", ("lon",))
    v.units, v.standard_name, v.long_name, v.axis = "degrees_east", "longitude", "longitude of the cell centre", "X"
    v.bounds = "lon_bnds"
    v[:] = lon
    v = ds.createVariable("lon_bnds", "f8", ("lon", "bnds"))
    v[:] = np.asarray(h["lon_bounds"], dtype="f8").reshape(nlon, 2)
    v = ds.createVariable("crs", "i4")
    v.grid_mapping_name = "latitude_longitude"
    v.longitude_of_prime_meridian = 0.0
    v.semi_major_axis = 6378137.0
    v.inverse_flattening = 298.257223563

    level = int(h.get("compression") or 0)
    var = ds.createVariable(h["kind"], "f8", ("scenario", "time", "lat", "lon"),
                            fill_value=np.nan, chunksizes=(1, 1, block, nlon),
                            zlib=level > 0, complevel=level if level > 0 else 4, shuffle=level > 0)
    if h.get("units"):
        var.units = h["units"]
    if h.get("long_name"):
        var.long_name = h["long_name"]
    var.grid_mapping = "crs"
    var.coordinates = "year"
    # Writes are whole chunks: no cache needed.
    var.set_var_chunk_cache(size=0, nelems=0)
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    # Each latitude row is read into row, then placed in block, laid out as
    # the variable is: a whole block is written without another copy.
    row = np.empty((ns, ny, nlon), dtype="<f8")
    raw = memoryview(row).cast("B")
    buf = np.empty((ns, ny, block, nlon), dtype="f8")
    for r0 in range(0, nlat, block):
        n = min(block, nlat - r0)
        for i in range(n):
            if read_exactly(stdin, raw) != len(raw):
                sys.stderr.write("input ended at latitude row %d of %d\n" % (r0 + i, nlat))
                sys.exit(1)
            buf[:, :, i, :] = row
        part = buf[:, :, :n, :]
        if np.isnan(part).all():
            continue  # unwritten chunks read back as the fill value, NaN
        var[:, :, r0:r0 + n, :] = part
    if stdin.read(1):
        sys.stderr.write("more input than %d latitude rows\n" % nlat)
        sys.exit(1)
    ds.close()


if __name__ == "__main__":
    main()
