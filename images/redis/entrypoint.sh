#!/bin/sh
# Arguments that are options or a configuration file are redis-server's, as in the redis image
# (`--appendonly yes --requirepass ...` starts the server); anything else runs as given.
# The server replaces this shell, so it gets the container's stop signal itself.
set -eu
case ${1:-} in
-* | *.conf) set -- redis-server "$@" ;;
esac
exec "$@"
