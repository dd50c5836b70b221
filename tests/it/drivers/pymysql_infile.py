"""LOAD DATA LOCAL INFILE with PyMySQL.

usage: pymysql_infile.py HOST PORT USER PASSWORD DB DIR
Writes its files under DIR. Loads 500 rows, then a file of 200,000 rows (about 5 MB: hundreds
of 16 KiB packets), each checked by count and sum on the same connection; then what goes wrong:
a missing file (PyMySQL sends an empty file and raises 1017 itself), a client without
local_infile (the server refuses: 4166), and a client that dies
half-way through its file (nothing of it may be loaded; a new connection works). Prints
`RESULT {...}` with what each step saw.
"""
import json
import os
import sys
import time

import pymysql
import pymysql.connections as connections

HOST, PORT, USER, PASSWORD, DB, DIR = sys.argv[1:7]
result = {}


def connect(**kw):
    return pymysql.connect(host=HOST, port=int(PORT), user=USER, password=PASSWORD, database=DB,
                           autocommit=True, **kw)


def write_rows(name, n):
    path = os.path.join(DIR, name)
    with open(path, "w") as f:
        for i in range(1, n + 1):
            f.write(f"{i},value-{i:08d}-{'x' * 8}\n")
    return path


def load(cur, path, table="infile_t"):
    return cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE {table} "
                       "FIELDS TERMINATED BY ','")


def totals(cur, table="infile_t"):
    cur.execute(f"select count(*), coalesce(sum(id), 0) from {table}")
    return [int(v) for v in cur.fetchone()]


conn = connect(local_infile=True)
cur = conn.cursor()
cur.execute("drop table if exists infile_t")
cur.execute("create table infile_t (id int primary key, v varchar(64))")
result["small_rows"] = load(cur, write_rows("small.csv", 500))
result["small_totals"] = totals(cur)
cur.execute("truncate infile_t")
result["large_rows"] = load(cur, write_rows("large.csv", 200_000))
result["large_totals"] = totals(cur)
cur.execute("truncate infile_t")

try:
    load(cur, os.path.join(DIR, "missing.csv"))
    result["missing"] = "loaded"
except pymysql.err.OperationalError as e:
    result["missing"] = e.args[0]
cur.execute("select 1")
result["after_missing"] = cur.fetchone()[0]

plain = connect()
try:
    load(plain.cursor(), write_rows("refused.csv", 10))
    result["without_local_infile"] = "loaded"
except pymysql.err.MySQLError as e:
    result["without_local_infile"] = e.args[0]
pc = plain.cursor()
pc.execute("select 1")
result["after_refusal"] = pc.fetchone()[0]
result["after_refusal_totals"] = totals(pc)

# A client that dies half-way: two 16 KiB packets of its file, then its socket closes.
def die_half_way(filename, conn):
    with open(filename, "rb") as f:
        conn.write_packet(f.read(16 * 1024))
        conn.write_packet(f.read(16 * 1024))
    conn._sock.close()
    raise pymysql.err.OperationalError(2013, "client gave up half-way")


original = connections._send_local_file
connections._send_local_file = die_half_way
dying = connect(local_infile=True)
try:
    load(dying.cursor(), os.path.join(DIR, "large.csv"))
    result["half_way"] = "loaded"
except (pymysql.err.MySQLError, OSError, AttributeError) as e:
    result["half_way"] = type(e).__name__
connections._send_local_file = original
# The server ends the statement when it sees the connection close: wait for the count to settle.
settled, previous = None, None
for _ in range(50):
    now = totals(cur)
    if now == previous:
        settled = now
        break
    previous = now
    time.sleep(0.2)
result["after_half_way_totals"] = settled
print("RESULT " + json.dumps(result), flush=True)
