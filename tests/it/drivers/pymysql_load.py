"""PyMySQL load over the MySQL protocol (MariaDB, through sluice or directly).

Many threads, one connection each (autocommit on). Each thread sets its own session time_zone
at the start and changes it now and then; later, after other transactions, it checks that the
zone in force is the last one it set. In between it runs plain selects, autocommit inserts,
committed and rolled-back explicit transactions, and a statement error inside a transaction
(which in MySQL fails only that statement: the transaction stays open and commits). Every result
is checked as it arrives. At the end a fresh connection counts each thread's rows in t_load
(rows left by earlier runs are counted at the start and subtracted), and one JSON line
`RESULT {...}` reports the totals. Exit status 1 (tracebacks on stderr) when any thread failed
or a count is off.

PyMySQL has no server-side prepared statements: everything is COM_QUERY.

usage: pymysql_load.py HOST PORT USER PASSWORD DB THREADS ITERATIONS
"""
import sys
import traceback

import pymysql

from mysql_checks import run_load

# Thread ids in t_load.thread; myconnector_load.py uses 100000 + tid, so both can share it.
THREAD_BASE = 0
CREATE = ("create table if not exists t_load"
          " (id int auto_increment primary key, thread int, v int)")
INSERT = "insert into t_load (thread, v) values (%s, %s)"
TOTALS = "select count(*), coalesce(sum(v), 0) from t_load where thread = %s"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def zone(tid, k):
    """The k-th time zone thread tid uses: distinct per thread, so a zone leaking from one
    client's session into another's shows up. MariaDB accepts -12:59 .. +13:00."""
    hours = (tid + 5 * k) % 25 - 12
    return f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:{(tid % 4) * 15:02d}"


def zone_minutes(tz):
    sign = 1 if tz[0] == "+" else -1
    return sign * (int(tz[1:3]) * 60 + int(tz[4:6]))


class Worker:
    def __init__(self, args, tid, iterations, base):
        self.args, self.tid, self.iterations = args, tid, iterations
        self.thread = THREAD_BASE + tid
        self.base_rows, self.base_sum = base
        self.rows = self.sum = self.seq = 0
        self.rolled_back = self.errors_caught = self.tz_checks = self.tz_sets = 0
        self.tz = None
        self.ops, self.error = {}, None

    def insert(self, cur):
        self.seq += 1
        v = self.tid * 10000 + self.seq
        cur.execute(INSERT, (self.thread, v))
        check(cur.rowcount == 1, f"insert rowcount {cur.rowcount}")
        check(cur.lastrowid and cur.lastrowid > 0, f"insert lastrowid {cur.lastrowid}")
        return v

    def expect_totals(self, cur, extra_rows=0, extra_sum=0):
        cur.execute(TOTALS, (self.thread,))
        got = tuple(int(x) for x in cur.fetchone())
        want = (self.base_rows + self.rows + extra_rows, self.base_sum + self.sum + extra_sum)
        check(got == want, f"thread {self.thread}: (count, sum) {got} != {want}")

    def set_zone(self, cur):
        self.tz = zone(self.tid, self.tz_sets)
        cur.execute(f"SET time_zone = '{self.tz}'")
        self.tz_sets += 1

    def op_select(self, conn, cur, i):
        cur.execute("select %s + 1, concat('t', %s), database()", (i, self.tid))
        check(cur.fetchone() == (i + 1, f"t{self.tid}", self.args["database"]), "select")

    def op_autocommit(self, conn, cur, i):
        self.sum += self.insert(cur)
        self.rows += 1
        self.expect_totals(cur)

    def op_commit(self, conn, cur, i):
        conn.begin()
        added = self.insert(cur) + self.insert(cur)
        self.expect_totals(cur, 2, added)  # reads its own writes
        conn.commit()
        self.rows += 2
        self.sum += added
        self.expect_totals(cur)

    def op_rollback(self, conn, cur, i):
        conn.begin()
        added = self.insert(cur)
        self.expect_totals(cur, 1, added)
        conn.rollback()
        self.rolled_back += 1
        self.expect_totals(cur)

    def op_error(self, conn, cur, i):
        conn.begin()
        added = self.insert(cur)
        try:
            cur.execute("select * from no_such_table_here")
            raise AssertionError("select from a missing table did not fail")
        except pymysql.err.ProgrammingError as e:
            check(e.args[0] == 1146, f"error code {e.args[0]}")
            self.errors_caught += 1
        cur.execute("select @@in_transaction")
        check(cur.fetchone() == (1,), "transaction still open after a statement error")
        added += self.insert(cur)
        conn.commit()
        self.rows += 2
        self.sum += added
        self.expect_totals(cur)

    def op_timezone(self, conn, cur, i):
        cur.execute("select @@time_zone, timestampdiff(minute, utc_timestamp(), now())")
        want = (self.tz, zone_minutes(self.tz))
        got = cur.fetchone()
        check(got == want, f"thread {self.thread}: (time_zone, offset) {got} != {want}")
        self.tz_checks += 1
        if self.tz_checks % 2:
            self.set_zone(cur)

    OPS = ["op_select", "op_commit", "op_timezone", "op_autocommit", "op_rollback",
           "op_error"]

    def run(self):
        try:
            conn = pymysql.connect(**self.args, autocommit=True)
            with conn:
                cur = conn.cursor()
                self.set_zone(cur)
                for i in range(self.iterations):
                    name = self.OPS[(i + self.tid) % len(self.OPS)]
                    getattr(self, name)(conn, cur, i)
                    self.ops[name] = self.ops.get(name, 0) + 1
                self.op_timezone(conn, cur, 1)
                self.expect_totals(cur)
        except BaseException as e:  # reported by main
            self.error = f"thread {self.thread}: {e!r}\n{traceback.format_exc()}"


def totals_by_thread(args, threads):
    with pymysql.connect(**args, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("select thread, count(*), coalesce(sum(v), 0) from t_load"
                    " where thread between %s and %s group by thread",
                    (THREAD_BASE, THREAD_BASE + threads - 1))
        return {t: (int(n), int(s)) for t, n, s in cur.fetchall()}


def main():
    host, port, user, password, db, threads, iterations = sys.argv[1:8]
    threads, iterations = int(threads), int(iterations)
    args = dict(host=host, port=int(port), user=user, password=password, database=db,
                charset="utf8mb4", connect_timeout=10, read_timeout=120, write_timeout=120)
    with pymysql.connect(**args, autocommit=True) as conn:
        conn.cursor().execute(CREATE)
    before = totals_by_thread(args, threads)
    workers = [Worker(args, tid, iterations, before.get(THREAD_BASE + tid, (0, 0)))
               for tid in range(threads)]
    run_load(workers, lambda: totals_by_thread(args, threads), ["tz_checks", "tz_sets"],
             iterations=iterations)


if __name__ == "__main__":
    main()
