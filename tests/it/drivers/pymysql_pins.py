"""Pins through sluice (PyMySQL): temporary tables, user variables and named locks keep their
session's server connection until the state is gone, and never show up in another session.

usage: pymysql_pins.py HOST PORT USER PASSWORD DB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import sys

import pymysql

from mysql_checks import Checks, connect, errno, one

host, port, user, password, db = sys.argv[1:6]
checks = Checks()
expect = checks.expect

a, b = connect(host, port, user, password, db), connect(host, port, user, password, db)
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
        checks.fail("B sees A's temporary table")
    except pymysql.err.ProgrammingError as e:
        expect("B temp table errno", e.args[0], 1146)
    expect(f"B user variable #{round_}", one(b, "SELECT @mine"), None)
    expect(f"B lock is A's #{round_}", one(b, "SELECT IS_FREE_LOCK('sluice-pin')"), 0)
a_thread = one(a, "SELECT CONNECTION_ID()")
expect("A stays on its connection", one(a, "SELECT CONNECTION_ID()"), a_thread)
one(a, "SELECT RELEASE_LOCK('sluice-pin')")
one(a, "DROP TEMPORARY TABLE tmp_pin")
# A HANDLER keeps its connection until it is closed.
one(a, "CREATE TABLE IF NOT EXISTS t_handler (x INT)")
one(a, "INSERT INTO t_handler VALUES (5)")
one(a, "HANDLER t_handler OPEN AS h")
expect("HANDLER reads", one(a, "HANDLER h READ FIRST"), 5)
expect("HANDLER reads on", one(a, "HANDLER h READ NEXT"), None)
one(a, "HANDLER h CLOSE")


def bound(conn, sql, *args):
    """PyMySQL interpolates `args` into the text: look-alike texts that differ in numbers only."""
    with conn.cursor() as c:
        c.execute(sql, args)
        row = c.fetchone()
        return row[0] if row else None


# sluice remembers what its scan found for plain texts, so a pin among look-alikes with numbers
# of every length must still pin, every round, and lift.
for n in [1, 7, 42, 300, 12345, 9, 1000000]:
    expect(f"plain sum {n}", bound(a, "SELECT %s + %s", n, n), 2 * n)
    bound(a, "SELECT GET_LOCK(CONCAT('memo', %s), 5)", n)
    pinned = bound(a, "SELECT CONNECTION_ID() + %s", n) - n
    for k in range(3):
        expect(f"A stays pinned {n}.{k}", bound(a, "SELECT CONNECTION_ID() + %s", k) - k, pinned)
        expect(f"B runs elsewhere {n}.{k}",
               bound(b, "SELECT CONNECTION_ID() + %s", k) - k != pinned, True)
        expect(f"B sees A's lock {n}.{k}",
               bound(b, "SELECT IS_USED_LOCK(CONCAT('memo', %s))", n), pinned)
    expect(f"release {n}", bound(a, "SELECT RELEASE_LOCK(CONCAT('memo', %s))", n), 1)
    bound(a, f"CREATE TEMPORARY TABLE memo_t{n} (x INT)")
    bound(a, f"INSERT INTO memo_t{n} VALUES (%s)", n)
    for k in range(3):
        expect(f"A reads its table {n}.{k}", bound(a, f"SELECT x + %s FROM memo_t{n}", k), n + k)
        expect(f"B cannot {n}.{k}", errno(lambda: bound(b, f"SELECT x + %s FROM memo_t{n}", k)),
               1146)
    bound(a, f"DROP TEMPORARY TABLE memo_t{n}")
checks.finish(pinned_thread=a_thread)
