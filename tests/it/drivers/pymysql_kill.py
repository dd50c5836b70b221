"""KILL QUERY through sluice (PyMySQL): a client kills another session's statement by the
connection id sluice gave that session, and nothing else is touched.

usage: pymysql_kill.py HOST PORT USER PASSWORD DB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import json
import sys
import threading
import time

import pymysql

from mysql_checks import timed

host, port, user, password, db = sys.argv[1:6]
failures = []


def connect():
    return pymysql.connect(host=host, port=int(port), user=user, password=password,
                           database=db, autocommit=True)


victim, bystander, killer = connect(), connect(), connect()
outcome = {}

threads = [
    threading.Thread(target=timed, args=(outcome, "victim", victim, "SELECT BENCHMARK(2000000000, MD5('x'))")),
    threading.Thread(target=timed, args=(outcome, "bystander", bystander, "SELECT SLEEP(2)")),
]
for t in threads:
    t.start()
time.sleep(0.7)
with killer.cursor() as c:
    c.execute(f"KILL QUERY {victim.thread_id()}")
    try:
        c.execute("KILL QUERY 4000000")
        failures.append("KILL QUERY of an unknown id succeeded")
    except pymysql.err.MySQLError as e:
        unknown = e.args[0]
for t in threads:
    t.join(60)

# Uninterrupted, the BENCHMARK runs for minutes; killed, MariaDB ends it with 1317 or a result.
state, code, took = outcome.get("victim", ("missing", None, 0))
if state == "missing" or took > 20 or (state == "error" and code != 1317):
    failures.append(f"victim: {outcome.get('victim')}")
if outcome.get("bystander", ("missing",))[:2] != ("ok", 0):
    failures.append(f"bystander: {outcome.get('bystander')}")
if unknown != 1094:
    failures.append(f"unknown id: errno {unknown}")
# The killed session goes on.
with victim.cursor() as c:
    c.execute("SELECT 5")
    if c.fetchone()[0] != 5:
        failures.append("victim unusable after the kill")
print("RESULT " + json.dumps({"victim": outcome.get("victim"), "bystander": outcome.get("bystander"),
                              "unknown_errno": unknown, "failures": len(failures)}))
for f in failures:
    print("FAIL " + f)
sys.exit(1 if failures else 0)
