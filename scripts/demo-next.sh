#!/usr/bin/env bash
# demo-next.sh — the lines `make demo` ends with (scripts/demo.sh runs this), printed on
# standard output: shell lines to paste that reach the demo's services from any shell (PATH
# and the two URLs with the password), the monitor's command and URL, and the next three
# commands to try on the batch. A test runs these lines in a fresh shell (env -i bash -c).
#
#   scripts/demo-next.sh BATCH_ID
#
# Environment (all optional): GRIDBATCH_REDIS_PORT (6390), GRIDBATCH_PG_PORT (5440), as for
# scripts/services.sh; GRIDBATCH_BIN_DIR (<repo>/bin), where `make build` puts the binaries.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
id=${1:?usage: scripts/demo-next.sh BATCH_ID}
bin=${GRIDBATCH_BIN_DIR:-$root/bin}

q() { printf '%q' "$1"; }

echo "# To use the demo's services from any shell, paste these lines:"
echo "export PATH=$(q "$bin"):\"\$PATH\""
"$root/scripts/services.sh" env
echo "# The monitor (no login, this machine only): run it, then open http://127.0.0.1:8080/"
echo "#   monitor --insecure-no-auth --addr 127.0.0.1:8080 &"
echo "# Then try:"
echo "enqueuer status $(q "$id")"
echo "enqueuer results --batch $(q "$id") --scenario ssp245 --lat 37.5665 --lon 126.978 | head -5"
echo "enqueuer export --batch $(q "$id") --out ph.nc"
