"""A MySQL session idle long enough to park (no task; its socket watched by sluice's lot) comes
back with its tracked session variable and its binary-protocol statement, and no other session
sees them (mysql-connector-python). (A user variable would pin the session, which then keeps
its server connection and never parks.)

usage: myconnector_parked.py HOST PORT USER PASSWORD DB ADMIN_PORT

Prints `RESULT {json}` with the sluice_client_sessions_parked gauge before, during and after
the idle time; exit 1 on any mismatch.
"""
import sys
import time
import urllib.request

from mysql_checks import Checks, connector

host, port, user, password, db, admin = sys.argv[1:7]
checks = Checks()


def connect():
    return connector(host, port, user, password, db)


def one(conn, sql):
    cur = conn.cursor()
    cur.execute(sql)
    row = cur.fetchone()
    cur.close()
    return row[0]


def execute(conn, sql):
    cur = conn.cursor()
    cur.execute(sql)
    cur.close()


def parked():
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith("sluice_client_sessions_parked "):
                return float(line.split()[1])
    return None


a, b = connect(), connect()
execute(a, "SET SESSION time_zone = '+09:00'")
statement = a.cursor(prepared=True)
statement.execute("SELECT ? + 1", (41,))
checks.expect("prepared before", statement.fetchall()[0][0], 42)
before = parked()
time.sleep(2.5)
during = parked()
statement.execute("SELECT ? + 1", (99,))
checks.expect("prepared after parking", statement.fetchall()[0][0], 100)
checks.expect("time_zone after parking", one(a, "SELECT @@session.time_zone"), "+09:00")
checks.expect("other session's time_zone",
              one(b, "SELECT @@session.time_zone") == "+09:00", False)
after = parked()
statement.close()
a.close()
b.close()
checks.finish(before=before, during=during, after=after)
