"""PyMySQL clients through MariaDB restarted in place, driven by the test over stdin/stdout:
sessions outside a transaction keep their connections and settings, statements sent while the
server is down wait for it, a transaction cut by the restart gets one error and its connection
goes on, and a direct connection (the control) is ended by the restart."""
import sys
import threading
import time

import pymysql

from mysql_checks import Checks, connect, errno, one

host, port, user, password, db, direct_port = sys.argv[1:7]
checks = Checks()


def session(at=port):
    return connect(host, at, user, password, db)


idle = []
for i in range(20):
    c = session()
    with c.cursor() as cur:
        cur.execute("SET SESSION time_zone = %s", (f"+{i % 10:02d}:00",))
    idle.append(c)
cut = session()
cut.begin()
one(cut, "SELECT 1")
direct = session(direct_port)
one(direct, "SELECT 1")

stop = threading.Event()
tallies = []


def busy():
    """`SELECT 1` every 5 ms until told to stop; each error by its number."""
    c = session()
    tally = {"ok": 0, "errors": {}}
    tallies.append(tally)
    while not stop.is_set():
        try:
            one(c, "SELECT 1")
            tally["ok"] += 1
        except pymysql.err.MySQLError as e:
            code = str(e.args[0])
            tally["errors"][code] = tally["errors"].get(code, 0) + 1
            if not c.open:
                tally["errors"]["closed"] = 1
                return
        time.sleep(0.005)


threads = [threading.Thread(target=busy) for _ in range(4)]
for t in threads:
    t.start()
time.sleep(0.5)
checks.step("READY", "RESTARTED")
time.sleep(1)
stop.set()
for t in threads:
    t.join(120)

checks.expect("the restart ended the direct connection (the control)",
              errno(lambda: one(direct, "SELECT 1")) != 0, True)
for i, c in enumerate(idle):
    try:
        got = one(c, "SELECT @@session.time_zone")
    except pymysql.err.MySQLError as e:
        got = f"error {e.args[0]}"
    checks.expect(f"idle session {i} keeps its time_zone", got, f"+{i % 10:02d}:00")
# A statement on the server when it went down cannot be answered; every other one waits.
for i, t in enumerate(tallies):
    checks.expect(f"busy session {i} made progress", t["ok"] > 20, True)
    checks.expect(f"busy session {i} failed at most once: {t}", sum(t["errors"].values()) <= 1, True)
checks.expect("the cut transaction's next statement (rolled back: retry)",
              errno(lambda: one(cut, "SELECT 2")), 1213)
checks.expect("the cut connection goes on", one(cut, "SELECT 3"), 3)
checks.finish(busy=tallies)
