"""mysql-connector-python load with server-side prepared statements (binary protocol).

Many threads, one connection each, autocommit on, the pure-Python protocol implementation
(use_pure=True) so the packets sent do not depend on whether the C extension is installed, and
no TLS. AUTH_PLUGIN goes to connect(auth_plugin=...): the plugin the client answers the
handshake with; a server whose account uses another plugin switches it.

Each thread keeps a few `cursor(prepared=True)` cursors whose statement text never changes, so
one COM_STMT_PREPARE is followed by many COM_STMT_RESET + COM_STMT_EXECUTE across many
autocommit statements and explicit transactions (committed and rolled back). Another cursor
prepares a new text every time (prepare, execute, close: statement churn), and one statement
fails at execute time and must still work afterwards. Every result is checked as it arrives; at
the end a fresh connection counts each thread's rows in t_load (rows left by earlier runs are
counted at the start and subtracted) and one JSON line `RESULT {...}` reports the totals. Exit
status 1 (tracebacks on stderr) when any thread failed or a count is off.

usage: myconnector_load.py HOST PORT USER PASSWORD DB THREADS ITERATIONS AUTH_PLUGIN
  AUTH_PLUGIN: mysql_native_password or caching_sha2_password
"""
import datetime
import decimal
import sys
import traceback

import mysql.connector
from mysql.connector import errors

from mysql_checks import run_load

# Thread ids in t_load.thread; pymysql_load.py uses 0 + tid, so both can share the table.
THREAD_BASE = 100000
CREATE = ("create table if not exists t_load"
          " (id int auto_increment primary key, thread int, v int)")
# The prepared cursors reuse a statement only when given the very same str object (the
# connector compares with `is`), so these are module constants.
INSERT = "insert into t_load (thread, v) values (?, ?)"
TOTALS = "select count(*), coalesce(sum(v), 0) from t_load where thread = ?"
SELECT = "select ? + 1, concat('t', ?), database()"
TYPES = ("select ? is null, cast(? as decimal(10,2)), cast(? as datetime), hex(?), ? * 2,"
         " concat(?, '\u00e9')")
TYPES_ARGS = (None, decimal.Decimal("1.50"), datetime.datetime(2024, 1, 2, 3, 4, 5),
              b"\x00\xff", -2**40, "\u00fc")
TYPES_WANT = (1, decimal.Decimal("1.50"), datetime.datetime(2024, 1, 2, 3, 4, 5), "00FF",
              -2**41, "\u00fc\u00e9")
FAILS = "select 1 from dual where 1 = (select 1 union select 2)"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Worker:
    def __init__(self, args, tid, iterations, base):
        self.args, self.tid, self.iterations = args, tid, iterations
        self.thread = THREAD_BASE + tid
        self.base_rows, self.base_sum = base
        self.rows = self.sum = self.seq = 0
        self.rolled_back = self.errors_caught = self.executes = self.prepares = 0
        self.ops, self.error, self.last_sql = {}, None, {}

    def run_prepared(self, cur, sql, params=()):
        """Executes on a prepared cursor; returns all rows (a result must be read before the
        connection can be used again)."""
        if self.last_sql.get(id(cur)) is not sql:  # the connector prepares anew
            self.prepares += 1
            self.last_sql[id(cur)] = sql
        self.executes += 1
        cur.execute(sql, params)
        return cur.fetchall() if cur.with_rows else None

    def insert(self):
        self.seq += 1
        v = self.tid * 10000 + self.seq
        self.run_prepared(self.ins, INSERT, (self.thread, v))
        check(self.ins.rowcount == 1, f"insert rowcount {self.ins.rowcount}")
        check(self.ins.lastrowid and self.ins.lastrowid > 0, f"lastrowid {self.ins.lastrowid}")
        return v

    def expect_totals(self, extra_rows=0, extra_sum=0):
        got = tuple(int(x) for x in self.run_prepared(self.cnt, TOTALS, (self.thread,))[0])
        want = (self.base_rows + self.rows + extra_rows, self.base_sum + self.sum + extra_sum)
        check(got == want, f"thread {self.thread}: (count, sum) {got} != {want}")

    def op_select(self, conn, i):
        got = self.run_prepared(self.sel, SELECT, (i, self.tid))
        check(got == [(i + 1, f"t{self.tid}", self.args["database"])], f"select {got}")

    def op_types(self, conn, i):
        got = self.run_prepared(self.typ, TYPES, TYPES_ARGS)
        check(got == [TYPES_WANT], f"binary protocol values {got} != {[TYPES_WANT]}")

    def op_autocommit(self, conn, i):
        self.sum += self.insert()
        self.rows += 1
        self.expect_totals()

    def op_commit(self, conn, i):
        conn.start_transaction()
        added = self.insert() + self.insert()
        self.expect_totals(2, added)  # reads its own writes
        conn.commit()
        self.rows += 2
        self.sum += added
        self.expect_totals()

    def op_rollback(self, conn, i):
        conn.start_transaction()
        added = self.insert()
        self.expect_totals(1, added)
        conn.rollback()
        self.rolled_back += 1
        self.expect_totals()

    def op_churn(self, conn, i):
        for k in range(3):
            got = self.run_prepared(self.tmp, f"select ? * {k + 2}, {i}", (i,))
            check(got == [(i * (k + 2), i)], f"churn {got}")

    def op_error(self, conn, i):
        try:
            self.run_prepared(self.bad, FAILS)
            raise AssertionError("a subquery returning 2 rows did not fail")
        except errors.DataError as e:
            check(e.errno == 1242, f"error {e.errno}")
            self.errors_caught += 1
        self.op_select(conn, i)

    OPS = ["op_select", "op_commit", "op_types", "op_autocommit", "op_churn", "op_rollback",
           "op_error"]

    def run(self):
        try:
            conn = mysql.connector.connect(**self.args)
            try:
                self.ins, self.cnt, self.sel, self.typ, self.tmp, self.bad = (
                    conn.cursor(prepared=True) for _ in range(6))
                collation = self.run_prepared(self.sel, "select @@collation_connection")
                for i in range(self.iterations):
                    name = self.OPS[(i + self.tid) % len(self.OPS)]
                    getattr(self, name)(conn, i)
                    self.ops[name] = self.ops.get(name, 0) + 1
                self.expect_totals()
                check(self.run_prepared(self.sel, "select @@collation_connection") == collation,
                      "collation_connection changed")
            finally:
                conn.close()
        except BaseException as e:  # reported by main
            self.error = f"thread {self.thread}: {e!r}\n{traceback.format_exc()}"


def totals_by_thread(args, threads):
    conn = mysql.connector.connect(**args)
    try:
        cur = conn.cursor()
        cur.execute("select thread, count(*), coalesce(sum(v), 0) from t_load"
                    " where thread between %s and %s group by thread",
                    (THREAD_BASE, THREAD_BASE + threads - 1))
        return {t: (int(n), int(s)) for t, n, s in cur.fetchall()}
    finally:
        conn.close()


def main():
    host, port, user, password, db, threads, iterations, auth_plugin = sys.argv[1:9]
    threads, iterations = int(threads), int(iterations)
    args = dict(host=host, port=int(port), user=user, password=password, database=db,
                auth_plugin=auth_plugin, use_pure=True, autocommit=True, ssl_disabled=True,
                connection_timeout=10, read_timeout=120, write_timeout=120)
    conn = mysql.connector.connect(**args)
    conn.cursor().execute(CREATE)
    conn.close()
    before = totals_by_thread(args, threads)
    workers = [Worker(args, tid, iterations, before.get(THREAD_BASE + tid, (0, 0)))
               for tid in range(threads)]
    run_load(workers, lambda: totals_by_thread(args, threads), ["prepares", "executes"],
             auth_plugin=auth_plugin, iterations=iterations)


if __name__ == "__main__":
    main()
