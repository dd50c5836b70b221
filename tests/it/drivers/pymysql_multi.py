"""Multi-statements, multi-results and capabilities through sluice (PyMySQL).

usage: pymysql_multi.py HOST PORT USER PASSWORD DB

A session that asked for CLIENT_MULTI_STATEMENTS gets every result of a multi-statement query
and of a procedure returning several result sets, and a SET inside one is tracked; a session
that did not ask gets the server's syntax error, as it would directly, even though both share
one sluice (they are pooled apart). Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import sys

import pymysql
from pymysql.constants import CLIENT

from mysql_checks import Checks
from mysql_checks import connect as connect_to

host, port, user, password, db = sys.argv[1:6]
checks = Checks()
expect = checks.expect


def connect(flags=0):
    return connect_to(host, port, user, password, db, client_flag=flags)


def all_results(cur):
    out = [list(cur.fetchall() or [])]
    while cur.nextset():
        out.append(list(cur.fetchall() or []))
    return out


multi, plain = connect(CLIENT.MULTI_STATEMENTS), connect()
with multi.cursor() as c:
    c.execute("SELECT 1; SELECT 2, 3; SET time_zone = '+02:00'; SELECT 4")
    expect("multi results", all_results(c), [[(1,)], [(2, 3)], [], [(4,)]])
    c.execute("SELECT @@time_zone")
    expect("SET inside a multi-statement is tracked", c.fetchone()[0], "+02:00")
    c.execute("DROP PROCEDURE IF EXISTS two_sets")
    c.execute("CREATE PROCEDURE two_sets() BEGIN SELECT 'a'; SELECT 'b', 'c'; END")
    c.execute("CALL two_sets()")
    expect("CALL results", all_results(c), [[("a",)], [("b", "c")], []])
    c.execute("SELECT 5")
    expect("after CALL", c.fetchone()[0], 5)
with plain.cursor() as c:
    try:
        c.execute("SELECT 1; SELECT 2")
        checks.fail("a multi-statement ran for a client without CLIENT_MULTI_STATEMENTS")
    except pymysql.err.ProgrammingError as e:
        expect("no multi-statements errno", e.args[0], 1064)
    c.execute("SELECT @@time_zone")
    expect("plain session time_zone", c.fetchone()[0] != "+02:00", True)
    c.execute("CALL two_sets()")
    expect("CALL with MULTI_RESULTS (PyMySQL's default)", all_results(c), [[("a",)], [("b", "c")], []])
checks.finish()
