"""Texts that differ only in their numbers, as a client-side binding driver sends them (psycopg's
ClientCursor interpolates every parameter into a simple Query): sluice remembers what its scan
found for such texts, so a pin hidden among look-alikes must still pin, every round, and lift.
Each round's pin comes right behind the statement that lifted the last one (an unlock, a DROP),
before sluice's pin check has answered: that check is stale by then and must not unpin.

usage: psycopg_memo.py HOST PORT DB USER PASSWORD   (run on a pool of 2)

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import json
import sys

import psycopg

host, port, db, user, password = sys.argv[1:6]
failures = []
checks = 0


def expect(what, got, want):
    global checks
    checks += 1
    if got != want:
        failures.append(f"{what}: got {got!r}, want {want!r}")


def connect():
    return psycopg.connect(host=host, port=port, dbname=db, user=user, password=password,
                           autocommit=True, cursor_factory=psycopg.ClientCursor)


def one(conn, sql, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0] if cur.description else None


def sqlstate(conn, sql, *args):
    try:
        one(conn, sql, *args)
        return None
    except psycopg.Error as e:
        return e.sqlstate or repr(e)


a, b = connect(), connect()
# Numbers of every length, so each text below meets its look-alikes with shorter and longer runs.
for n in [1, 7, 42, 300, 12345, 9, 1000000, 55]:
    # Warm the memo with plain look-alikes of every text the rounds send.
    expect(f"plain sum {n}", one(a, "SELECT %s::int + %s", n, n), 2 * n)
    expect(f"plain backend {n}", one(a, "SELECT pg_backend_pid() * 0 + %s", n), n)

    # A session-level advisory lock pins A: its backend stays while other sessions come and go.
    one(a, "SELECT pg_advisory_lock(%s)", n)
    pinned = one(a, "SELECT pg_backend_pid() + %s", n) - n
    for k in range(4):
        expect(f"A stays pinned {n}.{k}", one(a, "SELECT pg_backend_pid() + %s", k) - k, pinned)
        expect(f"B runs elsewhere {n}.{k}", one(b, "SELECT pg_backend_pid() + %s", k) - k != pinned,
               True)
        expect(f"B sees A's lock {n}.{k}",
               one(b, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                   n), 1)
    expect(f"unlock {n}", one(a, "SELECT pg_advisory_unlock(%s)", n), True)

    # A temporary table pins A until it is dropped, and is never seen from B.
    one(a, f"CREATE TEMP TABLE memo_t{n} (x int)")
    one(a, f"INSERT INTO memo_t{n} VALUES (%s)", n)
    for k in range(3):
        expect(f"A reads its table {n}.{k}", one(a, f"SELECT x + %s FROM memo_t{n}", k), n + k)
        expect(f"B cannot {n}.{k}", sqlstate(b, f"SELECT x + %s FROM memo_t{n}", k), "42P01")
    one(a, f"DROP TABLE memo_t{n}")

expect("no lock left", one(b, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0)
print("RESULT " + json.dumps({"checks": checks, "failures": len(failures)}))
for f in failures:
    print("FAIL " + f)
sys.exit(1 if failures else 0)
