"""Focused check, run by tests/it/drivers/psycopg.rs against a sluice with a pool of ONE: after
a client wipes the server's prepared statements (psycopg itself sends DEALLOCATE ALL after every
ROLLBACK once it has prepared statements; clients may send DISCARD ALL or DEALLOCATE ALL), the
statements sluice remapped must still work for that client and for every other session.

Prints one `CHECK <name> <value or FAILED: error>` line per check; exit status 1 if any failed.

usage: psycopg_deallocate.py HOST PORT DB USER PASSWORD
"""
import sys

import psycopg

host, port, db, user, password = sys.argv[1:6]
DSN = (f"host={host} port={port} dbname={db} user={user} password={password}"
       " sslmode=disable connect_timeout=10")
failed = False


def connect():
    return psycopg.connect(DSN, autocommit=True, prepare_threshold=0)


def check(name, conn, query, params, want):
    global failed
    try:
        got = conn.execute(query, params).fetchone()[0]
    except psycopg.Error as e:
        got = f"FAILED: {type(e).__name__}: {e}".replace("\n", " ")
    if got != want:
        failed = True
    print(f"CHECK {name} {got}", flush=True)


a, b = connect(), connect()
check("a-before", a, "select %s::int", (1,), 1)
with a.transaction():  # psycopg: ROLLBACK, then DEALLOCATE ALL
    a.execute("select %s::int", (2,))
    raise psycopg.Rollback()
check("b-after-rollback", b, "select %s::int", (3,), 3)
check("a-after-rollback", a, "select %s::int", (4,), 4)

for stmt in ("DISCARD ALL", "DEALLOCATE ALL"):
    c = connect()
    query = f"select %s::int + 0 /* {stmt} */"
    tag = stmt.lower().replace(" ", "_")
    check(f"{tag}-before", c, query, (5,), 5)
    c.execute(stmt, prepare=False)
    check(f"{tag}-same-session", c, query, (6,), 6)
    check(f"{tag}-other-session", connect(), query, (7,), 7)

sys.exit(1 if failed else 0)
