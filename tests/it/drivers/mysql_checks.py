"""Shared by the MySQL check scripts (PyMySQL's and mysql-connector-python's): their
connections, one-value queries, the checks they count and the `RESULT {json}` line (plus a
`FAIL` line per mismatch) they end with."""
import json
import sys

import pymysql


class Checks:
    def __init__(self):
        self.count = 0
        self.failures = []

    def expect(self, what, got, want):
        self.count += 1
        if got != want:
            self.failures.append(f"{what}: got {got!r}, want {want!r}")

    def fail(self, what):
        self.failures.append(what)

    def step(self, say, expect):
        """Tells the driving test `say` and waits for its `expect` on stdin (ends on anything else)."""
        print(say, flush=True)
        got = sys.stdin.readline().strip()
        if got != expect:
            self.fail(f"harness said {got!r}, expected {expect!r}")
            self.finish()

    def finish(self, **extra):
        print("RESULT " + json.dumps({"checks": self.count, "failures": len(self.failures), **extra}))
        for f in self.failures:
            print("FAIL " + f)
        sys.exit(1 if self.failures else 0)


def connect(host, port, user, password, database, **options):
    return pymysql.connect(host=host, port=int(port), user=user, password=password,
                           database=database, autocommit=True, **options)


def connector(host, port, user, password, database):
    """A mysql-connector-python connection (pure Python, binary protocol for prepared cursors)."""
    import mysql.connector

    return mysql.connector.connect(host=host, port=int(port), user=user, password=password,
                                   database=database, use_pure=True, ssl_disabled=True,
                                   autocommit=True)


def errno(f):
    """The MySQL error number `f()` raised, 0 if none."""
    try:
        f()
        return 0
    except pymysql.err.MySQLError as e:
        return e.args[0]


def timed(outcome, name, conn, sql):
    """Runs `sql` on `conn`, for a thread: `outcome[name]` is ("ok", its first value or None,
    seconds) or ("error", the errno or the error's text, seconds)."""
    import time

    started = time.monotonic()
    try:
        with conn.cursor() as c:
            c.execute(sql)
            row = c.fetchone()
        outcome[name] = ("ok", row[0] if row else None, round(time.monotonic() - started, 3))
    except (pymysql.err.MySQLError, OSError) as e:
        code = e.args[0] if e.args else str(e)
        outcome[name] = ("error", code, round(time.monotonic() - started, 3))


def one(conn, sql):
    with conn.cursor() as c:
        c.execute(sql)
        row = c.fetchone()
        return row[0] if row else None


def run_load(workers, totals, counters, **extra):
    """Runs the load scripts' workers, one thread each, then checks that every thread's committed
    rows are in the table (`totals()` gives thread -> (count, sum)), prints `RESULT {json}` with
    `extra`, the standard tallies and the workers' own `counters`, and exits 1 on any error."""
    import threading

    pool = [threading.Thread(target=w.run) for w in workers]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    failed = [w.error for w in workers if w.error]
    after = totals()
    mismatches = []
    for w in workers:
        want = (w.base_rows + w.rows, w.base_sum + w.sum)
        got = after.get(w.thread, (0, 0))
        if got != want:
            mismatches.append(f"thread {w.thread}: (count, sum) in t_load {got} != {want}")
    for err in failed + mismatches:
        print(err, file=sys.stderr)
    ops = {}
    for w in workers:
        for name, n in w.ops.items():
            ops[name] = ops.get(name, 0) + n
    summary = {
        **extra,
        "threads": len(workers),
        "threads_ok": len(workers) - len(failed),
        "errors": len(failed),
        "mismatches": len(mismatches),
        "committed": sum(w.rows for w in workers),
        "sum": sum(w.sum for w in workers),
        "rolled_back": sum(w.rolled_back for w in workers),
        "errors_caught": sum(w.errors_caught for w in workers),
        **{c: sum(getattr(w, c) for w in workers) for c in counters},
        "ops": ops,
    }
    print("RESULT " + json.dumps(summary), flush=True)
    sys.exit(1 if failed or mismatches else 0)
