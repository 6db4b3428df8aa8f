#!/usr/bin/env bash
# Installs and starts what the tests use beyond Python: Debian's chromium (the UI browser
# test) and a PostgreSQL server with a test database (the distributed-study test).
# Prints the PostgreSQL URL to export as SIAMESE_LAB_TEST_PG_URL. Needs root (as CI is).
set -euo pipefail
# Only the URL goes to stdout (the caller captures it); everything else to stderr.
exec 3>&1 1>&2
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v pg_lsclusters >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
read -r version cluster port _ < <(pg_lsclusters --no-header | head -n 1)
# The server must not inherit fd 3 (the caller's capture pipe): a daemon holding it open
# keeps the caller's read waiting forever. "already running" is fine.
pg_ctlcluster "$version" "$cluster" start </dev/null >/dev/null 2>&1 3>&- || true
for _ in $(seq 1 30); do
  su postgres -c "pg_isready -q" && break
  sleep 1
done
psql_as_postgres() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtAc \"$1\""; }
[ "$(psql_as_postgres "SELECT 1 FROM pg_roles WHERE rolname='siamese'")" = 1 ] ||
  psql_as_postgres "CREATE ROLE siamese LOGIN SUPERUSER PASSWORD 'siamese'" >&2
[ "$(psql_as_postgres "SELECT 1 FROM pg_database WHERE datname='siamese_test'")" = 1 ] ||
  psql_as_postgres "CREATE DATABASE siamese_test OWNER siamese" >&2
echo "postgresql://siamese:siamese@127.0.0.1:${port}/siamese_test" >&3
