"""Pins through sluice (PyMySQL): temporary tables, user variables and named locks keep their
session's server connection until the state is gone, and never show up in another session.

usage: pymysql_pins.py HOST PORT USER PASSWORD DB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import json
import sys

import pymysql

host, port, user, password, db = sys.argv[1:6]
failures = []
checks = 0


def connect():
    return pymysql.connect(host=host, port=int(port), user=user, password=password,
                           database=db, autocommit=True)


def one(conn, sql):
    with conn.cursor() as c:
        c.execute(sql)
        row = c.fetchone()
        return row[0] if row else None


def expect(what, got, want):
    global checks
    checks += 1
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")


a, b = connect(), connect()
one(a, "CREATE TEMPORARY TABLE tmp_pin (x INT)")
one(a, "INSERT INTO tmp_pin VALUES (42)")
one(a, "SET @mine = 7")
one(a, "SELECT GET_LOCK('sluice-pin', 5)")
for round_ in range(3):
    expect(f"A temp table #{round_}", one(a, "SELECT x FROM tmp_pin"), 42)
    expect(f"A user variable #{round_}", one(a, "SELECT @mine"), 7)
    expect(f"A holds lock #{round_}", one(a, "SELECT IS_USED_LOCK('sluice-pin') = CONNECTION_ID()"), 1)
    try:
        one(b, "SELECT x FROM tmp_pin")
        failures.append("B sees A's temporary table")
    except pymysql.err.ProgrammingError as e:
        expect("B temp table errno", e.args[0], 1146)
    expect(f"B user variable #{round_}", one(b, "SELECT @mine"), None)
    expect(f"B lock is A's #{round_}", one(b, "SELECT IS_FREE_LOCK('sluice-pin')"), 0)
a_thread = one(a, "SELECT CONNECTION_ID()")
expect("A stays on its connection", one(a, "SELECT CONNECTION_ID()"), a_thread)
one(a, "SELECT RELEASE_LOCK('sluice-pin')")
one(a, "DROP TEMPORARY TABLE tmp_pin")
print("RESULT " + json.dumps({"checks": checks, "failures": len(failures), "pinned_thread": a_thread}))
for f in failures:
    print("FAIL " + f)
sys.exit(1 if failures else 0)
