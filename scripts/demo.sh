#!/usr/bin/env bash
# demo.sh — the main job, end to end on the local services (called by `make demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin
"$bin/enqueuer" migrate
echo "demo: the schema is ready. The batch pipeline (seed, workers, run) is the next issue; demo stops here." >&2
