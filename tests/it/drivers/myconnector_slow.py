"""Two MySQL clients that transact every 1.4 s, past the second after which an idle session
gives its buffers back to its worker's spare list, and take them again: every answer, text and
binary protocol, small and larger than a spare buffer, comes back whole and each session's own
(mysql-connector-python, prepared cursors: each execute is rewritten into a reused buffer).

usage: myconnector_slow.py HOST PORT USER PASSWORD DB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import json
import sys
import time

import mysql.connector

host, port, user, password, db = sys.argv[1:6]
failures = []
checks = 0


def connect():
    return mysql.connector.connect(host=host, port=int(port), user=user, password=password,
                                   database=db, use_pure=True, ssl_disabled=True,
                                   autocommit=True)


def expect(what, got, want):
    global checks
    checks += 1
    if got != want:
        failures.append(f"{what}: got {str(got)[:80]!r}, want {str(want)[:80]!r}")


clients = {"a": connect(), "b": connect()}
for name, cnx in clients.items():
    cur = cnx.cursor()
    cur.execute(f"SET @@session.sql_select_limit = {1000 if name == 'a' else 2000}")
    cur.close()
for rnd in range(3):
    time.sleep(1.4)
    for name, cnx in clients.items():
        tag = f"{name}{rnd}"
        # Binary protocol: a small answer, then one of 20,001 bytes (a reply buffer grown past
        # the spare size, which is not kept).
        prep = cnx.cursor(prepared=True)
        for size in (10, 20000):
            prep.execute("SELECT CONCAT(REPEAT('x', ?), ?)", (size, tag))
            expect(f"{tag} execute {size}", prep.fetchone()[0], "x" * size + tag)
        prep.close()
        cur = cnx.cursor()
        cur.execute(f"SELECT REPEAT('{name}', 5000), @@session.sql_select_limit, '{tag}'")
        got = cur.fetchone()
        expect(f"{tag} text", tuple(got), (name * 5000, 1000 if name == "a" else 2000, tag))
        cur.execute("SELECT seq FROM seq_1_to_300")
        expect(f"{tag} rows", [r[0] for r in cur.fetchall()], list(range(1, 301)))
        cur.close()
print("RESULT " + json.dumps({"checks": checks, "failures": len(failures)}))
for f in failures:
    print("FAIL " + f)
sys.exit(1 if failures else 0)
