"""Binary-protocol statements through sluice (mysql-connector-python, prepared cursors) over a
small pool: the same text prepared in two schemas reads each schema's own table, and a
prepared statement that takes a named lock or sets a tracked variable pins or is tracked like
its text would be as a plain query.

usage: myconnector_schema.py HOST PORT USER PASSWORD DB OTHERDB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import json
import sys

import mysql.connector

host, port, user, password, db, otherdb = sys.argv[1:7]
failures = []
checks = 0


def connect(database):
    return mysql.connector.connect(host=host, port=int(port), user=user, password=password,
                                   database=database, use_pure=True, ssl_disabled=True,
                                   autocommit=True)


def expect(what, got, want):
    global checks
    checks += 1
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")


def prepared(conn, sql, params=()):
    cur = conn.cursor(prepared=True)
    cur.execute(sql, params)
    rows = cur.fetchall() if cur.with_rows else []
    cur.close()
    return rows


setup = connect(db)
for schema, value in ((db, "from-" + db), (otherdb, "from-" + otherdb)):
    c = setup.cursor()
    c.execute(f"CREATE TABLE IF NOT EXISTS {schema}.t_schema (v VARCHAR(32))")
    c.execute(f"DELETE FROM {schema}.t_schema")
    c.execute(f"INSERT INTO {schema}.t_schema VALUES ('{value}')")
    c.close()
setup.close()

a, b = connect(db), connect(otherdb)
sql = "SELECT v FROM t_schema WHERE v LIKE ?"
for round_ in range(3):
    expect(f"A reads {db} #{round_}", prepared(a, sql, ("from-%",)), [("from-" + db,)])
    expect(f"B reads {otherdb} #{round_}", prepared(b, sql, ("from-%",)), [("from-" + otherdb,)])

# A statement prepared under one schema keeps reading it after USE, as on a server.
cur = a.cursor(prepared=True)
cur.execute(sql, ("from-%",))
cur.fetchall()
plain = a.cursor()
plain.execute(f"USE {otherdb}")
plain.close()
cur.execute(sql, ("from-%",))
expect("prepared before USE", cur.fetchall(), [("from-" + db,)])
cur.close()
expect("prepared after USE", prepared(a, sql, ("from-%",)), [("from-" + otherdb,)])

# Binary statements pin and track like text ones.
expect("GET_LOCK via execute", prepared(a, "SELECT GET_LOCK(?, 5)", ("sluice-ps",)), [(1,)])
expect("B sees the lock taken", prepared(b, "SELECT IS_FREE_LOCK(?)", ("sluice-ps",)), [(0,)])
expect("A still holds it", prepared(a, "SELECT IS_USED_LOCK(?) = CONNECTION_ID()", ("sluice-ps",)), [(1,)])
prepared(a, "SELECT RELEASE_LOCK(?)", ("sluice-ps",))
prepared(b, "SET time_zone = ?", ("+04:00",))
expect("B time_zone tracked", prepared(b, "SELECT @@time_zone"), [("+04:00",)])
expect("A not affected", prepared(a, "SELECT @@time_zone") != [("+04:00",)], True)
print("RESULT " + json.dumps({"checks": checks, "failures": len(failures)}))
for f in failures:
    print("FAIL " + f)
sys.exit(1 if failures else 0)
