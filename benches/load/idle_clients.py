# Idle-client memory probe for benches/load/compare.sh: opens N authenticated (MD5) PostgreSQL
# client connections to a pooler, keeps them idle, and reports the pooler's RSS growth per client.
"""Usage: idle_clients.py HOST PORT USER PASSWORD DATABASE COUNT POOLER_PID

Speaks just enough of the PostgreSQL protocol 3.0 with raw asyncio sockets: StartupMessage,
AuthenticationMD5Password / AuthenticationOk, then reads until ReadyForQuery. Every client must
reach ReadyForQuery, so each one is a logged-in session, not merely an accepted socket.
Prints one line `key=value ...` that compare.sh parses.
"""

import asyncio
import hashlib
import struct
import sys
import time


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    tag, length = head[:1], struct.unpack("!i", head[1:])[0]
    return tag, await reader.readexactly(length - 4)


def frame(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!i", len(body) + 4) + body


async def login(host, port, user, password, database):
    reader, writer = await asyncio.open_connection(host, port)
    params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
    body = struct.pack("!i", 196608) + params
    writer.write(struct.pack("!i", len(body) + 4) + body)
    await writer.drain()
    while True:
        tag, body = await read_message(reader)
        if tag == b"R":
            code = struct.unpack("!i", body[:4])[0]
            if code == 5:
                writer.write(frame(b"p", md5_password(user, password, body[4:8]) + b"\0"))
                await writer.drain()
            elif code != 0:
                raise RuntimeError(f"unsupported authentication request {code}")
        elif tag == b"E":
            raise RuntimeError(f"server error: {body!r}")
        elif tag == b"Z":
            return reader, writer


async def query_one(reader, writer) -> None:
    writer.write(frame(b"Q", b"select 1\0"))
    await writer.drain()
    while True:
        tag, body = await read_message(reader)
        if tag == b"E":
            raise RuntimeError(f"query failed: {body!r}")
        if tag == b"Z":
            return


async def main() -> int:
    host, port, user, password, database = sys.argv[1:6]
    count, pid = int(sys.argv[6]), int(sys.argv[7])
    port = int(port)
    before = vm_rss_kib(pid)
    gate = asyncio.Semaphore(100)  # handshakes in flight; keeps the listen backlog small

    async def one():
        async with gate:
            for attempt in range(5):
                try:
                    return await asyncio.wait_for(login(host, port, user, password, database), 30)
                except (ConnectionError, OSError, asyncio.TimeoutError):
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2)

    started = time.monotonic()
    clients = await asyncio.gather(*(one() for _ in range(count)))
    connect_s = time.monotonic() - started
    await asyncio.sleep(3)  # let the pooler settle (timers, lazy allocations)
    after = vm_rss_kib(pid)
    # The sessions are real: a few of them still answer a query after the measurement.
    for reader, writer in clients[:: max(1, count // 10)]:
        await query_one(reader, writer)
    for _, writer in clients:
        writer.write(frame(b"X", b""))
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in clients), return_exceptions=True)
    await asyncio.sleep(2)
    released = vm_rss_kib(pid)
    per_client = (after - before) / count
    print(
        f"clients={count} rss_before_kib={before} rss_idle_kib={after} "
        f"rss_after_close_kib={released} per_client_kib={per_client:.2f} "
        f"connect_seconds={connect_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
