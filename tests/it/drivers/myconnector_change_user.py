"""COM_CHANGE_USER through sluice (mysql-connector-python, pure Python): the session starts over
as a fresh login would, a wrong password is refused with 1045.

usage: myconnector_change_user.py HOST PORT USER PASSWORD DB OTHERDB

Prints `RESULT {json}`; exit 1 on any mismatch.
"""
import json
import sys

import mysql.connector

host, port, user, password, db, otherdb = sys.argv[1:7]
failures = []


def rows(cnx, sql):
    cur = cnx.cursor()
    cur.execute(sql)
    out = cur.fetchall()
    cur.close()
    return out


cnx = mysql.connector.connect(host=host, port=int(port), user=user, password=password,
                              database=db, use_pure=True, ssl_disabled=True, autocommit=True)
default_tz = rows(cnx, "SELECT @@time_zone")[0][0]
rows(cnx, "SET time_zone = '+01:00'")
rows(cnx, "CREATE TEMPORARY TABLE cu_tmp (x INT)")
cnx.cmd_change_user(username=user, password=password, database=otherdb)
got = rows(cnx, "SELECT DATABASE(), @@time_zone")[0]
if tuple(got) != (otherdb, default_tz):
    failures.append(f"after change_user: {got!r}, want {(otherdb, default_tz)!r}")
try:
    rows(cnx, "SELECT * FROM cu_tmp")
    failures.append("the temporary table survived COM_CHANGE_USER")
except mysql.connector.Error as e:
    if e.errno != 1146:
        failures.append(f"temp table errno {e.errno}")
wrong = 0
try:
    cnx.cmd_change_user(username=user, password="wrong", database=db)
    failures.append("a wrong password was accepted")
except mysql.connector.Error as e:
    wrong = e.errno
if wrong != 1045:
    failures.append(f"wrong password errno {wrong}")
print("RESULT " + json.dumps({"after": list(got), "wrong_errno": wrong, "failures": len(failures)}))
for f in failures:
    print("FAIL " + f)
sys.exit(1 if failures else 0)
