"""LISTEN/NOTIFY through sluice with psycopg 3, run by tests/it/drivers/notify.rs.

Far more listening sessions than the pool has connections stay subscribed while they keep
running queries: sluice has to fan notifications out from one listening server connection
instead of pinning every listener. Each check is what PostgreSQL itself does, so the program
also passes when both ports point straight at the server:

- every notification on `jobs` reaches every listener exactly once and in commit order, whether
  sent through sluice with NOTIFY, with pg_notify() inside a transaction, or committed by a
  client connected directly to the database; each group channel likewise, sent by a listener of
  the group (which hears its own notifications too);
- each notification carries the pid of the backend that sent it, as pg_backend_pid() told the
  sender in the same transaction;
- payloads arrive intact: unicode, quotes, 7,900 bytes;
- LISTEN in the forms clients write it (quoted, upper case, repeated, extended protocol, inside
  BEGIN ... COMMIT) subscribes; LISTEN rolled back (also only to a savepoint) or undone by
  UNLISTEN in the same transaction does not; UNLISTEN and UNLISTEN * rolled back keep the
  subscriptions, and UNLISTEN * followed by LISTEN in one transaction ends up listening;
- UNLISTEN jobs (alone, or committed in a transaction), UNLISTEN * and DISCARD ALL end
  subscriptions; a session that left is forgotten and one that connects later inherits nothing;
- a session inside a transaction (open, or failed) gets nothing until it ends, then the backlog
  in order; a session that never sends a query gets each notification at once.

usage: psycopg_notify.py HOST PORT USER PASSWORD DB DIRECT_PORT [LISTENERS [NOTIFICATIONS]]

DIRECT_PORT is PostgreSQL's own port on HOST, for the direct sender; it logs in with
application_name `notify-direct` so that the test's count of server connections can leave it
out. Prints one `RESULT {json}` line; exits 1 with every mismatch on stderr.
"""
import asyncio
import json
import random
import sys
import time
import traceback
from collections import defaultdict

import psycopg

if len(sys.argv) < 7:
    sys.exit(__doc__)
HOST, PORT, USER, PASSWORD, DB, DIRECT_PORT = sys.argv[1:7]
LISTENERS = int(sys.argv[7]) if len(sys.argv) > 7 else 200
NOTIFICATIONS = int(sys.argv[8]) if len(sys.argv) > 8 else 50
if NOTIFICATIONS < 20:
    sys.exit("NOTIFICATIONS must be at least 20: both halves need every kind of send")

GROUP = 10  # listeners per group channel
GROUP_SENDS = 5  # notifications each group's first listener sends on its group channel
DIRECT_APP = "notify-direct"
# How long an expected notification may take: a slow 2-core machine, a debug build, a pool of
# 4 shared by hundreds of busy sessions.
WAIT = 30.0
# "At once" for a session that only waits: the bound is loose for the machine's sake; the
# failure it catches (delivery only when the client next sends something) never arrives.
IDLE_WAIT = 10.0
SENDS = ["sluice_simple", "sluice_txn", "direct", "direct_txn"]

FAILURES = []
EXPECTED_PID = {}  # (channel, payload) -> pid of the backend that committed it


def fail(what):
    FAILURES.append(what)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def literal(text):
    return "'" + text.replace("'", "''") + "'"


def big(prefix, size=7900):
    """A payload of exactly `size` UTF-8 bytes (PostgreSQL takes fewer than 8,000)."""
    text, unit = prefix, "€ü漢a"
    while len((text + unit).encode()) <= size:
        text += unit
    return text + "a" * (size - len(text.encode()))


def job_payload(k):
    if k in (1, 2, NOTIFICATIONS // 2 + 3):  # sluice txn, direct, and one in the second half
        return big(f"{k}|big|")
    if k % 5 == 3:
        return f"{k}|ünïcødé ✓ 漢字 🐘 it's \"quoted\" \\ tab\t."
    return str(k)


def short(p):
    return p if len(p) <= 40 else f"{p[:24]!r}...({len(p.encode())} bytes)"


def conninfo(port, app=None):
    extra = {"application_name": app} if app else {}
    return psycopg.conninfo.make_conninfo(
        host=HOST, port=port, user=USER, password=PASSWORD, dbname=DB, sslmode="disable",
        connect_timeout=30, **extra)


class Session:
    """One client connection and every notification it received, per channel, in order."""

    def __init__(self, name):
        self.name = name
        self.got = defaultdict(list)  # channel -> [(payload, pid)]
        self.conn = None

    async def open(self, port=PORT, app=None):
        self.conn = await psycopg.AsyncConnection.connect(conninfo(port, app), autocommit=True)

    async def close(self):
        if self.conn is not None and not self.conn.closed:
            await self.conn.close()

    def take(self, n):
        self.got[n.channel].append((n.payload, n.pid))

    async def drain(self, timeout):
        """Reads whatever arrives within `timeout`; psycopg also hands over, first, what came
        in while queries ran."""
        async for n in self.conn.notifies(timeout=timeout):
            self.take(n)

    def counts(self, channels):
        return {c: len(self.got[c]) for c in channels}

    async def drain_until(self, want, limit=WAIT):
        """Drains until each channel in `want` holds that many notifications."""
        deadline = time.monotonic() + limit
        while any(len(self.got[c]) < n for c, n in want.items()):
            check(time.monotonic() < deadline,
                  f"{self.name}: after {limit:.0f}s received {self.counts(want)} of {want}")
            await self.drain(0.2)

    def verify(self, want):
        """`want`: channel -> payloads in send order; anything else received is a failure."""
        for channel in sorted(set(self.got) | set(want)):
            got = [p for p, _ in self.got[channel]]
            expected = want.get(channel, [])
            if got != expected:
                fail(f"{self.name}: {channel}: {describe(got, expected)}")
                continue
            for payload, pid in self.got[channel]:
                sender = EXPECTED_PID.get((channel, payload))
                if pid != sender:
                    fail(f"{self.name}: {channel} {short(payload)} came with pid {pid},"
                         f" the sending backend was {sender}")
                    break


def describe(got, want):
    if not want:
        return f"received {len(got)} on a channel it does not listen on: " \
               f"{[short(p) for p in got[:5]]}"
    missing = [short(p) for p in want if p not in got]
    extra = [short(p) for p in got if p not in want]
    dups = sorted({short(p) for p in got if got.count(p) > 1})
    if missing or extra or dups:
        return (f"{len(got)} received, {len(want)} sent; missing {missing[:8]},"
                f" unexpected {extra[:8]}, duplicated {dups[:8]}")
    at = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
    return f"out of order from position {at}: got {[short(p) for p in got[at:at + 5]]}," \
           f" sent {[short(p) for p in want[at:at + 5]]}"


class Sender:
    """Sends through sluice (its own session) or straight to the server, and records which
    backend committed each notification."""

    def __init__(self):
        self.sluice = Session("sender")
        self.direct = Session("direct sender")
        self.direct_pid = None
        self.sent = defaultdict(list)
        self.by_method = defaultdict(int)

    async def open(self):
        await self.sluice.open()
        await self.direct.open(DIRECT_PORT, DIRECT_APP)
        cur = await self.direct.conn.execute("SELECT pg_backend_pid()")
        self.direct_pid = (await cur.fetchone())[0]
        check(self.direct_pid == self.direct.conn.info.backend_pid,
              "direct connection: pg_backend_pid() differs from the BackendKeyData pid")

    async def send(self, channel, payload, how):
        if how == "sluice_simple":
            # One simple query: NOTIFY and the pid, in one implicit transaction.
            cur = await self.sluice.conn.execute(
                f"NOTIFY {channel}, {literal(payload)}; SELECT pg_backend_pid()", prepare=False)
            check(cur.nextset(), "second result of NOTIFY; SELECT pg_backend_pid()")
            pid = (await cur.fetchone())[0]
        elif how == "sluice_txn":
            async with self.sluice.conn.transaction():
                cur = await self.sluice.conn.execute(
                    "SELECT pg_notify(%s, %s), pg_backend_pid()", (channel, payload))
                pid = (await cur.fetchone())[1]
        elif how == "direct":
            await self.direct.conn.execute(f"NOTIFY {channel}, {literal(payload)}")
            pid = self.direct_pid
        else:
            async with self.direct.conn.transaction():
                await self.direct.conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
            pid = self.direct_pid
        EXPECTED_PID[(channel, payload)] = pid
        self.sent[channel].append(payload)
        self.by_method[how] += 1


class Listener(Session):
    """Listens on `jobs` and its group's channel, subscribing in one of four ways, and keeps
    the pool busy with queries and small transactions until told to stop. The first listener
    of each group sends that group's notifications."""

    def __init__(self, i):
        super().__init__(f"listener {i}")
        self.i, self.group = i, i // GROUP
        self.channel = f"grp_{self.group}"
        self.mode = ["simple", "quoted", "transaction", "extended"][i % 4]
        self.rng = random.Random(i)
        self.leader = i % GROUP == 0
        self.group_sent = []
        self.queries = self.rows = 0

    async def subscribe(self):
        c, g = self.conn, self.group
        if self.mode == "simple":
            await c.execute("LISTEN jobs")
            await c.execute("LISTEN jobs")  # again: still one subscription
            await c.execute(f"LISTEN {self.channel}")
        elif self.mode == "quoted":
            await c.execute('LISTEN "jobs";')
            await c.execute(f"listen GRP_{g} -- folds to lower case")
        elif self.mode == "transaction":
            async with c.transaction():
                await c.execute("LISTEN jobs")
                await c.execute(f"LISTEN {self.channel}")
        else:
            await c.execute("LISTEN jobs", binary=True)  # Parse/Bind/Execute
            await c.execute(f"LISTEN {self.channel}", binary=True)
        # What PostgreSQL applies at commit, and only then.
        if self.i == 0:
            await c.execute("BEGIN")
            await c.execute("LISTEN never_chan")
            await c.execute("ROLLBACK")
        elif self.i == 1:
            await c.execute("BEGIN")
            await c.execute("SAVEPOINT s")
            await c.execute("LISTEN never_chan")
            await c.execute("ROLLBACK TO SAVEPOINT s")
            await c.execute("COMMIT")
        elif self.i == 2:
            await c.execute("BEGIN")
            await c.execute("UNLISTEN jobs")
            await c.execute("ROLLBACK")
        elif self.i == 3:
            await c.execute("BEGIN")
            await c.execute("LISTEN never_chan")
            await c.execute("UNLISTEN never_chan")
            await c.execute("COMMIT")
        elif self.i == 4:
            await c.execute("BEGIN")
            await c.execute("UNLISTEN *")
            await c.execute("ROLLBACK")
        elif self.i == 5:
            # Applied in order at commit: all gone, then both back.
            await c.execute("BEGIN")
            await c.execute("UNLISTEN *")
            await c.execute("LISTEN jobs")
            await c.execute(f"LISTEN {self.channel}")
            await c.execute("COMMIT")

    async def send_to_group(self, in_txn):
        j = len(self.group_sent)
        payload = f"{self.group}:{j}" + (" ✓ grüße" if j == 2 else "")
        if in_txn:  # inside the caller's transaction, next to its insert
            cur = await self.conn.execute(
                "SELECT pg_notify(%s, %s), pg_backend_pid()", (self.channel, payload))
            pid = (await cur.fetchone())[1]
        else:
            cur = await self.conn.execute(
                f"NOTIFY {self.channel}, {literal(payload)}; SELECT pg_backend_pid()",
                prepare=False)
            check(cur.nextset(), "second result of NOTIFY; SELECT pg_backend_pid()")
            pid = (await cur.fetchone())[0]
        # Recorded before commit for the in-transaction send: nobody can have it yet.
        EXPECTED_PID[(self.channel, payload)] = pid
        self.group_sent.append(payload)

    async def work(self, stop):
        c, rng = self.conn, self.rng
        while not stop.is_set():
            sending = self.leader and len(self.group_sent) < GROUP_SENDS and rng.random() < 0.3
            r = rng.random()
            if r < 0.4:
                cur = await c.execute("SELECT %s::int + 1", (self.queries,))
                check((await cur.fetchone())[0] == self.queries + 1, f"{self.name}: select")
            elif r < 0.75:
                async with c.transaction():
                    await c.execute("INSERT INTO notify_work (sid, n) VALUES (%s, %s)",
                                    (self.i, self.rows))
                    if sending:
                        await self.send_to_group(in_txn=True)
                        sending = False
                    cur = await c.execute("SELECT count(*) FROM notify_work WHERE sid = %s",
                                          (self.i,))
                    got = (await cur.fetchone())[0]
                    check(got == self.rows + 1, f"{self.name}: {got} rows, want {self.rows + 1}")
                self.rows += 1
            else:
                cur = await c.execute("SELECT 1", prepare=False)
                check(await cur.fetchone() == (1,), f"{self.name}: select 1")
            if sending:
                await self.send_to_group(in_txn=False)
            self.queries += 1
            await self.drain(rng.uniform(0.05, 0.25))


class Idle(Session):
    """Listens, then never sends another query: whatever it gets, sluice pushed unasked."""

    def __init__(self):
        super().__init__("idle session")
        self.arrived = {}  # payload -> Event

    def expect(self, payload):
        return self.arrived.setdefault(payload, asyncio.Event())

    async def run(self, stop):
        while not stop.is_set():
            async for n in self.conn.notifies(timeout=0.5):
                self.take(n)
                if n.channel == "jobs":
                    self.expect(n.payload).set()


class Special(Session):
    """A session whose subscriptions change between the two halves of the sends."""

    def __init__(self, kind):
        super().__init__(f"{kind} session")
        self.kind = kind
        self.ready = asyncio.Event()

    async def subscribe(self):
        await self.conn.execute("LISTEN jobs")
        await self.conn.execute("LISTEN side")

    async def run(self, first_half, tx_end, stop, want_first):
        """`want_first` is filled in (what the first half sent) before `first_half` is set."""
        c = self.conn
        while not first_half.is_set():
            await c.execute("SELECT 1", prepare=False)
            await self.drain(0.2)
        await self.drain_until(want_first)
        if self.kind == "unlisten_one":
            await c.execute("UNLISTEN jobs")
        elif self.kind == "unlisten_in_transaction":
            async with c.transaction():
                await c.execute("UNLISTEN jobs")
                await c.execute("SELECT 1")
        elif self.kind == "unlisten_all":
            await c.execute("UNLISTEN *")
        elif self.kind == "discard":
            await c.execute("DISCARD ALL")
        elif self.kind == "leaver":
            await self.conn.close()
        elif self.kind == "in_transaction":
            await c.execute("BEGIN")
            await c.execute("SELECT 1")
        elif self.kind == "failed_transaction":
            await c.execute("BEGIN")
            try:
                await c.execute("SELECT 1 / 0")
                raise AssertionError("division by zero did not fail")
            except psycopg.errors.DivisionByZero:
                pass
        self.ready.set()
        if self.kind == "leaver":
            return
        if self.kind in ("in_transaction", "failed_transaction"):
            while not tx_end.is_set():
                if self.kind == "in_transaction":
                    await c.execute("SELECT 1")
                await self.drain(0.2)
            during = self.counts(want_first)
            check(during == want_first,
                  f"{self.name}: received {during} while in its transaction, which ended"
                  f" with {want_first} (the first half)")
            await c.execute("COMMIT" if self.kind == "in_transaction" else "ROLLBACK")
            return
        while not stop.is_set():
            await c.execute("SELECT 1", prepare=False)
            await self.drain(0.2)


class Fresh(Session):
    """Connects after the leaver left, never listens: must hear nothing."""

    async def run(self, stop):
        while not stop.is_set():
            await self.conn.execute("SELECT 1", prepare=False)
            await self.drain(0.2)


async def guarded(session, coro):
    try:
        return await coro
    except Exception as e:  # reported with the rest
        fail(f"{session.name}: {e!r}\n{traceback.format_exc()}")


async def limited(coros, at_once=20):
    gate = asyncio.Semaphore(at_once)

    async def one(c):
        async with gate:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def main():
    started = time.monotonic()
    setup = Session("setup")
    await setup.open()
    await setup.conn.execute("DROP TABLE IF EXISTS notify_work")
    await setup.conn.execute("CREATE TABLE notify_work (sid int NOT NULL, n int NOT NULL)")
    await setup.close()

    sender = Sender()
    await sender.open()
    listeners = [Listener(i) for i in range(LISTENERS)]

    async def join(s):
        await s.open()
        await s.subscribe()

    await limited([join(s) for s in listeners])
    idle = Idle()
    await idle.open()
    await idle.conn.execute("LISTEN jobs")
    kinds = ["unlisten_one", "unlisten_in_transaction", "unlisten_all", "discard", "leaver",
             "in_transaction", "failed_transaction"]
    specials = [Special(k) for k in kinds]
    await limited([join(s) for s in specials])
    fresh = Fresh("fresh session")
    print(f"{LISTENERS} listeners subscribed after {time.monotonic() - started:.1f}s",
          file=sys.stderr)

    jobs = [job_payload(k) for k in range(NOTIFICATIONS)]
    half = NOTIFICATIONS // 2
    first_half, tx_end, stop = (asyncio.Event() for _ in range(3))
    want_first = {}
    tasks = [asyncio.create_task(guarded(s, s.work(stop))) for s in listeners]
    tasks.append(asyncio.create_task(guarded(idle, idle.run(stop))))
    special_tasks = [asyncio.create_task(guarded(
        s, s.run(first_half, tx_end, stop, want_first))) for s in specials]
    rng = random.Random(7)
    idle_max = 0.0

    async def send_range(ks):
        nonlocal idle_max
        for k in ks:
            check(not FAILURES, "stopped sending after a failure")
            arrived = idle.expect(jobs[k])
            await sender.send("jobs", jobs[k], SENDS[k % 4])
            t = time.monotonic()
            try:
                await asyncio.wait_for(arrived.wait(), IDLE_WAIT)
            except asyncio.TimeoutError:
                raise AssertionError(f"idle session: notification {k} not there"
                                     f" {IDLE_WAIT:.0f}s after its commit") from None
            idle_max = max(idle_max, time.monotonic() - t)
            if k % 8 == 5:
                await sender.send("side", f"side {k} ✓", SENDS[(k // 8) % 4])
            if k % 10 == 7:  # nobody listens on these
                await sender.send("never_chan", f"never {k}", "direct")
                await sender.send("never_chan", f"never {k}'", "sluice_simple")
            await asyncio.sleep(rng.uniform(0.01, 0.05))

    await send_range(range(half))
    side_first = list(sender.sent["side"])
    want_first.update(jobs=half, side=len(side_first))
    first_half.set()
    for s in specials:
        try:
            await asyncio.wait_for(s.ready.wait(), WAIT + 10)
        except asyncio.TimeoutError:
            raise AssertionError(f"{s.name}: not past the first half in time") from None
    # After the leaver left, so that a session taking its place starts clean.
    await fresh.open()
    tasks.append(asyncio.create_task(guarded(fresh, fresh.run(stop))))

    await send_range(range(half, NOTIFICATIONS))
    leaders = [s for s in listeners if s.leader]
    deadline = time.monotonic() + WAIT
    while any(len(s.group_sent) < GROUP_SENDS for s in leaders):
        check(not FAILURES and time.monotonic() < deadline,
              "group senders did not finish their sends")
        await asyncio.sleep(0.1)
    # Time for anything wrongly delivered to the sessions still in a transaction to arrive.
    await asyncio.sleep(1.0)
    tx_end.set()
    stop.set()
    await asyncio.gather(*special_tasks, *tasks)
    print(f"sending done after {time.monotonic() - started:.1f}s", file=sys.stderr)

    # Everything sent is committed: collect the rest.
    side_all = sender.sent["side"]

    async def finish(s, want):
        if s.conn is None or s.conn.closed:
            return
        await s.drain_until({c: len(p) for c, p in want.items()})
        await s.drain(0.5)  # duplicates would show up here

    expectations = []
    group_sent = {s.channel: s.group_sent for s in leaders}
    for s in listeners:
        expectations.append((s, {"jobs": jobs, s.channel: group_sent[s.channel]}))
    expectations.append((idle, {"jobs": jobs}))
    for s in specials:
        want = {
            "unlisten_one": {"jobs": jobs[:half], "side": side_all},
            "unlisten_in_transaction": {"jobs": jobs[:half], "side": side_all},
            "unlisten_all": {"jobs": jobs[:half], "side": side_first},
            "discard": {"jobs": jobs[:half], "side": side_first},
            "leaver": {"jobs": jobs[:half], "side": side_first},
            "in_transaction": {"jobs": jobs, "side": side_all},
            "failed_transaction": {"jobs": jobs, "side": side_all},
        }[s.kind]
        expectations.append((s, want))
    expectations.append((fresh, {}))
    await limited([guarded(s, finish(s, w)) for s, w in expectations], at_once=len(expectations))
    for s, want in expectations:
        s.verify(want)
    await limited([s.close() for s, _ in expectations])
    await sender.sluice.close()
    await sender.direct.close()

    def ok(s):
        return not any(f.startswith(s.name + ":") for f in FAILURES)

    print("RESULT " + json.dumps({
        "listeners": LISTENERS,
        "listeners_ok": sum(ok(s) for s in listeners),
        "notifications": NOTIFICATIONS,
        "jobs_received": sum(len(s.got["jobs"]) for s in listeners),
        "group_received": sum(len(s.got[s.channel]) for s in listeners),
        "group_sent": sum(len(s.group_sent) for s in leaders),
        "never_received": sum(len(s.got["never_chan"]) for s, _ in expectations),
        # Every notification any session through sluice took off the wire.
        "received_total": sum(len(v) for s, _ in expectations for v in s.got.values()),
        "specials": len(specials) + 2,
        "specials_ok": sum(ok(s) for s in specials + [idle, fresh]),
        "sent": dict(sender.by_method),
        "modes": {m: sum(s.mode == m for s in listeners)
                  for m in ("simple", "quoted", "transaction", "extended")},
        "queries": sum(s.queries for s in listeners),
        "idle_max_ms": round(idle_max * 1000),
        "seconds": round(time.monotonic() - started, 1),
    }))


def run():
    try:
        asyncio.run(asyncio.wait_for(main(), 200))
    except Exception as e:
        fail(f"main: {e!r}\n{traceback.format_exc()}")
    for f in FAILURES:
        print(f, file=sys.stderr)
    if FAILURES:
        print(f"{len(FAILURES)} failures", file=sys.stderr)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    run()
