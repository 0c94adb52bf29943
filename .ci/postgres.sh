#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on 127.0.0.1 for the test suite (Debian's packages).
# Usage: source .ci/postgres.sh   -> exports UNSAMV2_TEST_POSTGRES_URL; `pg_stop` stops it.
set -euo pipefail
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PG_PORT=${PG_PORT:-54329}
PG_DATA=$(mktemp -d /tmp/unsamv2-pg.XXXXXX)
chown postgres:postgres "$PG_DATA"
su postgres -c "$PG_BIN/initdb -D $PG_DATA -A trust -U postgres --no-sync -E UTF8" >/dev/null
su postgres -c "$PG_BIN/pg_ctl -D $PG_DATA -l $PG_DATA/server.log -w \
  -o '-h 127.0.0.1 -p $PG_PORT -k $PG_DATA -c fsync=off' start" >/dev/null
export UNSAMV2_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
pg_stop() { su postgres -c "$PG_BIN/pg_ctl -D $PG_DATA -m fast stop" >/dev/null || true; rm -rf "$PG_DATA"; }
