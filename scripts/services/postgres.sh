#!/usr/bin/env bash
# scripts/services/postgres.sh up|down|status|url|password — a PostgreSQL server from Debian's
# packages, for a team's shared ledger (SLIPWAY_LEDGER_URL=postgresql://...) and the tests'. Idempotent; needs root (it installs the
# package and runs the server as the postgres user); no systemd.
#
#   up      installs postgresql if missing, creates a cluster in $DIR on first use (role and
#           database "slipway", a random password kept in $DIR/password, mode 600; the role may create
#           databases, as the tests do: one each), starts it on
#           127.0.0.1:$PORT unless it answers
#   down    stops the server this script started
#   status  exit 0 when it answers
#   url     prints the ledger URL, without the password (libpq reads it from PGPASSWORD)
#   password  prints the password of role slipway (keep it out of logs and files)
#   allow CIDR  also accepts password logins from CIDR (the workers' network, e.g. 10.0.0.0/8);
#           idempotent, applied by a reload
#
# Environment (defaults in brackets):
#   SLIPWAY_POSTGRES_DIR [$SLIPWAY_VAR/postgres]  cluster, password, log
#   SLIPWAY_POSTGRES_PORT [55432]                 on 127.0.0.1 only
# Time (measured, 2 cores): first up ~4 s (initdb), later up ~1 s, down ~1 s.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR=${SLIPWAY_POSTGRES_DIR:-$SLIPWAY_VAR/postgres}
PORT=${SLIPWAY_POSTGRES_PORT:-55432}
DATA=$DIR/data
LOG=$DIR/server.log

bin() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
    printf '%s' "$found"
}

as_postgres() { runuser -u postgres -- "$@"; }
answers() { as_postgres "$(bin)/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

up() {
    local t0=$EPOCHREALTIME
    require_root
    ensure_pkgs postgresql
    if answers; then log "postgres answers on 127.0.0.1:$PORT"; return 0; fi
    umask 077
    mkdir -p "$DIR"
    [ -s "$DIR/password" ] || python3 -c 'import secrets; print(secrets.token_hex(16))' >"$DIR/password"
    touch "$LOG"
    chown -R postgres:postgres "$DIR"
    if [ ! -s "$DATA/PG_VERSION" ]; then
        log "creating a PostgreSQL cluster in $DATA"
        as_postgres "$(bin)/initdb" -D "$DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "initdb failed"; }
        printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\n" "$PORT" "$DIR" \
            >>"$DATA/postgresql.conf"
    fi
    as_postgres "$(bin)/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 -o "-p $PORT -k $DIR" start >/dev/null \
        || { tail -n 20 "$LOG" >&2; die "postgres did not start (log: $LOG)"; }
    local password
    password=$(cat "$DIR/password")
    as_postgres psql -q -h "$DIR" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 <<SQL >/dev/null
SELECT 'CREATE ROLE slipway LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'slipway') \gexec
ALTER ROLE slipway CREATEDB PASSWORD '$password';
SELECT 'CREATE DATABASE slipway OWNER slipway' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'slipway') \gexec
SQL
    log "postgres up on 127.0.0.1:$PORT in $(since "$t0")"
}

allow() {
    local cidr=$1 hba=$DATA/pg_hba.conf
    [[ $cidr =~ ^[0-9.]+/[0-9]+$ ]] || die "allow takes an IPv4 network such as 10.0.0.0/8, not '$cidr'"
    [ -s "$hba" ] || die "no cluster in $DATA yet: run '$0 up' first"
    grep -q "^host all all $cidr scram-sha-256\$" "$hba" || printf 'host all all %s scram-sha-256\n' "$cidr" >>"$hba"
    as_postgres "$(bin)/pg_ctl" -D "$DATA" reload >/dev/null
    log "postgres accepts password logins from $cidr"
}

down() {
    if [ -s "$DATA/postmaster.pid" ]; then
        as_postgres "$(bin)/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
    log "postgres down"
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) answers ;;
    url) printf 'postgresql://slipway@127.0.0.1:%s/slipway\n' "$PORT" ;;
    password) cat "$DIR/password" ;;
    allow) require_root; [ $# -eq 2 ] || die "usage: $0 allow CIDR"; allow "$2" ;;
    *) die "usage: $0 up|down|status|url|password|allow CIDR" ;;
esac
