"""What a server reports at login, as psycopg (libpq) reads it.

usage: psycopg_startup.py HOST PORT DB USER PASSWORD ENCODING...
For each ENCODING, logs in with client_encoding=ENCODING and prints
`ENCODING name reported` (or `ENCODING name ERROR` when the login or the first query is
refused: through sluice, a name PostgreSQL knows but cannot convert to fails at the first
query, not at login), then `PID n`: the backend pid the login reported.
"""
import sys

import psycopg

host, port, db, user, password, *names = sys.argv[1:]
for name in names:
    try:
        with psycopg.connect(host=host, port=port, dbname=db, user=user, password=password,
                             client_encoding=name, connect_timeout=10) as conn:
            reported = conn.pgconn.parameter_status(b"client_encoding").decode()
            result = conn.pgconn.exec_(b"select 1")
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                raise psycopg.OperationalError(result.error_message.decode())
            print(f"ENCODING {name} {reported}")
    except psycopg.Error as e:
        print(f"ENCODING {name} ERROR")
        print(f"{name}: {e}", file=sys.stderr)
with psycopg.connect(host=host, port=port, dbname=db, user=user, password=password) as conn:
    print(f"PID {conn.info.backend_pid}")
