"""How quickly a burst of clients hears that the server refuses their logins: N clients open a
connection at once (md5 or cleartext password, no TLS), each sends one `SELECT 1`, and the time
from the burst's start until each got its answer (an ErrorResponse, or the query's result) is
recorded. A direct connection hears the server's refusal at its own login; a pooler hears it at
a server login of its own, and what it does with its other waiting clients decides when the
last of them hears.

    python3 benches/load/refused.py <host> <port> <user> <password> <db> <clients>

Prints one line: the answers by SQLSTATE (`ok` for a result), then the median and the last
client's time in ms. The client speaks the wire protocol itself (the stdlib only), so it runs
wherever the bench scripts do.
"""
import asyncio
import hashlib
import statistics
import struct
import sys
import time


def message(kind, body):
    return kind + struct.pack("!i", len(body) + 4) + body


async def read_message(r):
    head = await r.readexactly(5)
    length = struct.unpack("!i", head[1:])[0]
    return head[:1], await r.readexactly(length - 4)


def sqlstate(body):
    """The C field of an ErrorResponse."""
    for field in body.split(b"\0"):
        if field[:1] == b"C":
            return field[1:].decode()
    return "?"


async def login(r, w, user, password, db):
    """Logs in (md5 or cleartext): None once ReadyForQuery came, else the SQLSTATE or `authN`."""
    params = b"user\0" + user + b"\0database\0" + db + b"\0\0"
    w.write(struct.pack("!ii", len(params) + 8, 196608) + params)
    while True:
        kind, body = await read_message(r)
        if kind == b"R":
            code = struct.unpack("!i", body[:4])[0]
            if code == 5:
                inner = hashlib.md5(password + user).hexdigest().encode()
                outer = hashlib.md5(inner + body[4:8]).hexdigest().encode()
                w.write(message(b"p", b"md5" + outer + b"\0"))
            elif code == 3:
                w.write(message(b"p", password + b"\0"))
            elif code != 0:
                return f"auth{code}"
        elif kind == b"E":
            return sqlstate(body)
        elif kind == b"Z":
            return None


async def query(r, w, sql=b"SELECT 1"):
    """Runs one simple query: `ok`, or the SQLSTATE of its error."""
    w.write(message(b"Q", sql + b"\0"))
    answer = "ok"
    while True:
        kind, body = await read_message(r)
        if kind == b"E":
            answer = sqlstate(body)
            if b"\0SFATAL\0" in b"\0" + body:
                return answer  # the connection ends: no ReadyForQuery follows
        elif kind == b"Z":
            return answer


async def one(host, port, user, password, db, start):
    """(answer, seconds since start): a SQLSTATE, `ok`, or why the conversation broke."""
    try:
        r, w = await asyncio.open_connection(host, port)
        refused = await login(r, w, user, password, db)
        answer = refused or await query(r, w)
        return answer, time.monotonic() - start
    except (OSError, asyncio.IncompleteReadError) as e:
        return type(e).__name__, time.monotonic() - start
    finally:
        if "w" in locals():
            w.close()


async def burst(host, port, user, password, db, clients):
    start = time.monotonic()
    return await asyncio.gather(
        *(one(host, port, user, password, db, start) for _ in range(clients))
    )


def main():
    host, port, user, password, db, clients = sys.argv[1:7]
    got = asyncio.run(
        burst(host, int(port), user.encode(), password.encode(), db.encode(), int(clients))
    )
    answers = {}
    for answer, _ in got:
        answers[answer] = answers.get(answer, 0) + 1
    times = sorted(t * 1000 for _, t in got)
    counts = " ".join(f"{a}={n}" for a, n in sorted(answers.items()))
    print(f"{counts}; median {statistics.median(times):.1f} ms, last {times[-1]:.1f} ms")


if __name__ == "__main__":
    main()
