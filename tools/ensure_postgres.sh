#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl, postgres) exist, so the
# ledger tests can start their own throwaway server on a loopback port.
set -euo pipefail
have_pg() {
    command -v initdb >/dev/null 2>&1 && return 0
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && return 0
    return 1
}
if have_pg; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure_postgres: PostgreSQL binaries missing and not root; PostgreSQL tests will be skipped" >&2
    exit 0
fi
echo "ensure_postgres: installing postgresql from Debian packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
have_pg
