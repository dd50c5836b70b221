"""A schema migration while mysql-connector-python sessions hold binary prepared statements.

usage: myconnector_migration.py HOST PORT USER PASSWORD DB DDL_PORT
Four connections on PORT, each with a `cursor(prepared=True)` running
`select * from mig_t where id = %s`, take turns; between rounds a connection on DDL_PORT runs
ALTER TABLE ... ADD COLUMN, then ALTER TABLE ... DROP COLUMN. MariaDB re-prepares a statement
whose table changed, so every execution should see the table as it is now. Prints
`PHASE name ok=N errors=N codes=...` per phase and `COLUMNS n` for a connection opened after.
"""
import sys

import mysql.connector

HOST, PORT, USER, PASSWORD, DB, DDL_PORT = sys.argv[1:7]


def connect(port):
    return mysql.connector.connect(host=HOST, port=int(port), user=USER, password=PASSWORD,
                                   database=DB, autocommit=True, use_pure=True, ssl_disabled=True)


ddl = connect(DDL_PORT)
cur = ddl.cursor()
for sql in ["drop table if exists mig_t",
            "create table mig_t (id int primary key, v varchar(20))",
            "insert into mig_t select seq, concat('v', seq) from seq_1_to_10"]:
    cur.execute(sql)
conns = [connect(PORT) for _ in range(4)]
cursors = [c.cursor(prepared=True) for c in conns]
SQL = "select * from mig_t where id = %s"


def phase(name, rounds, width):
    ok = errors = 0
    codes = set()
    for r in range(rounds):
        key = 1 + r % 10
        for c in cursors:
            try:
                c.execute(SQL, (key,))
                row = c.fetchone()
                if row[0] != key or len(row) != width:
                    raise AssertionError(f"{name}: row {row!r}, want id {key} and {width} columns")
                ok += 1
            except mysql.connector.Error as e:
                errors += 1
                codes.add(str(e.errno))
                print(f"{name}: {e}", file=sys.stderr)
    print(f"PHASE {name} ok={ok} errors={errors} codes={'|'.join(sorted(codes))}", flush=True)


phase("warm", 10, 2)
cur.execute("alter table mig_t add column extra int default 7")
phase("after_alter", 20, 3)
cur.execute("alter table mig_t drop column v")
phase("after_drop", 20, 2)
late = connect(PORT)
cur = late.cursor(prepared=True)
cur.execute(SQL, (1,))
print(f"COLUMNS {len(cur.fetchone())}")
