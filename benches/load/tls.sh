#!/usr/bin/env bash
# What TLS costs through sluice: pgbench -S against one sluice endpoint, plaintext and with
# sslmode=require, interleaved, with long-lived connections and with a new connection (and TLS
# handshake) per transaction (-C). Prints median TPS and the TLS/plain ratio.
#
# Starts a private PostgreSQL (as the `postgres` OS user) and sluice (release) in a temp dir,
# makes a throwaway CA and certificate with openssl, tears everything down on exit.
# Run as root from the crate root, after `cargo build --release`:
#   benches/load/tls.sh
# Environment (defaults): BENCH_REPEAT=3 BENCH_DURATION=5 BENCH_CLIENTS=16
#   SLUICE_BIN=target/release/sluice PG_BIN=/usr/lib/postgresql/15/bin
set -euo pipefail

REPEAT=${BENCH_REPEAT:-3}
DURATION=${BENCH_DURATION:-5}
CLIENTS=${BENCH_CLIENTS:-16}
SLUICE_BIN=${SLUICE_BIN:-target/release/sluice}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
SLUICE_BIN=$(realpath "$SLUICE_BIN")

DIR=$(mktemp -d /tmp/sluice-tls-bench.XXXXXX)
chmod 755 "$DIR"
PIDS=()
cleanup() {
    # Waited for: a sluice built for profiling (scripts/pgo) writes its profile as it exits.
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
    [ -f "$DIR/pgroot/data/postmaster.pid" ] && su postgres -c "$PG_BIN/pg_ctl -D $DIR/pgroot/data -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port)
SL_PORT=$(free_port)

mkdir "$DIR/pgroot" && chown postgres "$DIR/pgroot"
su postgres -c "$PG_BIN/initdb -D $DIR/pgroot/data -U postgres --auth-local=trust --auth-host=scram-sha-256 -N" >/dev/null
cat >> "$DIR/pgroot/data/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/pgroot'
max_connections = 100
fsync = off
EOF
su postgres -c "$PG_BIN/pg_ctl -D $DIR/pgroot/data -l $DIR/pgroot/pg.log -w start" >/dev/null
su postgres -c "$PG_BIN/psql -h $DIR/pgroot -p $PG_PORT -qc \"create role app login password 'app-secret'\" -c 'create database appdb owner app'"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
cat > "$DIR/secrets.yaml" <<EOF
app: {username: app, password: app-secret}
EOF
cat > "$DIR/sluice.yaml" <<EOF
endpoints:
  - { name: writer, listen: 127.0.0.1:$SL_PORT, target_group: pg }
target_groups:
  pg:
    engine: postgres
    instances: [127.0.0.1:$PG_PORT]
    server_tls: { mode: disable }
    connection_pool: { max_connections: 10 }
auth:
  - { username: app, secret: "file:secrets.yaml#app" }
tls: { cert: cert.pem, key: key.pem }
EOF
RUST_LOG=sluice=warn "$SLUICE_BIN" run --config "$DIR/sluice.yaml" 2> "$DIR/sluice.log" &
PIDS+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$SL_PORT) 2>/dev/null && break; sleep 0.1; done

export PGHOST=127.0.0.1 PGPORT=$SL_PORT PGUSER=app PGPASSWORD=app-secret PGDATABASE=appdb
PGSSLMODE=disable "$PG_BIN/pgbench" -i -q -s 10 >/dev/null 2>&1

tps() { # sslmode, extra args...
    local mode=$1; shift
    PGSSLMODE=$mode "$PG_BIN/pgbench" -S -n -c "$CLIENTS" -j 2 -T "$DURATION" "$@" 2>/dev/null |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "| workload ($CLIENTS clients, ${DURATION}s x $REPEAT) | plain TPS | TLS TPS | TLS / plain |"
echo "|---|---|---|---|"
for load in "-S" "-S -C"; do
    extra=""; [ "$load" = "-S -C" ] && extra="-C"
    plain=(); tls=()
    for _ in $(seq "$REPEAT"); do
        plain+=("$(tps disable $extra)")
        tls+=("$(tps require $extra)")
    done
    p=$(printf '%s\n' "${plain[@]}" | median)
    t=$(printf '%s\n' "${tls[@]}" | median)
    echo "| pgbench $load | $p | $t | $(awk -v a="$t" -v b="$p" 'BEGIN {printf "%.2f", a/b}') |"
done
