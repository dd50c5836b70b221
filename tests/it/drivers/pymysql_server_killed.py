"""A MariaDB killed under sluice's sessions (PyMySQL): every client gets a clear error, none hangs,
and each connection to sluice stays usable for the error of its next command.

usage: pymysql_server_killed.py HOST PORT USER PASSWORD DB KILL_FILE

Opens an idle session and a busy one (SELECT SLEEP(30)), writes KILL_FILE so the test kills the
server, then waits for the busy one's error, runs a statement on the idle one and logs in anew.
Prints `RESULT {json}`.
"""
import sys
import threading
import time

from mysql_checks import Checks, errno
from mysql_checks import connect as connect_to

host, port, user, password, db, kill_file = sys.argv[1:7]
checks = Checks()


def connect():
    return connect_to(host, port, user, password, db, read_timeout=60)


def select(conn, sql):
    with conn.cursor() as c:
        c.execute(sql)
        return c.fetchall()


idle, busy = connect(), connect()
select(idle, "SELECT 1")
outcome = {}


def run_busy():
    started = time.monotonic()
    outcome["errno"] = errno(lambda: select(busy, "SELECT SLEEP(30)"))
    outcome["seconds"] = time.monotonic() - started


t = threading.Thread(target=run_busy)
t.start()
time.sleep(0.5)
open(kill_file, "w").close()
t.join(40)
checks.expect("busy statement ends", t.is_alive(), False)
checks.expect("busy statement gets an error", outcome.get("errno", 0) != 0, True)
checks.expect("busy statement ends soon", outcome.get("seconds", 99) < 20, True)
started = time.monotonic()
idle_errno = errno(lambda: select(idle, "SELECT 2"))
checks.expect("idle session's next statement gets an error", idle_errno != 0, True)
checks.expect("and soon", time.monotonic() - started < 20, True)
# A new login still gets an answer in MySQL's protocol (greeting and schema are known).
late_errno = errno(lambda: select(connect(), "SELECT 3"))
checks.expect("a new client gets an error too", late_errno != 0, True)
checks.finish(busy_errno=outcome.get("errno"), idle_errno=idle_errno, late_errno=late_errno)
