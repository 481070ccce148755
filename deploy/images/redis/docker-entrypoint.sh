#!/bin/sh
# The official image's behaviour: flags alone run redis-server; redis-server
# runs as the user redis, owning /data; protected mode off (the container's
# network is the boundary), as the official build sets it.
set -e
if [ "${1#-}" != "$1" ]; then
	set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
	shift
	set -- redis-server --protected-mode no "$@"
	if [ "$(id -u)" = 0 ]; then
		find . \! -user redis -exec chown redis '{}' +
		exec gosu redis "$@"
	fi
fi
exec "$@"
