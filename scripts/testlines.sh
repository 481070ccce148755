#!/usr/bin/env bash
# testlines.sh — pass `go test -v` output through, keeping the exit status of go test
# (read from PIPESTATUS by the caller's pipefail) and printing the scenario lines
# ("SCENARIO ...") again at the end so they are easy to find.
set -uo pipefail
tmp=$(mktemp)
tee "$tmp"
if grep -q '^SCENARIO ' "$tmp"; then
	echo
	echo "== scenario summary =="
	grep '^SCENARIO ' "$tmp"
fi
rm -f "$tmp"
