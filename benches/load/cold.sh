#!/usr/bin/env bash
# The first burst on a cold pool: each target is started afresh (one login warms it, as
# compare.sh's readiness check does), then benches/load/stalls.sh runs many clients at a fixed
# rate against it, so the run's slowest transactions are those that waited for the pool to
# fill. Rounds interleave the targets; the medians of the figures print at the end.
#
#   benches/load/cold.sh <hold dir> <postgres port> <target>...
#   a target is `pgbouncer`, `direct` (PostgreSQL itself), or the path of a sluice binary (a
#   wrapper script may set its environment); the hold dir is the temporary directory of a
#   `BENCH_HOLD=1 compare.sh` hold (its last line names `<dir>/sluice.yaml`), whose
#   PostgreSQL and configs are used.
# Environment: COLD_ROUNDS [5]; STALL_CLIENTS [1000], STALL_RATE [2000], STALL_SECONDS [4] as
# stalls.sh. Run as root (perf, and PgBouncer as the postgres user). Each target it starts is
# stopped by its PID before the next starts.
#
# A far server instead: COLD_LOGIN_DELAY=0.05 makes every server login 50 ms longer (sluice's
# init_query, PgBouncer's connect_query: SELECT pg_sleep), the pool COLD_POOL [40], and
# COLD_CLIENTS [32] clients each run one `SELECT pg_sleep(COLD_QUERY_SECONDS [1])` at once:
# the median and the last client's latency say how long the pool took to open what they need.
#
# A server refusing the pool's logins instead: COLD_REFUSE=200 sets the bench role's CONNECTION
# LIMIT to 0 once the target is warm, ends the role's backends (the pool's connection among
# them), and 200 new clients each send one query at once (benches/load/refused.py): the median
# and the last client's time until it heard, and how many server logins the server refused
# (its log). The target `direct` is PostgreSQL itself, every client refused at its own login.
set -euo pipefail
HOLD=${1:?the hold dir}
PG_PORT=${2:?the private PostgreSQL port}
shift 2
(($# > 0)) || { echo "cold.sh: name at least one target" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${COLD_ROUNDS:-5}
DELAY=${COLD_LOGIN_DELAY:-}
REFUSE=${COLD_REFUSE:-}
POOL=${COLD_POOL:-40}
export STALL_SECONDS=${STALL_SECONDS:-4}
export PGPASSWORD=${BENCH_PASSWORD:-bench-md5-password}
USER_DB=(-U "${BENCH_USER:-bench}" -d "${BENCH_DB:-bench}")
TMP=$(mktemp -d /tmp/sluice-cold.XXXXXX)
# PgBouncer runs as postgres and writes its pidfile and log here.
chown postgres: "$TMP"
PID=""
cleanup() {
    [[ -n $PID ]] && kill -TERM "$PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ready() {
    for _ in $(seq 100); do
        psql -X -q -h 127.0.0.1 -p "$1" "${USER_DB[@]}" -tAc 'select 1' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "cold.sh: nothing answers on port $1" >&2
    return 1
}

# Starts target $1 on port $2 and sets PID.
start() {
    local target=$1 port=$2
    if [[ $target == pgbouncer ]]; then
        sed -e "s/^listen_port = .*/listen_port = $port/" \
            -e "s|^pidfile = .*|pidfile = $TMP/pgbouncer.pid|" \
            -e "s|^logfile = .*|logfile = $TMP/pgbouncer.log|" "$HOLD/pgbouncer.ini" >"$TMP/pgbouncer.ini"
        if [[ -n $DELAY ]]; then
            sed -i -e "s/^default_pool_size = .*/default_pool_size = $POOL/" \
                -e "s/^\(\S* = host=.*\)$/\1 connect_query='SELECT pg_sleep($DELAY)'/" "$TMP/pgbouncer.ini"
            grep -q connect_query "$TMP/pgbouncer.ini"
        fi
        rm -f "$TMP/pgbouncer.pid"
        chown postgres: "$TMP/pgbouncer.ini"
        runuser -u postgres -- bash -c 'ulimit -n "$1" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec pgbouncer "$2"' \
            _ "$(ulimit -n)" "$TMP/pgbouncer.ini" >"$TMP/pgbouncer.stdout" 2>&1 &
        for _ in $(seq 100); do [[ -s $TMP/pgbouncer.pid ]] && break; sleep 0.1; done
        [[ -s $TMP/pgbouncer.pid ]] || { cat "$TMP/pgbouncer.stdout" >&2; return 1; }
        PID=$(cat "$TMP/pgbouncer.pid")
    else
        sed -E "s/listen: 127.0.0.1:[0-9]+/listen: 127.0.0.1:$port/" "$HOLD/sluice.yaml" >"$HOLD/sluice-cold.yaml"
        if [[ -n $DELAY ]]; then
            sed -i -E "s/^( +)max_connections: [0-9]+$/\1max_connections: $POOL\n\1init_query: \"SELECT pg_sleep($DELAY)\"/" \
                "$HOLD/sluice-cold.yaml"
            grep -q init_query "$HOLD/sluice-cold.yaml"
        fi
        RUST_LOG=${SLUICE_LOG:-sluice=info,sluice::audit=warn} "$target" run --config "$HOLD/sluice-cold.yaml" \
            >"$TMP/sluice.log" 2>&1 &
        PID=$!
    fi
    wait_ready "$port"
}

stop() {
    kill -TERM "$PID"
    while kill -0 "$PID" 2>/dev/null; do sleep 0.1; done
    PID=""
    rm -f "$HOLD/sluice-cold.yaml"
}

superuser() {
    psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$HOLD" -p "$PG_PORT" -U postgres -d postgres -c "$1"
}

refusals() {
    grep -c 'too many connections for role' "$HOLD/pg.log" || true
}

: >"$TMP/results"
if [[ -n $REFUSE ]]; then
    columns="median ms, last ms, server logins refused"
elif [[ -n $DELAY ]]; then
    echo "SELECT pg_sleep(${COLD_QUERY_SECONDS:-1});" >"$TMP/sleep.sql"
    columns="median ms, last ms"
else
    columns="connections opened, p99 ms, max ms"
fi

# One run against the target on $1: prints its line and appends its figures to the results.
measure() {
    local port=$1 out figures
    if [[ -n $REFUSE ]]; then
        local role=${BENCH_USER:-bench} before
        superuser "ALTER ROLE $role CONNECTION LIMIT 0" >/dev/null
        superuser "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '$role'" >/dev/null
        # The poolers see their server connections end.
        sleep 0.5
        before=$(refusals)
        out=$(python3 "$HERE/refused.py" 127.0.0.1 "$port" "$role" "$PGPASSWORD" "${BENCH_DB:-bench}" "$REFUSE")
        superuser "ALTER ROLE $role CONNECTION LIMIT -1" >/dev/null
        figures="$(sed -n 's/.*median \([0-9.]*\) ms, last \([0-9.]*\) ms/\1 \2/p' <<<"$out") $(($(refusals) - before))"
        echo "round $round $target: $out; $(($(refusals) - before)) logins refused"
    elif [[ -n $DELAY ]]; then
        rm -f "$TMP"/tx.*
        pgbench -n -c "${COLD_CLIENTS:-32}" -j 2 -t 1 -f "$TMP/sleep.sql" --log --log-prefix="$TMP/tx" \
            -h 127.0.0.1 -p "$port" "${USER_DB[@]}" >"$TMP/pgbench.out" 2>&1 \
            || { cat "$TMP/pgbench.out" >&2; return 1; }
        figures=$(cat "$TMP"/tx.* | awk '{ print $3 }' | sort -n \
            | awk '{ a[NR] = $1 } END { printf "%.0f %.0f", a[int((NR + 1) / 2)] / 1000, a[NR] / 1000 }')
        read -r median last <<<"$figures"
        echo "round $round $target: median $median ms, last $last ms"
    else
        out=$("$HERE/stalls.sh" "$port" "$PG_PORT")
        # "server connections opened ...: N" and "T transactions: p50 A ms, p99 B ms, max C ms; ..."
        figures="$(sed -n 's/^server connections opened during the run: //p' <<<"$out")"
        figures+=" $(sed -n 's/.* p99 \([0-9.]*\) ms, max \([0-9.]*\) ms.*/\1 \2/p' <<<"$out")"
        read -r opened p99 max <<<"$figures"
        echo "round $round $target: opened $opened, p99 $p99 ms, max $max ms"
        { grep -E '^ *[0-9.]+ ms ending' <<<"$out" || true; } | head -n 2 | sed 's/^/    /'
    fi
    echo "$target $figures" >>"$TMP/results"
}

for round in $(seq "$ROUNDS"); do
    for target in "$@"; do
        if [[ $target == direct ]]; then
            measure "$PG_PORT"
            continue
        fi
        port=$(free_port)
        start "$target" "$port"
        measure "$port"
        stop
    done
done
echo "medians of $ROUNDS rounds ($columns):"
python3 - "$TMP/results" "$@" <<'EOF'
import statistics
import sys
rows = [line.split() for line in open(sys.argv[1])]
for target in sys.argv[2:]:
    mine = [r[1:] for r in rows if r[0] == target]
    med = [statistics.median(float(r[i]) for r in mine) for i in range(len(mine[0]))]
    print(f"  {target}: " + ", ".join(f"{m:.2f}" for m in med))
EOF
