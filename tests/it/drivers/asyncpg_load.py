"""asyncpg through sluice: many concurrent connections on a small pool, each using asyncpg's
statement cache (every query a named server statement, described once and then only bound),
transactions committed and rolled back, executemany, COPY from records, an error that must leave
the connection usable, and a session setting that must stay its own.

usage: asyncpg_load.py HOST PORT DB USER PASSWORD CONNECTIONS ITERATIONS
Prints `RESULT {...}`; exits 1 when any connection failed.
"""
import asyncio
import json
import sys

import asyncpg

HOST, PORT, DB, USER, PASSWORD, CONNS, ITERS = sys.argv[1:8]


async def worker(tid, totals):
    conn = await asyncpg.connect(host=HOST, port=int(PORT), database=DB, user=USER,
                                 password=PASSWORD, timeout=30)
    try:
        await conn.execute(f"set application_name = 'apg-{tid}'")
        rows = 0
        for i in range(int(ITERS)):
            assert await conn.fetchval("select $1::int * 2", i) == i * 2
            async with conn.transaction():
                await conn.execute("insert into apg_kv values ($1, $2, $3)", tid, i, i)
            try:
                async with conn.transaction():
                    await conn.execute("insert into apg_kv values ($1, $2, $3)", tid, -i - 1, 0)
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            try:
                await conn.fetchval("select 1 / $1::int", 0)
                raise AssertionError("division by zero did not fail")
            except asyncpg.DivisionByZeroError:
                pass
            rows += 1
            if i % 5 == 0:
                await conn.executemany("insert into apg_many values ($1, $2)",
                                       [(tid, i), (tid, i + 1000)])
                await conn.copy_records_to_table("apg_copy", records=[(tid, i), (tid, i + 1)])
            name = await conn.fetchval("show application_name")
            assert name == f"apg-{tid}", f"application_name {name}"
        count = await conn.fetchval("select count(*) from apg_kv where thread = $1", tid)
        assert count == rows, f"{count} rows, want {rows}"
        totals["ok"] += 1
        totals["rows"] += rows
    finally:
        await conn.close()


async def main():
    setup = await asyncpg.connect(host=HOST, port=int(PORT), database=DB, user=USER,
                                  password=PASSWORD)
    for sql in ["drop table if exists apg_kv, apg_many, apg_copy",
                "create table apg_kv (thread int, seq int, val int, primary key (thread, seq))",
                "create table apg_many (thread int, n int)",
                "create table apg_copy (thread int, n int)"]:
        await setup.execute(sql)
    await setup.close()
    totals = {"ok": 0, "rows": 0}
    results = await asyncio.gather(*(worker(t, totals) for t in range(int(CONNS))),
                                   return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    for e in errors[:5]:
        print(e, file=sys.stderr)
    print("RESULT " + json.dumps({**totals, "errors": len(errors)}), flush=True)
    sys.exit(1 if errors else 0)


asyncio.run(main())
