"""Sessions that each keep state on the server (temporary tables, user variables, named locks,
SQL-level prepared statements, session variables (time zone, sql_mode, isolation level), the
role, the current schema, open transactions) in a
seeded random interleaving, now and then wiped by COM_RESET_CONNECTION or COM_CHANGE_USER, each checking that it sees exactly its own state and none of the
others'. Run direct, it checks its own model of MariaDB; through sluice on a small pool, every
step is a chance for a session to be handed a connection another session's state is still on.
Odd sessions are mysql-connector ones that send their statements as binary-protocol prepared
statements (COM_STMT_PREPARE / EXECUTE / CLOSE), whose ids sluice maps to each connection's own.

usage: pymysql_isolation.py HOST PORT USER PASSWORD DB OTHERDB SESSIONS STEPS SEED

The roles `iso_role_<n>` (granted to USER) must exist for n < 4.

Prints `RESULT {json}`; exit 1 on any mismatch (isolation.py: ISO_TRACE, ISO_REST).
"""
import socket
import sys

import mysql.connector
import pymysql

from isolation import Run, trace
from mysql_checks import connect as connect_to, connector

host, port, user, password, db, otherdb = sys.argv[1:7]
sessions, steps, seed = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
run = Run(seed)
rng, expect = run.rng, run.expect
ERRORS = (pymysql.err.MySQLError, mysql.connector.Error)
# Statements MariaDB will not take as binary-protocol prepared statements (errno 1295).
TEXT_ONLY = ("PREPARE ", "EXECUTE ", "DEALLOCATE ")


class Session:
    def __init__(self, n):
        self.n = n
        self.binary = n % 2 == 1
        self.executes = 0    # statements sent as COM_STMT_EXECUTE
        if self.binary:
            self.conn = connector(host, port, user, password, db)
            # The driver sends COM_STMT_CLOSE (no reply) and its next command in two writes: with
            # Nagle's algorithm the second waits ~40 ms for the first one's delayed ACK, direct as
            # through sluice.
            self.conn._socket.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self.conn = connect_to(host, port, user, password, db)
        self.tables = {}     # temporary table -> value
        self.vars = {}       # user variable -> value
        self.locks = set()   # named locks held
        self.prepared = {}   # SQL-level prepared statement -> value
        self.zone = self.one("SELECT @@session.time_zone")
        self.default_zone = self.zone
        self.mode = self.default_mode = self.one("SELECT @@session.sql_mode")
        self.iso = self.default_iso = self.one("SELECT @@session.tx_isolation")
        self.role = None
        self.schema = db
        self.in_tx = False
        self.tx_tables = []
        self.serial = 0

    def name(self, kind):
        self.serial += 1
        return f"{kind}_{self.n}_{self.serial}"

    def run(self, sql, *args):
        trace(self.n, sql, args)
        if not self.binary:
            with self.conn.cursor() as c:
                c.execute(sql, args or None)
                return c.fetchall()
        prepared = not sql.startswith(TEXT_ONLY)
        self.executes += prepared
        c = self.conn.cursor(prepared=prepared)
        try:
            c.execute(sql.replace("%s", "?") if prepared else sql, args or None)
            return c.fetchall() if c.with_rows else []
        finally:
            c.close()

    def one(self, sql, *args):
        rows = self.run(sql, *args)
        value = rows[0][0] if rows else None
        return value.decode() if isinstance(value, (bytes, bytearray)) else value

    def errno(self, sql, *args):
        try:
            self.run(sql, *args)
            return 0
        except pymysql.err.MySQLError as e:
            return e.args[0]
        except mysql.connector.Error as e:
            return e.errno

    def start_over(self, schema):
        """COM_RESET_CONNECTION (schema kept), or on a binary session now and then
        COM_CHANGE_USER to the same user with `schema`: either way the server drops the
        session's tables, variables, locks and statements and ends its transaction."""
        if self.binary and schema != self.schema:
            trace(self.n, "COM_CHANGE_USER", (schema,))
            self.conn.cmd_change_user(username=user, password=password, database=schema)
        elif self.binary:
            trace(self.n, "COM_RESET_CONNECTION", ())
            self.conn.cmd_reset_connection()
        else:
            trace(self.n, "COM_RESET_CONNECTION", ())
            self.conn._execute_command(0x1F, b"")
            self.conn._read_ok_packet()
        self.tables, self.vars, self.locks, self.prepared = {}, {}, set(), {}
        self.zone = self.default_zone
        self.mode, self.iso = self.default_mode, self.default_iso
        if self.role:
            # MariaDB 10.11 keeps the active role through both; through sluice the session has
            # a new connection's role (docs/compatibility.md). Said again, it is the same.
            self.run("SET ROLE NONE")
            self.role = None
        self.schema = schema
        self.in_tx = False
        self.tx_tables = []

    def use(self, schema):
        if self.binary:
            self.conn.cmd_init_db(schema)
        else:
            self.conn.select_db(schema)


def step(s, others):
    op = rng.choice(["table", "drop", "var", "unset", "lock", "release", "prepare",
                     "deallocate", "zone", "schema", "begin", "commit", "rollback", "check",
                     "clean", "clean", "reset", "mode", "iso", "role"])
    run.count(op)
    if op == "clean" and not s.in_tx:
        # Drops all that pins the session, the last of it right before the next statement,
        # which (often) makes something that pins again.
        for t in list(s.tables):
            s.run(f"DROP TEMPORARY TABLE {t}")
        for v in list(s.vars):
            s.run(f"SET @{v} = NULL")
        for k in list(s.locks):
            s.run("SELECT RELEASE_LOCK(%s)", k)
        for p in list(s.prepared):
            s.run(f"DEALLOCATE PREPARE {p}")
        s.tables, s.vars, s.locks, s.prepared = {}, {}, set(), {}
        op = rng.choice(["table", "var", "lock", "prepare", "check"])
    if op == "reset":
        # Half of the binary sessions' resets change user into the other schema.
        s.start_over(rng.choice([db, otherdb]) if s.binary else s.schema)
    elif op == "table" and len(s.tables) < 2:
        # Named with their schema: a session may have moved to the other one since.
        t, v = f"{db}." + s.name("iso_t"), rng.randrange(1000)
        s.run(f"CREATE TEMPORARY TABLE {t} (x INT)")
        s.run(f"INSERT INTO {t} VALUES (%s)", v)
        s.tables[t] = v
        if s.in_tx:
            s.tx_tables.append(t)
    elif op == "drop" and s.tables and not s.in_tx:
        t = rng.choice(sorted(s.tables))
        s.run(f"DROP TEMPORARY TABLE {t}")
        del s.tables[t]
    elif op == "var" and len(s.vars) < 2:
        v, x = s.name("iso_v"), rng.randrange(1000)
        s.run(f"SET @{v} = %s", x)
        s.vars[v] = x
    elif op == "unset" and s.vars:
        v = rng.choice(sorted(s.vars))
        s.run(f"SET @{v} = NULL")
        del s.vars[v]
    elif op == "lock" and len(s.locks) < 2:
        k = s.name("iso_l")
        expect(s, f"get {k}", s.one("SELECT GET_LOCK(%s, 5)", k), 1)
        s.locks.add(k)
    elif op == "release" and s.locks:
        k = rng.choice(sorted(s.locks))
        expect(s, f"release {k}", s.one("SELECT RELEASE_LOCK(%s)", k), 1)
        s.locks.discard(k)
    elif op == "prepare" and len(s.prepared) < 2:
        p, x = s.name("iso_p"), rng.randrange(1000)
        s.run(f"PREPARE {p} FROM 'SELECT {x}'")
        s.prepared[p] = x
    elif op == "deallocate" and s.prepared:
        p = rng.choice(sorted(s.prepared))
        s.run(f"DEALLOCATE PREPARE {p}")
        del s.prepared[p]
    elif op == "zone" and not s.in_tx:
        z = rng.choice([s.default_zone, "+01:00", "+05:30", "-03:00"])
        s.run("SET time_zone = %s", z)
        s.zone = z
    elif op == "mode" and not s.in_tx:
        m = rng.choice([s.default_mode, "", "ANSI_QUOTES", "STRICT_ALL_TABLES,NO_ZERO_DATE"])
        s.run("SET SESSION sql_mode = %s", m)
        s.mode = m
    elif op == "iso" and not s.in_tx:
        i = rng.choice(["READ-UNCOMMITTED", "READ-COMMITTED", "REPEATABLE-READ", "SERIALIZABLE"])
        s.run(f"SET SESSION TRANSACTION ISOLATION LEVEL {i.replace('-', ' ')}")
        s.iso = i
    elif op == "role" and not s.in_tx:
        # Its own role: a connection still carrying it would act with another's privileges.
        r = rng.choice([f"iso_role_{s.n % 4}", None])
        s.run(f"SET ROLE {r or 'NONE'}")
        s.role = r
    elif op == "schema" and not s.in_tx:
        d = rng.choice([db, otherdb])
        s.use(d)
        s.schema = d
    elif op == "begin" and not s.in_tx:
        s.run("BEGIN")
        s.in_tx = True
    elif op in ("commit", "rollback") and s.in_tx:
        s.run(op.upper())
        if op == "rollback":
            # A temporary table made in a transaction outlives its ROLLBACK, its rows do not.
            for t in s.tx_tables:
                s.tables[t] = None
        s.tx_tables = []
        s.in_tx = False
    if op == "check" or rng.random() < 0.3:
        check(s, others)


def check(s, others):
    for t, v in s.tables.items():
        expect(s, f"own table {t}", s.one(f"SELECT x FROM {t}"), v)
    for v, x in s.vars.items():
        expect(s, f"own variable @{v}", s.one(f"SELECT @{v}"), x)
    me = s.one("SELECT CONNECTION_ID()")
    for k in s.locks:
        expect(s, f"own lock {k}", s.one("SELECT IS_USED_LOCK(%s)", k), me)
    for p, x in s.prepared.items():
        expect(s, f"execute {p}", s.one(f"EXECUTE {p}"), x)
    expect(s, "time_zone", s.one("SELECT @@session.time_zone"), s.zone)
    expect(s, "sql_mode", s.one("SELECT @@session.sql_mode"), s.mode)
    expect(s, "isolation", s.one("SELECT @@session.tx_isolation"), s.iso)
    expect(s, "role", s.one("SELECT CURRENT_ROLE()"), s.role)
    expect(s, "schema", s.one("SELECT DATABASE()"), s.schema)
    o = rng.choice(others)
    for t in o.tables:
        expect(s, f"another session's table {t}", s.errno(f"SELECT x FROM {t}"), 1146)
    for v in o.vars:
        expect(s, f"another session's variable @{v}", s.one(f"SELECT @{v}"), None)
    for k in o.locks:
        expect(s, f"another session's lock {k}", s.one("SELECT IS_USED_LOCK(%s) = %s", k, me), 0)
    for p in o.prepared:
        expect(s, f"another session's statement {p}", s.errno(f"EXECUTE {p}"), 1243)


def server_executes():
    """The server's own count of COM_STMT_EXECUTE, read over the text protocol."""
    return int(pool[0].run("SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'")[0][1])


def executed():
    # The binary sessions' statements reached the server as executes (other clients of the
    # server can only add to its count).
    sent = sum(s.executes for s in pool)
    expect(pool[0], f"server executes >= {sent} sent", server_executes() - before >= sent, True)


pool = [Session(n) for n in range(sessions)]
before = server_executes()
run.drive(pool, steps, step, ERRORS, executed)
