"""PyMySQL clients through a MariaDB writer failover, driven step by step by the test over
stdin/stdout: idle sessions keep their settings, a cut transaction gets one error and its
connection goes on, statements sent while there is no writer wait and succeed."""
import sys
import threading
import time

from mysql_checks import Checks, connect, errno, one

host, port, user, password, db = sys.argv[1:6]
checks = Checks()


def session():
    return connect(host, port, user, password, db)


def execute(conn, sql, args=None):
    with conn.cursor() as c:
        c.execute(sql, args)


idle = []
for i in range(4):
    c = session()
    execute(c, "SET SESSION time_zone = %s", (f"+0{i + 1}:00",))
    execute(c, "INSERT INTO t VALUES (%s, 'before')", (i,))
    idle.append(c)
waiters = [session() for _ in range(3)]
cut = session()
execute(cut, "BEGIN")
execute(cut, "INSERT INTO t VALUES (100, 'cut')")

checks.step("READY", "KILLED")
outcomes = {}


def wait_for_writer(i):
    started = time.monotonic()
    try:
        execute(waiters[i], "INSERT INTO t VALUES (%s, 'waited')", (200 + i,))
        outcomes[i] = "ok"
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        outcomes[i] = f"{e!r} after {time.monotonic() - started:.1f}s"


threads = [threading.Thread(target=wait_for_writer, args=(i,)) for i in range(len(waiters))]
for t in threads:
    t.start()
time.sleep(0.3)
checks.step("WAITING", "PROMOTED")
promoted = time.monotonic()
execute(idle[0], "INSERT INTO t VALUES (300, 'first')")
first_write = time.monotonic() - promoted
for t in threads:
    t.join(60)
checks.expect("statements sent with no writer", outcomes, {i: "ok" for i in range(len(waiters))})

checks.expect("the cut transaction's next statement (rolled back: retry)",
              errno(lambda: execute(cut, "INSERT INTO t VALUES (101, 'cut')")), 1213)
checks.expect("the cut connection goes on", one(cut, "SELECT @@read_only"), 0)
checks.expect("nothing of the cut transaction", one(cut, "SELECT count(*) FROM t WHERE id BETWEEN 100 AND 199"), 0)
for i, c in enumerate(idle):
    checks.expect(f"idle session {i} keeps its time_zone", one(c, "SELECT @@session.time_zone"), f"+0{i + 1}:00")
    c.begin()
    execute(c, "INSERT INTO t VALUES (%s, 'after')", (10 + i,))
    c.commit()
checks.finish(first_write_seconds=round(first_write, 3))
