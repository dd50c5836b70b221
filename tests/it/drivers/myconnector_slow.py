"""Two MySQL clients that transact every 1.4 s, past the second after which an idle session
gives its buffers back to its worker's spare list, and take them again: every answer, text and
binary protocol, small and larger than a spare buffer, comes back whole and each session's own
(mysql-connector-python, prepared cursors: each execute is rewritten into a reused buffer).

usage: myconnector_slow.py HOST PORT USER PASSWORD DB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import sys
import time

from mysql_checks import Checks, connector

host, port, user, password, db = sys.argv[1:6]
checks = Checks()
clients = {name: connector(host, port, user, password, db) for name in ("a", "b")}
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
            got = prep.fetchone()[0]
            checks.expect(f"{tag} execute {size}", got, "x" * size + tag)
        prep.close()
        cur = cnx.cursor()
        cur.execute(f"SELECT REPEAT('{name}', 5000), @@session.sql_select_limit, '{tag}'")
        got = cur.fetchone()
        limit = 1000 if name == "a" else 2000
        checks.expect(f"{tag} text", tuple(got), (name * 5000, limit, tag))
        cur.execute("SELECT seq FROM seq_1_to_300")
        checks.expect(f"{tag} rows", [r[0] for r in cur.fetchall()], list(range(1, 301)))
        cur.close()
checks.finish()
