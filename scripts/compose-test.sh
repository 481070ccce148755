#!/usr/bin/env bash
# make compose-test: docker-compose.yml and deploy/k8s/base, really run.
#
# On a Debian 12 machine as root (no Docker engine and no container registry
# needed), this script:
#   1. installs podman, runc, catatonit and mmdebstrap if missing, and
#      configures podman for this host in a store of its own;
#   2. builds docker compose (v2, pinned) from the Go module proxy;
#   3. builds stand-ins for the base images (deploy/images/, tagged with the
#      upstream names) where no registry is reachable;
#   4. follows README.md, "Running with docker compose": up -d --build, seed,
#      a ph and a ph_py batch, results, the monitor's auth, --scale worker=4;
#   5. faults: a worker container SIGKILLed with chunk tasks in flight, the
#      PostgreSQL container restarted mid-batch, a model process hung past its
#      timeout in a worker container; then down -v leaves nothing;
#   6. plays the rendered deploy/k8s/base with `podman kube play` until a batch
#      succeeds on 2 worker replicas (during step 5's wait for asynq to hand a
#      killed worker's tasks over, which is otherwise idle for 60-125 s).
#
# It works in a copy of the checkout (your .env is never touched), cleans up
# on every exit, and bounds every wait. Caches between runs (compose binary,
# base tarball, podman's images and build cache) live in
# GRIDBATCH_COMPOSE_CACHE (default /var/cache/gridbatch-compose); deleting it
# makes the next run start from nothing.
#
# Usage: scripts/compose-test.sh [all|compose|k8s]   (default all)
#
# Environment:
#   GRIDBATCH_COMPOSE_CACHE         the cache directory
#   GRIDBATCH_COMPOSE_MONITOR_PORT  host port of the monitor (default 18480)
#   GRIDBATCH_COMPOSE_KEEP=1        leave the containers up on exit (debugging)
#   GRIDBATCH_DEBIAN_MIRROR         Debian mirror of the base image (default http://deb.debian.org)
set -Eeuo pipefail

what=${1:-all}
case $what in all | compose | k8s) ;; *)
	echo "usage: $0 [all|compose|k8s]" >&2
	exit 2
	;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRIDBATCH_COMPOSE_CACHE:-/var/cache/gridbatch-compose}
run=/run/gridbatch-compose-test
monitor_port=${GRIDBATCH_COMPOSE_MONITOR_PORT:-18480}
mirror=${GRIDBATCH_DEBIAN_MIRROR:-http://deb.debian.org}
compose_version=v2.40.3
compose_bin=$cache/bin/docker-compose-$compose_version
t0=$(date +%s)

log() { printf '== %s [%ds] %s\n' "$(date -u +%H:%M:%S)" $(($(date +%s) - t0)) "$*"; }
fail() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

if [ "$(id -u)" != 0 ]; then
	fail "compose-test needs root (podman with its own store, apt-get)"
fi

# ---------------------------------------------------------------- packages
# netavark (podman's network stack) runs iptables: without it a build's RUN fails with
# "netavark: No such file or directory (os error 2)" (seen on a fresh machine).
need=()
for c in podman:podman runc:runc catatonit:catatonit mmdebstrap:mmdebstrap \
	/usr/lib/podman/netavark:netavark /usr/lib/podman/aardvark-dns:aardvark-dns \
	iptables:iptables \
	jq:jq curl:curl /usr/lib/python3/dist-packages/yaml:python3-yaml kubectl:kubernetes-client; do
	command -v "${c%%:*}" >/dev/null 2>&1 || [ -e "${c%%:*}" ] || need+=("${c#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
	log "apt-get install ${need[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${need[@]}" </dev/null
fi
command -v go >/dev/null || fail "go is needed (the golang stand-in image and docker compose are built with it)"

# ---------------------------------------------------------------- podman, in a store of its own
mkdir -p "$cache"/{bin,base,storage,networks,tmp} "$run"
cat >"$cache/containers.conf" <<EOF
[containers]
# No CAP_SYS_RESOURCE on this kind of VM: podman's default rlimits cannot be set.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
# crun refuses a hybrid cgroup layout (hugetlb on the cgroup2 mount); runc copes.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$run/libpod"
[network]
network_config_dir = "$cache/networks"
EOF
cat >"$cache/storage.conf" <<EOF
[storage]
driver = "overlay"
runroot = "$run/storage"
graphroot = "$cache/storage"
EOF
export CONTAINERS_CONF=$cache/containers.conf CONTAINERS_STORAGE_CONF=$cache/storage.conf
export TMPDIR=$cache/tmp # buildah's RUN --mount=type=cache directories live here: kept between runs
export DOCKER_HOST=unix://$run/podman.sock DOCKER_BUILDKIT=0 COMPOSE_BAKE=false
unset DOCKER_CONFIG COMPOSE_FILE COMPOSE_PROJECT_NAME COMPOSE_PROFILES

# A process of an earlier run (its pid file) is stopped; nothing else is.
stop_pidfile() {
	local f=$1 pid
	[ -s "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

# kill_tree PID: the process and all its descendants (a background build's
# go and compile processes are not in a group of their own).
kill_tree() {
	local c
	for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
	kill "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- docker compose v2, from the module proxy
# Pinned: v2 has the classic builder podman's API serves (v5 dropped it).
# `go install …@version` refuses the module (its go.mod has exclude
# directives), so: download it, build ./cmd in a copy. From nothing, it is
# the longest step (mostly compiling), so it runs in the background while the
# base images and the project's images are built; need_compose waits for it.
build_compose() {
	local gowork=$cache/tmp/compose-build dir
	rm -rf "$gowork"
	mkdir -p "$gowork"
	dir=$(cd "$gowork" && GOFLAGS=-modcacherw GOMODCACHE=$gowork/mod GOTOOLCHAIN=local \
		timeout 900 go mod download -json "github.com/docker/compose/v2@$compose_version" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$dir" ] || fail "go mod download github.com/docker/compose/v2@$compose_version gave no directory"
	cp -r "$dir" "$gowork/src"
	chmod -R u+w "$gowork/src"
	(cd "$gowork/src" && GOFLAGS=-modcacherw GOMODCACHE=$gowork/mod GOCACHE=$gowork/build GOTOOLCHAIN=local \
		CGO_ENABLED=0 timeout 2700 go build -trimpath \
		-ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$compose_version" \
		-o "$compose_bin.tmp" ./cmd) || fail "building docker compose failed (timeout 2700 s or error above)"
	mv "$compose_bin.tmp" "$compose_bin"
	rm -rf "$gowork" # 1.5 GB of module and build cache, needed only for this binary
}
compose_build_pid=
if [ ! -x "$compose_bin" ] && [ "$what" != k8s ]; then
	log "building docker compose $compose_version from the Go module proxy, in the background (log: $cache/tmp/compose-build.log)"
	mkdir -p "$cache/tmp"
	build_compose >"$cache/tmp/compose-build.log" 2>&1 </dev/null &
	compose_build_pid=$!
fi
need_compose() {
	if [ -n "$compose_build_pid" ]; then
		local t=$(date +%s) pid=$compose_build_pid
		compose_build_pid= # waited for here; the cleanup has nothing to kill
		if ! wait "$pid"; then
			tail -40 "$cache/tmp/compose-build.log" >&2
			fail "building docker compose $compose_version failed (the end of its log above)"
		fi
		log "docker compose $compose_version built (waited $(($(date +%s) - t)) s for it here)"
	fi
	"$compose_bin" version
}

work=$(mktemp -d /var/tmp/gridbatch-compose-test.XXXXXX)
pump_pid=
svc_pid=
k8s_up=
compose_up=
dc() { (cd "$work/src" && "$compose_bin" "$@"); }
pm() { podman "$@"; }

# logs_of SERVICE...: the last lines of each service's logs, for a failure.
dump() {
	echo "---- containers" >&2
	pm ps -a --format '{{.Names}}\t{{.Status}}' >&2 || true
	local c
	for c in $(pm ps -a --format '{{.Names}}' 2>/dev/null); do
		echo "---- logs of $c (last 40 lines)" >&2
		pm logs --tail 40 "$c" >&2 2>&1 || true
	done
}

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	[ -z "$compose_build_pid" ] || kill_tree "$compose_build_pid"
	if [ $rc -ne 0 ]; then
		echo "---- compose-test failed (exit $rc); state at the failure:" >&2
		dump
	fi
	if [ "${GRIDBATCH_COMPOSE_KEEP:-}" != 1 ]; then
		if [ -n "$compose_up" ]; then
			timeout 180 "$compose_bin" --project-directory "$work/src" -f "$work/src/docker-compose.yml" \
				down -v --remove-orphans --timeout 45 >/dev/null 2>&1
		fi
		if [ -n "$k8s_up" ]; then
			timeout 120 podman kube down "$work/k8s.yaml" >/dev/null 2>&1
			k8s_volumes_rm
			podman rm -f -v -t 5 k8s-redis k8s-postgres k8s-enqueuer >/dev/null 2>&1
			podman network rm -f gridbatch-k8s >/dev/null 2>&1
		fi
		stop_pidfile "$run/pump.pid"
		stop_pidfile "$run/service.pid"
		rm -rf "$work"
	fi
	log "compose-test $([ $rc = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - t0)) s; its cache $cache holds $(du -sh "$cache" 2>/dev/null | cut -f1)"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for DESCRIPTION SECONDS COMMAND...: COMMAND until it succeeds, at most
# SECONDS; on timeout says what it waited for, and the containers' logs.
wait_for() {
	local what=$1 secs=$2 end
	shift 2
	end=$(($(date +%s) + secs))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s)" -ge "$end" ]; then
			fail "timed out after ${secs}s waiting for: $what"
		fi
		sleep 1
	done
}

# The Docker API socket: podman's, served by podman itself.
stop_pidfile "$run/pump.pid"
stop_pidfile "$run/service.pid"
# podman itself, not through a function: $! must be its pid, for the cleanup.
podman system service --time=0 "$DOCKER_HOST" >"$cache/tmp/service.log" 2>&1 </dev/null &
svc_pid=$!
echo $svc_pid >"$run/service.pid"
wait_for "podman's API socket $DOCKER_HOST" 30 test -S "$run/podman.sock"

# Health checks: podman 4.3 runs HEALTHCHECKs from systemd timers, and there is
# no systemd here, so compose's `condition: service_healthy` would wait
# forever. This loop runs them instead (containers/podman#19326).
(
	while :; do
		for id in $(podman ps -q --filter health=starting; podman ps -q --filter health=healthy; podman ps -q --filter health=unhealthy); do
			podman healthcheck run "$id" >/dev/null 2>&1 || true
		done
		sleep 2
	done
) </dev/null >/dev/null 2>&1 &
pump_pid=$!
echo $pump_pid >"$run/pump.pid"

# ---------------------------------------------------------------- stand-ins for the base images
has_image() { pm image exists "$1"; }

# The store is this script's own: volumes no container uses (an earlier run
# killed before its cleanup) go, and so do images a rebuild left untagged more
# than a day ago (younger ones are the next build's layer cache).
pm volume prune -f >/dev/null
pm image prune -f --filter until=24h >/dev/null

if ! has_image docker.io/library/debian:bookworm-slim; then
	if [ ! -s "$cache/base/bookworm-slim.tar" ]; then
		log "mmdebstrap: Debian 12 minbase (the debian:bookworm-slim stand-in)"
		rm -f "$cache/base/bookworm-slim.tar.tmp"
		timeout 900 mmdebstrap --variant=minbase --format=tar \
			--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
			--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
			--dpkgopt='path-include=/usr/share/doc/*/copyright' \
			--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
			--aptopt='APT::Install-Recommends "false"' \
			--customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
			bookworm "$cache/base/bookworm-slim.tar.tmp" \
			"deb $mirror/debian bookworm main" \
			"deb $mirror/debian bookworm-updates main" \
			"deb $mirror/debian-security bookworm-security main" </dev/null ||
			fail "mmdebstrap failed (timeout 900 s or error above)"
		mv "$cache/base/bookworm-slim.tar.tmp" "$cache/base/bookworm-slim.tar"
	fi
	log "import debian:bookworm-slim"
	pm import --change 'CMD ["bash"]' \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		"$cache/base/bookworm-slim.tar" docker.io/library/debian:bookworm-slim >/dev/null
fi

build_standin() { # NAME CONTEXT [build args...]
	local name=$1 ctx=$2
	shift 2
	has_image "$name" && return 0
	log "build the stand-in $name"
	timeout 900 podman build -q -t "$name" "$@" "$ctx" </dev/null >/dev/null || fail "building $name"
}

if ! has_image docker.io/library/golang:1.26-bookworm; then
	case $(go env GOVERSION) in go1.26*) ;; *) log "warning: the host's Go is $(go env GOVERSION), tagged as golang:1.26" ;; esac
	ctx=$cache/tmp/golang-context
	rm -rf "$ctx"
	mkdir -p "$ctx/extra-ca"
	cp "$repo/deploy/images/golang/Dockerfile" "$ctx/"
	cp -al "$(go env GOROOT)" "$ctx/go" 2>/dev/null || cp -a "$(go env GOROOT)" "$ctx/go"
	cp /usr/local/share/ca-certificates/*.crt "$ctx/extra-ca/" 2>/dev/null || true
	build_standin docker.io/library/golang:1.26-bookworm "$ctx" \
		--build-arg GOPROXY="$(go env GOPROXY)" --build-arg GOSUMDB="$(go env GOSUMDB)"
	rm -rf "$ctx"
fi
build_standin gcr.io/distroless/static-debian12:nonroot "$repo/deploy/images/distroless"
build_standin docker.io/library/redis:7.2 "$repo/deploy/images/redis"
build_standin docker.io/library/postgres:15 "$repo/deploy/images/postgres"

# ---------------------------------------------------------------- the checkout, copied
# Tracked and untracked files that git does not ignore: .env, .services/ and
# bin/ of the checkout stay out.
mkdir -p "$work/src"
(cd "$repo" && git ls-files -z -co --exclude-standard | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' |
	tar --null -T - -cf -) | tar -xf - -C "$work/src"

# build_project_images: the project's two images, from the copy's
# Dockerfile, as compose's `build:` and the k8s base name them.
build_project_images() {
	(cd "$work/src" && timeout 1500 podman build -q -t gridbatch:local . </dev/null >/dev/null &&
		timeout 900 podman build -q --target worker-python -t gridbatch-python:local . </dev/null >/dev/null) ||
		fail "building gridbatch:local and gridbatch-python:local"
}

# While docker compose is still building: the project's images; `up -d
# --build` then finds their layers.
if [ -n "$compose_build_pid" ]; then
	log "while docker compose builds: podman build of gridbatch:local and gridbatch-python:local"
	build_project_images
	log "project images built"
fi

# ---------------------------------------------------------------- helpers on the running stack
env_value() { sed -n "s/^$1=//p" "$work/src/.env" | tail -1; }
set_env() { # KEY VALUE in .env: replaced, or appended
	if grep -q "^$1=" "$work/src/.env"; then
		sed -i "s|^$1=.*|$1=$2|" "$work/src/.env"
	else
		printf '%s=%s\n' "$1" "$2" >>"$work/src/.env"
	fi
}
# podman 4.3 reports a container's network by name where compose expects its
# ID (containers/podman#24910), so compose recreates every running container
# on each `up` and `run`. Hence --no-recreate on a later `up`, --no-deps on `run`.
enq() { timeout "${ENQ_TIMEOUT:-300}" "$compose_bin" --project-directory "$work/src" -f "$work/src/docker-compose.yml" run --rm --no-deps -T enqueuer "$@" </dev/null; }
containers_of() { pm ps --filter "label=com.docker.compose.service=$1" --filter status=running --format '{{.Names}}' | sort; }
count_of() { containers_of "$1" | wc -l; }
redis_cli() {
	local r w url pass=
	r=$(containers_of redis | head -1)
	# The password, if the compose file gives Redis one: the workers' URL has it.
	w=$(containers_of worker | head -1)
	url=$(pm inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$w" | sed -n 's/^GRIDBATCH_REDIS_URL=//p')
	case $url in *://:*@*) pass=${url#*://:} && pass=${pass%%@*} ;; esac
	if [ -n "$pass" ]; then
		pm exec -e REDISCLI_AUTH="$pass" "$r" redis-cli --no-auth-warning "$@"
	else
		pm exec "$r" redis-cli "$@"
	fi
}
psql_q() {
	local p
	p=$(containers_of postgres | head -1)
	pm exec "$p" psql -U gridbatch -d gridbatch -tA -v ON_ERROR_STOP=1 -c "$1"
}
# migrated: the migrate service's container (the latest; `up` recreates it)
# exited 0.
migrate_status() { pm ps -a --filter label=com.docker.compose.service=migrate --format '{{.Status}}'; }
migrated() { migrate_status | grep -q '^Exited (0)'; }
# The batch ID of `run` output (its first line) and the status word of `status`.
batch_status() { enq status "$1" 2>/dev/null | sed -n 's/^status:[[:space:]]*\([a-z_]*\).*/\1/p' | head -1; }

# status_json ID: `enqueuer status ID --json`, one line.
status_json() { enq status "$1" --json 2>/dev/null | jq -c . ; }
field() { jq -r "$2" <<<"$1"; }
# expect_succeeded ID: the batch ended succeeded, each of its cells has
# exactly one row in the batch's own table, and every chunk succeeded.
expect_succeeded() {
	local id=$1 s table rows distinct
	s=$(status_json "$id")
	[ "$(field "$s" .status)" = succeeded ] || fail "batch $id: $(field "$s" .status), expected succeeded: $s"
	[ "$(field "$s" .completed_cells)" = "$(field "$s" .total_cells)" ] || fail "batch $id: completed cells differ from total: $s"
	[ "$(field "$s" .completed_chunks)" = "$(field "$s" .total_chunks)" ] || fail "batch $id: completed chunks differ from total: $s"
	table=$(psql_q "SELECT results_table FROM batch_runs WHERE id = '$id'")
	read -r rows distinct < <(psql_q "SELECT count(*), count(DISTINCT grid_id) FROM $table" | tr '|' ' ')
	[ "$rows" = "$(field "$s" .total_cells)" ] && [ "$distinct" = "$rows" ] ||
		fail "batch $id: $rows rows for $distinct cells in $table, expected $(field "$s" .total_cells)"
	log "batch $id succeeded: $(field "$s" .total_cells) cells, $rows rows in $table, $(field "$s" .total_chunks) chunks"
}
# start_batch KIND [flags]: the ID of a new batch (run without --wait).
start_batch() { enq run --kind "$@" 2>/dev/null | head -1; }
# wait_batch ID SECONDS: until the batch has ended.
batch_ended() { local st; st=$(field "$(status_json "$1")" .status); [ -n "$st" ] && [ "$st" != running ] && [ "$st" != null ]; }
wait_batch() { wait_for "batch $1 to end" "$2" batch_ended "$1"; }

# ================================================================ README.md, "Running with docker compose"
compose_phase() {
	need_compose
	log "compose: README.md, Running with docker compose, in a copy of the checkout ($work/src)"
	# An earlier run killed before its cleanup leaves its project behind.
	dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
	if (exec 3<>"/dev/tcp/127.0.0.1/$monitor_port") 2>/dev/null; then
		fail "host port $monitor_port (the monitor's) is taken: set GRIDBATCH_COMPOSE_MONITOR_PORT"
	fi
	(cd "$work/src" && cp .env.example .env)
	# "then set POSTGRES_PASSWORD and GRIDBATCH_MONITOR_PASSWORD": every
	# placeholder password gets a random value.
	local k
	for k in $(sed -n 's/^\([A-Z_]*PASSWORD\)=change-me.*/\1/p' "$work/src/.env"); do
		set_env "$k" "t$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
	done
	set_env MONITOR_HOST_PORT "$monitor_port"
	compose_up=1

	log "docker compose up -d --build"
	timeout 2700 "$compose_bin" --project-directory "$work/src" -f "$work/src/docker-compose.yml" \
		up -d --build --quiet-pull </dev/null || fail "docker compose up -d --build (timeout 2700 s)"
	local s
	for s in worker:2 scheduler:2 monitor:1 redis:1 postgres:1; do
		wait_for "${s#*:} running ${s%:*} container(s)" 60 test "$(count_of "${s%:*}")" = "${s#*:}"
	done
	migrated || fail "migrate: $(migrate_status), expected Exited (0)"
	log "up: migrate exited 0; 2 workers, 2 schedulers, monitor, redis, postgres running"

	ENQ_TIMEOUT=300 enq seed >/dev/null 2>&1 || fail "enqueuer seed"
	local out id
	for k in ph ph_py; do
		out=$(enq run --kind "$k" --wait 2>&1) || fail "run --kind $k --wait: $out"
		id=$(head -1 <<<"$out")
		expect_succeeded "$id"
	done
	enq status >/dev/null || fail "enqueuer status"

	# Results read back: the Go ph and the Python ph_py agree on a cell.
	local a b
	a=$(enq results --kind ph --scenario ssp245 --lat 37.53 --lon 127.02 2>&1) || fail "results ph: $a"
	b=$(enq results --kind ph_py --scenario ssp245 --lat 37.53 --lon 127.02 2>&1) || fail "results ph_py: $b"
	python3 - "$a" "$b" <<'PY' || fail "results of ph and ph_py differ: $a // $b"
import re, sys
nums = [[float(x) for x in re.findall(r"(?<![\w.])-?\d+\.\d+(?:e-?\d+)?", s)] for s in sys.argv[1:]]
assert len(nums[0]) >= 80 and len(nums[0]) == len(nums[1]), (len(nums[0]), len(nums[1]))
assert all(abs(x - y) <= 1e-9 * max(1.0, abs(x)) for x, y in zip(*nums))
PY
	log "results read back: ph and ph_py agree on 37.53N 127.02E (ssp245)"

	# The monitor: basic auth with .env's credentials.
	local user pass code
	user=$(env_value GRIDBATCH_MONITOR_USER)
	pass=$(env_value GRIDBATCH_MONITOR_PASSWORD)
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$monitor_port/")
	[ "$code" = 401 ] || fail "monitor without credentials: HTTP $code, expected 401"
	code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -u "$user:$pass" "http://127.0.0.1:$monitor_port/")
	[ "$code" = 200 ] || fail "monitor with .env's credentials: HTTP $code, expected 200"
	log "monitor on 127.0.0.1:$monitor_port: 401 without credentials, 200 with .env's"

	# The hardening, inside a worker.
	local w
	w=$(containers_of worker | head -1)
	out=$(pm exec "$w" sh -c 'id -u; grep CapEff /proc/self/status; cat /proc/1/comm; touch /x 2>&1 || true; python3 -c "import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:8081/readyz\", timeout=5).status)"')
	grep -qx 65532 <<<"$out" || fail "worker uid: $out"
	grep -q 'CapEff:[[:space:]]*0000000000000000' <<<"$out" || fail "worker capabilities: $out"
	grep -q 'Read-only file system' <<<"$out" || fail "worker root is writable: $out"
	grep -Eqx 'catatonit|podman-init|docker-init|tini' <<<"$out" || fail "worker PID 1 is not an init: $out"
	grep -qx 200 <<<"$out" || fail "worker /readyz: $out"
	log "worker $w: uid 65532, no capabilities, read-only root, PID 1 $(sed -n 3p <<<"$out"), /readyz 200"

	log "docker compose up -d --scale worker=4"
	timeout 300 "$compose_bin" --project-directory "$work/src" -f "$work/src/docker-compose.yml" \
		up -d --no-recreate --scale worker=4 </dev/null || fail "up -d --scale worker=4"
	wait_for "4 running worker containers" 60 test "$(count_of worker)" = 4
	log "4 workers running"

	use_test_models
	fault_worker_killed # and, while asynq recovers its tasks, fault_model_hung and k8s_phase
	fault_postgres_restarted

	log "docker compose down -v"
	timeout 180 "$compose_bin" --project-directory "$work/src" -f "$work/src/docker-compose.yml" \
		down -v --remove-orphans --timeout 45 </dev/null || fail "down -v"
	compose_up=
	out=$(pm ps -a --filter label=com.docker.compose.project=gridbatch --format '{{.Names}}')
	[ -z "$out" ] || fail "containers left after down -v: $out"
	out=$(pm volume ls --filter label=com.docker.compose.project=gridbatch --format '{{.Name}}')
	[ -z "$out" ] || fail "volumes left after down -v: $out"
	log "down -v: no container, no volume left"
}

# ================================================================ faults
# The test models (tests/compose/models: slow_py, hang_py) mounted as the
# user's own (README.md: MODELS_DIR in .env). Changing the folder changes the
# mounts of the services that read it, so `up -d` recreates those; migrate
# makes the new tables. Redis and PostgreSQL keep running (--no-deps: with
# podman's network-ID bug a plain `up` would recreate them too).
use_test_models() {
	set_env MODELS_DIR ./tests/compose/models
	log "MODELS_DIR=./tests/compose/models; docker compose up -d --no-deps --scale worker=4 migrate worker scheduler monitor"
	timeout 600 "$compose_bin" --project-directory "$work/src" -f "$work/src/docker-compose.yml" \
		up -d --no-deps --scale worker=4 migrate worker scheduler monitor </dev/null || fail "up -d with the test models"
	wait_for "migrate to exit 0 with the test models" 120 migrated
	wait_for "4 running worker containers" 60 test "$(count_of worker)" = 4
	enq models 2>&1 | grep -q slow_py || fail "enqueuer models does not list slow_py"
}

# in_flight CONTAINER [BATCH]: the chunk tasks (of that batch) asynq records
# as active on that container's worker (the hash
# asynq:workers:{HOSTNAME:PID:SERVER_ID}; each value holds the task's payload).
in_flight() {
	local host key
	host=$(pm inspect -f '{{.Config.Hostname}}' "$1")
	for key in $(redis_cli --scan --pattern "asynq:workers:{$host:*"); do
		redis_cli --raw hvals "$key" | grep -a 'grid:chunk' | grep -acF "${2:-grid:chunk}" || true
	done | awk '{n += $1} END {print n + 0}'
}

fault_worker_killed() {
	log "fault: a worker container SIGKILLed with chunk tasks in flight"
	local id victim= c n=0 end
	id=$(start_batch slow_py --chunk-size 100)
	[ -n "$id" ] || fail "run --kind slow_py gave no batch ID"
	end=$(($(date +%s) + 120))
	while [ -z "$victim" ]; do
		[ "$(date +%s)" -lt "$end" ] || fail "timed out after 120s waiting for a worker container with chunk tasks in flight (batch $id)"
		for c in $(containers_of worker); do
			n=$(in_flight "$c")
			if [ "$n" -ge 1 ]; then
				victim=$c
				break
			fi
		done
		[ -n "$victim" ] || sleep 0.3
	done
	local before
	before=$(field "$(status_json "$id")" .done_chunks)
	pm kill -s KILL "$victim" >/dev/null
	log "killed $victim (kill -s KILL) with $n chunk task(s) in flight; batch $id had $before chunks done"
	[ "$(field "$(status_json "$id")" .status)" = running ] || fail "batch $id ended before the kill hit it"
	# asynq gives the killed worker's tasks back when their lease expires
	# (30 s, checked every minute: 60-125 s). That wait is used: the hung-model
	# fault runs meanwhile on the surviving workers, with a batch of its own,
	# and then (for `all`) the Kubernetes play, on a network of its own.
	fault_model_hung
	[ "$what" != all ] || k8s_phase
	wait_batch "$id" 300
	expect_succeeded "$id"
	log "batch $id: the killed worker's chunks were handed over and computed once"
}

fault_postgres_restarted() {
	log "fault: the PostgreSQL container restarted mid-batch"
	local id pg started done_before s
	id=$(start_batch slow_py --chunk-size 100)
	[ -n "$id" ] || fail "run --kind slow_py gave no batch ID"
	chunks_done() { [ "$(field "$(status_json "$1")" .done_chunks)" -ge "$2" ]; }
	wait_for "batch $id to have 10 chunks done" 120 chunks_done "$id" 10
	s=$(status_json "$id")
	done_before=$(field "$s" .done_chunks)
	[ "$(field "$s" .status)" = running ] || fail "batch $id ended before the restart: $s"
	pg=$(containers_of postgres)
	started=$(pm inspect -f '{{.State.StartedAt}}' "$pg")
	timeout 120 "$compose_bin" --project-directory "$work/src" -f "$work/src/docker-compose.yml" \
		restart postgres </dev/null >/dev/null || fail "docker compose restart postgres"
	[ "$(pm inspect -f '{{.State.StartedAt}}' "$pg")" != "$started" ] || fail "postgres was not restarted"
	log "restarted $pg at $done_before of $(field "$s" .total_chunks) chunks done"
	pg_up() { psql_q 'SELECT 1' | grep -qx 1; }
	wait_for "PostgreSQL to answer again" 120 pg_up
	wait_batch "$id" 300
	s=$(status_json "$id")
	log "batch $id after the restart: $(field "$s" .status); chunks $(field "$s" .completed_chunks) succeeded, $(field "$s" .failed_chunks) failed of $(field "$s" .total_chunks); DB connection errors $(field "$s" .db_conn_errors)"
	expect_succeeded "$id"
}

fault_model_hung() {
	log "fault: a model process hung past its timeout (5 s) in a worker container"
	local id c pid hit=0 out
	id=$(start_batch hang_py)
	[ -n "$id" ] || fail "run --kind hang_py gave no batch ID"
	wait_batch "$id" 240
	expect_succeeded "$id"
	for c in $(containers_of worker); do
		pid=$(pm exec "$c" cat /tmp/gridbatch-hung-model.pid 2>/dev/null) || continue
		hit=$((hit + 1))
		out=$(pm logs "$c" 2>&1 | grep 'model process killed' | grep -E "\"pid\":$pid\b|pid=$pid\b" || true)
		[ -n "$out" ] || fail "$c: no 'model process killed' line for the hung pid $pid"
		# Gone, not a zombie: the worker killed its group, the init reaped it.
		if pm exec "$c" test -e "/proc/$pid"; then
			fail "$c: the hung model process $pid is still there: $(pm exec "$c" cat /proc/"$pid"/status | head -3)"
		fi
		[ "$(pm exec "$c" cat /proc/1/comm)" != worker ] || fail "$c: the worker is PID 1"
		out=$(pm exec "$c" python3 -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:8081/healthz", timeout=5).status)')
		[ "$out" = 200 ] || fail "$c: /healthz $out after the hung model"
		[ "$(in_flight "$c" "$id")" = 0 ] || fail "$c: chunk tasks of $id still active after the batch"
		log "$c: hung model pid $pid killed past its timeout and reaped (PID 1 $(pm exec "$c" cat /proc/1/comm)); /healthz 200; no task left active"
	done
	[ "$hit" -ge 1 ] || fail "no worker container ran the hanging chunk"
}

# ================================================================ Kubernetes: deploy/k8s/base with podman kube play
# The volumes `podman kube play` made of the ConfigMaps; `kube down` (4.3)
# leaves them.
k8s_volumes_rm() {
	podman volume ls --format '{{.Name}}' | grep -E '^gridbatch-(models|postgres-ca)(-|$)' |
		xargs -r podman volume rm -f >/dev/null 2>&1 || true
}

k8s_phase() {
	log "k8s: kubectl kustomize deploy/k8s/base | podman kube play"
	command -v kubectl >/dev/null || fail "kubectl is needed (Debian: kubernetes-client)"
	has_image gridbatch:local && has_image gridbatch-python:local || build_project_images
	local pw
	pw=t$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
	podman rm -f -v -t 5 k8s-redis k8s-postgres >/dev/null 2>&1 || true
	podman network exists gridbatch-k8s || podman network create gridbatch-k8s >/dev/null
	k8s_up=1
	# Redis and PostgreSQL are the cluster's own (README.md, Kubernetes).
	podman run -d --name k8s-redis --network gridbatch-k8s redis:7.2 redis-server --appendonly yes \
		--maxmemory-policy noeviction >/dev/null
	podman run -d --name k8s-postgres --network gridbatch-k8s -e POSTGRES_USER=gridbatch \
		-e POSTGRES_DB=gridbatch -e POSTGRES_PASSWORD="$pw" postgres:15 >/dev/null
	pg_ready() { podman exec k8s-postgres pg_isready -h 127.0.0.1 -U gridbatch -d gridbatch; }
	wait_for "the k8s test's PostgreSQL" 120 pg_ready
	kubectl kustomize "$work/src/deploy/k8s/base" >"$work/k8s-rendered.yaml"
	# What podman 4.3 cannot run, adapted (README.md says which is which):
	#  - secretKeyRef: broken in podman 4.3; the Secret's values are inlined;
	#  - replicas: the autoscaler owns the workers'; 2 here;
	#  - ports and probes: podman publishes every containerPort on the host,
	#    and probes are health checks run by systemd; both are left out;
	#  - Namespace, Service, PodDisruptionBudget: not podman objects;
	#  - the worker's init container (enqueuer migrate) runs before the play,
	#    as a container of its own: podman 4.3 tries to remove it while it
	#    still runs ("failed to remove once init container").
	python3 - "$work/k8s-rendered.yaml" "$work/k8s.yaml" "$pw" <<'PY'
import sys, yaml
src, dst, pw = sys.argv[1:]
secret = {
    "GRIDBATCH_REDIS_URL": "redis://k8s-redis:6379/0",
    "GRIDBATCH_DATABASE_URL": "postgres://gridbatch:%s@k8s-postgres:5432/gridbatch?sslmode=disable" % pw,
    "GRIDBATCH_MONITOR_USER": "ops",
    "GRIDBATCH_MONITOR_PASSWORD": pw,
}
out = []
for d in yaml.safe_load_all(open(src)):
    if d["kind"] in ("Namespace", "Service", "PodDisruptionBudget"):
        continue
    if d["kind"] == "Deployment":
        if d["metadata"]["name"] == "worker":
            assert "replicas" not in d["spec"], "the worker Deployment sets replicas"
            d["spec"]["replicas"] = 2
        pod = d["spec"]["template"]["spec"]
        for c in pod.pop("initContainers", []):
            assert c["command"] == ["/usr/local/bin/enqueuer", "migrate"], c["command"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "gridbatch", ref
                    e["value"] = secret[ref["key"]]
                    del e["valueFrom"]
            for k in ("ports", "livenessProbe", "readinessProbe", "startupProbe"):
                c.pop(k, None)
    out.append(d)
yaml.safe_dump_all(out, open(dst, "w"), sort_keys=False)
PY
	local models
	models=$(python3 -c 'import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gridbatch-models"):
        open(sys.argv[2], "w").write(d["data"]["models.yaml"])' "$work/k8s-rendered.yaml" "$work/k8s-models.yaml" && echo ok)
	[ "$models" = ok ] || fail "k8s: no gridbatch-models ConfigMap in the rendered base"
	timeout 300 podman run --rm --network gridbatch-k8s --read-only --cap-drop ALL --user 65532:65532 \
		-v "$work/k8s-models.yaml:/etc/gridbatch/models/models.yaml:ro" \
		-e GRIDBATCH_MODELS_FILE=/etc/gridbatch/models/models.yaml \
		-e GRIDBATCH_DATABASE_URL="postgres://gridbatch:$pw@k8s-postgres:5432/gridbatch?sslmode=disable" \
		-e GRIDBATCH_REDIS_URL=redis://k8s-redis:6379/0 \
		gridbatch-python:local /usr/local/bin/enqueuer migrate </dev/null || fail "k8s: enqueuer migrate"
	timeout 300 podman kube play --network gridbatch-k8s "$work/k8s.yaml" </dev/null >/dev/null ||
		fail "podman kube play (timeout 300 s)"
	k8s_workers() { podman ps --filter status=running --format '{{.Names}}' | grep -E '^worker-pod-[0-9]+-worker$' | sort; }
	wait_for "2 running worker pods" 180 test "$(k8s_workers | wc -l)" = 2
	local s
	for s in scheduler:2 monitor:1; do
		n_of() { podman ps --filter status=running --format '{{.Names}}' | grep -cE "^$1-pod-[0-9]+-$1\$"; }
		wait_for "${s#*:} running ${s%:*} pod(s)" 120 test "$(n_of "${s%:*}")" = "${s#*:}"
	done
	servers() { podman exec k8s-redis redis-cli --scan --pattern 'asynq:servers:*' | wc -l; }
	wait_for "both worker replicas registered with asynq" 60 test "$(servers)" = 2
	local w out
	w=$(k8s_workers | head -1)
	# The pod's own lookups first: on this podman (4.3, netavark and
	# aardvark-dns 1.4) a pod just played can lose every UDP packet it sends,
	# to aardvark-dns and to the host's resolver alike, for up to ~40 s (seen
	# in 2 of 6 plays; the worker itself had resolved both names before).
	# A CLI exec'd then fails its 5-s connect; a cluster's DNS has no such
	# window, so this waits for the pod's network, bounded, and says how long.
	resolves() {
		timeout 3 podman exec "$w" /usr/bin/python3 -c 'import socket
for h in ("k8s-postgres", "k8s-redis"): socket.getaddrinfo(h, None, socket.AF_INET)'
	}
	local t_dns=$(date +%s)
	wait_for "the worker pod resolving k8s-postgres and k8s-redis" 120 resolves
	log "k8s: the worker pod resolves both services (waited $(($(date +%s) - t_dns)) s)"
	# The README's CLI: exec into a worker, with the worker's settings.
	kx() { timeout 300 podman exec "$w" /usr/local/bin/enqueuer "$@" </dev/null; }
	out=$(kx seed 2>&1) || fail "k8s: enqueuer seed: $out"
	for s in ph ph_py; do
		out=$(kx run --kind "$s" --wait 2>&1) || fail "k8s: run --kind $s --wait: $out"
		log "k8s: batch $(head -1 <<<"$out") ($s) succeeded on 2 worker replicas"
	done
	[ "$(podman exec "$w" cat /proc/1/comm)" != worker ] || fail "k8s: the worker is PID 1 (shareProcessNamespace)"
	[ "$(podman exec "$w" id -u)" = 65532 ] || fail "k8s: the worker does not run as 65532"
	timeout 120 podman kube down "$work/k8s.yaml" </dev/null >/dev/null || fail "podman kube down"
	k8s_volumes_rm
	podman rm -f -v -t 5 k8s-redis k8s-postgres >/dev/null
	podman network rm -f gridbatch-k8s >/dev/null
	k8s_up=
	log "k8s: played, 2 batches succeeded, torn down"
}

case $what in
all) compose_phase ;; # k8s_phase runs inside it, while asynq recovers a killed worker's tasks
compose) compose_phase ;;
k8s) k8s_phase ;;
esac
