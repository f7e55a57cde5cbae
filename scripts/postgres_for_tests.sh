#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the tests and print its URL:
#   export ECAD_SEARCH_TEST_POSTGRES=$(scripts/postgres_for_tests.sh)
# Needs PostgreSQL's server programs (Debian: apt-get install postgresql). initdb and pg_ctl refuse to run as
# root, so as root they run as the `postgres` user. The data folder is printed on stderr; stop the server and
# remove the folder with:
#   scripts/postgres_for_tests.sh stop <data folder>
set -euo pipefail
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
if [ -z "$bin" ]; then
    echo "no PostgreSQL server programs under /usr/lib/postgresql: apt-get install postgresql" >&2
    exit 1
fi
as_owner() {
    if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}
if [ "${1:-}" = stop ]; then
    data="${2:?usage: scripts/postgres_for_tests.sh stop <data folder printed when it started>}"
    case "$data" in
        /tmp/ecad-search-postgres.*/*) echo "not a folder this script made: $data" >&2; exit 1 ;;
        /tmp/ecad-search-postgres.*) ;;
        *) echo "not a folder this script made: $data (they are /tmp/ecad-search-postgres.*)" >&2; exit 1 ;;
    esac
    as_owner "'$bin/pg_ctl' -D '$data' -m fast -w stop" >/dev/null
    rm -rf "$data"
    exit 0
fi
port="${ECAD_SEARCH_TEST_POSTGRES_PORT:-55432}"
# The next free port if that one is taken (another server for the tests, say).
while (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
data="$(mktemp -d /tmp/ecad-search-postgres.XXXXXX)"
if [ "$(id -u)" = 0 ]; then chown postgres "$data"; fi
as_owner "'$bin/initdb' -D '$data' -U postgres --auth=trust -E UTF8" >/dev/null
as_owner "'$bin/pg_ctl' -D '$data' -l '$data/server.log' -w -o \"-c listen_addresses=127.0.0.1 -p $port -k '$data'\" start" >/dev/null
echo "PostgreSQL data folder: $data" >&2
echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
