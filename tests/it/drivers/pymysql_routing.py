"""PyMySQL clients on a MariaDB cluster's reader and read_write_split endpoints, driven step by
step by the test over stdin/stdout: readers are spread over and skipped while they lag, and a
split session's read after its own write never sees stale data."""
import sys
import time

from mysql_checks import Checks, connect, one

host, _writer, user, password, db, reader, split, primary, r1, r2 = sys.argv[1:11]
primary, r1, r2 = int(primary), int(r1), int(r2)
checks = Checks()


def ports_seen(port, sessions=4, rounds=5):
    conns = [connect(host, port, user, password, db) for _ in range(sessions)]
    seen = {}
    for _ in range(rounds):
        for c in conns:
            p = one(c, "SELECT @@port")
            seen[p] = seen.get(p, 0) + 1
    for c in conns:
        c.close()
    return seen


s = connect(host, split, user, password, db)
writes = 0


def write():
    global writes
    with s.cursor() as c:
        c.execute("INSERT INTO r VALUES (1)")
    writes += 1


def read():
    """A read-only transaction on the split session: (rows seen, port that served it)."""
    with s.cursor() as c:
        c.execute("START TRANSACTION READ ONLY")
        c.execute("SELECT count(*), @@port FROM r")
        row = c.fetchone()
        c.execute("COMMIT")
    return row[0], row[1]


# The reader endpoint spreads over both replicas (once the probes have seen both).
deadline = time.monotonic() + 10
while sorted(seen := ports_seen(reader)) != sorted([r1, r2]) and time.monotonic() < deadline:
    time.sleep(0.2)
checks.expect("replicas serving the reader endpoint", sorted(seen), sorted([r1, r2]))

# Split: read-only transactions to a reader, the rest to the writer.
checks.expect("split: plain statements go to the writer", one(s, "SELECT @@port"), primary)
by_replica = 0
for _ in range(10):
    write()
    count, port = read()
    checks.expect("split: a read right after a write", count, writes)
    by_replica += port != primary
checks.expect("split: replicas served reads after writes", by_replica > 0, True)

# Neither replica applies anything: each read after a write waits, then the writer serves it.
# Two rounds: the wait is only tried on readers within max_replica_lag (2 s).
checks.step("STALL_BOTH", "STALLED")
for _ in range(2):
    write()
    started = time.monotonic()
    count, port = read()
    checks.expect("stalled: a read right after a write", (count, port), (writes, primary))
    waited = time.monotonic() - started
    checks.expect("stalled: the read waited about the timeout", 0.3 < waited < 5, True)

# Replica 2 applies again, replica 1 falls beyond max_replica_lag (2 s) while the writer writes.
checks.step("RESUME_R2", "RESUMED")
for _ in range(30):
    write()
    time.sleep(0.1)
checks.expect("a lagging replica is skipped", sorted(ports_seen(reader)), [r2])
for _ in range(5):
    write()
    count, port = read()
    checks.expect("lagging: a read right after a write", count, writes)
    checks.expect("lagging: never the stalled replica", port != r1, True)

checks.step("RESUME_R1", "RESUMED")
deadline = time.monotonic() + 15
while r1 not in ports_seen(reader, sessions=2, rounds=2):
    if time.monotonic() > deadline:
        checks.fail("replica 1 never rejoined the reader endpoint")
        break
    time.sleep(0.2)

# A read-only session default sends plain statements to a reader.
with s.cursor() as c:
    c.execute("SET SESSION tx_read_only = 1")
checks.expect("read-only default goes to a replica", one(s, "SELECT @@port") in (r1, r2), True)
with s.cursor() as c:
    c.execute("SET SESSION tx_read_only = 0")
checks.expect("read-write again goes to the writer", one(s, "SELECT @@port"), primary)
checks.finish(writes=writes, reads_by_replica=by_replica)
