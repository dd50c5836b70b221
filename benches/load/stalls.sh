#!/usr/bin/env bash
# Where a many-client run's slow transactions went: pgbench -R at many clients against one
# target of a `BENCH_HOLD=1 benches/load/compare.sh` hold, with the scheduler's timeline
# recorded beside it (perf sched:sched_switch, every CPU), then benches/load/stalls.py: the
# latency figures, the server connections the run opened (pg_stat_database.sessions, read
# directly from the private PostgreSQL), and for the slowest transactions, which processes had
# the CPUs during their window.
#
#   benches/load/stalls.sh <target port> <postgres port>
#   e.g. sluice's and then PgBouncer's port from the hold's last line, one after the other
# Environment: STALL_CLIENTS [1000], STALL_RATE [2000] (transactions per second in all),
# STALL_SECONDS [8], STALL_THRESHOLD [15000] (µs), STALL_JOBS [2]. Without a working `perf`
# (a kernel that refuses tracepoints), only the latency and sessions lines print.
# Run as root (perf records every CPU). Writes only to a temporary directory, removed on exit.
set -euo pipefail
PORT=${1:?target port}
PG_PORT=${2:?the private PostgreSQL port}
HERE=$(cd "$(dirname "$0")" && pwd)
CLIENTS=${STALL_CLIENTS:-1000}
RATE=${STALL_RATE:-2000}
SECONDS_RUN=${STALL_SECONDS:-8}
export PGPASSWORD=${BENCH_PASSWORD:-bench-md5-password}
USER_DB=(-U "${BENCH_USER:-bench}" "${BENCH_DB:-bench}")
TMP=$(mktemp -d /tmp/sluice-stalls.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

sessions() {
    psql -X -A -t -h 127.0.0.1 -p "$PG_PORT" "${USER_DB[@]}" \
        -c "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
}

before=$(sessions)
pgbench -n -S -c "$CLIENTS" -j "${STALL_JOBS:-2}" -R "$RATE" -T "$SECONDS_RUN" --log \
    --log-prefix="$TMP/tx" -h 127.0.0.1 -p "$PORT" "${USER_DB[@]}" >"$TMP/pgbench.out" 2>&1 &
bench=$!
# The logins come first; the recording spans them and the run, and the join keeps only the
# windows of slow transactions.
recorded=1
perf record -q -k 1 -e sched:sched_switch -a -o "$TMP/perf.data" \
    -- sleep $((SECONDS_RUN + 6)) >"$TMP/perf.err" 2>&1 || recorded=0
wait "$bench" || { cat "$TMP/pgbench.out" >&2; exit 1; }
after=$(sessions)
# The sessions query itself is one session.
echo "server connections opened during the run: $((after - before - 1))"
if [[ $recorded == 1 ]]; then
    offset=$(python3 -c "import time; print(time.time() - time.clock_gettime(time.CLOCK_MONOTONIC))")
    perf script -i "$TMP/perf.data" -F cpu,time,trace >"$TMP/sched.txt" 2>/dev/null
    python3 "$HERE/stalls.py" "$TMP/tx" "$TMP/sched.txt" "$offset" "${STALL_THRESHOLD:-15000}"
else
    echo "perf record failed ($(head -c 200 "$TMP/perf.err")); latency only" >&2
    python3 "$HERE/stalls.py" "$TMP/tx" "${STALL_THRESHOLD:-15000}"
fi
