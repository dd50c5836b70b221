"""LISTEN/NOTIFY through sluice with asyncpg, run by tests/it/drivers/notify.rs.

asyncpg subscribes with add_listener (`LISTEN "channel"`, quoted), reads notifications whenever
they arrive (its protocol always reads, so idle connections get them pushed), and unsubscribes
with remove_listener (`UNLISTEN "channel"` once a channel's last callback goes). Connections keep
running statements from asyncpg's statement cache while they listen, on a pool much smaller than
their number. Checks, the same as PostgreSQL gives when both ports point straight at it:

- every notification on `events` reaches every connection once per callback, in commit order,
  whether sent through sluice (pg_notify() alone or inside a transaction) or by a connection
  made directly to the database; the pid each carries is the sending backend's;
- connections that removed their `second` listener get nothing more on it, the others do;
- one connection with two callbacks on a channel calls each once.

usage: asyncpg_notify.py HOST PORT USER PASSWORD DB DIRECT_PORT [CONNECTIONS [NOTIFICATIONS]]

DIRECT_PORT is PostgreSQL's own port on HOST, for the direct sender (application_name
notify-direct, which the test's count of server connections leaves out). Prints one
`RESULT {json}` line; exits 1 with every mismatch on stderr.
"""
import asyncio
import json
import random
import sys
import time
import traceback
from collections import defaultdict

import asyncpg

if len(sys.argv) < 7:
    sys.exit(__doc__)
HOST, PORT, USER, PASSWORD, DB, DIRECT_PORT = sys.argv[1:7]
CONNS = int(sys.argv[7]) if len(sys.argv) > 7 else 20
NOTIFICATIONS = int(sys.argv[8]) if len(sys.argv) > 8 else 40
WAIT = 30.0  # a slow machine, a debug build, a small pool
SENDS = ["sluice", "sluice_txn", "direct", "direct_txn"]
FAILURES = []
EXPECTED_PID = {}  # (channel, payload) -> pid


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def connect(port, app=None):
    settings = {"application_name": app} if app else None
    return await asyncpg.connect(host=HOST, port=int(port), user=USER, password=PASSWORD,
                                 database=DB, timeout=30, server_settings=settings)


class Listener:
    def __init__(self, i):
        self.i = i
        self.name = f"connection {i}"
        self.got = defaultdict(list)  # (callback, channel) -> [(payload, pid)]
        self.queries = 0
        # remove_listener runs from work(): a connection takes one operation at a time.
        self.remove_second, self.second_removed = asyncio.Event(), asyncio.Event()

    def callback(self, tag):
        def on_notify(conn, pid, channel, payload):
            self.got[(tag, channel)].append((payload, pid))
        return on_notify

    async def open(self):
        self.conn = await connect(PORT)
        self.on_events = self.callback("a")
        self.on_second = self.callback("a")
        await self.conn.add_listener("events", self.on_events)
        await self.conn.add_listener("second", self.on_second)
        if self.i == 0:
            # A second callback shares the one subscription.
            self.on_events_b = self.callback("b")
            await self.conn.add_listener("events", self.on_events_b)

    async def work(self, stop):
        rng = random.Random(self.i)
        while not stop.is_set():
            if self.remove_second.is_set() and not self.second_removed.is_set():
                await self.conn.remove_listener("second", self.on_second)
                self.second_removed.set()
            if rng.random() < 0.5:
                v = await self.conn.fetchval("SELECT $1::int * 2", self.queries)
                check(v == self.queries * 2, f"{self.name}: select")
            else:
                async with self.conn.transaction():
                    v = await self.conn.fetchval("SELECT count(*) FROM pg_class WHERE oid = $1",
                                                 1259)
                    check(v == 1, f"{self.name}: pg_class")
            self.queries += 1
            await asyncio.sleep(rng.uniform(0.02, 0.1))

    def total(self):
        return sum(len(v) for v in self.got.values())


def describe(got, want):
    missing = [p for p in want if p not in got]
    dups = sorted({p for p in got if got.count(p) > 1})
    extra = [p for p in got if p not in want]
    if missing or dups or extra:
        return f"{len(got)} received, {len(want)} sent; missing {missing[:8]}," \
               f" unexpected {extra[:8]}, duplicated {dups[:8]}"
    return f"out of order: {got[:12]}..."


async def main():
    started = time.monotonic()
    sluice = await connect(PORT)
    direct = await connect(DIRECT_PORT, "notify-direct")
    direct_pid = await direct.fetchval("SELECT pg_backend_pid()")
    check(direct_pid == direct.get_server_pid(), "direct: pg_backend_pid() != server pid")
    listeners = [Listener(i) for i in range(CONNS)]
    await asyncio.gather(*(s.open() for s in listeners))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.work(stop)) for s in listeners]
    sent = defaultdict(list)
    by_method = defaultdict(int)

    async def send(channel, payload, how):
        if how.startswith("sluice"):
            conn, query = sluice, "SELECT pg_notify($1, $2), pg_backend_pid()"
        else:
            conn, query = direct, "SELECT pg_notify($1, $2), pg_backend_pid()"
        if how.endswith("_txn"):
            async with conn.transaction():
                row = await conn.fetchrow(query, channel, payload)
        else:
            row = await conn.fetchrow(query, channel, payload)
        if conn is direct:
            check(row[1] == direct_pid, "direct pid changed")
        EXPECTED_PID[(channel, payload)] = row[1]
        sent[channel].append(payload)
        by_method[how] += 1

    half = NOTIFICATIONS // 2
    rng = random.Random(3)
    for k in range(NOTIFICATIONS):
        if k == half:
            # Even connections drop `second`; PostgreSQL has applied the UNLISTEN once
            # remove_listener returns.
            # Everything sent on it so far arrives first: PostgreSQL drops what a backend had
            # not yet passed on when its UNLISTEN commits.
            deadline = time.monotonic() + WAIT
            while any(len(s.got[("a", "second")]) < len(sent["second"]) for s in listeners):
                check(time.monotonic() < deadline, "second: not everywhere before removal")
                await asyncio.sleep(0.02)
            evens = [s for s in listeners if s.i % 2 == 0]
            for s in evens:
                s.remove_second.set()
            await asyncio.wait_for(
                asyncio.gather(*(s.second_removed.wait() for s in evens)), WAIT)
            second_before = len(sent["second"])
        payload = f"{k} ✓ {'€' * (k % 7)}"
        await send("events", payload, SENDS[k % 4])
        if k % 3 == 0:
            await send("second", f"s{k}", SENDS[(k // 3) % 4])
        await asyncio.sleep(rng.uniform(0.01, 0.04))

    def want(s):
        w = {("a", "events"): sent["events"],
             ("a", "second"): sent["second"] if s.i % 2 else sent["second"][:second_before]}
        if s.i == 0:
            w[("b", "events")] = sent["events"]
        return w

    deadline = time.monotonic() + WAIT
    while any(len(s.got[key]) < len(p) for s in listeners for key, p in want(s).items()):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # room for duplicates to show
    stop.set()
    for t in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(t, BaseException):
            FAILURES.append("".join(traceback.format_exception(t)))

    ok = 0
    for s in listeners:
        bad = []
        w = want(s)
        for key in sorted(set(s.got) | set(w)):
            got = [p for p, _ in s.got[key]]
            if got != w.get(key, []):
                bad.append(f"{s.name} callback {key[0]} on {key[1]}: {describe(got, w.get(key, []))}")
                continue
            for payload, pid in s.got[key]:
                if pid != EXPECTED_PID[(key[1], payload)]:
                    bad.append(f"{s.name}: {key[1]} {payload!r} came with pid {pid}, sent by"
                               f" backend {EXPECTED_PID[(key[1], payload)]}")
                    break
        FAILURES.extend(bad)
        ok += not bad
        # remove_listener sends UNLISTEN; the rest goes with the connection.
        await s.conn.remove_listener("events", s.on_events)
        await s.conn.close()
    await sluice.close()
    await direct.close()
    print("RESULT " + json.dumps({
        "connections": CONNS,
        "connections_ok": ok,
        "notifications": NOTIFICATIONS,
        "events_received": sum(len(s.got[("a", "events")]) for s in listeners),
        "second_received": sum(len(s.got[("a", "second")]) for s in listeners),
        "second_sent": len(sent["second"]),
        "second_before_remove": second_before,
        # Messages off the wire (connection 0's second callback sees the same ones again).
        # asyncpg silently drops what arrives on a channel it has no callback for: the test's
        # comparison with sluice's count of delivered notifications catches those.
        "received_total": sum(len(s.got[("a", "events")]) + len(s.got[("a", "second")])
                              for s in listeners),
        "sent": dict(by_method),
        "queries": sum(s.queries for s in listeners),
        "seconds": round(time.monotonic() - started, 1),
    }))


def run():
    try:
        asyncio.run(asyncio.wait_for(main(), 150))
    except Exception:
        FAILURES.append(f"main: {traceback.format_exc()}")
    for f in FAILURES:
        print(f, file=sys.stderr)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    run()
