#!/usr/bin/env bash
# User-space instructions per transaction of one sluice binary, counted by callgrind: the A/B
# figure that the shared 2-core machine's timing noise (10-25 % between runs) cannot blur.
#
# Against the private PostgreSQL that `BENCH_HOLD=1 benches/load/compare.sh` keeps up (it prints
# the sluice config's path), this starts BIN under `valgrind --tool=callgrind` on a free port,
# warms it up with 100 transactions per client, zeroes the counters, runs pgbench for
# INSTR_TX transactions per client (16 clients), dumps, and prints instructions per transaction.
# Counts repeat within about 0.5 % run to run. Kernel time is not counted: read it beside a
# timed run (compare.sh's CPU column), never instead of one.
#
#   benches/load/instructions.sh /tmp/sluice-bench.XXXX/sluice.yaml target/release/sluice [pgbench flags]
#   (flags default to -S; e.g. "-S -M extended", or "-S -C" with INSTR_TX=300)
#   BIN may be PgBouncer's binary ($(command -v pgbouncer)): it is counted the same way, from the
#   pgbouncer.ini beside the config, so the two user-space figures stand side by side.
#
# MySQL: with the config `BENCH_HOLD=1 benches/load/mysql.sh` prints, the same with sysbench
# (16 threads, its tables as mysql.sh prepared them); the arguments after the binary are the
# sysbench test and flags (default oltp_point_select), INSTR_TX counts events in all, and the
# figure is per event (one statement for oltp_point_select).
# Many slow clients (the -R 2000 rows of compare.sh: each client transacts every few seconds):
# INSTR_CLIENTS=1000 INSTR_RATE=200 runs pgbench -c 1000 -R 200 for INSTR_SECONDS (30); the
# counters are zeroed once every client is logged in and transacting, and only the transactions
# that completed between the zero and the dump (from pgbench --log) are counted, so the logins
# stay out of the figure. MySQL: sysbench --threads=1000 --rate=200 the same way, its count
# estimated as rate × window (sysbench logs no events one by one).
# INSTR_CACHE=1 also simulates the caches (callgrind --cache-sim, this host's geometry) and
# prints misses per transaction and the hot code (benches/load/hot_code.py): the measure of a
# hot path's instruction-cache footprint (docs/benchmarks.md, twelfth session).
# Environment: INSTR_TX=1000, INSTR_KEEP=0 (1 keeps the callgrind output for callgrind_annotate),
# INSTR_REP_MOVSB=0 (1 lets glibc copy large blocks with rep movsb, which callgrind counts per byte),
# SLUICE_LOG=sluice=info,sluice::audit=warn (as compare.sh runs sluice).
set -euo pipefail
CONFIG=${1:?sluice config from BENCH_HOLD=1 compare.sh}
BIN=${2:?sluice binary}
shift 2
FLAGS=("$@")
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind not installed" >&2; exit 1; }
password=$(awk '/password/ { print $NF }' "$(dirname "$CONFIG")/secrets.yaml" | tr -d "\"'}")
MYSQL=0
grep -q 'engine: mysql' "$CONFIG" && MYSQL=1
if (( MYSQL )); then
    (( ${#FLAGS[@]} )) || FLAGS=(oltp_point_select)
    TX=${INSTR_TX:-16000}
    command -v sysbench >/dev/null || { echo "instructions.sh: sysbench not installed" >&2; exit 1; }
else
    (( ${#FLAGS[@]} )) || FLAGS=(-S)
    TX=${INSTR_TX:-1000}
fi
export PGPASSWORD=${password:-bench-md5-password}
OUT=$(mktemp -d /tmp/sluice-instr.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -E "s/listen: 127\.0\.0\.1:[0-9]+/listen: 127.0.0.1:$PORT/" "$CONFIG" >"$OUT/sluice.yaml"
cp "$(dirname "$CONFIG")/secrets.yaml" "$OUT/"
VG=""
VG_ARGS=(--tool=callgrind)
[[ ${INSTR_CACHE:-0} == 1 ]] && VG_ARGS+=(--cache-sim=yes --dump-instr=yes)
AS=()   # who talks to valgrind: vgdb's pipes must be the counted process's own user's
cleanup() {
    [[ -n $VG ]] && kill "$VG" 2>/dev/null && wait "$VG" 2>/dev/null
    [[ ${INSTR_KEEP:-0} == 1 ]] && echo "kept $OUT" >&2 || rm -rf "$OUT"
}
trap cleanup EXIT
cache_report() {   # dump, transactions
    [[ ${INSTR_CACHE:-0} == 1 ]] || return 0
    awk -v tx="$2" '/^events:/ { n = split($0, ev, " ") } /^summary:|^totals:/ && !done {
        line = ""; for (i = 2; i <= n; i++) line = line sprintf("%s %.1f  ", ev[i], $i / tx)
        print "per transaction: " line; done = 1 }' "$1"
    python3 "$(dirname "${BASH_SOURCE[0]}")/hot_code.py" "$1" "$2"
}
# glibc copies blocks past ~2 KiB with `rep movsb`, which callgrind counts once per byte: one
# 12 KiB copy would weigh as 12,000 instructions against a few hundred for the same bytes copied
# packet by packet. Vector copies for every size keep the count a measure of work (both the
# proxy's and the anchor's). INSTR_REP_MOVSB=1 leaves glibc's own choice.
[[ ${INSTR_REP_MOVSB:-0} == 1 ]] || export GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=100000000
if [[ $(basename "$BIN") == pgbouncer ]]; then
    # The anchor counted the same way: the hold dir's PgBouncer config on a free port, as postgres
    # (setpriv execs in place, so $! is valgrind itself, which callgrind_control needs).
    ini=$(dirname "$CONFIG")/pgbouncer.ini
    [[ -f $ini ]] || { echo "instructions.sh: no $ini (PgBouncer counts need compare.sh's hold dir)" >&2; exit 1; }
    sed -E -e "s/^listen_port = .*/listen_port = $PORT/" -e "s#^(logfile|pidfile) = .*/#\1 = $OUT/#" "$ini" >"$OUT/pgbouncer.ini"
    chown -R postgres: "$OUT"
    AS=(setpriv --reuid=postgres --regid=postgres --init-groups)
    "${AS[@]}" valgrind "${VG_ARGS[@]}" --callgrind-out-file="$OUT/callgrind.out" \
        "$BIN" "$OUT/pgbouncer.ini" >"$OUT/sluice.log" 2>&1 &
else
    RUST_LOG=${SLUICE_LOG:-sluice=info,sluice::audit=warn} valgrind "${VG_ARGS[@]}" \
        --callgrind-out-file="$OUT/callgrind.out" "$BIN" run --config "$OUT/sluice.yaml" >"$OUT/sluice.log" 2>&1 &
fi
VG=$!
if (( MYSQL )); then
    pg() {
        sysbench "${FLAGS[@]}" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$PORT" \
            --mysql-user=bench --mysql-password="$password" --mysql-db=bench --tables=4 \
            --table-size=10000 --threads=16 --time=0 --events="$1" run
    }
    ready() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$PORT"; }
    WARM=1600
else
    pg() { pgbench -n "${FLAGS[@]}" -c 16 -j 2 -t "$1" -h 127.0.0.1 -p "$PORT" -U bench bench; }
    ready() { psql -X -q -h 127.0.0.1 -p "$PORT" -U bench -d bench -tAc 'select 1'; }
    WARM=100
fi
for _ in $(seq 300); do
    ready >/dev/null 2>&1 && break
    sleep 0.2
done
if [[ -n ${INSTR_CLIENTS:-} ]]; then
    clients=$INSTR_CLIENTS seconds=${INSTR_SECONDS:-30} rate=${INSTR_RATE:-200}
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    (( $(ulimit -n) > clients * 2 + 100 )) || { echo "instructions.sh: ulimit -n too low for $clients clients" >&2; exit 1; }
    if (( MYSQL )); then
        sysbench "${FLAGS[@]}" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$PORT" \
            --mysql-user=bench --mysql-password="$password" --mysql-db=bench --tables=4 \
            --table-size=10000 --threads="$clients" --rate="$rate" --time="$seconds" --events=0 \
            run >"$OUT/pgbench.log" 2>&1 &
    else
        pgbench -n "${FLAGS[@]}" -c "$clients" -j 2 -R "$rate" -T "$seconds" \
            --log --log-prefix="$OUT/lat" -h 127.0.0.1 -p "$PORT" -U bench bench >"$OUT/pgbench.log" 2>&1 &
    fi
    PGB=$!
    # Every client logged in (a connection each on the counted port), then a few seconds so that
    # each has transacted and waited idle at least once.
    for _ in $(seq 600); do
        (( $(ss -Htn state established "( sport = :$PORT )" | wc -l) >= clients )) && break
        sleep 0.2
    done
    sleep "${INSTR_SETTLE:-8}"
    "${AS[@]}" callgrind_control -z "$VG" >/dev/null 2>&1
    from=$(date +%s.%N)
    sleep $(( seconds / 2 ))
    "${AS[@]}" callgrind_control -d "$VG" >/dev/null 2>&1
    to=$(date +%s.%N)
    wait "$PGB" || { tail -n 5 "$OUT/pgbench.log" >&2; exit 1; }
    sleep 1
    if (( MYSQL )); then
        # sysbench logs no events one by one: at a fixed rate the window holds about rate × its
        # length (a few per cent either way; repeat and compare medians).
        tx=$(awk -v a="$from" -v b="$to" -v r="$rate" 'BEGIN { printf "%d", (b - a) * r }')
    else
        # --log lines: client, tx, time (µs), script, epoch seconds, µs: the completion instant.
        tx=$(cat "$OUT"/lat.* | awk -v a="$from" -v b="$to" '{ t = $5 + $6 / 1e6 } t >= a && t < b { n++ } END { print n + 0 }')
    fi
    dump=$(ls -t "$OUT"/callgrind.out.* | head -n1)
    ir=$(awk '/^summary:|^totals:/ { print $2; exit }' "$dump")
    echo "$(basename "$BIN") ${FLAGS[*]} $clients clients at $rate/s: $tx transactions counted, $((ir / tx)) instructions per transaction (user space)"
    cache_report "$dump" "$tx"
    exit 0
fi
pg "$WARM" >/dev/null 2>&1
"${AS[@]}" callgrind_control -z "$VG" >/dev/null 2>&1
pg "$TX" >"$OUT/pgbench.log" 2>&1
"${AS[@]}" callgrind_control -d "$VG" >/dev/null 2>&1
sleep 1
if (( MYSQL )); then
    tx=$(awk '/total number of events:/ { print $NF }' "$OUT/pgbench.log")
else
    tx=$(awk '/actually processed/ { split($NF, a, "/"); print a[1] }' "$OUT/pgbench.log")
fi
dump=$(ls -t "$OUT"/callgrind.out.* | head -n1)
ir=$(awk '/^summary:|^totals:/ { print $2; exit }' "$dump")
echo "$(basename "$BIN") ${FLAGS[*]}: $tx transactions, $((ir / tx)) instructions per transaction (user space)"
cache_report "$dump" "$tx"
