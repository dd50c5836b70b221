# Idle-client memory probe for benches/load/compare.sh (PostgreSQL) and benches/load/mysql.sh
# (MySQL): opens N authenticated client connections to a pooler (or a server), keeps them idle,
# and reports that process's RSS growth per client.
"""Usage: idle_clients.py HOST PORT USER PASSWORD DATABASE COUNT PID [postgres|mysql]

Speaks just enough of the wire protocol with raw asyncio sockets, so thousands of sessions fit
in one thread. PostgreSQL 3.0 (the default): StartupMessage, AuthenticationMD5Password /
AuthenticationOk, then reads until ReadyForQuery. MySQL: HandshakeV10, HandshakeResponse41 with
mysql_native_password (following an AuthSwitchRequest to it if asked), then the OK packet.
Every client must be logged in, not merely an accepted socket. Prints one line `key=value ...`
that the bench scripts parse.

IDLE_STARTUP_PARAMS (PostgreSQL only): space-separated `name=value` pairs added to each
StartupMessage, e.g. what pgjdbc sends: "client_encoding=UTF8 DateStyle=ISO TimeZone=UTC
extra_float_digits=2 application_name=PostgreSQL_JDBC_Driver". Default: none (as pgbench).
"""

import asyncio
import hashlib
import os
import struct
import sys
import time


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------- PostgreSQL


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode()


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(5)
    tag, length = head[:1], struct.unpack("!i", head[1:])[0]
    return tag, await reader.readexactly(length - 4)


def frame(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!i", len(body) + 4) + body


async def pg_login(host, port, user, password, database):
    reader, writer = await asyncio.open_connection(host, port)
    params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0"
    for pair in os.environ.get("IDLE_STARTUP_PARAMS", "").split():
        name, _, value = pair.partition("=")
        params += name.encode() + b"\0" + value.encode() + b"\0"
    params += b"\0"
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


async def pg_query(reader, writer) -> None:
    writer.write(frame(b"Q", b"select 1\0"))
    await writer.drain()
    while True:
        tag, body = await read_message(reader)
        if tag == b"E":
            raise RuntimeError(f"query failed: {body!r}")
        if tag == b"Z":
            return


# ---------------------------------------------------------------- MySQL

# LONG_PASSWORD LONG_FLAG CONNECT_WITH_DB PROTOCOL_41 TRANSACTIONS SECURE_CONNECTION
# MULTI_RESULTS PLUGIN_AUTH: the usual driver set, without TLS, attributes or DEPRECATE_EOF.
MY_CAPS = 1 | 1 << 2 | 1 << 3 | 1 << 9 | 1 << 13 | 1 << 15 | 1 << 17 | 1 << 19
NATIVE = b"mysql_native_password"


async def my_read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(4)
    length = int.from_bytes(head[:3], "little")
    return head[3], await reader.readexactly(length)


def my_packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq & 0xFF]) + payload


def native_scramble(password: str, salt: bytes) -> bytes:
    if not password:
        return b""
    h1 = hashlib.sha1(password.encode()).digest()
    mix = hashlib.sha1(salt + hashlib.sha1(h1).digest()).digest()
    return bytes(a ^ b for a, b in zip(h1, mix))


def my_error(payload: bytes) -> RuntimeError:
    return RuntimeError(f"server error {int.from_bytes(payload[1:3], 'little')}: {payload[3:]!r}")


async def my_login(host, port, user, password, database):
    reader, writer = await asyncio.open_connection(host, port)
    seq, greeting = await my_read(reader)
    if greeting[:1] == b"\xff":
        raise my_error(greeting)
    at = greeting.index(b"\0", 1) + 1 + 4  # protocol version, server version, connection id
    salt = greeting[at : at + 8]
    at += 8 + 1 + 2 + 1 + 2 + 2  # salt part 1, filler, caps, charset, status, caps (upper)
    salt_len = greeting[at]
    at += 1 + 10
    salt += greeting[at : at + max(13, salt_len - 8) - 1]  # part 2 less its NUL
    auth = native_scramble(password, salt)
    response = struct.pack("<IIB23x", MY_CAPS, 1 << 24, 45)  # utf8mb4_general_ci
    response += user.encode() + b"\0" + bytes([len(auth)]) + auth
    response += database.encode() + b"\0" + NATIVE + b"\0"
    writer.write(my_packet(seq + 1, response))
    await writer.drain()
    while True:
        seq, payload = await my_read(reader)
        if payload[:1] == b"\x00":
            return reader, writer
        if payload[:1] == b"\xff":
            raise my_error(payload)
        if payload[:1] != b"\xfe":
            raise RuntimeError(f"unexpected login packet {payload[:16]!r}")
        plugin, _, data = payload[1:].partition(b"\0")
        if plugin != NATIVE:
            raise RuntimeError(f"unsupported authentication plugin {plugin!r}")
        writer.write(my_packet(seq + 1, native_scramble(password, data.rstrip(b"\0"))))
        await writer.drain()


async def my_query(reader, writer) -> None:
    writer.write(my_packet(0, b"\x03select 1"))
    await writer.drain()
    _, payload = await my_read(reader)  # column count, or OK / ERR
    if payload[:1] == b"\xff":
        raise RuntimeError(f"query failed: {payload!r}")
    eofs = 0  # column definitions, EOF, rows, EOF
    while payload[:1] != b"\x00" and eofs < 2:
        _, payload = await my_read(reader)
        if payload[:1] == b"\xff":
            raise RuntimeError(f"query failed: {payload!r}")
        eofs += payload[:1] == b"\xfe" and len(payload) < 9


# login, one query, the goodbye message
ENGINES = {
    "postgres": (pg_login, pg_query, frame(b"X", b"")),
    "mysql": (my_login, my_query, my_packet(0, b"\x01")),
}


async def main() -> int:
    host, port, user, password, database = sys.argv[1:6]
    count, pid = int(sys.argv[6]), int(sys.argv[7])
    login, query_one, goodbye = ENGINES[sys.argv[8] if len(sys.argv) > 8 else "postgres"]
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
    # Let the pooler settle: timers, lazy allocations, sessions parked after a second idle, and
    # the allocator handing freed pages back (jemalloc's decay: 10 s).
    await asyncio.sleep(float(os.environ.get("IDLE_SETTLE_SECONDS", "3")))
    after = vm_rss_kib(pid)
    # The sessions are real: a few of them still answer a query after the measurement.
    for reader, writer in clients[:: max(1, count // 10)]:
        await query_one(reader, writer)
    for _, writer in clients:
        writer.write(goodbye)
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
