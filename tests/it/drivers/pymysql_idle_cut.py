"""A server connection the server ends while its session idles in a transaction (through
sluice, PyMySQL), with a pool of one.

usage: pymysql_idle_cut.py HOST PORT USER PASSWORD DB IDLE_SECONDS

The server is set to end sessions idle in a transaction after a second (MariaDB's
`idle_transaction_timeout`). A opens a transaction and idles past that; then B, a new client,
runs a SELECT: it must get a server connection, as it would through PgBouncer or directly,
while A still idles. Then A's next statement learns that its transaction is gone. Prints
`RESULT {json}`: B's errno (0: served), how long B waited, and A's errno.
"""
import json
import sys
import time

from mysql_checks import connect, errno

host, port, user, password, db, idle_seconds = sys.argv[1:7]


def select(conn, value):
    with conn.cursor() as c:
        c.execute(f"SELECT {value}")
        return c.fetchone()[0]


a = connect(host, port, user, password, db)
a.begin()
select(a, 1)
time.sleep(float(idle_seconds))
started = time.monotonic()
b = errno(lambda: select(connect(host, port, user, password, db), 2))
waited = time.monotonic() - started
cut = errno(lambda: select(a, 3))
print("RESULT " + json.dumps({"b": b, "waited": round(waited, 2), "cut": cut}))
