"""Sessions that each keep server-side state of their own (temporary tables, advisory locks,
parameters, the role it SET ROLE to, SQL-level prepared statements, holdable cursors,
LISTENed channels, open transactions) in a seeded random interleaving, each checking now and then that it sees exactly
its own state and none of the others', and receives exactly the notifications sent to its
channels. Run direct, it checks its own model of PostgreSQL; through sluice on a
small pool, every step is a chance for a session to be handed a connection another session's
state is still on.

usage: psycopg_isolation.py HOST PORT DB USER PASSWORD SESSIONS STEPS SEED

The roles `iso_role_<n>` (NOLOGIN, granted to USER) must exist for n < 4.

Half the sessions bind client-side (simple Query), half server-side (extended protocol); of
those, every fourth session prepares every statement as a named protocol-level one
(`prepare_threshold = 0`), names sluice maps to each server connection's own.
Prints `RESULT {json}`; exit 1 on any mismatch (isolation.py: ISO_TRACE, ISO_REST).
"""
import re
import sys
import time

import psycopg

from isolation import Run, trace

host, port, db, user, password = sys.argv[1:6]
sessions, steps, seed = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
run = Run(seed)
rng, expect = run.rng, run.expect
DEFAULT_TIMEOUT = "0"
DEFAULT_PATH = '"$user", public'


# After a statement whose tag matches, psycopg drops its own prepared statements with
# DEALLOCATE ALL, which takes the SQL-level ones too.
CLEARS_PREPARED = re.compile(r"^(?:DROP|ALTER|ROLLBACK|DISCARD ALL|DEALLOCATE ALL)\b").match


def connect(client_side, datestyle, eager):
    options = {"cursor_factory": psycopg.ClientCursor} if client_side else {}
    if datestyle:
        # A startup value the shared connection does not have: a RESET goes back to it.
        options["options"] = "-c DateStyle=German"
    conn = psycopg.connect(host=host, port=port, dbname=db, user=user, password=password,
                           autocommit=True, **options)
    # psycopg prepares a query it ran five times and then sends DEALLOCATE ALL after every
    # ROLLBACK, which takes SQL-level prepared statements too, direct as through sluice.
    conn.prepare_threshold = 0 if eager else None
    return conn


class Session:
    def __init__(self, n):
        self.n = n
        self.eager = n % 4 == 3
        self.conn = connect(n % 2 == 0, n % 4 < 2, self.eager)
        self.tables = {}      # name -> value
        self.locks = set()    # advisory keys held (session level)
        self.timeout = DEFAULT_TIMEOUT
        self.path = DEFAULT_PATH
        self.startup_app = self.one("SHOW application_name")
        self.app = self.startup_app
        self.local = False    # a SET LOCAL in the open transaction
        self.startup_ds = self.one("SHOW DateStyle")
        self.ds = self.startup_ds
        self.prepared = {}    # SQL-level PREPARE name -> value
        self.cursors = {}     # holdable cursor name -> first value
        self.in_tx = False
        self.tx_tables = []   # made in the open transaction: a ROLLBACK takes them back
        self.serial = 0
        self.role = user      # current_user: the login role, or iso_role_<n> after SET ROLE
        self.channels = set()  # LISTENed
        self.expected = []    # (channel, payload) sent to its channels, not yet received
        self.received = []
        self.conn.add_notify_handler(lambda n: self.received.append((n.channel, n.payload)))

    def name(self, kind):
        self.serial += 1
        return f"{kind}_{self.n}_{self.serial}"

    def run(self, sql, *args):
        trace(self.n, sql, args)
        with self.conn.cursor() as cur:
            cur.execute(sql, args or None)
            if self.eager and CLEARS_PREPARED(sql.upper()):
                self.prepared = {}
            return cur.fetchall() if cur.description else None

    def one(self, sql, *args):
        rows = self.run(sql, *args)
        return rows[0][0] if rows else None

    def drain(self):
        """Waits (round trips, at most 5 s) for the notifications sent to this session's
        channels: exactly those must arrive. Not in a transaction, where they wait for its end."""
        if self.in_tx:
            return
        deadline = time.monotonic() + 5
        while len(self.received) < len(self.expected) and time.monotonic() < deadline:
            self.run("SELECT 1")
            if len(self.received) < len(self.expected):
                time.sleep(0.01)
        expect(self, "notifications", self.received, self.expected)
        self.received, self.expected = [], []

    def sqlstate(self, sql, *args):
        try:
            self.run(sql, *args)
            return None
        except psycopg.Error as e:
            return e.sqlstate or repr(e)




def step(s, others):
    op = rng.choice(["table", "drop", "lock", "unlock", "set", "reset", "prepare",
                     "deallocate", "cursor", "close", "begin", "commit", "rollback", "check",
                     "clean", "clean", "path", "discard", "appname", "local", "reset_all",
                     "datestyle", "reset_ds", "listen", "unlisten", "notify", "notify", "role",
                     "unrole"])
    run.count(op)
    if op == "clean" and not s.in_tx:
        if s.role != user:
            # Only the login role owns (and may drop) every table the session made.
            s.run("RESET ROLE")
            s.role = user
        # Drops all that pins the session, the last of it right before the next step's
        # statement, which (half the time) makes something that pins again.
        for t in list(s.tables):
            s.run(f"DROP TABLE {t}")
        for k in list(s.locks):
            s.run("SELECT pg_advisory_unlock(%s)", k)
        for p in list(s.prepared):
            s.run(f"DEALLOCATE {p}")
        for c in list(s.cursors):
            s.run(f"CLOSE {c}")
        s.tables, s.locks, s.prepared, s.cursors = {}, set(), {}, {}
        op = rng.choice(["table", "lock", "prepare", "cursor", "check"])
    if op == "table" and len(s.tables) < 3:
        t, v = s.name("iso_t"), rng.randrange(1000)
        s.run(f"CREATE TEMP TABLE {t} (x int)")
        s.run(f"INSERT INTO {t} VALUES (%s)", v)
        # Readable whatever role the session takes later.
        s.run(f"GRANT SELECT ON {t} TO PUBLIC")
        s.tables[t] = v
        if s.in_tx:
            s.tx_tables.append(t)
    elif op == "drop" and s.tables and not s.in_tx and s.role == user:
        t = rng.choice(sorted(s.tables))
        s.run(f"DROP TABLE {t}")
        del s.tables[t]
    elif op == "lock" and len(s.locks) < 2 and not s.in_tx:
        k = s.n * 100000 + rng.randrange(100000)
        if k not in s.locks:
            s.run("SELECT pg_advisory_lock(%s)", k)
            s.locks.add(k)
    elif op == "unlock" and s.locks and not s.in_tx:
        k = rng.choice(sorted(s.locks))
        expect(s, "unlock", s.one("SELECT pg_advisory_unlock(%s)", k), True)
        s.locks.discard(k)
    elif op == "set" and not s.in_tx:
        v = str(rng.randrange(1, 50) * 1000)
        s.run(f"SET statement_timeout = {v}")
        s.timeout = v
    elif op == "reset" and not s.in_tx:
        s.run("RESET statement_timeout")
        s.timeout = DEFAULT_TIMEOUT
    elif op == "prepare" and len(s.prepared) < 2 and not s.in_tx:
        p, v = s.name("iso_p"), rng.randrange(1000)
        s.run(f"PREPARE {p} AS SELECT {v}")
        s.prepared[p] = v
    elif op == "deallocate" and s.prepared and not s.in_tx:
        p = rng.choice(sorted(s.prepared))
        s.run(f"DEALLOCATE {p}")
        del s.prepared[p]
    elif op == "cursor" and len(s.cursors) < 2 and not s.in_tx:
        c, v = s.name("iso_c"), rng.randrange(1000)
        s.run(f"DECLARE {c} CURSOR WITH HOLD FOR SELECT {v} + g FROM generate_series(0, 9) g")
        s.cursors[c] = v
    elif op == "close" and s.cursors and not s.in_tx:
        c = rng.choice(sorted(s.cursors))
        s.run(f"CLOSE {c}")
        del s.cursors[c]
    elif op == "path" and not s.in_tx:
        v = rng.choice(["public", f"iso_{s.n}, public", "pg_catalog, public", "\"$user\", public"])
        s.run(f"SET search_path = {v}")
        s.path = v
    elif op == "appname" and not s.in_tx:
        v = rng.choice([s.startup_app, f"iso-{s.n}-{rng.randrange(100)}"])
        s.run("SELECT set_config('application_name', %s, false)", v)
        s.app = v
    elif op == "local" and s.in_tx:
        # Ends with the transaction: never seen after it.
        s.run(f"SET LOCAL statement_timeout = {rng.randrange(1, 50) * 1000}")
        s.local = True
    elif op == "reset_all" and not s.in_tx:
        # Not the role: RESET ALL leaves it.
        s.run("RESET ALL")
        s.timeout, s.path, s.app = DEFAULT_TIMEOUT, DEFAULT_PATH, s.startup_app
        s.ds = s.startup_ds
    elif op == "datestyle" and not s.in_tx:
        s.ds = rng.choice(["ISO, MDY", "SQL, DMY", "German, DMY", "Postgres, YMD"])
        s.run(f"SET DateStyle = '{s.ds}'")
    elif op == "reset_ds" and not s.in_tx:
        s.run("RESET DateStyle")
        s.ds = s.startup_ds
    elif op == "role" and not s.in_tx:
        # Its own role: a connection still carrying it would act with another's privileges.
        s.role = f"iso_role_{s.n % 4}"
        s.run(f"SET ROLE {s.role}")
    elif op == "unrole" and not s.in_tx:
        s.run(rng.choice(["RESET ROLE", "SET ROLE NONE"]))
        s.role = user
    elif op == "listen" and len(s.channels) < 2 and not s.in_tx:
        c = s.name("iso_ch")
        s.run(f"LISTEN {c}")
        s.channels.add(c)
        channels.append(c)
    elif op == "unlisten" and s.channels and not s.in_tx:
        c = rng.choice(sorted(s.channels))
        s.run(f"UNLISTEN {c}")
        s.channels.discard(c)
    elif op == "notify" and not s.in_tx:
        # To a channel someone (maybe this session) listens or listened on: only its listeners
        # now get it (after an UNLISTEN or a DISCARD ALL, none).
        if channels:
            c, payload = rng.choice(channels), s.name("msg")
            s.run("SELECT pg_notify(%s, %s)", c, payload)
            for o in pool:
                if c in o.channels:
                    o.expected.append((c, payload))
            for o in pool:
                o.drain()
    elif op == "discard" and not s.in_tx:
        # Everything a session made goes: tables, locks, statements, cursors, parameters,
        # channels.
        s.drain()
        s.run("DISCARD ALL")
        s.channels = set()
        s.role = user
        s.tables, s.locks, s.prepared, s.cursors = {}, set(), {}, {}
        s.timeout, s.path, s.app = DEFAULT_TIMEOUT, DEFAULT_PATH, s.startup_app
        s.ds = s.startup_ds
    elif op == "begin" and not s.in_tx:
        s.run("BEGIN")
        s.in_tx = True
    elif op in ("commit", "rollback") and s.in_tx:
        s.run(op.upper())
        if op == "rollback":
            for t in s.tx_tables:
                del s.tables[t]
        s.tx_tables = []
        s.in_tx = False
        s.local = False
        s.drain()
    # Not after every step: a session's next statement right behind one that dropped what
    # pinned it is where sluice's own bookkeeping can fall behind.
    if op == "check" or rng.random() < 0.3:
        check(s, others)


def check(s, others):
    for t, v in s.tables.items():
        expect(s, f"own table {t}", s.one(f"SELECT x FROM {t}"), v)
    temps = s.one("SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()")
    expect(s, "temporary tables on its backend", temps, len(s.tables))
    mine = s.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                 "AND pid = pg_backend_pid() AND granted")
    expect(s, "own advisory locks", mine, len(s.locks))
    if not s.local:
        expect(s, "statement_timeout", s.one("SHOW statement_timeout"),
               "0" if s.timeout == "0" else f"{int(s.timeout) // 1000}s")
    expect(s, "application_name", s.one("SHOW application_name"), s.app)
    expect(s, "DateStyle", s.one("SHOW DateStyle"), s.ds)
    expect(s, "search_path", s.one("SHOW search_path"), s.path)
    expect(s, "current_user", s.one("SELECT current_user"), s.role)
    names = sorted(r[0] for r in s.run("SELECT name FROM pg_prepared_statements WHERE from_sql"))
    expect(s, "own prepared statements", names, sorted(s.prepared))
    for p, v in s.prepared.items():
        expect(s, f"execute {p}", s.one(f"EXECUTE {p}"), v)
    cursors = sorted(r[0] for r in s.run("SELECT name FROM pg_cursors WHERE is_holdable"))
    expect(s, "own cursors", cursors, sorted(s.cursors))
    expect(s, "transaction status", s.conn.info.transaction_status.name,
           "INTRANS" if s.in_tx else "IDLE")
    s.drain()
    if not s.in_tx:
        # An error inside a transaction would abort it: others' tables are probed outside one.
        for t in rng.choice(others).tables:
            expect(s, f"another session's table {t}", s.sqlstate(f"SELECT x FROM {t}"), "42P01")


channels = []  # every channel LISTENed on so far
pool = [Session(n) for n in range(sessions)]
run.drive(pool, steps, step, psycopg.Error)
