#!/usr/bin/env bash
# services.sh — local Redis and PostgreSQL 15 for gridbatch development, tests and the demo.
#
#   scripts/services.sh up       install what is missing, start both (idempotent: a second run finds them up)
#   scripts/services.sh down     stop both (data is kept)
#   scripts/services.sh status   say what runs where
#   scripts/services.sh env      print the GRIDBATCH_* URLs for these services (eval-able)
#   scripts/services.sh stop-postgres | start-postgres | restart-redis   (for the chaos tests)
#   scripts/services.sh browser  install Debian's chromium for the monitor's browser test
#
# Both listen on loopback only, on non-default ports, with data under a git-ignored folder.
# Environment (all optional): GRIDBATCH_SERVICES_DIR (default <repo>/.services),
# GRIDBATCH_REDIS_PORT (6390), GRIDBATCH_PG_PORT (5440).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${GRIDBATCH_SERVICES_DIR:-$root/.services}
redis_port=${GRIDBATCH_REDIS_PORT:-6390}
pg_port=${GRIDBATCH_PG_PORT:-5440}
pg_bin=/usr/lib/postgresql/15/bin
pg_password=gridbatch

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"
	elif command -v sudo >/dev/null; then sudo -n "$@"
	else die "need root to run: $* (install it once as root, then rerun)"; fi
}

apt_updated=0
apt_install() {
	if [ $apt_updated -eq 0 ]; then
		log "apt-get update"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
		apt_updated=1
	fi
	log "installing $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_packages() {
	local want=()
	command -v redis-server >/dev/null || want+=(redis-server)
	[ -x "$pg_bin/initdb" ] || want+=(postgresql-15)
	command -v psql >/dev/null || want+=(postgresql-client-15)
	# Users' Python models (examples/, sdk/python) run on Debian's python3 with numpy.
	/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1 || want+=(python3 python3-numpy)
	# `enqueuer export --format netcdf` writes through Debian's netCDF4-python (libnetcdf);
	# its tests read the files back with Debian's xarray.
	/usr/bin/python3 -c 'import netCDF4' >/dev/null 2>&1 || want+=(python3-netcdf4)
	/usr/bin/python3 -c 'import xarray' >/dev/null 2>&1 || want+=(python3-xarray)
	# The SDK's tests install sdk/python as a package with Debian's pip (setuptools, wheel).
	# setuptools first: imported after pip, its distutils hack asserts, and the
	# check would fail (and apt run) every time.
	/usr/bin/python3 -c 'import setuptools, wheel, pip' >/dev/null 2>&1 || want+=(python3-pip)
	if [ ${#want[@]} -gt 0 ]; then apt_install "${want[@]}"; fi
	# The Debian package starts its own Redis on 6379; ours is separate and that one is left alone.
}

# PostgreSQL refuses to run as root: use the postgres system user (or make one).
pg_user() {
	if [ "$(id -u)" -ne 0 ]; then id -un; return; fi
	if id postgres >/dev/null 2>&1; then echo postgres; return; fi
	useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin gridbatch-pg >/dev/null 2>&1 || true
	echo gridbatch-pg
}

as_pg() {
	local user=$1; shift
	if [ "$(id -un)" = "$user" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}

redis_up() { redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null | grep -q PONG; }

start_redis() {
	if redis_up; then log "redis already up on 127.0.0.1:$redis_port"; return; fi
	mkdir -p "$dir/redis"
	redis-server --bind 127.0.0.1 --port "$redis_port" --daemonize yes \
		--dir "$dir/redis" --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" \
		--appendonly yes --appendfsync everysec --save "" \
		--maxmemory-policy noeviction --databases 1024 --protected-mode yes
	for _ in $(seq 1 100); do redis_up && break; sleep 0.1; done
	redis_up || die "redis did not start; see $dir/redis/redis.log"
	log "redis up on 127.0.0.1:$redis_port (AOF on, noeviction), data in $dir/redis"
}

pg_data() {
	local user=$1
	# The data folder must be reachable by the non-root user; fall back to /var/tmp when the
	# checkout sits behind a folder that user cannot enter.
	mkdir -p "$dir"
	if [ "$(id -u)" -eq 0 ] && ! runuser -u "$user" -- test -x "$dir" 2>/dev/null; then
		local alt
		alt=/var/tmp/gridbatch-pg-$(echo -n "$dir" | md5sum | cut -c1-12)
		mkdir -p "$alt"
		chown "$user" "$alt"
		ln -sfn "$alt" "$dir/pg-link"
		echo "$alt/pg"
		return
	fi
	echo "$dir/pg"
}

pg_answers() {
	PGPASSWORD=$pg_password PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p "$pg_port" -U gridbatch -d gridbatch -qtAc 'SELECT 1' >/dev/null 2>&1
}

pg_running() { [ -f "$1/postmaster.pid" ] && as_pg "$2" "$pg_bin/pg_ctl" -D "$1" status >/dev/null 2>&1; }

start_pg() {
	local user data
	user=$(pg_user)
	data=$(pg_data "$user")
	if pg_running "$data" "$user"; then log "postgres already up on 127.0.0.1:$pg_port"; return; fi
	if pg_answers; then
		# Another checkout's cluster holds the port and takes our credentials: use it.
		log "postgres already up on 127.0.0.1:$pg_port (another data folder)"
		return
	fi
	if [ ! -f "$data/PG_VERSION" ]; then
		mkdir -p "$data"
		chown "$user" "$data" "$(dirname "$data")" 2>/dev/null || true
		chmod 700 "$data"
		local pw
		pw=$(mktemp)
		echo "$pg_password" >"$pw"
		chmod 644 "$pw"
		as_pg "$user" "$pg_bin/initdb" -D "$data" -U gridbatch --pwfile="$pw" \
			--auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
		rm -f "$pw"
		cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$data'
max_connections = 300
shared_buffers = 256MB
log_line_prefix = '%m [%p] %q%u@%d '
CONF
	fi
	# Our pid file and port: a stale postmaster.pid from a killed server is cleared by pg_ctl itself.
	as_pg "$user" "$pg_bin/pg_ctl" -D "$data" -l "$data/../postgres.log" -w -t 60 -o "-p $pg_port" start >/dev/null \
		|| die "postgres did not start; see $(dirname "$data")/postgres.log"
	PGPASSWORD=$pg_password psql -h 127.0.0.1 -p "$pg_port" -U gridbatch -d postgres -qtAc \
		"SELECT 1 FROM pg_database WHERE datname = 'gridbatch'" | grep -q 1 \
		|| PGPASSWORD=$pg_password psql -h 127.0.0.1 -p "$pg_port" -U gridbatch -d postgres -qc "CREATE DATABASE gridbatch" >/dev/null
	log "postgres 15 up on 127.0.0.1:$pg_port as user $user, data in $data"
}

stop_all() {
	if redis_up; then redis-cli -h 127.0.0.1 -p "$redis_port" shutdown >/dev/null 2>&1 || true; log "redis stopped"; fi
	local user data
	user=$(pg_user)
	data=$(pg_data "$user")
	if pg_running "$data" "$user"; then
		as_pg "$user" "$pg_bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
		log "postgres stopped"
	fi
}

print_env() {
	echo "export GRIDBATCH_REDIS_URL=redis://127.0.0.1:$redis_port/0"
	echo "export GRIDBATCH_DATABASE_URL='postgres://gridbatch:$pg_password@127.0.0.1:$pg_port/gridbatch?sslmode=disable'"
}

case "${1:-}" in
up)
	ensure_packages
	start_redis
	start_pg
	;;
down) stop_all ;;
status)
	redis_up && echo "redis: up on 127.0.0.1:$redis_port" || echo "redis: down (start: make services-up)"
	user=$(pg_user)
	pg_running "$(pg_data "$user")" "$user" && echo "postgres: up on 127.0.0.1:$pg_port" || echo "postgres: down (start: make services-up)"
	;;
env) print_env ;;
stop-postgres)
	user=$(pg_user)
	as_pg "$user" "$pg_bin/pg_ctl" -D "$(pg_data "$user")" -m fast -w -t 60 stop >/dev/null
	log "postgres stopped"
	;;
start-postgres) start_pg ;;
browser)
	if ! command -v chromium >/dev/null || ! fc-list 2>/dev/null | grep -qi liberation; then apt_install chromium fonts-liberation; fi
	log "chromium: $(chromium --version 2>/dev/null | head -1)"
	;;
restart-redis)
	# SHUTDOWN fsyncs the AOF first, so nothing acknowledged is lost.
	redis-cli -h 127.0.0.1 -p "$redis_port" shutdown >/dev/null 2>&1 || true
	for _ in $(seq 1 50); do redis_up || break; sleep 0.1; done
	start_redis
	;;
*)
	sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
