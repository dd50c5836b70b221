"""Where the slowest transactions of a pgbench --log run spent their time: each one's window
joined with the machine's scheduler timeline (perf's sched:sched_switch), as the share of a CPU
each process had in it.

A many-client run's p99 is set by bursts of slow transactions. Whether a burst is the pooler
(its thread on the CPU, or waiting for it) or something beside it (new PostgreSQL backends
starting, pgbench itself) shows in who ran during the window: that is how the pool's
re-opened connections were found (docs/benchmarks.md, thirteenth session).

    python3 benches/load/stalls.py <pgbench log prefix> [<perf script output> <offset>]
        [threshold_us=15000] [top=6]

The perf output is `perf script -F cpu,time,trace` of a `perf record -k 1 -e
sched:sched_switch -a` (CLOCK_MONOTONIC); offset is realtime minus monotonic, in seconds, so
its times meet pgbench's epoch timestamps. Without it, only the latency figures print.
"""
import collections
import glob
import re
import sys

SWITCH = re.compile(
    r"\[(\d+)\]\s+([\d.]+):\s+prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=\S+"
    r" ==> next_comm=(.*?) next_pid=(\d+)"
)


def transactions(prefix):
    """(start, end, latency µs) of every transaction; pgbench writes one log per thread."""
    out = []
    for path in glob.glob(prefix + ".*"):
        for line in open(path):
            f = line.split()
            latency = int(f[2])
            end = int(f[4]) + int(f[5]) / 1e6
            out.append((end - latency / 1e6, end, latency))
    return out


def running(path, offset):
    """(comm, pid) -> the intervals it ran, from sched_switch events on every CPU."""
    events = []
    for line in open(path):
        m = SWITCH.search(line)
        if m:
            cpu, ts, _, _, comm, pid = m.groups()
            events.append((float(ts) + offset, int(cpu), comm, int(pid)))
    events.sort()
    spans, on_cpu = collections.defaultdict(list), {}
    for ts, cpu, comm, pid in events:
        if cpu in on_cpu:
            start, who = on_cpu[cpu]
            spans[who].append((start, ts))
        on_cpu[cpu] = (ts, (comm, pid))
    return spans


def shares(spans, start, end):
    """Each process's CPU time within [start, end], as a share of the window."""
    got = collections.Counter()
    for who, intervals in spans.items():
        for a, b in intervals:
            overlap = min(b, end) - max(a, start)
            if overlap > 0:
                got[who] += overlap
    return [(who, t / (end - start)) for who, t in got.most_common()]


def main():
    prefix = sys.argv[1]
    sched = sys.argv[2] if len(sys.argv) > 3 else None
    rest = sys.argv[4:] if sched else sys.argv[2:]
    threshold = int(rest[0]) if rest else 15000
    top = int(rest[1]) if len(rest) > 1 else 6
    txs = transactions(prefix)
    lat = sorted(t[2] for t in txs)
    n = len(lat)
    if n == 0:
        sys.exit("stalls.py: no transactions in " + prefix + ".*")
    print(
        f"{n} transactions: p50 {lat[n // 2] / 1e3:.2f} ms, p99 {lat[int(n * 0.99)] / 1e3:.2f} ms,"
        f" max {lat[-1] / 1e3:.1f} ms; over 5 ms {sum(x > 5000 for x in lat)},"
        f" over {threshold / 1e3:g} ms {sum(x > threshold for x in lat)}"
    )
    if not sched:
        return
    spans = running(sched, float(sys.argv[3]))
    slowest = sorted((t for t in txs if t[2] > threshold), key=lambda t: -t[2])
    shown = set()
    for start, end, latency in slowest:
        # One line per burst: transactions ending within 50 ms of one shown share its burst.
        if any(abs(end - e) < 0.05 for e in shown):
            continue
        shown.add(end)
        who = ", ".join(
            f"{comm}[{pid}] {share:.2f}"
            for (comm, pid), share in shares(spans, start, end)[:8]
            if share >= 0.02
        )
        print(f"{latency / 1e3:5.1f} ms ending {end:.3f}: {who}")
        if len(shown) == top:
            break


main()
