"""psycopg 3 cancelling its own running query through sluice, run by tests/it/drivers/cancel.rs.

Each round starts `select pg_sleep(30)` on one connection while another thread waits until the
server shows it running, then cancels it through the driver (the CancelRequest goes to sluice,
which must find the server connection the session runs on right now). The query must fail with
SQLSTATE 57014 within seconds and the same connection must then work. Rounds: simple query,
extended (parameterized) query, and inside a transaction (aborted, then rolled back).

Prints `CANCEL_API <method>` and one `CHECK <round> ok` or `CHECK <round> FAILED: <why>` line per
round; exit status 1 if any failed.

usage: psycopg_cancel.py HOST PORT DB USER PASSWORD
"""
import sys
import threading
import time

import psycopg
from psycopg import errors

host, port, db, user, password = sys.argv[1:6]
DSN = (f"host={host} port={port} dbname={db} user={user} password={password}"
       " sslmode=disable connect_timeout=10")
# The pattern is a bind parameter, so the watcher's own query text never matches it.
ACTIVE = ("select count(*) from pg_stat_activity where state = 'active'"
          " and query like %s and pid <> pg_backend_pid()")


def cancel(conn):
    # cancel_safe (psycopg 3.2+) uses libpq's non-blocking cancel API; cancel() the old one.
    if hasattr(conn, "cancel_safe"):
        conn.cancel_safe(timeout=10)
    else:
        conn.cancel()


def cancel_when_running(conn, marker, watcher, problems):
    """Waits (up to 10 s) until the query tagged `marker` runs on the server, then cancels it."""
    deadline = time.monotonic() + 10
    pattern = f"%{marker}%"
    while time.monotonic() < deadline:
        if watcher.execute(ACTIVE, (pattern,)).fetchone()[0] == 1:
            break
        time.sleep(0.05)
    else:
        problems.append(f"{marker} never seen running")
    try:
        cancel(conn)
    except Exception as e:  # noqa: BLE001 - reported as the round's failure
        problems.append(f"cancel raised {e!r}")


def run_round(name, conn, watcher, sleep_query):
    marker = f"cancel-{name}"
    problems = []
    t = threading.Thread(target=cancel_when_running, args=(conn, marker, watcher, problems))
    started = time.monotonic()
    t.start()
    try:
        sleep_query(conn, f"/* {marker} */")
        problems.append("pg_sleep(30) finished without an error")
    except errors.QueryCanceled as e:
        if e.sqlstate != "57014":
            problems.append(f"sqlstate {e.sqlstate}")
    except psycopg.Error as e:
        problems.append(f"wrong error {type(e).__name__} {e.sqlstate}: {e}")
    t.join()
    took = time.monotonic() - started
    if took > 15:
        problems.append(f"cancel took {took:.1f}s")
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        problems.append(f"transaction status {conn.info.transaction_status.name} after the round")
    alive = conn.execute("select %s::text", (f"alive-{name}",)).fetchone()
    if alive != (f"alive-{name}",):
        problems.append(f"same connection after cancel returned {alive}")
    return problems


def simple(conn, tag):
    conn.execute(f"{tag} select pg_sleep(30)", prepare=False)


def extended(conn, tag):
    conn.execute(f"{tag} select pg_sleep(%s)", (30,))


def in_transaction(conn, tag):
    # The block rolls back when the cancel error leaves it; first a write that must not survive.
    with conn.transaction():
        conn.execute("insert into cancel_probe values (1)")
        conn.execute(f"{tag} select pg_sleep(30)")


def main():
    failed = False
    with psycopg.connect(DSN, autocommit=True) as conn, \
            psycopg.connect(DSN, autocommit=True) as watcher:
        conn.execute("drop table if exists cancel_probe")
        conn.execute("create table cancel_probe (n int)")
        print("CANCEL_API", "cancel_safe" if hasattr(conn, "cancel_safe") else "cancel")
        for name, query in [("simple", simple), ("extended", extended),
                            ("transaction", in_transaction)]:
            problems = run_round(name, conn, watcher, query)
            if name == "transaction":
                left = conn.execute("select count(*) from cancel_probe").fetchone()[0]
                if left != 0:
                    problems.append(f"{left} rows of the cancelled transaction were kept")
            failed |= bool(problems)
            print("CHECK", name, "ok" if not problems else "FAILED: " + "; ".join(problems),
                  flush=True)
    sys.exit(1 if failed else 0)


main()
