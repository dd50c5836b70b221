"""Borrow and idle-client timeouts through sluice (PyMySQL), with a pool of one.

usage: pymysql_timeouts.py HOST PORT USER PASSWORD DB IDLE_SECONDS

A holds the only server connection in a transaction; B's statement waits for the borrow timeout
and gets an error, yet B's connection stays usable. Then both sit idle past the idle timeout
and are told why they were disconnected. Prints `RESULT {json}`.
"""
import json
import sys
import time

import pymysql

from mysql_checks import errno

host, port, user, password, db, idle_seconds = sys.argv[1:7]


def connect():
    return pymysql.connect(host=host, port=int(port), user=user, password=password,
                           database=db, autocommit=True)


def select(conn, value):
    with conn.cursor() as c:
        c.execute(f"SELECT {value}")
        return c.fetchone()[0]


a, b = connect(), connect()
a.begin()
select(a, 1)
started = time.monotonic()
borrow = errno(lambda: select(b, 2))
waited = time.monotonic() - started
a.commit()
after = select(b, 3)
time.sleep(float(idle_seconds) + 1.5)
idle = errno(lambda: select(a, 4))
print("RESULT " + json.dumps({"borrow": borrow, "waited": round(waited, 2), "after": after,
                              "idle": idle}))
