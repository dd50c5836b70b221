"""A burst of PyMySQL clients waiting for a pool whose server logins are refused (through sluice).

usage: pymysql_refused.py HOST PORT USER PASSWORD DB ROOT_SOCKET ADMIN_PORT CLIENTS

A holds the pool's only server connection in a transaction. As root (over the server's socket)
the script locks USER's account, starts CLIENTS sessions that each run one SELECT and so wait
for the pool (sluice's waiters gauge, read from ADMIN_PORT, says when all wait), then kills A's
server connection and lets A find it gone: the pool, now empty, must log in again and is
refused. Then it unlocks the account and runs one more SELECT. Prints `RESULT {json}`: the
errno each waiting client got, the server logins refused meanwhile (`Aborted_connects`), and
the last SELECT's value.
"""
import json
import sys
import threading
import time
import urllib.request

import pymysql

from mysql_checks import connect, errno

host, port, user, password, db, root_socket, admin_port, clients = sys.argv[1:9]
clients = int(clients)


def select(conn, value):
    with conn.cursor() as c:
        c.execute(f"SELECT {value}")
        return c.fetchone()[0]


def as_root(sql):
    conn = pymysql.connect(unix_socket=root_socket, user="root", autocommit=True)
    try:
        with conn.cursor() as c:
            c.execute(sql)
            return c.fetchall()
    finally:
        conn.close()


def denied():
    return int(as_root("SHOW GLOBAL STATUS LIKE 'Aborted_connects'")[0][1])


def waiters():
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    return sum(float(l.rsplit(" ", 1)[1]) for l in lines
               if l.startswith("sluice_database_connection_waiters{"))


a = connect(host, port, user, password, db)
a.begin()
held = select(a, "CONNECTION_ID()")
as_root(f"ALTER USER '{user}'@'%' ACCOUNT LOCK")
before = denied()
got = []


def client():
    try:
        conn = connect(host, port, user, password, db)
    except pymysql.MySQLError as e:
        got.append(e.args[0])
        return
    got.append(errno(lambda: select(conn, 1)))


threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
deadline = time.monotonic() + 30
while waiters() < clients and time.monotonic() < deadline:
    time.sleep(0.05)
waiting = waiters()
as_root(f"KILL {held}")
# A's next statement finds its connection gone (the transaction rolled back), and the pool's
# slot comes free for the waiting clients.
cut = errno(lambda: select(a, 3))
for t in threads:
    t.join(60)
refused = denied() - before
as_root(f"ALTER USER '{user}'@'%' ACCOUNT UNLOCK")
after = select(connect(host, port, user, password, db), 2)
answers = {}
for e in got:
    answers[str(e)] = answers.get(str(e), 0) + 1
print("RESULT " + json.dumps({"waiting": waiting, "cut": cut, "answers": answers,
                              "refused": refused, "after": after}))
