"""Cuts real traffic into fuzz seeds: reads a loopback capture (tshark) of integration tests in
which real clients (psql, psycopg, pgjdbc, PyMySQL, the mariadb CLI) talked to sluice and
sluice to real servers, reassembles each TCP stream, tells Postgres from MySQL by the first
bytes, and writes each target's input format into fuzz/corpus/<target>/ (named by SHA-1, as
seed.py names its files). fuzz/capture.sh runs it; usage: python3 fuzz/from_pcap.py CAPTURE
"""
import collections
import hashlib
import os
import struct
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
# A few hundred new files per target at most, each small: seeds, not an archive.
MAX_PER_TARGET = 300
MAX_SEED = 4096
written = collections.Counter()


def put(target, data):
    if not data or written[target] >= MAX_PER_TARGET:
        return
    data = data[:MAX_SEED]
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
        written[target] += 1


def segments(capture):
    """(stream, sender port, payload) in capture order, payload-carrying segments only."""
    out = subprocess.run(
        ["tshark", "-r", capture, "-Y", "tcp.len > 0", "-T", "fields",
         "-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.payload"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[2]:
            yield int(parts[0]), int(parts[1]), bytes.fromhex(parts[2].replace(":", ""))


def pg_client_first(b):
    if len(b) < 8:
        return False
    code = struct.unpack("!i", b[4:8])[0]
    return code in (196608, 80877103, 80877102, 80877104)


def my_greeting(b):
    return len(b) > 5 and b[3] == 0 and b[4] == 10


def pg_frames(buf):
    """Whole frames at the front of buf (tag, frame) and the rest."""
    frames = []
    while len(buf) >= 5:
        n = struct.unpack("!i", buf[1:5])[0] + 1
        if n < 5 or len(buf) < n:
            break
        frames.append(buf[:n])
        buf = buf[n:]
    return frames, buf


def my_packets(buf):
    packets = []
    while len(buf) >= 4:
        n = 4 + (buf[0] | buf[1] << 8 | buf[2] << 16)
        if len(buf) < n:
            break
        packets.append(buf[:n])
        buf = buf[n:]
    return packets, buf


def postgres(order):
    """order: [(is_client, bytes)] for one stream."""
    client = b"".join(b for c, b in order if c)
    put("pg_startup", client[:2048])
    records, bufs, started = [], {True: b"", False: b""}, False
    for is_client, data in order:
        bufs[is_client] += data
        if is_client and not started:
            # The startup packet (and an SSLRequest before it) have no tag.
            while len(bufs[True]) >= 8:
                n = struct.unpack("!i", bufs[True][:4])[0]
                if len(bufs[True]) < n:
                    break
                code = struct.unpack("!i", bufs[True][4:8])[0]
                bufs[True] = bufs[True][n:]
                if code == 196608:
                    started = True
                    break
            if not started:
                continue
        if not is_client and bufs[False][:1] in (b"S", b"N") and len(bufs[False]) == 1:
            bufs[False] = b""  # the answer to an SSLRequest
            continue
        frames, bufs[is_client] = pg_frames(bufs[is_client])
        for f in frames:
            records.append(bytes([0 if is_client else 1]) + f)
            if is_client and f[:1] == b"Q":
                put("sql_scanners", f[5:-1])
            if is_client and f[:1] == b"P":
                name_end = f.index(b"\0", 5)
                put("sql_scanners", f[name_end + 1:f.index(b"\0", name_end + 1)])
    chunk = b""
    for r in records:
        if len(chunk) + len(r) > MAX_SEED:
            put("pg_session", chunk)
            chunk = b""
        chunk += r
    put("pg_session", chunk)


KINDS = {0x03: 0, 0x17: 0, 0x16: 1, 0x04: 2, 0x1c: 3}


def mysql(order):
    bufs, handshake, deprecate_eof = {True: b"", False: b""}, True, False
    command, reply = None, b""
    for is_client, data in order:
        bufs[is_client] += data
        packets, bufs[is_client] = my_packets(bufs[is_client])
        for p in packets:
            payload = p[4:]
            if handshake:
                put("mysql_packets", payload)
                if is_client and len(payload) >= 4:
                    caps = struct.unpack("<I", payload[:4])[0]
                    deprecate_eof = bool(caps & (1 << 24))
                if not is_client and payload[:1] == b"\x00":
                    handshake = False
                continue
            if is_client and p[3] == 0:
                if command is not None and reply:
                    put("mysql_reply", bytes([command]) + reply)
                kind = KINDS.get(payload[0], 4) if payload else 4
                # mysql_reply reads the kind as head % 5 and DEPRECATE_EOF as head & 0x80.
                command = 0x80 + (kind - 0x80) % 5 if deprecate_eof else kind
                reply = b""
                if payload[:1] == b"\x03":
                    put("sql_scanners", payload[1:])
            elif not is_client:
                reply += p
    if command is not None and reply:
        put("mysql_reply", bytes([command]) + reply)


def main(capture):
    streams = collections.defaultdict(list)
    for stream, port, payload in segments(capture):
        streams[stream].append((port, payload))
    for segs in streams.values():
        first_port, first = segs[0]
        if pg_client_first(first):
            postgres([(p == first_port, b) for p, b in segs])
        elif my_greeting(first):
            mysql([(p != first_port, b) for p, b in segs])
    for target, n in sorted(written.items()):
        print(f"{target}: {n} new seeds")


if __name__ == "__main__":
    main(sys.argv[1])
