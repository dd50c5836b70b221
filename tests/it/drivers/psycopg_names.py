"""Protocol-level statement names are per session: the same name prepared with different text
by two sessions on one shared server connection, and a third session that never prepared it."""
import sys

import psycopg
from psycopg import pq

host, port, db, user, password = sys.argv[1:6]


def connect():
    return psycopg.connect(host=host, port=port, dbname=db, user=user, password=password,
                           autocommit=True)


def value(res):
    if res.status != pq.ExecStatus.TUPLES_OK:
        return "error " + (res.error_field(pq.DiagnosticField.SQLSTATE) or b"?").decode()
    return res.get_value(0, 0).decode()


def status(res):
    if res.status == pq.ExecStatus.FATAL_ERROR:
        return "error " + (res.error_field(pq.DiagnosticField.SQLSTATE) or b"?").decode()
    return "ok"


failures = []


def check(what, got, want):
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")


a, b, c = connect(), connect(), connect()
check("a prepares", status(a.pgconn.prepare(b"same", b"select 'a'::text")), "ok")
check("b prepares", status(b.pgconn.prepare(b"same", b"select 'b'::text")), "ok")
for i in range(20):
    check(f"a run {i}", value(a.pgconn.exec_prepared(b"same", [])), "a")
    check(f"b run {i}", value(b.pgconn.exec_prepared(b"same", [])), "b")
    check(f"c run {i}", value(c.pgconn.exec_prepared(b"same", [])), "error 26000")
check("c describes", status(c.pgconn.describe_prepared(b"same")), "error 26000")
check("a redefines", status(a.pgconn.prepare(b"same", b"select 'x'::text")), "error 42P05")
a.execute("DEALLOCATE same")
check("a after deallocate", value(a.pgconn.exec_prepared(b"same", [])), "error 26000")
check("b after a's deallocate", value(b.pgconn.exec_prepared(b"same", [])), "b")
check("a reuses the name", status(a.pgconn.prepare(b"same", b"select 'a2'::text")), "ok")
check("a's new text", value(a.pgconn.exec_prepared(b"same", [])), "a2")
for line in failures:
    print("FAILED", line)
print("RESULT", "ok" if not failures else f"{len(failures)} failures")
sys.exit(1 if failures else 0)
