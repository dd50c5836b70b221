"""Shared by the PyMySQL check scripts: their connections, one-value queries, the checks they
count and the `RESULT {json}` line (plus a `FAIL` line per mismatch) they end with."""
import json
import sys

import pymysql


class Checks:
    def __init__(self):
        self.count = 0
        self.failures = []

    def expect(self, what, got, want):
        self.count += 1
        if got != want:
            self.failures.append(f"{what}: got {got!r}, want {want!r}")

    def fail(self, what):
        self.failures.append(what)

    def finish(self, **extra):
        print("RESULT " + json.dumps({"checks": self.count, "failures": len(self.failures), **extra}))
        for f in self.failures:
            print("FAIL " + f)
        sys.exit(1 if self.failures else 0)


def connect(host, port, user, password, database, **options):
    return pymysql.connect(host=host, port=int(port), user=user, password=password,
                           database=database, autocommit=True, **options)


def one(conn, sql):
    with conn.cursor() as c:
        c.execute(sql)
        row = c.fetchone()
        return row[0] if row else None
