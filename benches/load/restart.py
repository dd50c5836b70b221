"""What clients see while PostgreSQL restarts in place, through each target side by side: every
target gets N sessions running `SELECT 1` every 5 ms; after 2 s the restart command runs (it
returns once the server accepts connections again), and the run goes on for 5 s more. A session
whose connection ends logs in again at once, as an application's pool would. RESTART_FRESH=1
opens a new connection for every statement instead (a Lambda function's pattern).

    python3 benches/load/restart.py <user> <password> <db> <sessions> "<restart command>" \\
        name=port [name=port ...]

Prints one line per target: the errors clients saw (by SQLSTATE, `closed` for a connection that
ended, `login:<why>` for a failed login), the longest time a session went without an answer, and
how long after the restart command returned the last session was answered again. The client
speaks the wire protocol itself (refused.py's, the stdlib only).
"""
import asyncio
import os
import subprocess
import sys
import time

from refused import login, query

BEFORE, AFTER, PAUSE = 2.0, 5.0, 0.005
# RESTART_FRESH=1: a new connection for every statement (a Lambda function's pattern).
FRESH = os.environ.get("RESTART_FRESH") == "1"


class Refused(Exception):
    """A login answered with an error."""


async def session(port, creds, tally, stop, back):
    last_ok = time.monotonic()
    recovered = None
    conn = None
    while not stop.is_set():
        try:
            if conn is None:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                conn = (r, w)
                refused = await login(r, w, *creds)
                if refused:
                    raise Refused(f"login:{refused}")
            answer = await query(*conn)
            if FRESH:
                conn[1].close()
                conn = None
        except (OSError, asyncio.IncompleteReadError, Refused) as e:
            answer = e.args[0] if isinstance(e, Refused) else f"closed:{type(e).__name__}"
            if conn:
                conn[1].close()
            conn = None
        now = time.monotonic()
        if answer == "ok":
            tally["gap"] = max(tally["gap"], now - last_ok)
            last_ok = now
            if recovered is None and back:
                recovered = now - back[0]
        else:
            tally["errors"][answer] = tally["errors"].get(answer, 0) + 1
        await asyncio.sleep(PAUSE)
    tally["recovered"] = max(tally["recovered"], recovered or AFTER)
    if conn:
        conn[1].close()


async def run(creds, sessions, restart, targets):
    stop = asyncio.Event()
    back = []  # when the restart command returned
    tallies = {name: {"errors": {}, "gap": 0.0, "recovered": 0.0} for name, _ in targets}
    tasks = [
        asyncio.create_task(session(port, creds, tallies[name], stop, back))
        for name, port in targets
        for _ in range(sessions)
    ]
    await asyncio.sleep(BEFORE)
    started = time.monotonic()
    await asyncio.to_thread(subprocess.run, restart, shell=True, check=True,
                            stdout=subprocess.DEVNULL)
    back.append(time.monotonic())
    await asyncio.sleep(AFTER)
    stop.set()
    await asyncio.gather(*tasks)
    print(f"restart command took {(back[0] - started) * 1000:.0f} ms")
    for name, _ in targets:
        t = tallies[name]
        errors = " ".join(f"{k}={v}" for k, v in sorted(t["errors"].items())) or "none"
        print(f"{name}: errors {errors}; longest wait {t['gap'] * 1000:.0f} ms; "
              f"every session answered {t['recovered'] * 1000:.0f} ms after the server was back")


def main():
    user, password, db, sessions, restart = sys.argv[1:6]
    targets = [(t.split("=")[0], int(t.split("=")[1])) for t in sys.argv[6:]]
    creds = (user.encode(), password.encode(), db.encode())
    asyncio.run(run(creds, int(sessions), restart, targets))


if __name__ == "__main__":
    main()
