"""A schema migration while psycopg or asyncpg sessions hold prepared statements.

Run by tests/it/drivers/migration.rs:
    python migration.py HOST PORT DDL_PORT DB USER PASSWORD DRIVER
DRIVER: psycopg (prepare_threshold=0: every query a named server statement), psycopg-pipeline
(the same in pipeline mode) or asyncpg (its statement cache). Four sessions on PORT take turns
running `select * from mig_t where id = $1` and `select cast($1 as mig_mood)::text`; between
rounds one more session, on DDL_PORT, runs what a migration tool runs: ALTER TABLE ... ADD COLUMN,
then DROP TYPE / CREATE TYPE of the enum. Prints `PHASE name ok=N errors=N codes=...` per phase
and `COLUMNS n`, the columns a session that connects after the migration sees.
"""

import asyncio
import sys

HOST, PORT, DDL_PORT, DB, USER, PASSWORD, DRIVER = sys.argv[1:8]
ROWS = "select * from mig_t where id = {}"
CAST = "select cast({} as mig_mood)::text"
SETUP = [
    "drop table if exists mig_t",
    "drop type if exists mig_mood",
    "create type mig_mood as enum ('happy', 'sad')",
    "create table mig_t (id int primary key, v text)",
    "insert into mig_t select g, 'v' || g from generate_series(1, 10) g",
]
ALTER = ["alter table mig_t add column extra int default 7"]
RETYPE = ["drop type mig_mood", "create type mig_mood as enum ('happy', 'sad', 'ok')"]


class Tally:
    def __init__(self, name):
        self.name, self.ok, self.errors, self.codes = name, 0, 0, set()

    def error(self, code, message):
        self.errors += 1
        self.codes.add(str(code))
        print(f"{self.name}: {code} {message.splitlines()[0]}", file=sys.stderr)

    def line(self):
        codes = "|".join(sorted(self.codes))
        return f"PHASE {self.name} ok={self.ok} errors={self.errors} codes={codes}"


def check(row, want):
    if row != want:
        raise AssertionError(f"got {row!r}, want {want!r}")


def run_psycopg(pipeline):
    import psycopg

    def connect(port, **kw):
        return psycopg.connect(host=HOST, port=port, dbname=DB, user=USER, password=PASSWORD,
                               autocommit=True, connect_timeout=10, **kw)

    ddl = connect(DDL_PORT)
    for sql in SETUP:
        ddl.execute(sql)
    conns = [connect(PORT, prepare_threshold=0) for _ in range(4)]

    def one(conn, tally, sql, args, want):
        try:
            if pipeline:
                with conn.pipeline():
                    cur = conn.execute(sql, args)
                    row = cur.fetchone()[0]
            else:
                row = conn.execute(sql, args).fetchone()[0]
            check(row, want)
            tally.ok += 1
        except psycopg.Error as e:
            tally.error(e.sqlstate, str(e))

    def phase(name, rounds):
        tally = Tally(name)
        for r in range(rounds):
            key = 1 + r % 10
            for conn in conns:
                one(conn, tally, ROWS.format("%s"), (key,), key)
                one(conn, tally, CAST.format("%s"), ("happy",), "happy")
        print(tally.line(), flush=True)

    phase("warm", 10)
    for sql in ALTER:
        ddl.execute(sql)
    phase("after_alter", 20)
    for sql in RETYPE:
        ddl.execute(sql)
    phase("after_type", 20)
    with connect(PORT, prepare_threshold=0) as late:
        for i in range(10):
            cur = late.execute(ROWS.format("%s"), (1 + i,))
            cur.fetchone()
        print(f"COLUMNS {len(cur.description)}")


async def run_asyncpg():
    import asyncpg

    async def connect(port):
        return await asyncpg.connect(host=HOST, port=int(port), database=DB, user=USER,
                                     password=PASSWORD, timeout=10)

    ddl = await connect(DDL_PORT)
    for sql in SETUP:
        await ddl.execute(sql)
    conns = [await connect(PORT) for _ in range(4)]

    async def one(conn, tally, sql, arg, want):
        try:
            check(await conn.fetchval(sql, arg), want)
            tally.ok += 1
        except asyncpg.PostgresError as e:
            tally.error(e.sqlstate, str(e))
        except asyncpg.InterfaceError as e:
            tally.error("interface", str(e))

    async def phase(name, rounds):
        tally = Tally(name)
        for r in range(rounds):
            key = 1 + r % 10
            for conn in conns:
                await one(conn, tally, ROWS.format("$1"), key, key)
                await one(conn, tally, CAST.format("$1"), "happy", "happy")
        print(tally.line(), flush=True)

    await phase("warm", 10)
    for sql in ALTER:
        await ddl.execute(sql)
    await phase("after_alter", 20)
    for sql in RETYPE:
        await ddl.execute(sql)
    await phase("after_type", 20)
    late = await connect(PORT)
    for i in range(10):
        row = await late.fetchrow(ROWS.format("$1"), 1 + i)
    print(f"COLUMNS {len(row)}")
    await late.close()


if DRIVER == "asyncpg":
    asyncio.run(run_asyncpg())
else:
    run_psycopg(DRIVER == "psycopg-pipeline")
