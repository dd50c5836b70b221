#!/usr/bin/env bash
# Load comparison for the MySQL engine: sysbench against a private MariaDB directly, through
# HAProxy (TCP mode, one thread: the floor of any proxy hop, since no MySQL pooler is packaged)
# and through sluice, plus idle-client memory.
#
# Starts everything it needs in a temporary directory (MariaDB as the `mysql` OS user, sluice as
# the caller), fills 4 sbtest tables once (sysbench prepare + prewarm), then runs sysbench
# oltp_read_only and oltp_read_write at 1/16/64 threads with server-side prepared statements
# (--db-ps-mode=auto: sluice has to remap statement ids), oltp_read_only once more with
# --db-ps-mode=disable (text protocol), and a point select on a new connection for every
# transaction (reconnect_point_select.lua beside this script: sysbench 1.0 has no --reconnect).
# Every configuration runs against direct / sluice interleaved, BENCH_REPEAT times each,
# rotating which goes first, and the report is a markdown table of median TPS and p95 latency
# with the sluice/direct ratio, plus sluice's and MariaDB's CPU. Before the sysbench runs, the
# RSS an idle authenticated client costs sluice (and, as a reference, mariadbd itself: a thread
# per connection) is measured with BENCH_IDLE_CLIENTS clients held open by idle_clients.py beside
# this script (mysql_native_password logins with a schema, no query until after the measurement).
# Tears everything down on exit.
#
# Builds nothing. Run as root from the crate root, after `cargo build --release`:
#   benches/load/mysql.sh                      # about 13 minutes with the defaults
#   BENCH_ONLY_IDLE=1 benches/load/mysql.sh    # the idle-client memory table only, about 4 minutes
# Environment (defaults):
#   BENCH_REPEAT=3              runs of each (workload, target)
#   BENCH_SECONDS=15            seconds per sysbench run
#   BENCH_POOL=16               sluice max_connections
#   BENCH_THREADS="1 16 64"     thread counts for oltp_read_only / oltp_read_write (ps auto, "" skips)
#   BENCH_DISABLE_THREADS=16    thread counts for oltp_read_only --db-ps-mode=disable ("" skips)
#   BENCH_RECONNECT_THREADS=16  thread counts for the new-connection-per-transaction run ("" skips)
#   BENCH_POINT_THREADS="1 16"  thread counts for oltp_point_select, one statement per transaction ("" skips)
#   BENCH_TABLES=4 BENCH_TABLE_SIZE=10000   sysbench dataset
#   BENCH_IDLE_CLIENTS=5000     idle clients for the memory measurement, on each target (0 skips it)
#   BENCH_IDLE_SETTLE=75        seconds they sit idle before RSS is read (sluice parks them after 30 s;
#                               jemalloc hands the freed pages back over the next ~30 s)
#   BENCH_ONLY_IDLE=0           1 skips every sysbench run (and the sysbench prepare)
#   BENCH_TARGETS="direct haproxy sluice"  ("direct sluice" without haproxy installed);
#                               "direct" alone measures MariaDB only (no sluice started)
#   BENCH_KEEP=0                1 keeps the temp dir (logs, configs) for inspection
#   BENCH_HOLD=0                1 starts the targets (tables filled), prints their ports, PIDs
#                               and a sysbench command line, and waits until interrupted
#   SLUICE_BIN=target/release/sluice   MARIADBD=/usr/sbin/mariadbd
set -euo pipefail

REPEAT=${BENCH_REPEAT:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
POOL=${BENCH_POOL:-16}
THREADS=${BENCH_THREADS-"1 16 64"}
DISABLE_THREADS=${BENCH_DISABLE_THREADS-16}
RECONNECT_THREADS=${BENCH_RECONNECT_THREADS-16}
POINT_THREADS=${BENCH_POINT_THREADS-"1 16"}
if [[ ${BENCH_ONLY_IDLE:-0} == 1 ]]; then THREADS="" DISABLE_THREADS="" RECONNECT_THREADS="" POINT_THREADS=""; fi
IDLE_CLIENTS=${BENCH_IDLE_CLIENTS:-5000}
# Seconds the idle clients sit before RSS is read: sluice parks idle sessions after 30 s, and
# jemalloc hands the freed pages back after ~10 s.
IDLE_SETTLE=${BENCH_IDLE_SETTLE:-75}
TABLES=${BENCH_TABLES:-4}
TABLE_SIZE=${BENCH_TABLE_SIZE:-10000}
if command -v haproxy >/dev/null; then DEFAULT_TARGETS="direct haproxy sluice"; else DEFAULT_TARGETS="direct sluice"; fi
TARGETS=${BENCH_TARGETS:-$DEFAULT_TARGETS}
KEEP=${BENCH_KEEP:-0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
MARIADBD=${MARIADBD:-/usr/sbin/mariadbd}
RECONNECT_LUA=$HERE/reconnect_point_select.lua
IDLE_PY=$HERE/idle_clients.py
BENCH_USER=bench
BENCH_PASSWORD=bench-secret
BENCH_DB=bench

die() { echo "mysql.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

WITH_SLUICE=0 WITH_HAPROXY=0
for t in $TARGETS; do
    case $t in direct) ;; sluice) WITH_SLUICE=1 ;; haproxy) WITH_HAPROXY=1 ;; *) die "unknown target '$t' in BENCH_TARGETS" ;; esac
done
[[ $(id -u) -eq 0 ]] || die "run as root (MariaDB is started as the mysql user)"
id mysql >/dev/null 2>&1 || die "no mysql OS user (apt-get install mariadb-server)"
[[ -x $MARIADBD ]] || die "no mariadbd at $MARIADBD (apt-get install mariadb-server)"
SYSBENCH_RUNS=$(echo $THREADS $DISABLE_THREADS $RECONNECT_THREADS $POINT_THREADS)
for tool in mariadb-install-db mariadb python3 ${SYSBENCH_RUNS:+sysbench}; do
    command -v $tool >/dev/null || die "$tool not installed (apt-get install mariadb-server mariadb-client sysbench)"
done
if (( WITH_SLUICE )); then
    [[ -x $SLUICE_BIN ]] || die "no sluice binary at $SLUICE_BIN (cargo build --release)"
fi
[[ -f $RECONNECT_LUA ]] || die "missing $RECONNECT_LUA"
[[ -f $IDLE_PY ]] || die "missing $IDLE_PY"

# N idle clients need as many descriptors in sluice (and in mariadbd), and again in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ulimit -n 20000 2>/dev/null || true
(( $(ulimit -n) >= IDLE_CLIENTS * 2 + 100 )) || log "warning: ulimit -n is $(ulimit -n); the idle-client test may fail"

TMP=$(mktemp -d /tmp/sluice-bench-mysql.XXXXXX)
# The mysql user must reach its own directory below; nothing else in here is listable.
chmod 711 "$TMP"
mkdir -p "$TMP/logs" "$TMP/mariadb"
chown mysql: "$TMP/mariadb"
MDIR=$TMP/mariadb
SOCK=$MDIR/mysqld.sock
SLUICE_PID="" MARIADB_PID="" RUNUSER_PID="" HAP_PID="" HAP_PORT=""

stop_pid() {   # pid, seconds to wait after SIGTERM before SIGKILL
    local pid=$1 grace=$2
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq $(( grace * 10 ))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ -n ${HOLD_SLEEP:-} ]] && kill "$HOLD_SLEEP" 2>/dev/null
    if [[ -n $SLUICE_PID ]] && kill -0 "$SLUICE_PID" 2>/dev/null; then
        stop_pid "$SLUICE_PID" 10; wait "$SLUICE_PID" 2>/dev/null
    fi
    if [[ -n $HAP_PID ]]; then stop_pid "$HAP_PID" 5; wait "$HAP_PID" 2>/dev/null; fi
    if [[ -n $MARIADB_PID ]]; then stop_pid "$MARIADB_PID" 60; fi
    # runuser waits for mariadbd; if mariadbd never wrote its pid file, stop runuser itself.
    if [[ -n $RUNUSER_PID ]]; then
        [[ -z $MARIADB_PID ]] && stop_pid "$RUNUSER_PID" 10
        wait "$RUNUSER_PID" 2>/dev/null
    fi
    if (( rc != 0 )); then
        echo "mysql.sh failed (exit $rc); last lines of the logs:" >&2
        for f in "$TMP/sluice.log" "$MDIR/mariadbd.log"; do
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
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
mariadb_su() { mariadb --no-defaults -S "$SOCK" -u root "$@"; }

# Waits until the bench user can log in and run a query on 127.0.0.1:$1, while $3 (a pid) lives.
wait_ready() {
    local port=$1 what=$2 pid=$3
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during startup"
        if port_open "$port" && mariadb --no-defaults -h 127.0.0.1 -P "$port" -u $BENCH_USER \
            -p"$BENCH_PASSWORD" $BENCH_DB -Nse 'select 1' >/dev/null 2>"$TMP/logs/login-$what.err"; then
            return 0
        fi
        sleep 0.1
    done
    cat "$TMP/logs/login-$what.err" >&2
    die "$what on port $port did not accept a login in 20 s"
}

# ---------------------------------------------------------------- MariaDB
MARIADB_PORT=$(free_port)
log "mariadb-install-db into $MDIR/data (MariaDB on port $MARIADB_PORT)"
(cd "$MDIR" && runuser -u mysql -- mariadb-install-db --no-defaults --datadir="$MDIR/data" \
    --auth-root-authentication-method=socket --auth-root-socket-user=root --skip-test-db) \
    >"$TMP/logs/install-db.log" 2>&1 || { cat "$TMP/logs/install-db.log" >&2; die "mariadb-install-db failed"; }
# runuser resets the descriptor limit through PAM: raise it again inside (for the idle clients).
(cd "$MDIR" && exec runuser -u mysql -- bash -c 'ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; shift; exec "$@"' \
    _ "$(ulimit -n)" "$MARIADBD" --no-defaults --datadir="$MDIR/data" \
    --socket="$SOCK" --pid-file="$MDIR/mariadbd.pid" --log-error="$MDIR/mariadbd.log" \
    --bind-address=127.0.0.1 --port="$MARIADB_PORT" --skip-name-resolve --max-connections=200 \
    --innodb-buffer-pool-size=32M --skip-log-bin --innodb-flush-log-at-trx-commit=0) \
    >"$TMP/logs/mariadbd.stdout" 2>&1 &
RUNUSER_PID=$!
for _ in $(seq 300); do
    [[ -s $MDIR/mariadbd.pid ]] && break
    kill -0 "$RUNUSER_PID" 2>/dev/null || die "mariadbd exited during startup"
    sleep 0.1
done
[[ -s $MDIR/mariadbd.pid ]] || die "mariadbd wrote no pid file in 30 s"
MARIADB_PID=$(cat "$MDIR/mariadbd.pid")
for _ in $(seq 300); do
    mariadb_su -e 'select 1' >/dev/null 2>&1 && break
    kill -0 "$MARIADB_PID" 2>/dev/null || die "mariadbd exited during startup"
    sleep 0.1
done
mariadb_su -e 'select 1' >/dev/null || die "MariaDB did not accept the root login on $SOCK"
mariadb_su <<EOF
CREATE DATABASE $BENCH_DB;
CREATE USER '$BENCH_USER'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('$BENCH_PASSWORD');
GRANT ALL ON $BENCH_DB.* TO '$BENCH_USER'@'%';
EOF
wait_ready "$MARIADB_PORT" mariadb "$MARIADB_PID"
MARIADB_VERSION=$(mariadb_su -Nse 'select version()')
log "MariaDB $MARIADB_VERSION (pid $MARIADB_PID)"

SB_COMMON=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user="$BENCH_USER"
    --mysql-password="$BENCH_PASSWORD" --mysql-db="$BENCH_DB" --tables="$TABLES" --table-size="$TABLE_SIZE")
if [[ -n $SYSBENCH_RUNS ]]; then
    log "sysbench prepare + prewarm ($TABLES tables x $TABLE_SIZE rows)"
    { sysbench oltp_read_write "${SB_COMMON[@]}" --mysql-port="$MARIADB_PORT" --threads="$TABLES" prepare &&
        sysbench oltp_read_write "${SB_COMMON[@]}" --mysql-port="$MARIADB_PORT" --threads="$TABLES" prewarm; } \
        >"$TMP/logs/sysbench-prepare.log" 2>&1 || { tail -n 20 "$TMP/logs/sysbench-prepare.log" >&2; die "sysbench prepare failed"; }
fi

# ---------------------------------------------------------------- sluice
SLUICE_PORT=""
if (( WITH_SLUICE )); then
    SLUICE_PORT=$(free_port)
    cat >"$TMP/secrets.yaml" <<EOF
# benches/load/mysql.sh: the bench user's login
bench: {username: $BENCH_USER, password: $BENCH_PASSWORD}
EOF
    cat >"$TMP/sluice.yaml" <<EOF
# benches/load/mysql.sh: one read_write endpoint in front of MariaDB, mysql_native_password client auth
endpoints:
  - name: bench
    listen: 127.0.0.1:$SLUICE_PORT
    target_group: maria
    role: read_write
target_groups:
  maria:
    engine: mysql
    instances: [127.0.0.1:$MARIADB_PORT]
    connection_pool:
      max_connections: $POOL
auth:
  - username: $BENCH_USER
    client_auth: password
    client_password_auth_type: mysql_native_password
    secret: file:secrets.yaml#bench
EOF
    chmod 600 "$TMP/secrets.yaml"
    "$SLUICE_BIN" check-config "$TMP/sluice.yaml" >"$TMP/logs/check-config.log" 2>&1 \
        || { cat "$TMP/logs/check-config.log" >&2; die "sluice check-config failed"; }
    log "sluice ($SLUICE_BIN) on port $SLUICE_PORT, pool $POOL"
    RUST_LOG=${SLUICE_LOG:-sluice=info,sluice::audit=warn} "$SLUICE_BIN" run --config "$TMP/sluice.yaml" >"$TMP/sluice.log" 2>&1 &
    SLUICE_PID=$!
    wait_ready "$SLUICE_PORT" sluice "$SLUICE_PID"
fi

if (( WITH_HAPROXY )); then
    HAP_PORT=$(free_port)
    cat >"$TMP/haproxy.cfg" <<EOF
# benches/load/mysql.sh: a bare TCP hop, one thread, no pooling
global
    nbthread 1
    maxconn 5000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend maria
    bind 127.0.0.1:$HAP_PORT
    default_backend maria
backend maria
    server maria 127.0.0.1:$MARIADB_PORT
EOF
    log "HAProxy $(haproxy -v | head -n1 | awk '{print $3}') on port $HAP_PORT"
    haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/logs/haproxy.log" 2>&1 &
    HAP_PID=$!
    wait_ready "$HAP_PORT" HAProxy "$HAP_PID"
fi

if [[ ${BENCH_HOLD:-0} == 1 ]]; then
    # For profiling by hand (perf record -p, strace -c -p, callgrind): everything stays up.
    echo "holding: mariadb $MARIADB_PORT (pid $MARIADB_PID), haproxy ${HAP_PORT:--} (pid ${HAP_PID:--})," \
        "sluice $SLUICE_PORT (pid ${SLUICE_PID:--}), sluice config $TMP/sluice.yaml; sysbench:" \
        "sysbench oltp_point_select ${SB_COMMON[*]} --mysql-port=$SLUICE_PORT --threads=16 --time=10 run" >&2
    # In the background and waited on, so the EXIT trap runs at once on a signal.
    while true; do sleep 3600 & HOLD_SLEEP=$!; wait $HOLD_SLEEP; done
fi

# ---------------------------------------------------------------- idle clients
# Logged-in clients that sit idle: sluice holds no server connection for them (the pool is
# shared; only the first login's schema check borrows one), mariadbd a thread each.
MEM_ROWS=""
if (( IDLE_CLIENTS > 0 )); then
    for target in $TARGETS; do
        # HAProxy holds a MariaDB connection per client: its idle cost is mariadbd's.
        [[ $target == haproxy ]] && continue
        if [[ $target == direct ]]; then
            port=$MARIADB_PORT pid=$MARIADB_PID
            files=$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")
            if (( files < IDLE_CLIENTS + 100 )); then
                log "idle-client memory: skipping MariaDB, mariadbd may open only $files files"
                continue
            fi
            mariadb_su -e "SET GLOBAL max_connections = $(( IDLE_CLIENTS + 200 ))"
        else
            port=$SLUICE_PORT pid=$SLUICE_PID
        fi
        log "idle-client memory: $IDLE_CLIENTS authenticated clients on $target (pid $pid)"
        out=$(IDLE_SETTLE_SECONDS=$IDLE_SETTLE python3 "$IDLE_PY" 127.0.0.1 "$port" $BENCH_USER $BENCH_PASSWORD $BENCH_DB \
            "$IDLE_CLIENTS" "$pid" mysql 2>"$TMP/logs/idle-$target.log") \
            || { cat "$TMP/logs/idle-$target.log" >&2; die "idle-client test against $target failed"; }
        [[ $target == direct ]] && mariadb_su -e "SET GLOBAL max_connections = 200"
        log "  $out"
        MEM_ROWS+="$target $out"$'\n'
    done
fi

# ---------------------------------------------------------------- CPU accounting
CLK_TCK=$(getconf CLK_TCK)
# utime+stime of one process (all its threads), in ticks.
proc_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# ---------------------------------------------------------------- sysbench
RESULTS=$TMP/results.tsv
: >"$RESULTS"
# kind:threads:ps-mode; kind ro = oltp_read_only, rw = oltp_read_write, rc = a new connection
# per transaction (reconnect_point_select.lua).
WORKLOADS=()
for c in $THREADS; do WORKLOADS+=("ro:$c:auto"); done
for c in $THREADS; do WORKLOADS+=("rw:$c:auto"); done
for c in $DISABLE_THREADS; do WORKLOADS+=("ro:$c:disable"); done
for c in $RECONNECT_THREADS; do WORKLOADS+=("rc:$c:auto"); done
for c in $POINT_THREADS; do WORKLOADS+=("pt:$c:auto"); done
label() {
    local kind threads ps
    IFS=: read -r kind threads ps <<<"$1"
    case $kind in
        ro) kind=oltp_read_only ;;
        rw) kind=oltp_read_write ;;
        rc) kind="point select, new connection per tx" ;;
        pt) kind=oltp_point_select ;;
    esac
    echo "$kind, $threads threads, ps $ps"
}
port_of() { case $1 in direct) echo "$MARIADB_PORT" ;; sluice) echo "$SLUICE_PORT" ;; haproxy) echo "$HAP_PORT" ;; esac; }
proxy_pid() { case $1 in sluice) echo "$SLUICE_PID" ;; haproxy) echo "$HAP_PID" ;; *) echo "" ;; esac; }

# One sysbench run. Appends: workload, repeat, target, tps, p95 ms, ignored errors/s,
# proxy (sluice or HAProxy) %CPU (of one core), proxy CPU µs per transaction, MariaDB %CPU.
run_one() {
    local workload=$1 rep=$2 target=$3
    local kind threads ps script logf t0 t1 s0=0 s1=0 m0 m1 tps p95 errs txs scpu sus mcpu ppid
    ppid=$(proxy_pid "$target")
    IFS=: read -r kind threads ps <<<"$workload"
    case $kind in
        ro) script=oltp_read_only ;;
        rw) script=oltp_read_write ;;
        rc) script=$RECONNECT_LUA ;;
        pt) script=oltp_point_select ;;
    esac
    logf="$TMP/logs/sysbench-$kind-$threads-$ps-$target-$rep.log"
    [[ -n $ppid ]] && s0=$(proc_ticks "$ppid")
    m0=$(proc_ticks "$MARIADB_PID"); t0=$(date +%s.%N)
    if sysbench "$script" "${SB_COMMON[@]}" --mysql-port="$(port_of "$target")" --threads="$threads" \
        --time="$SECONDS_PER_RUN" --db-ps-mode="$ps" --percentile=95 --report-interval=0 run \
        >"$logf" 2>&1; then
        tps=$(awk '/^ *transactions:/ { gsub(/[(]/, "", $3); print $3; exit }' "$logf")
        txs=$(awk '/^ *transactions:/ { print $2; exit }' "$logf")
        p95=$(awk '/95th percentile:/ { print $3; exit }' "$logf")
        errs=$(awk '/^ *ignored errors:/ { gsub(/[(]/, "", $4); print $4; exit }' "$logf")
    else
        tps=ERR
    fi
    t1=$(date +%s.%N)
    m1=$(proc_ticks "$MARIADB_PID")
    if [[ -n $ppid ]]; then
        kill -0 "$ppid" 2>/dev/null || die "$target exited during its run of $(label "$workload")"
        s1=$(proc_ticks "$ppid")
    fi
    [[ -z $tps ]] && tps=ERR
    [[ $tps == ERR ]] && p95=ERR errs=ERR
    [[ -z ${txs:-} || ${txs:-0} == 0 ]] && txs=1
    if [[ -n $ppid ]]; then
        scpu=$(awk -v a="$s0" -v b="$s1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (b-a)/hz/(t1-t0)*100 }')
        sus=$(awk -v a="$s0" -v b="$s1" -v n="$txs" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (b-a)/hz/n*1e6 }')
    else
        scpu=- sus=-
    fi
    mcpu=$(awk -v a="$m0" -v b="$m1" -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", (b-a)/hz/(t1-t0)*100 }')
    if [[ $tps == ERR ]]; then
        log "  $target: sysbench FAILED, see below"
        tail -n 8 "$logf" >&2
        if [[ $target == sluice ]]; then echo "--- sluice log tail" >&2; tail -n 10 "$TMP/sluice.log" >&2; fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$rep" "$target" "$tps" "${p95:-ERR}" "${errs:-ERR}" "$scpu" "$sus" "$mcpu" >>"$RESULTS"
    log "  $(label "$workload") run $rep $target: tps=$tps p95=${p95}ms errors/s=$errs proxy_cpu=${scpu}% (${sus}us/tx) mariadb_cpu=${mcpu}%"
}

read -r -a targets <<<"$TARGETS"
n=${#targets[@]}
if (( ${#WORKLOADS[@]} )); then
    log "sysbench: ${#WORKLOADS[@]} workloads x $REPEAT repeats x $n targets x ${SECONDS_PER_RUN}s" \
        "(about $(( ${#WORKLOADS[@]} * REPEAT * n * (SECONDS_PER_RUN + 1) / 60 )) min)"
fi
for workload in "${WORKLOADS[@]}"; do
    for rep in $(seq "$REPEAT"); do
        # Rotate the order each repeat so neither target always runs first.
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
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "ERR" || b == "ERR" || a == "n/a" || b == "n/a" || a == "-" || b == "-" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }
fmt() { awk -v a="$1" -v d="${2:-0}" 'BEGIN { if (a == "ERR" || a == "n/a" || a == "-") print a; else printf "%.*f", d, a }'; }

cores=$(nproc)
rev=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
echo
if (( WITH_SLUICE )); then
    echo -n "sluice $rev ($SLUICE_BIN, built $(date -u -r "$SLUICE_BIN" +%Y-%m-%dT%H:%MZ)); "
fi
echo "MariaDB $MARIADB_VERSION;${SYSBENCH_RUNS:+ $(sysbench --version);}" \
    "$cores cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); $(date -u +%Y-%m-%dT%H:%MZ)"
if (( ${#WORKLOADS[@]} )); then
    echo
    echo "## sysbench: medians of $REPEAT interleaved runs of ${SECONDS_PER_RUN}s" \
        "(sluice pool $POOL, mysql_native_password, $TABLES tables x $TABLE_SIZE rows, $cores cores)"
    echo
    echo "| workload | direct TPS | HAProxy TPS | sluice TPS | sluice/direct | sluice/HAProxy | p95 ms (direct / HAProxy / sluice) | HAProxy %cpu, µs/tx | sluice %cpu, µs/tx | MariaDB %cpu (direct / HAProxy / sluice) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for workload in "${WORKLOADS[@]}"; do
        d=$(median "$workload" direct 4); h=$(median "$workload" haproxy 4); s=$(median "$workload" sluice 4)
        echo "| $(label "$workload") | $(fmt "$d") | $(fmt "$h") | $(fmt "$s") | $(ratio "$s" "$d") | $(ratio "$s" "$h")" \
            "| $(fmt "$(median "$workload" direct 5)" 2) / $(fmt "$(median "$workload" haproxy 5)" 2) / $(fmt "$(median "$workload" sluice 5)" 2)" \
            "| $(fmt "$(median "$workload" haproxy 7)"), $(fmt "$(median "$workload" haproxy 8)" 1)" \
            "| $(fmt "$(median "$workload" sluice 7)"), $(fmt "$(median "$workload" sluice 8)" 1)" \
            "| $(fmt "$(median "$workload" direct 9)") / $(fmt "$(median "$workload" haproxy 9)") / $(fmt "$(median "$workload" sluice 9)") |"
    done
    echo
    echo "oltp_* transactions are BEGIN, 14 (read-only) or 18 (read/write) statements, COMMIT; ps auto"
    echo "= binary-protocol prepared statements, ps disable = text protocol. The new-connection row"
    echo "is connect + login, prepare, execute, close, quit per transaction. Ignored errors"
    echo "(deadlocks, 1213/1020/1205) per second are in the raw runs."
fi
if [[ -n $MEM_ROWS ]]; then
    echo
    echo "## Idle clients: RSS growth with $IDLE_CLIENTS authenticated idle clients (mysql_native_password, schema $BENCH_DB)"
    echo
    echo "| process | RSS before (KiB) | RSS with clients (KiB) | per client (KiB) | RSS after they left (KiB) | connect time (s) |"
    echo "|---|---:|---:|---:|---:|---:|"
    while read -r target rest; do
        [[ -z $target ]] && continue
        declare -A kv=()
        for pair in $rest; do kv[${pair%%=*}]=${pair#*=}; done
        name=$target; [[ $target == direct ]] && name="mariadbd (direct, a thread per connection)"
        echo "| $name | ${kv[rss_before_kib]} | ${kv[rss_idle_kib]} | ${kv[per_client_kib]} | ${kv[rss_after_close_kib]} | ${kv[connect_seconds]} |"
        unset kv
    done <<<"$MEM_ROWS"
fi
if (( ${#WORKLOADS[@]} )); then
    echo
    echo "## Raw runs (workload, repeat, target, tps, p95 ms, ignored errors/s, proxy %cpu, proxy µs/tx, MariaDB %cpu)"
    echo
    echo '```'
    cat "$RESULTS"
    echo '```'
fi
if [[ -f $TMP/sluice.log ]] && { grep -q ERR "$RESULTS" || grep -qiE 'error|panic' "$TMP/sluice.log"; }; then
    echo
    echo "## sluice log (errors)"
    echo '```'
    grep -iE 'error|warn|panic' "$TMP/sluice.log" | tail -n 30 || true
    echo '```'
fi
