"""Plays three MySQL clients through a sluice SIGTERM: one idle, one that ran a command just
before the drain began (still in its busy second, when sluice does not watch the drain), one
inside a transaction.

usage: pymysql_drain.py HOST PORT USER PASSWORD SLUICE_PID GRACE_SECONDS
Prints one line per observation; the Rust test asserts them. Exits non-zero on a surprise.
"""

import os
import signal
import sys
import time

import pymysql


def connect(host, port, user, password):
    return pymysql.connect(host=host, port=port, user=user, password=password,
                           database="appdb", autocommit=True, connect_timeout=5)


def main() -> None:
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    pid, grace = int(sys.argv[5]), float(sys.argv[6])
    idle = connect(host, port, user, password)
    idle.cursor().execute("SELECT 1")
    recent = connect(host, port, user, password)
    busy = connect(host, port, user, password)
    cur = busy.cursor()
    cur.execute("BEGIN")
    cur.execute("INSERT INTO drained VALUES (1)")
    os.kill(pid, signal.SIGTERM)
    time.sleep(grace - 0.5)
    recent.cursor().execute("SELECT 2")
    time.sleep(2.0)
    for name, conn in (("idle", idle), ("recent", recent)):
        try:
            conn.cursor().execute("SELECT 1")
            print(f"{name} session still open")
        except pymysql.err.OperationalError as e:
            print(f"{name} session closed {e.args[0]}")
    try:
        connect(host, port, user, password)
        print("new client accepted after the grace")
    except pymysql.err.OperationalError as e:
        print(f"new client refused {e.args[0]}")
    cur.execute("INSERT INTO drained VALUES (2)")
    cur.execute("COMMIT")
    print("transaction committed")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
