#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests (trust authentication, 127.0.0.1 only) and
# prints its URL; `stop` stops it. Used by .ci/run; by hand:
#   export SWEEP_TEST_POSTGRES_URL=$(scripts/test-postgres.sh)
#   cargo test -p coordinator --test it
#   scripts/test-postgres.sh stop
# Installs the distribution's `postgresql` package when no server binaries are found.
set -euo pipefail
DATA=${SWEEP_TEST_PGDATA:-/tmp/sweep-test-pg}
PORT=${SWEEP_TEST_PGPORT:-55432}

bindir() {
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}
BIN=$(bindir)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >&2 \
    || { $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq --no-install-recommends postgresql >&2; }
  BIN=$(bindir)
fi

# The server refuses to run as root: run it as the `postgres` user then.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [ "${1:-start}" = stop ]; then
  as_owner "$BIN/pg_ctl" -D "$DATA" -m fast stop >&2 || true
  exit 0
fi
if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  rm -rf "$DATA"
  mkdir -p "$DATA"
  [ "$(id -u)" -eq 0 ] && chown postgres "$DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
  # fsync stays on: the tests check what an acknowledged write survives.
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-p $PORT -k $DATA -c listen_addresses=127.0.0.1 -c max_connections=400" start >&2
fi
echo "postgres://postgres@127.0.0.1:$PORT"
