"""psycopg 3 load through sluice, run by tests/it/drivers.rs.

Many threads, one connection each (autocommit, prepare_threshold=0 so every parameterized
execute uses a server-side named statement that sluice must remap). Each thread mixes simple
queries, prepared queries, committed and rolled-back transactions, an error inside a transaction,
COPY FROM STDIN / TO STDOUT, pipeline mode and a NOTICE. Every result is checked as it
arrives; at the end one JSON line `RESULT {...}` reports what the database should now hold.
Exit status 1 (with tracebacks on stderr) when any thread failed.

usage: psycopg_load.py HOST PORT DB USER PASSWORD THREADS TXNS
"""
import json
import sys
import threading
import traceback

import psycopg
from psycopg import sql

SETUP = [
    "drop table if exists load_kv",
    "create table load_kv (thread int not null, seq int not null, val int not null,"
    " ukey text not null unique, primary key (thread, seq))",
    "drop table if exists load_copy",
    "create table load_copy (thread int not null, n int not null, val int not null)",
]
INSERT = "insert into load_kv (thread, seq, val, ukey) values (%s, %s, %s, %s)"
COUNT = "select count(*), coalesce(sum(val), 0)::int from load_kv where thread = %s"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


class Worker:
    def __init__(self, conninfo, tid, txns):
        self.conninfo, self.tid, self.txns = conninfo, tid, txns
        self.rows = self.sum = self.seq = 0
        self.copy_rows = self.copy_sum = 0
        self.notices, self.ops, self.errors_caught = [], {}, 0
        self.error = None

    def insert(self, cur, pipelined=False):
        """Inserts the next row; returns its value (added to the totals by the caller)."""
        self.seq += 1
        val = self.tid * 1000 + self.seq
        cur.execute(INSERT, (self.tid, self.seq, val, f"t{self.tid}-s{self.seq}"))
        check(pipelined or cur.rowcount == 1, f"insert rowcount {cur.rowcount}")
        return val

    def expect_totals(self, cur):
        cur.execute(COUNT, (self.tid,))
        got = cur.fetchone()
        check(got == (self.rows, self.sum), f"thread {self.tid}: {got} != {(self.rows, self.sum)}")

    def op_simple(self, conn, cur, i):
        cur.execute("select 1; select 'two'", prepare=False)  # simple query protocol
        check(cur.fetchone() == (1,), "first result of a multi-statement query")
        check(cur.nextset() and cur.fetchone() == ("two",), "second result")
        cur.execute("show application_name", prepare=False)
        check(cur.fetchone() == (f"load-{self.tid}",), "application_name kept")

    def op_prepared(self, conn, cur, i):
        cur.execute("select %s::int * 2, %s::text", (i, f"t{self.tid}"))
        check(cur.fetchone() == (i * 2, f"t{self.tid}"), "prepared select")
        self.sum += self.insert(cur)
        self.rows += 1
        self.expect_totals(cur)

    def op_commit(self, conn, cur, i):
        with conn.transaction():
            added = self.insert(cur) + self.insert(cur)
            cur.execute(COUNT, (self.tid,))
            check(cur.fetchone() == (self.rows + 2, self.sum + added), "reads own writes")
        self.rows += 2
        self.sum += added
        self.expect_totals(cur)

    def op_rollback(self, conn, cur, i):
        seq = self.seq
        with conn.transaction():
            self.insert(cur)
            raise psycopg.Rollback()
        self.seq = seq
        self.expect_totals(cur)

    def op_error(self, conn, cur, i):
        seq = self.seq
        if i % 2:
            try:
                with conn.transaction():
                    self.insert(cur)
                    cur.execute("select 1 / %s", (0,))
                raise AssertionError("division by zero did not fail")
            except psycopg.errors.DivisionByZero:
                self.errors_caught += 1
        else:
            cur.execute("begin", prepare=False)
            self.insert(cur)
            try:
                cur.execute("select 1 / 0")
                raise AssertionError("division by zero did not fail")
            except psycopg.errors.DivisionByZero:
                self.errors_caught += 1
            check(conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR,
                  "transaction is aborted")
            try:
                cur.execute("select %s::int", (1,))
                raise AssertionError("statement in aborted transaction did not fail")
            except psycopg.errors.InFailedSqlTransaction:
                pass
            cur.execute("rollback", prepare=False)
        self.seq = seq
        cur.execute("select %s::int + 1", (41,))
        check(cur.fetchone() == (42,), "connection usable after error")
        self.expect_totals(cur)

    def op_copy(self, conn, cur, i):
        rows = [(self.tid, i * 100 + k, k + 1) for k in range(25)]
        with cur.copy("copy load_copy (thread, n, val) from stdin") as copy:
            for row in rows:
                copy.write_row(row)
        check(cur.rowcount == len(rows), f"copy in rowcount {cur.rowcount}")
        self.copy_rows += len(rows)
        self.copy_sum += sum(r[2] for r in rows)
        query = sql.SQL("copy (select n, val from load_copy where thread = {} order by n)"
                        " to stdout").format(self.tid)
        with cur.copy(query) as copy:
            copy.set_types(["int4", "int4"])
            out = list(copy.rows())
        check(len(out) == self.copy_rows, f"copy out {len(out)} rows != {self.copy_rows}")
        check(sum(v for _, v in out) == self.copy_sum, "copy out sum")

    def op_pipeline(self, conn, cur, i):
        counter = conn.cursor()
        added = 0
        with conn.pipeline():
            for _ in range(3):
                added += self.insert(cur, pipelined=True)
            cur.executemany(INSERT, [(self.tid, self.seq + 1, 7, f"t{self.tid}-s{self.seq + 1}"),
                                     (self.tid, self.seq + 2, 8, f"t{self.tid}-s{self.seq + 2}")])
            self.seq += 2
            added += 15
            counter.execute(COUNT, (self.tid,))
        self.rows += 5
        self.sum += added
        check(counter.fetchone() == (self.rows, self.sum), "pipeline count")

    def op_notice(self, conn, cur, i):
        before = len(self.notices)
        cur.execute("DO $$ BEGIN RAISE NOTICE 'hi'; END $$")
        check(self.notices[before:] == ["hi"], f"notices {self.notices[before:]}")

    OPS = ["op_simple", "op_prepared", "op_commit", "op_rollback", "op_error", "op_copy",
           "op_pipeline", "op_notice"]

    def run(self):
        try:
            with psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=0,
                                 application_name=f"load-{self.tid}") as conn:
                conn.add_notice_handler(lambda d: self.notices.append(d.message_primary))
                cur = conn.cursor()
                for i in range(self.txns):
                    name = self.OPS[(i + self.tid) % len(self.OPS)]
                    getattr(self, name)(conn, cur, i)
                    self.ops[name] = self.ops.get(name, 0) + 1
                self.expect_totals(cur)
                cur.execute("select count(distinct ukey) from load_kv where thread = %s",
                            (self.tid,))
                check(cur.fetchone() == (self.rows,), "unique keys")
        except BaseException as e:  # reported by main
            self.error = f"thread {self.tid}: {e!r}\n{traceback.format_exc()}"


def main():
    host, port, db, user, password, threads, txns = sys.argv[1:8]
    conninfo = (f"host={host} port={port} dbname={db} user={user} password={password}"
                " sslmode=disable connect_timeout=10")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for stmt in SETUP:
            conn.execute(stmt)
    workers = [Worker(conninfo, tid, int(txns)) for tid in range(int(threads))]
    pool = [threading.Thread(target=w.run) for w in workers]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    failed = [w.error for w in workers if w.error]
    for err in failed:
        print(err, file=sys.stderr)
    ops = {}
    for w in workers:
        for name, n in w.ops.items():
            ops[name] = ops.get(name, 0) + n
    print("RESULT " + json.dumps({
        "threads_ok": len(workers) - len(failed),
        "rows": sum(w.rows for w in workers),
        "sum": sum(w.sum for w in workers),
        "copy_rows": sum(w.copy_rows for w in workers),
        "copy_sum": sum(w.copy_sum for w in workers),
        "notices": sum(len(w.notices) for w in workers),
        "errors_caught": sum(w.errors_caught for w in workers),
        "ops": ops,
    }))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
