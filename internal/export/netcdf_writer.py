"""Writes one gridbatch export as NetCDF-4 (CF-1.8), for `enqueuer export`.

Run by internal/export (NetCDFWriter) with Debian's /usr/bin/python3 and
python3-netcdf4 (netCDF4-python over libnetcdf and HDF5); not a file users run.
Protocol, on standard input:
  1. one line of JSON: path, kind, units, long_name, scenarios, first_year,
     years, lat and lon (the cell centres, ascending), lat_bounds and
     lon_bounds (each cell's edges), attributes, chunk_rows (the latitude
     rows of a chunk of the variable, (1, 1, chunk_rows, lon)), compression
     (the deflate level, 0 for none) and chunks (whether the parent would
     send the variable's chunks compressed).
  It answers on standard output, once the file is created, "ready chunks"
  when the parent asked for chunks and this process can write them as they
  are (HDF5's H5Dwrite_chunk, 1.10.3 and later, through ctypes from the
  libhdf5 netCDF4 loaded), "ready rows" otherwise. Then:
  2a. after "ready chunks", frames of three little-endian uint32, the
     chunk's k (scenario * years + year), its first row and its size, then
     its bytes as HDF5's filters (shuffle, deflate) would have made them;
     a chunk that is not sent reads back as the fill value, NaN. A frame of
     size 0xFFFFFFFF, its row len(lat), ends them; then end of file.
  2b. after "ready rows", len(lat) slabs, south to north, each
     len(scenarios)*years*len(lon) little-endian float64 in C order
     (scenario, year, lon), NaN where a cell has no value; then end of
     file. netCDF4 writes them, and HDF5 compresses them.
It exits 0 once the file is complete and closed. Errors go to standard
error; exit 3 means a module is missing.
"""
import ctypes
import datetime
import fcntl
import json
import os
import signal
import struct
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
    try:
        # A pipe of 1 MiB (Linux's F_SETPIPE_SZ, the most it allows without
        # privileges): fewer wake-ups of this process and of the parent.
        fcntl.fcntl(stdin.fileno(), 1031, 1 << 20)
    except OSError:
        pass
    h = json.loads(stdin.readline())
    ns, ny = len(h["scenarios"]), h["years"]
    lat = np.asarray(h["lat"], dtype="f8")
    lon = np.asarray(h["lon"], dtype="f8")
    nlat, nlon = len(lat), len(lon)
    # The variable is chunked (1, 1, rows, lon): a map (one scenario and
    # year) is read back in whole chunks.
    block = int(h["chunk_rows"])
    if not 1 <= block <= nlat:
        raise ValueError("chunk_rows %d: want 1 to %d" % (block, nlat))

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

    chunks = DirectChunks.load() if h.get("chunks") else None
    if chunks is None:
        write_rows(stdin, ds, var, ns, ny, nlat, nlon, block, Writeback(h["path"]))
        return
    ds.close()
    chunks.open(h["path"], h["kind"])
    writeback = Writeback(h["path"])
    sys.stdout.write("ready chunks\n")
    sys.stdout.flush()
    # A chunk is at most its values, in stored blocks (5 bytes a 65535),
    # with the zlib stream's 2-byte header, final block and checksum.
    size = 8 * block * nlon
    most = size + 5 * (-(-size // 65535) + 8) + 8
    head = bytearray(12)
    while True:
        got = read_exactly(stdin, memoryview(head))
        if got != len(head):
            sys.stderr.write("input ended before its last chunk\n")
            sys.exit(1)
        k, r0, n = struct.unpack("<III", head)
        if n == 0xFFFFFFFF:
            if r0 != nlat:
                sys.stderr.write("input ended at latitude row %d of %d\n" % (r0, nlat))
                sys.exit(1)
            break
        if k >= ns * ny or r0 >= nlat or r0 % block or n > most:
            sys.stderr.write("a chunk of %d bytes at %d, row %d: not one of the variable's\n" % (n, k, r0))
            sys.exit(1)
        data = stdin.read(n)
        if len(data) != n:
            sys.stderr.write("input ended in the chunk at %d, row %d\n" % (k, r0))
            sys.exit(1)
        chunks.write((k // ny, k % ny, r0, 0), data)
        writeback.wrote(n)
    if stdin.read(1):
        sys.stderr.write("more input after the last chunk\n")
        sys.exit(1)
    chunks.close()
    writeback.close()


def write_rows(stdin, ds, var, ns, ny, nlat, nlon, block, writeback):
    """Reads the slabs and writes them with netCDF4, a block of latitude rows
    (a chunk's) at once, laid out as the variable is."""
    # Writes are whole chunks: no cache needed.
    var.set_var_chunk_cache(size=0, nelems=0)
    sys.stdout.write("ready rows\n")
    sys.stdout.flush()
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
        writeback.wrote(part.nbytes)
    if stdin.read(1):
        sys.stderr.write("more input than %d latitude rows\n" % nlat)
        sys.exit(1)
    ds.close()
    writeback.close()


class Writeback:
    """Starts the kernel writing the file to disk every 32 MiB written
    (Linux's sync_file_range, SYNC_FILE_RANGE_WRITE: it does not wait), so
    that the parent's fsync at the end finds little left to write, and the
    disk works while the rest is computed. Without sync_file_range, it does
    nothing."""

    EVERY = 32 << 20

    def __init__(self, path):
        self.fd, self.pending = None, 0
        try:
            libc = ctypes.CDLL(None)
            self.sync = libc.sync_file_range
            self.sync.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            self.fd = os.open(path, os.O_RDONLY)
        except (OSError, AttributeError):
            pass

    def wrote(self, n):
        self.pending += n
        if self.fd is not None and self.pending >= self.EVERY:
            self.sync(self.fd, 0, 0, 2)  # SYNC_FILE_RANGE_WRITE, the whole file
            self.pending = 0

    def close(self):
        if self.fd is not None:
            os.close(self.fd)


class DirectChunks:
    """Writes the variable's chunks as they are, with HDF5's H5Dwrite_chunk."""

    @classmethod
    def load(cls):
        """The libhdf5 this process loaded (netCDF4's), or None when there is
        none with H5Dwrite_chunk (HDF5 1.10.3 and later)."""
        path = None
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    name = line.rstrip("\n").split(" ")[-1]
                    base = os.path.basename(name)
                    if base.startswith("libhdf5") and "_hl" not in base and ".so" in base:
                        path = name
                        break
        except OSError:
            return None
        if path is None:
            return None
        try:
            lib = ctypes.CDLL(path)
            v = [ctypes.c_uint() for _ in range(3)]
            if lib.H5get_libversion(*map(ctypes.byref, v)) < 0 or tuple(x.value for x in v) < (1, 10, 3):
                return None
            hid, herr = ctypes.c_int64, ctypes.c_int
            lib.H5Fopen.argtypes, lib.H5Fopen.restype = [ctypes.c_char_p, ctypes.c_uint, hid], hid
            lib.H5Dopen2.argtypes, lib.H5Dopen2.restype = [hid, ctypes.c_char_p, hid], hid
            lib.H5Dwrite_chunk.argtypes = [hid, hid, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t, ctypes.c_char_p]
            lib.H5Dwrite_chunk.restype = herr
            lib.H5Dclose.argtypes, lib.H5Dclose.restype = [hid], herr
            lib.H5Fclose.argtypes, lib.H5Fclose.restype = [hid], herr
        except (OSError, AttributeError):
            return None
        c = cls()
        c.lib = lib
        return c

    def open(self, path, name):
        self.file = self.lib.H5Fopen(path.encode(), 1, 0)  # H5F_ACC_RDWR, H5P_DEFAULT
        if self.file < 0:
            raise OSError("HDF5 cannot open %s" % path)
        self.dset = self.lib.H5Dopen2(self.file, name.encode(), 0)
        if self.dset < 0:
            raise OSError("HDF5 cannot open the variable %s of %s" % (name, path))

    def write(self, offset, data):
        off = (ctypes.c_uint64 * 4)(*offset)
        # Filter mask 0: every filter of the variable's (shuffle, deflate) was applied.
        if self.lib.H5Dwrite_chunk(self.dset, 0, 0, off, len(data), data) < 0:
            raise OSError("HDF5 cannot write the chunk at %s" % (offset,))

    def close(self):
        if self.lib.H5Dclose(self.dset) < 0 or self.lib.H5Fclose(self.file) < 0:
            raise OSError("HDF5 cannot close the file")


if __name__ == "__main__":
    main()
