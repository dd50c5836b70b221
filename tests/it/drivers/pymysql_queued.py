"""Statements queued for a server connection (PyMySQL, a pool of one held by a transaction):
one is stopped by KILL QUERY while it waits and gets 1317 at once, another's client hangs up
while it waits; neither runs when the connection comes free, as neither would have run on a
direct connection its client had given up on.

usage: pymysql_queued.py HOST PORT USER PASSWORD DB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import socket
import sys
import threading
import time

from mysql_checks import Checks, connect, one, timed

target = sys.argv[1:6]
checks = Checks()
holder, victim, leaver, killer = (connect(*target, read_timeout=60) for _ in range(4))
outcome = {}

with holder.cursor() as c:
    c.execute("DROP TABLE IF EXISTS queued_t")
    c.execute("CREATE TABLE queued_t (id INT)")
    # The pool's only connection stays with this transaction.
    c.execute("BEGIN")
    c.execute("SELECT 1")

killed = threading.Thread(target=timed, args=(outcome, "killed", victim, "INSERT INTO queued_t VALUES (1)"))
killed.start()
time.sleep(0.5)
with killer.cursor() as c:
    c.execute(f"KILL QUERY {victim.thread_id()}")
killed.join(5)
if killed.is_alive():
    checks.fail("the killed statement still waits 5 s after KILL QUERY")

left = threading.Thread(target=timed, args=(outcome, "left", leaver, "INSERT INTO queued_t VALUES (2)"))
left.start()
time.sleep(0.5)
# The client gives up (its own timeout, a crash): its end of the socket closes.
leaver._sock.shutdown(socket.SHUT_RDWR)
left.join(5)
time.sleep(0.5)

with holder.cursor() as c:
    c.execute("COMMIT")
# Had either statement stayed queued, the freed connection would run it now.
time.sleep(1.5)
killed.join(30)
with holder.cursor() as c:
    c.execute("SELECT id FROM queued_t ORDER BY id")
    rows = [r[0] for r in c.fetchall()]
checks.expect("statements whose clients gave up that ran", rows, [])
state, code, _ = outcome.get("killed", ("missing", None, 0))
checks.expect(f"the killed statement's answer {outcome.get('killed')}", (state, code), ("error", 1317))
checks.expect("the killed session afterwards", one(victim, "SELECT 5"), 5)
checks.finish(killed=outcome.get("killed"), left=outcome.get("left"), rows=rows)
