#!/usr/bin/env bash
# Load comparison: pgbench against a private PostgreSQL directly, through HAProxy (a bare TCP hop), PgBouncer and sluice, with latency percentiles, plus idle-client memory.
#
# Starts everything it needs in a temporary directory (PostgreSQL as the `postgres` OS user,
# PgBouncer as `postgres` too, HAProxy and sluice as the caller), runs pgbench -S at 1/16/64
# clients and -S -C (a new md5-authenticated connection per transaction) against the targets
# interleaved, R times each, then -S in the extended and prepared query modes (-M), then -S at a
# fixed rate (-R) with 1,000 and 10,000 clients through the poolers only (PostgreSQL itself allows
# 200 connections), and prints markdown tables of median TPS, ratios, CPU use, per-transaction
# latency (p50/p99 from pgbench --log) and the RSS an idle authenticated client costs each
# pooler. Tears everything down on exit.
#
# HAProxy (Debian's, TCP mode, one thread, no pooling: each client gets its own server
# connection) is the floor of any proxy hop: what relaying bytes through a second process costs.
#
# PgBouncer supports protocol-level prepared statements in transaction mode only from 1.21
# (max_prepared_statements); with an older one, -M prepared runs against direct and sluice only
# and the table says so.
#
# Run as root from the crate root, after `cargo build --release`:
#   benches/load/compare.sh
# Environment (defaults):
#   BENCH_REPEAT=3          runs of each (workload, target)
#   BENCH_DURATION=10       seconds per pgbench run
#   BENCH_POOL_SIZE=10      PgBouncer default_pool_size = sluice max_connections
#   BENCH_SCALE=10          pgbench -i scale
#   BENCH_CLIENTS="1 16 64" client counts for the -S runs
#   BENCH_CONNECT_CLIENTS=16  clients for the -S -C run (" " skips it)
#   BENCH_MODE_CLIENTS="16 64" client counts for the -S -M extended / -M prepared runs
#   BENCH_MANY_CLIENTS="1000 10000" client counts for the fixed-rate -S runs (poolers only; "" skips)
#   BENCH_MANY_RATE=2000    their total rate, transactions per second (pgbench -R)
#   BENCH_HAPROXY=1         0 leaves HAProxy out
#   BENCH_IDLE_CLIENTS=5000 idle clients for the memory measurement (0 skips it)
#   BENCH_IDLE_PARAMS=      startup parameters each idle client sends besides user and database
#                           ("name=value ..."; pgjdbc's set is in docs/benchmarks.md)
#   BENCH_IDLE_SETTLE=75    seconds the idle clients sit before RSS is read: sluice parks idle
#                           sessions after idle_client_park_after (30 s), and jemalloc hands
#                           the freed pages back over its dirty-page decay (10 s) as its
#                           background thread gets to them: about 30 s more. At 45 s about a
#                           third of a KiB per client was still on its way back.
#   BENCH_JOBS=2            pgbench -j (capped at the client count)
#   BENCH_KEEP=0            1 keeps the temp dir (logs, configs) for inspection
#   SLUICE_LOG=sluice=info,sluice::audit=warn   sluice's RUST_LOG (the audit lines off)
#   BENCH_HOLD=0            1 starts the targets, prints their ports and PIDs and waits until
#                           interrupted, running nothing: for perf and strace by hand
#   SLUICE_BIN=target/release/sluice   PG_BIN=/usr/lib/postgresql/15/bin   PYTHON=target/test-venv/bin/python
#   BENCH_UNIX=1            0 leaves out sluice_unix: a second sluice reaching PostgreSQL over
#                           its Unix-domain socket (the sidecar case), clients still on TCP
#   SLUICE_BIN_B=           a second sluice binary (another commit): run as a fourth target,
#                           interleaved with the others, and compared with SLUICE_BIN (A/B)
#   BENCH_HOPS=0            1 adds three bare hops to the -S runs (benches/load/hop: tokio's epoll
#                           relay, an io_uring one, and io_uring under tokio; no pooling, as
#                           HAProxy); needs
#                           `cargo build --release --manifest-path benches/load/hop/Cargo.toml --target-dir target/hop`
set -euo pipefail

REPEAT=${BENCH_REPEAT:-3}
DURATION=${BENCH_DURATION:-10}
POOL_SIZE=${BENCH_POOL_SIZE:-10}
SCALE=${BENCH_SCALE:-10}
CLIENTS=${BENCH_CLIENTS:-"1 16 64"}
CONNECT_CLIENTS=${BENCH_CONNECT_CLIENTS:-16}
MODE_CLIENTS=${BENCH_MODE_CLIENTS:-"16 64"}
IDLE_CLIENTS=${BENCH_IDLE_CLIENTS:-5000}
MANY_CLIENTS=${BENCH_MANY_CLIENTS-"1000 10000"}
MANY_RATE=${BENCH_MANY_RATE:-2000}
USE_HAPROXY=${BENCH_HAPROXY:-1}
IDLE_SETTLE=${BENCH_IDLE_SETTLE:-75}
JOBS=${BENCH_JOBS:-2}
KEEP=${BENCH_KEEP:-0}
HOLD=${BENCH_HOLD:-0}
# Without the per-connection audit lines, as PgBouncer runs with log_connections = 0: two log
# lines per login were about 30 % of sluice's instructions in the -C run (docs/authentication.md).
SLUICE_LOG=${SLUICE_LOG:-sluice=info,sluice::audit=warn}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
SLUICE_BIN_B=${SLUICE_BIN_B:-}
USE_UNIX=${BENCH_UNIX:-1}
USE_HOPS=${BENCH_HOPS:-0}
HOP_BIN=${HOP_BIN:-$ROOT/target/hop/release/hop}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x $ROOT/target/test-venv/bin/python ]]; then PYTHON=$ROOT/target/test-venv/bin/python; else PYTHON=python3; fi
fi
BENCH_USER=bench
BENCH_PASSWORD=bench-md5-password
BENCH_DB=bench

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer are started as the postgres user)"
id postgres >/dev/null 2>&1 || die "no postgres OS user"
[[ -x $SLUICE_BIN ]] || die "no sluice binary at $SLUICE_BIN (cargo build --release)"
[[ $USE_HOPS == 0 || -x $HOP_BIN ]] || die "no hop binary at $HOP_BIN (cargo build --release --manifest-path benches/load/hop/Cargo.toml --target-dir target/hop)"
[[ -x $PG_BIN/initdb ]] || die "no PostgreSQL binaries in $PG_BIN"
for tool in pgbench psql pgbouncer; do command -v $tool >/dev/null || die "$tool not installed"; done

# 5,000 idle clients need as many descriptors in the pooler, and again in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 20000 2>/dev/null || true
(( $(ulimit -n) >= IDLE_CLIENTS * 2 + 100 )) || log "warning: ulimit -n is $(ulimit -n); the idle-client test may fail"

TMP=$(mktemp -d /tmp/sluice-bench.XXXXXX)
chmod 755 "$TMP"
chown postgres: "$TMP"
mkdir -p "$TMP/logs"
SLUICE_PID="" SLUICE_B_PID="" SLUICE_U_PID="" SLUICE_U_PORT="" PGB_PID="" HAP_PID="" PG_STARTED=0
HOPT_PID="" HOPU_PID="" HOPH_PID="" HOPT_PORT="" HOPU_PORT="" HOPH_PORT=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ -n ${HOLD_SLEEP:-} ]] && kill "$HOLD_SLEEP" 2>/dev/null
    for pid in $SLUICE_PID $SLUICE_B_PID $SLUICE_U_PID $HAP_PID $HOPT_PID $HOPU_PID $HOPH_PID; do
        if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" 2>/dev/null; fi
    done
    if [[ -n $PGB_PID ]] && kill -0 "$PGB_PID" 2>/dev/null; then
        kill -INT "$PGB_PID"   # immediate shutdown
        for _ in $(seq 50); do kill -0 "$PGB_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$PGB_PID" 2>/dev/null && kill -KILL "$PGB_PID"
    fi
    if (( PG_STARTED )); then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$TMP/pgdata" -m immediate -w stop >/dev/null 2>&1
    fi
    wait 2>/dev/null
    if (( rc != 0 )); then
        echo "compare.sh failed (exit $rc); last lines of the logs:" >&2
        for f in "$TMP/sluice.log" "$TMP/pgbouncer.log" "$TMP/pg.log"; do
            [[ -f $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
        done
    fi
    if [[ $KEEP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Waits until a real md5 login and query succeed on 127.0.0.1:$1.
wait_ready() {
    local port=$1 what=$2
    for _ in $(seq 100); do
        if PGPASSWORD=$BENCH_PASSWORD psql -X -q -h 127.0.0.1 -p "$port" -U $BENCH_USER -d $BENCH_DB \
            -tAc 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    die "$what on port $port did not accept a login"
}

# ---------------------------------------------------------------- PostgreSQL
PG_PORT=$(free_port)
log "initdb into $TMP/pgdata (PostgreSQL on port $PG_PORT)"
runuser -u postgres -- "$PG_BIN/initdb" -D "$TMP/pgdata" -U postgres -E UTF8 --no-sync \
    --auth-local=trust --auth-host=reject >"$TMP/logs/initdb.log" 2>&1
cat >>"$TMP/pgdata/postgresql.conf" <<EOF
# benches/load/compare.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = md5
EOF
cat >"$TMP/pgdata/pg_hba.conf" <<EOF
# benches/load/compare.sh: the superuser over the private socket, the bench role with md5 over TCP
local all postgres trust
local all $BENCH_USER md5
host all $BENCH_USER 127.0.0.1/32 md5
EOF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$TMP/pgdata" -l "$TMP/pg.log" -w -t 60 start >/dev/null
PG_STARTED=1
PG_PID=$(head -n1 "$TMP/pgdata/postmaster.pid")
psql -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PG_PORT" -U postgres -d postgres <<EOF
SET password_encryption = 'md5';
CREATE ROLE $BENCH_USER LOGIN PASSWORD '$BENCH_PASSWORD';
CREATE DATABASE $BENCH_DB OWNER $BENCH_USER;
EOF
stored=$(psql -X -h "$TMP" -p "$PG_PORT" -U postgres -d postgres -tAc \
    "select rolpassword from pg_authid where rolname = '$BENCH_USER'")
[[ $stored == md5* ]] || die "the bench role's password is not stored as md5"
log "pgbench -i -s $SCALE"
PGPASSWORD=$BENCH_PASSWORD pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U $BENCH_USER $BENCH_DB \
    >"$TMP/logs/pgbench-init.log" 2>&1 || { cat "$TMP/logs/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ---------------------------------------------------------------- PgBouncer
PGB_PORT=$(free_port)
echo "\"$BENCH_USER\" \"$stored\"" >"$TMP/userlist.txt"
cat >"$TMP/pgbouncer.ini" <<EOF
; benches/load/compare.sh: PgBouncer in transaction mode with md5 auth, as the sluice config below
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = md5
auth_file = $TMP/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = 20000
logfile = $TMP/pgbouncer.log
pidfile = $TMP/pgbouncer.pid
; sluice runs with its audit lines (connect, auth_success) off too: SLUICE_LOG below
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
EOF
chown postgres: "$TMP/userlist.txt" "$TMP/pgbouncer.ini"
chmod 600 "$TMP/userlist.txt"
log "PgBouncer $(pgbouncer --version | head -n1 | awk '{print $2}') on port $PGB_PORT"
# runuser resets the descriptor limit through PAM: raise it again inside.
runuser -u postgres -- bash -c 'ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec pgbouncer "$2"' _ "$(ulimit -n)" "$TMP/pgbouncer.ini" \
    >"$TMP/logs/pgbouncer.stdout" 2>&1 &
for _ in $(seq 100); do [[ -s $TMP/pgbouncer.pid ]] && break; sleep 0.1; done
[[ -s $TMP/pgbouncer.pid ]] || die "PgBouncer wrote no pidfile"
PGB_PID=$(cat "$TMP/pgbouncer.pid")
pgb_files=$(awk '/^Max open files/ { print $4 }' "/proc/$PGB_PID/limits")
(( pgb_files >= IDLE_CLIENTS + 100 )) || die "PgBouncer may open only $pgb_files files"
wait_ready "$PGB_PORT" PgBouncer

# ---------------------------------------------------------------- HAProxy
HAP_PORT=""
if [[ $USE_HAPROXY == 1 ]] && command -v haproxy >/dev/null; then
    HAP_PORT=$(free_port)
    cat >"$TMP/haproxy.cfg" <<EOF
# benches/load/compare.sh: a bare TCP hop, one thread, no pooling
global
    nbthread 1
    maxconn 5000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend pg
    bind 127.0.0.1:$HAP_PORT
    default_backend pg
backend pg
    server pg 127.0.0.1:$PG_PORT
EOF
    log "HAProxy $(haproxy -v | head -n1 | awk '{print $3}') on port $HAP_PORT"
    haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/logs/haproxy.log" 2>&1 &
    HAP_PID=$!
    wait_ready "$HAP_PORT" HAProxy
fi

# ---------------------------------------------------------------- bare hops (benches/load/hop)
if [[ $USE_HOPS == 1 ]]; then
    HOPT_PORT=$(free_port)
    "$HOP_BIN" tokio "127.0.0.1:$HOPT_PORT" "127.0.0.1:$PG_PORT" >"$TMP/logs/hop-tokio.log" 2>&1 &
    HOPT_PID=$!
    wait_ready "$HOPT_PORT" "tokio hop"
    HOPU_PORT=$(free_port)
    "$HOP_BIN" uring "127.0.0.1:$HOPU_PORT" "127.0.0.1:$PG_PORT" >"$TMP/logs/hop-uring.log" 2>&1 &
    HOPU_PID=$!
    wait_ready "$HOPU_PORT" "io_uring hop"
    HOPH_PORT=$(free_port)
    "$HOP_BIN" tokio-uring "127.0.0.1:$HOPH_PORT" "127.0.0.1:$PG_PORT" >"$TMP/logs/hop-hybrid.log" 2>&1 &
    HOPH_PID=$!
    wait_ready "$HOPH_PORT" "io_uring-under-tokio hop"
    log "bare hops: tokio on port $HOPT_PORT, io_uring on port $HOPU_PORT, io_uring under tokio on port $HOPH_PORT"
fi

# ---------------------------------------------------------------- sluice
SLUICE_PORT=$(free_port)
cat >"$TMP/secrets.yaml" <<EOF
# benches/load/compare.sh: the bench role's login
bench:
  username: $BENCH_USER
  password: $BENCH_PASSWORD
  engine: postgres
EOF
cat >"$TMP/sluice.yaml" <<EOF
# benches/load/compare.sh: one read_write endpoint, pool size as PgBouncer's, md5 client auth
endpoints:
  - name: bench
    listen: 127.0.0.1:$SLUICE_PORT
    target_group: pg
    role: read_write
target_groups:
  pg:
    engine: postgres
    instances: [127.0.0.1:$PG_PORT]
    connection_pool:
      max_connections: $POOL_SIZE
auth:
  - username: $BENCH_USER
    client_auth: password
    client_password_auth_type: postgres_md5
    secret: file:secrets.yaml#bench
EOF
chmod 600 "$TMP/secrets.yaml"
"$SLUICE_BIN" check-config "$TMP/sluice.yaml" >"$TMP/logs/check-config.log" 2>&1 \
    || { cat "$TMP/logs/check-config.log" >&2; die "sluice check-config failed"; }
log "sluice ($SLUICE_BIN) on port $SLUICE_PORT"
RUST_LOG=$SLUICE_LOG "$SLUICE_BIN" run --config "$TMP/sluice.yaml" >"$TMP/sluice.log" 2>&1 &
SLUICE_PID=$!
wait_ready "$SLUICE_PORT" sluice
if [[ $USE_UNIX == 1 ]]; then
    SLUICE_U_PORT=$(free_port)
    sed -e "s/127.0.0.1:$SLUICE_PORT/127.0.0.1:$SLUICE_U_PORT/" \
        -e "s|instances: \[127.0.0.1:$PG_PORT\]|instances: [\"unix:$TMP/.s.PGSQL.$PG_PORT\"]|" \
        "$TMP/sluice.yaml" >"$TMP/sluice-unix.yaml"
    grep -q 'unix:' "$TMP/sluice-unix.yaml" || die "sluice-unix.yaml names no socket"
    log "sluice over PostgreSQL's Unix socket on port $SLUICE_U_PORT"
    RUST_LOG=$SLUICE_LOG "$SLUICE_BIN" run --config "$TMP/sluice-unix.yaml" >"$TMP/sluice-unix.log" 2>&1 &
    SLUICE_U_PID=$!
    wait_ready "$SLUICE_U_PORT" "sluice (unix)"
fi
if [[ -n $SLUICE_BIN_B ]]; then
    SLUICE_B_PORT=$(free_port)
    sed "s/127.0.0.1:$SLUICE_PORT/127.0.0.1:$SLUICE_B_PORT/" "$TMP/sluice.yaml" >"$TMP/sluice-b.yaml"
    log "sluice B ($SLUICE_BIN_B) on port $SLUICE_B_PORT"
    RUST_LOG=$SLUICE_LOG "$SLUICE_BIN_B" run --config "$TMP/sluice-b.yaml" >"$TMP/sluice-b.log" 2>&1 &
    SLUICE_B_PID=$!
    wait_ready "$SLUICE_B_PORT" "sluice B"
fi

if [[ $HOLD == 1 ]]; then
    # For profiling (perf record -p, strace -c -p): everything stays up until interrupted.
    echo "holding: postgres $PG_PORT (pid $PG_PID), pgbouncer $PGB_PORT (pid $PGB_PID)," \
        "haproxy ${HAP_PORT:--} (pid ${HAP_PID:--}), sluice $SLUICE_PORT (pid $SLUICE_PID)," \
        "sluice B ${SLUICE_B_PORT:--} (pid ${SLUICE_B_PID:--}); user $BENCH_USER password $BENCH_PASSWORD db $BENCH_DB;" \
        "sluice config $TMP/sluice.yaml (benches/load/instructions.sh takes it)" >&2
    # In the background and waited on, so the EXIT trap runs at once on a signal.
    while true; do sleep 3600 & HOLD_SLEEP=$!; wait $HOLD_SLEEP; done
fi

# ---------------------------------------------------------------- CPU accounting
CLK_TCK=$(getconf CLK_TCK)
# utime+stime of one process, in ticks.
proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# PostgreSQL as a whole: the postmaster with its reaped children, plus the live ones.
pg_ticks() {
    local total pid
    total=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$PG_PID/stat")
    for pid in $(cat "/proc/$PG_PID/task/$PG_PID/children"); do
        total=$(( total + $(proc_ticks "$pid" 2>/dev/null || echo 0) ))
    done
    echo "$total"
}
# Busy and total jiffies of the whole machine.
machine_ticks() { awk '/^cpu / { t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t }' /proc/stat; }

# ---------------------------------------------------------------- idle clients
port_of() { case $1 in direct) echo "$PG_PORT" ;; haproxy) echo "$HAP_PORT" ;; pgbouncer) echo "$PGB_PORT" ;; sluice) echo "$SLUICE_PORT" ;; sluice_b) echo "$SLUICE_B_PORT" ;; sluice_unix) echo "$SLUICE_U_PORT" ;; hop_tokio) echo "$HOPT_PORT" ;; hop_uring) echo "$HOPU_PORT" ;; hop_hybrid) echo "$HOPH_PORT" ;; esac; }
pid_of() { case $1 in haproxy) echo "$HAP_PID" ;; pgbouncer) echo "$PGB_PID" ;; sluice) echo "$SLUICE_PID" ;; sluice_b) echo "$SLUICE_B_PID" ;; sluice_unix) echo "$SLUICE_U_PID" ;; hop_tokio) echo "$HOPT_PID" ;; hop_uring) echo "$HOPU_PID" ;; hop_hybrid) echo "$HOPH_PID" ;; *) echo "" ;; esac; }
MEM_ROWS=""
if (( IDLE_CLIENTS > 0 )); then
    for target in pgbouncer sluice ${SLUICE_BIN_B:+sluice_b}; do
        port=$(port_of $target) pid=$(pid_of $target)
        log "idle-client memory: $IDLE_CLIENTS authenticated clients on $target (pid $pid)"
        out=$(IDLE_SETTLE_SECONDS=$IDLE_SETTLE IDLE_STARTUP_PARAMS=${BENCH_IDLE_PARAMS:-} "$PYTHON" "$HERE/idle_clients.py" 127.0.0.1 "$port" $BENCH_USER $BENCH_PASSWORD $BENCH_DB \
            "$IDLE_CLIENTS" "$pid" 2>"$TMP/logs/idle-$target.log") \
            || { cat "$TMP/logs/idle-$target.log" >&2; die "idle-client test against $target failed"; }
        log "  $out"
        MEM_ROWS+="$target $out"$'\n'
    done
fi

# ---------------------------------------------------------------- pgbench
RESULTS=$TMP/results.tsv
: >"$RESULTS"
TARGETS=(direct pgbouncer sluice)

WORKLOADS=()
for c in $CLIENTS; do WORKLOADS+=("S:$c"); done
for c in $CONNECT_CLIENTS; do WORKLOADS+=("SC:$c"); done
for c in $MODE_CLIENTS; do WORKLOADS+=("E:$c" "P:$c"); done
for c in $MANY_CLIENTS; do WORKLOADS+=("R:$c"); done
label() {
    local kind=${1%%:*} c=${1##*:}
    case $kind in
        SC) echo "-S -C, $c clients" ;;
        E) echo "-S -M extended, $c clients" ;;
        P) echo "-S -M prepared, $c clients" ;;
        R) echo "-S -R $MANY_RATE, $c clients" ;;
        *) echo "-S, $c clients" ;;
    esac
}
# PgBouncer before 1.21 cannot keep protocol-level prepared statements in transaction mode.
PGB_VERSION=$(pgbouncer --version | head -n1 | awk '{print $2}')
PGB_PREPARED=0
if printf '1.21\n%s\n' "$PGB_VERSION" | sort -V -C; then PGB_PREPARED=1; fi
targets_of() {
    local b="" h="" o=""
    [[ -n $SLUICE_BIN_B ]] && b=" sluice_b"
    [[ -n $SLUICE_U_PORT ]] && b+=" sluice_unix"
    [[ -n $HAP_PORT ]] && h=" haproxy"
    [[ -n $HOPT_PORT ]] && o=" hop_tokio hop_uring hop_hybrid"
    case ${1%%:*} in
        # The hops connect to the server blocking: for the steady state only.
        S) echo "direct$h$o pgbouncer sluice$b" ;;
        # PostgreSQL allows 200 connections: only poolers serve thousands of clients.
        R) echo "pgbouncer sluice$b" ;;
        P) if [[ $PGB_PREPARED == 0 ]]; then echo "direct$h sluice$b"; else echo "direct$h pgbouncer sluice$b"; fi ;;
        *) echo "direct$h pgbouncer sluice$b" ;;
    esac
}

# Voluntary context switches of all threads of a process (a thread parking and being woken).
proc_switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { v += $2 } END { print v + 0 }'; }

# p50 and p99 transaction latency in ms from pgbench --log files (time plus any schedule lag:
# what the client waited, from when the transaction was due).
latency() {
    cat "$@" 2>/dev/null | awk '{ print $3 + ($7 == "" ? 0 : $7) }' | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "- -"; exit }
            i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
            i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
            printf "%.3f %.3f\n", v[i50] / 1000, v[i99] / 1000
        }'
}

# One pgbench run. Appends: workload, repeat, target, tps, proxy %CPU (of one core), proxy
# CPU microseconds per transaction, proxy voluntary context switches per transaction,
# postgres %CPU, machine busy %, p50 ms, p99 ms.
run_one() {
    local workload=$1 rep=$2 target=$3
    local kind=${workload%%:*} c=${workload##*:}
    local port pid j flags logf t0 t1 p0=0 p1=0 s0=0 s1=0 g0 g1 m0 m1 mt0 mt1 tps txs pcpu pus pcs gcpu mbusy lat
    port=$(port_of "$target"); pid=$(pid_of "$target")
    j=$(( c < JOBS ? c : JOBS ))
    flags=(-n -S -T "$DURATION" -c "$c" -j "$j")
    case $kind in
        SC) flags+=(-C) ;;
        E) flags+=(-M extended) ;;
        P) flags+=(-M prepared) ;;
        R) flags+=(-R "$MANY_RATE") ;;
    esac
    logf="$TMP/logs/pgbench-$kind-$c-$target-$rep.log"
    rm -f "$TMP"/logs/lat.*
    flags+=(--log --log-prefix="$TMP/logs/lat")
    if [[ -n $pid ]]; then p0=$(proc_ticks "$pid"); s0=$(proc_switches "$pid"); fi
    g0=$(pg_ticks); read -r m0 mt0 < <(machine_ticks); t0=$(date +%s.%N)
    if PGPASSWORD=$BENCH_PASSWORD pgbench "${flags[@]}" -h 127.0.0.1 -p "$port" -U $BENCH_USER $BENCH_DB \
        >"$logf" 2>&1; then
        tps=$(awk '/^tps = / { print $3; exit }' "$logf")
        txs=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$logf")
    else
        tps=ERR
    fi
    t1=$(date +%s.%N); read -r m1 mt1 < <(machine_ticks)
    # Backends of pgbench's connections exit just now; count their CPU once they are reaped.
    sleep 0.5
    g1=$(pg_ticks)
    if [[ -n $pid ]]; then p1=$(proc_ticks "$pid"); s1=$(proc_switches "$pid"); fi
    [[ -z $tps ]] && tps=ERR
    lat=$(latency "$TMP"/logs/lat.*)
    rm -f "$TMP"/logs/lat.*
    [[ -z ${txs:-} || ${txs:-0} == 0 ]] && txs=1
    if [[ -n $pid ]]; then
        pcpu=$(awk -v a="$p0" -v b="$p1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (b-a)/hz/(t1-t0)*100 }')
        pus=$(awk -v a="$p0" -v b="$p1" -v n="$txs" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (b-a)/hz/n*1e6 }')
        pcs=$(awk -v a="$s0" -v b="$s1" -v n="$txs" 'BEGIN { printf "%.2f", (b-a)/n }')
    else
        pcpu=- pus=- pcs=-
    fi
    gcpu=$(awk -v a="$g0" -v b="$g1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (b-a)/hz/(t1-t0)*100 }')
    mbusy=$(awk -v a="$m0" -v b="$m1" -v ta="$mt0" -v tb="$mt1" 'BEGIN { printf "%.0f", (b-a)/(tb-ta)*100 }')
    if [[ $tps == ERR ]]; then
        log "  $target: pgbench FAILED, see below"
        tail -n 5 "$logf" >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$rep" "$target" "$tps" "$pcpu" "$pus" "$pcs" "$gcpu" "$mbusy" ${lat% *} ${lat#* } >>"$RESULTS"
    log "  $(label "$workload") run $rep $target: tps=$tps proxy_cpu=${pcpu}% (${pus}us/tx, ${pcs} vcsw/tx) postgres_cpu=${gcpu}% machine_busy=${mbusy}% p50/p99=${lat/ //}ms"
}

log "pgbench: ${#WORKLOADS[@]} workloads x $REPEAT repeats x up to 4 targets x ${DURATION}s"
for workload in "${WORKLOADS[@]}"; do
    for rep in $(seq "$REPEAT"); do
        # Rotate the order each repeat so no target always runs first (after a pause) or last.
        read -r -a targets <<<"$(targets_of "$workload")"
        n=${#targets[@]}
        for k in $(seq 0 $(( n - 1 ))); do
            run_one "$workload" "$rep" "${targets[$(( (k + rep - 1) % n ))]}"
        done
    done
done

# ---------------------------------------------------------------- report
# Median of column $3 of the results for (workload $1, target $2); "ERR" if any run failed.
median() {
    awk -F'\t' -v w="$1" -v t="$2" -v col="$3" '$1 == w && $3 == t { print $col }' "$RESULTS" | sort -g | awk '
        /ERR/ { err = 1 } { v[NR] = $1 }
        END {
            if (NR == 0) { print "n/a"; exit }
            if (err) { print "ERR"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "ERR" || b == "ERR" || a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
fmt() { awk -v a="$1" 'BEGIN { if (a == "ERR" || a == "n/a") print a; else printf "%.0f", a }'; }

cores=$(nproc)
rev=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
echo
echo "sluice $rev ($SLUICE_BIN, built $(date -u -r "$SLUICE_BIN" +%Y-%m-%dT%H:%MZ));" \
    "PgBouncer $(pgbouncer --version | head -n1 | awk '{print $2}'); HAProxy ${HAP_PORT:+$(haproxy -v | head -n1 | awk '{print $3}')}; $("$PG_BIN/postgres" --version);" \
    "$cores cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); $(date -u +%Y-%m-%dT%H:%MZ)"
echo
echo "## pgbench: median TPS of $REPEAT interleaved runs of ${DURATION}s (pool size $POOL_SIZE, md5 auth, $cores cores)"
echo
echo "| workload | direct | HAProxy | PgBouncer | sluice | sluice/PgBouncer | sluice/HAProxy | sluice/direct |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for workload in "${WORKLOADS[@]}"; do
    d=$(median "$workload" direct 4); h=$(median "$workload" haproxy 4)
    b=$(median "$workload" pgbouncer 4); s=$(median "$workload" sluice 4)
    echo "| $(label "$workload") | $(fmt "$d") | $(fmt "$h") | $(fmt "$b") | $(fmt "$s") | $(ratio "$s" "$b") | $(ratio "$s" "$h") | $(ratio "$s" "$d") |"
done
if [[ $PGB_PREPARED == 0 ]]; then
    echo
    echo "PgBouncer $PGB_VERSION keeps no protocol-level prepared statements in transaction mode"
    echo "(that needs 1.21+), so -M prepared ran against direct and sluice only: compare sluice's"
    echo "-M prepared row with PgBouncer's -M extended row."
fi
echo
echo "## CPU during the runs (medians)"
echo
echo "Proxy: % of one core, CPU µs per transaction (per connection with -C), voluntary context"
echo "switches per transaction. postgres: % of one core, all backends. Machine: busy % of all $cores cores."
echo
echo "| workload | HAProxy %cpu, µs/tx, cs/tx | PgBouncer %cpu, µs/tx, cs/tx | sluice %cpu, µs/tx, cs/tx | postgres %cpu (direct / HAProxy / PgBouncer / sluice) | machine busy % (direct / HAProxy / PgBouncer / sluice) |"
echo "|---|---:|---:|---:|---:|---:|"
for workload in "${WORKLOADS[@]}"; do
    echo "| $(label "$workload")" \
        "| $(median "$workload" haproxy 5), $(median "$workload" haproxy 6), $(median "$workload" haproxy 7)" \
        "| $(median "$workload" pgbouncer 5), $(median "$workload" pgbouncer 6), $(median "$workload" pgbouncer 7)" \
        "| $(median "$workload" sluice 5), $(median "$workload" sluice 6), $(median "$workload" sluice 7)" \
        "| $(median "$workload" direct 8) / $(median "$workload" haproxy 8) / $(median "$workload" pgbouncer 8) / $(median "$workload" sluice 8)" \
        "| $(median "$workload" direct 9) / $(median "$workload" haproxy 9) / $(median "$workload" pgbouncer 9) / $(median "$workload" sluice 9) |"
done
echo
echo "## Latency per transaction (ms, medians over the runs of each run's p50 and p99; pgbench --log)"
echo
echo "| workload | direct p50 / p99 | HAProxy p50 / p99 | PgBouncer p50 / p99 | sluice p50 / p99 | sluice/PgBouncer p99 |"
echo "|---|---:|---:|---:|---:|---:|"
for workload in "${WORKLOADS[@]}"; do
    row="| $(label "$workload")"
    for t in direct haproxy pgbouncer sluice; do
        row+=" | $(median "$workload" $t 10) / $(median "$workload" $t 11)"
    done
    echo "$row | $(ratio "$(median "$workload" sluice 11)" "$(median "$workload" pgbouncer 11)") |"
done
if [[ -n $SLUICE_U_PORT ]]; then
    echo
    echo "## sluice to PostgreSQL over its Unix socket (the sidecar case), clients on TCP as above"
    echo
    echo "| workload | sluice TPS | sluice_unix TPS | unix/TCP | sluice µs/tx | sluice_unix µs/tx | postgres %cpu (sluice / sluice_unix) | sluice_unix/PgBouncer TPS |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for workload in "${WORKLOADS[@]}"; do
        a=$(median "$workload" sluice 4); u=$(median "$workload" sluice_unix 4)
        au=$(median "$workload" sluice 6); uu=$(median "$workload" sluice_unix 6)
        echo "| $(label "$workload") | $(fmt "$a") | $(fmt "$u") | $(ratio "$u" "$a") | $au | $uu | $(median "$workload" sluice 8) / $(median "$workload" sluice_unix 8) | $(ratio "$u" "$(median "$workload" pgbouncer 4)") |"
    done
fi
if [[ -n $HOPT_PORT ]]; then
    echo
    echo "## Bare hops (benches/load/hop: one server connection per client, bytes relayed unread) beside HAProxy and the poolers"
    echo
    echo "| workload | HAProxy TPS, µs/tx | tokio hop TPS, µs/tx | io_uring hop TPS, µs/tx | io_uring under tokio TPS, µs/tx | PgBouncer TPS, µs/tx | sluice TPS, µs/tx | io_uring/tokio µs | under tokio/tokio µs |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for workload in "${WORKLOADS[@]}"; do
        [[ ${workload%%:*} == S ]] || continue
        row="| $(label "$workload")"
        for t in haproxy hop_tokio hop_uring hop_hybrid pgbouncer sluice; do
            row+=" | $(fmt "$(median "$workload" $t 4)"), $(median "$workload" $t 6)"
        done
        tokio_us=$(median "$workload" hop_tokio 6)
        echo "$row | $(ratio "$(median "$workload" hop_uring 6)" "$tokio_us") | $(ratio "$(median "$workload" hop_hybrid 6)" "$tokio_us") |"
    done
fi
if [[ -n $SLUICE_BIN_B ]]; then
    echo
    echo "## A/B: sluice A ($SLUICE_BIN) and sluice B ($SLUICE_BIN_B), interleaved in the runs above"
    echo
    echo "| workload | A TPS | B TPS | B/A | A µs/tx | B µs/tx | B/A µs |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for workload in "${WORKLOADS[@]}"; do
        a=$(median "$workload" sluice 4); b=$(median "$workload" sluice_b 4)
        au=$(median "$workload" sluice 6); bu=$(median "$workload" sluice_b 6)
        echo "| $(label "$workload") | $(fmt "$a") | $(fmt "$b") | $(ratio "$b" "$a") | $au | $bu | $(ratio "$bu" "$au") |"
    done
fi
if [[ -n $MEM_ROWS ]]; then
    echo
    echo "## Idle clients: RSS growth with $IDLE_CLIENTS authenticated idle clients"
    echo
    echo "| pooler | RSS before (KiB) | RSS with clients (KiB) | per client (KiB) | RSS after they left (KiB) | connect time (s) |"
    echo "|---|---:|---:|---:|---:|---:|"
    while read -r target rest; do
        [[ -z $target ]] && continue
        declare -A kv=()
        for pair in $rest; do kv[${pair%%=*}]=${pair#*=}; done
        name=$target; [[ $target == pgbouncer ]] && name=PgBouncer
        echo "| $name | ${kv[rss_before_kib]} | ${kv[rss_idle_kib]} | ${kv[per_client_kib]} | ${kv[rss_after_close_kib]} | ${kv[connect_seconds]} |"
        unset kv
    done <<<"$MEM_ROWS"
fi
echo
echo "## Raw runs (workload, repeat, target, tps, proxy %cpu, proxy µs/tx, proxy cs/tx, postgres %cpu, machine busy %, p50 ms, p99 ms)"
echo
echo '```'
cat "$RESULTS"
echo '```'
if grep -q ERR "$RESULTS" || grep -qiE 'error|panic' "$TMP/sluice.log"; then
    echo
    echo "## sluice log (errors)"
    echo '```'
    grep -iE 'error|warn|panic' "$TMP/sluice.log" | tail -n 30 || true
    echo '```'
fi
