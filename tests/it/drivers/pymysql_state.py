"""Session state through sluice over a pool of one or two server connections (PyMySQL).

usage: pymysql_state.py HOST PORT USER PASSWORD DB OTHERDB

Two client sessions, A and B, take turns on the same server connection(s). Every check compares
with what a direct connection would show; any difference is printed and the exit code is 1.
Prints `RESULT {json}` with the number of checks.
"""
import sys

import pymysql

from mysql_checks import Checks, one
from mysql_checks import connect as connect_to

host, port, user, password, db, otherdb = sys.argv[1:7]
checks = Checks()
expect = checks.expect


def connect(database=db):
    return connect_to(host, port, user, password, database)


a, b = connect(), connect()
default_tz = one(b, "SELECT @@time_zone")
default_mode = one(b, "SELECT @@sql_mode")
default_cs = one(b, "SELECT @@character_set_results")

# Tracked variables and the schema follow their session, never the connection.
one(a, "SET time_zone = '+05:00', sql_mode = 'ANSI_QUOTES'")
one(a, "SET NAMES latin1")
one(a, f"USE {otherdb}")
for round_ in range(3):
    expect(f"B time_zone #{round_}", one(b, "SELECT @@time_zone"), default_tz)
    expect(f"B sql_mode #{round_}", one(b, "SELECT @@sql_mode"), default_mode)
    expect(f"B charset #{round_}", one(b, "SELECT @@character_set_results"), default_cs)
    expect(f"B schema #{round_}", one(b, "SELECT DATABASE()"), db)
    expect(f"A time_zone #{round_}", one(a, "SELECT @@time_zone"), "+05:00")
    expect(f"A sql_mode #{round_}", one(a, "SELECT @@sql_mode"), "ANSI_QUOTES")
    expect(f"A charset #{round_}", one(a, "SELECT @@character_set_results"), "latin1")
    expect(f"A schema #{round_}", one(a, "SELECT DATABASE()"), otherdb)

# COM_INIT_DB (PyMySQL's select_db) is the schema too.
b.select_db(otherdb)
expect("B schema after COM_INIT_DB", one(b, "SELECT DATABASE()"), otherdb)
expect("A schema meanwhile", one(a, "SELECT DATABASE()"), otherdb)
b.select_db(db)
expect("B schema back", one(b, "SELECT DATABASE()"), db)

# A failed USE changes nothing; the session goes on.
try:
    one(b, "USE no_such_schema_here")
    checks.fail("USE of a missing schema succeeded")
except pymysql.err.OperationalError as e:
    # 1044 where the user may not see such a schema at all, 1049 where it may.
    expect("USE missing errno", e.args[0] in (1044, 1049), True)
expect("B schema after failed USE", one(b, "SELECT DATABASE()"), db)

# SET TRANSACTION applies to the session's next transaction only, and only to it.
one(a, f"USE {db}")
one(a, "CREATE TABLE IF NOT EXISTS t_state (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
one(b, "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
for _ in range(2):
    expect("A isolation", one(a, "SELECT @@tx_isolation"), "REPEATABLE-READ")
    expect("B isolation", one(b, "SELECT @@tx_isolation"), "SERIALIZABLE")

# LAST_INSERT_ID() belongs to the session that inserted.
with a.cursor() as c:
    c.execute("INSERT INTO t_state (v) VALUES (1)")
    a_id = c.lastrowid
with b.cursor() as c:
    c.execute("INSERT INTO t_state (v) VALUES (2)")
    b_id = c.lastrowid
expect("A LAST_INSERT_ID()", one(a, "SELECT LAST_INSERT_ID()"), a_id)
expect("B LAST_INSERT_ID()", one(b, "SELECT LAST_INSERT_ID()"), b_id)

# Warnings belong to the statement before SHOW WARNINGS, in the same session, even when another
# session runs a statement in between (which would clear them on a shared connection).
one(b, "SELECT 1/0")
one(a, "SELECT 1")
with b.cursor() as c:
    c.execute("SHOW WARNINGS")
    expect("B warnings", [r[1] for r in c.fetchall()], [1365])

# Autocommit off is tracked too: the open transaction holds the connection until COMMIT.
one(a, "SET autocommit = 0")
one(a, "INSERT INTO t_state (v) VALUES (3)")
one(a, "COMMIT")
expect("A autocommit", one(a, "SELECT @@autocommit"), 0)
one(a, "COMMIT")
expect("B autocommit", one(b, "SELECT @@autocommit"), 1)
one(a, "SET autocommit = 1")

checks.finish()
