"""Pins through sluice (PyMySQL): temporary tables, user variables and named locks keep their
session's server connection until the state is gone, and never show up in another session.

usage: pymysql_pins.py HOST PORT USER PASSWORD DB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import sys

import pymysql

from mysql_checks import Checks, connect, one

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
checks.finish(pinned_thread=a_thread)
