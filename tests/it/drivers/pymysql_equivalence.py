"""Session state through sluice matches a direct connection, statement by statement (PyMySQL).

usage: pymysql_equivalence.py HOST DIRECT_PORT SLUICE_PORT USER PASSWORD DB OTHERDB

The same script of statements runs on a direct MariaDB connection and on a sluice connection;
between any two statements on sluice, a second sluice session (sharing the pool of one) changes
every tracked variable and the schema its own way. Every result must be what the direct
connection got. Prints `RESULT {json}`; exit 1 on any difference.
"""
import sys

import pymysql

from mysql_checks import Checks
from mysql_checks import connect as connect_to

host, direct_port, sluice_port, user, password, db, otherdb = sys.argv[1:8]
checks = Checks()

SCRIPT = [
    "SELECT @@time_zone, @@sql_mode, @@autocommit, DATABASE()",
    "SET time_zone = '+05:30'",
    "SELECT @@time_zone",
    "SET SESSION sql_mode = 'ANSI_QUOTES,NO_ZERO_DATE'",
    "SELECT @@sql_mode",
    "SET NAMES latin1 COLLATE latin1_bin",
    "SELECT @@character_set_client, @@character_set_results, @@collation_connection",
    f"USE {otherdb}",
    "SELECT DATABASE()",
    "SET @@session.wait_timeout = 1234, net_write_timeout = 77",
    "SELECT @@wait_timeout, @@net_write_timeout",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "SELECT @@tx_isolation",
    "SET time_zone = DEFAULT",
    "SELECT @@time_zone",
    "SET foreign_key_checks = 0, unique_checks = 0",
    "SELECT @@foreign_key_checks, @@unique_checks",
    "SET sql_select_limit = 3",
    "SELECT seq FROM seq_1_to_10",
    "SET sql_select_limit = DEFAULT",
    "SET autocommit = 0",
    "SELECT @@autocommit",
    "SET autocommit = 1",
    "SET group_concat_max_len = 5",
    "SELECT GROUP_CONCAT(seq) FROM seq_1_to_10",
    "SET CHARACTER SET utf8mb4",
    "SELECT @@character_set_client, @@character_set_results",
    f"USE {db}",
    "SET div_precision_increment = 2",
    "SELECT 1/3",
    "SELECT @@time_zone, @@sql_mode, DATABASE(), @@tx_isolation, @@wait_timeout",
]

# Each turn of the second session changes every tracked variable and the schema at once.
NOISE = [
    [
        "SET time_zone = '-07:00', sql_mode = '', wait_timeout = 99, net_write_timeout = 11, "
        "group_concat_max_len = 2048, sql_select_limit = 1, div_precision_increment = 9, "
        "foreign_key_checks = 1, unique_checks = 1, autocommit = 1",
        "SET NAMES utf8mb4",
        "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        f"USE {db}",
    ],
    [
        "SET time_zone = '+01:00', sql_mode = 'PIPES_AS_CONCAT', wait_timeout = 55, "
        "net_write_timeout = 22, group_concat_max_len = 4, sql_select_limit = 2, "
        "div_precision_increment = 0, foreign_key_checks = 0, unique_checks = 0",
        "SET NAMES utf8mb3",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
        f"USE {otherdb}",
    ],
]


def run(conn, sql):
    with conn.cursor() as c:
        c.execute(sql)
        return [tuple(r) for r in c.fetchall()] if c.description else None


direct = connect_to(host, direct_port, user, password, db)
proxied = connect_to(host, sluice_port, user, password, db)
noise = connect_to(host, sluice_port, user, password, db)
for i, sql in enumerate(SCRIPT):
    want = run(direct, sql)
    got = run(proxied, sql)
    checks.expect(f"#{i} {sql}", got, want)
    for statement in NOISE[i % len(NOISE)]:
        run(noise, statement)
checks.finish()
