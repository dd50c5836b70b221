"""The fault checkers' workload for MySQL, with PyMySQL: 4 writers log every acknowledged
insert (writer, seq), 2 clients move one unit between accounts per transaction while an auditor
sums them, and 3 sessions each check their own user variable and temporary table every round.
Runs for SECONDS, then prints RESULT {json} for the test to check against the database.

usage: mysql_chaos.py HOST PORT USER PASSWORD DB SECONDS ACCOUNTS TOTAL
"""
import json
import sys
import threading
import time

import pymysql

HOST, PORT, USER, PASSWORD, DB = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
SECONDS, ACCOUNTS, TOTAL = float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
OP_TIMEOUT = 60
END = time.time() + SECONDS
LOCK = threading.Lock()
SEEN = {"acked": [], "unknown": 0, "transfers": 0, "audits": 0, "wrong_totals": [],
        "identity_checks": 0, "leaks": [], "hung": 0, "errors": {}}


def connect():
    return pymysql.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB,
                           autocommit=True, connect_timeout=10, read_timeout=OP_TIMEOUT,
                           write_timeout=OP_TIMEOUT)


def failed(e, started):
    code = str(e.args[0]) if getattr(e, "args", None) else type(e).__name__
    with LOCK:
        SEEN["errors"][code] = SEEN["errors"].get(code, 0) + 1
        if time.time() - started >= OP_TIMEOUT - 1:
            SEEN["hung"] += 1


def close(c):
    try:
        if c is not None:
            c.close()
    except Exception:
        pass
    return None


def forever(step, setup=None, on_error=None):
    """Runs step(connection) until the end, logging in again (and running setup) after a loss."""
    c = None
    while time.time() < END:
        started = time.time()
        try:
            if c is None:
                c = connect()
                if setup:
                    setup(c.cursor())
            step(c)
        except Exception as e:
            failed(e, started)
            if on_error:
                on_error()
            c = close(c)


def writer(i):
    seq = [0]

    def insert(c):
        seq[0] += 1
        c.cursor().execute("INSERT INTO ledger VALUES (%s, %s)", (i, seq[0]))
        with LOCK:
            SEEN["acked"].append([i, seq[0]])

    def unknown():
        with LOCK:
            SEEN["unknown"] += 1

    forever(insert, on_error=unknown)


def bank(auditor):
    n = [0]

    def audit(c):
        cur = c.cursor()
        cur.execute("SELECT SUM(balance) FROM accounts")
        total = int(cur.fetchone()[0])
        with LOCK:
            SEEN["audits"] += 1
            if total != TOTAL:
                SEEN["wrong_totals"].append(total)

    def transfer(c):
        n[0] += 1
        a, b = n[0] % ACCOUNTS, (n[0] * 7 + 3) % ACCOUNTS
        cur = c.cursor()
        c.begin()
        cur.execute("UPDATE accounts SET balance = balance - 1 WHERE id = %s", (a,))
        cur.execute("UPDATE accounts SET balance = balance + 1 WHERE id = %s", (b,))
        c.commit()
        with LOCK:
            SEEN["transfers"] += 1

    forever(audit if auditor else transfer)


def identity(i):
    def setup(cur):
        cur.execute("SET @me = %s", (i,))
        cur.execute("CREATE TEMPORARY TABLE me (id INT)")
        cur.execute("INSERT INTO me VALUES (%s)", (i,))

    def check(c):
        cur = c.cursor()
        cur.execute("SELECT @me, (SELECT id FROM me)")
        me, row = cur.fetchone()
        with LOCK:
            SEEN["identity_checks"] += 1
            if int(me) != i or int(row) != i:
                SEEN["leaks"].append(f"session {i} saw @me={me} and me.id={row}")

    forever(check, setup=setup)


threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
threads += [threading.Thread(target=bank, args=(a,)) for a in (False, False, True)]
threads += [threading.Thread(target=identity, args=(i,)) for i in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("RESULT " + json.dumps(SEEN))
