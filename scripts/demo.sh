#!/usr/bin/env bash
# demo.sh — the main job end to end on the local services (called by `make demo`, which
# starts the services and builds bin/ first): migrate, seed the 0.05° Korea grid, start two
# workers, run a ph batch with --wait (which prints its summary), stop the workers, and print
# the lines to paste to reach these services and the next commands (scripts/demo-next.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin
logs=.services/demo
mkdir -p "$logs"

"$bin/enqueuer" migrate
"$bin/enqueuer" seed --bbox 124,33,132,39 --step 0.05

pids=()
stop_workers() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop_workers EXIT
for i in 1 2; do
	GRIDBATCH_HTTP_ADDR=127.0.0.1:$((18080 + i)) GRIDBATCH_LOG_FORMAT=text "$bin/worker" >"$logs/worker$i.log" 2>&1 &
	pids+=($!)
done
echo "demo: 2 workers started (logs in $logs/), health on http://127.0.0.1:18081/healthz and :18082" >&2

# run --wait prints the batch's summary (on stderr) when it ends.
status=0
id=$("$bin/enqueuer" run --kind ph --bbox 124,33,132,39 --step 0.05 --wait --progress-interval 2s | head -1) || status=$?
echo >&2
echo "demo: batch $id ended; one cell's P(H) series (Seoul, ssp245), first lines:" >&2
"$bin/enqueuer" results --batch "$id" --scenario ssp245 --lat 37.5665 --lon 126.978 | head -5
echo
scripts/demo-next.sh "$id"
exit "$status"
