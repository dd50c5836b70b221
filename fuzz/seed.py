"""Writes the seed corpus of each fuzz target from messages sluice's own tests exchange: valid
startup packets, a session's client and server frames, MySQL handshakes and replies, SQL the
scanners must classify, SCRAM exchanges. Files are named by their SHA-1, as cargo-fuzz names
what it keeps, so rerunning changes nothing. Run from the repository root: python3 fuzz/seed.py
"""
import hashlib
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def msg(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def startup(params):
    body = struct.pack("!i", 196608) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!i", len(body) + 4) + body


query = lambda sql: msg(b"Q", cstr(sql))
sync = msg(b"S")
parse = lambda name, sql: msg(b"P", cstr(name) + cstr(sql) + b"\0\0")
bind = lambda name: msg(b"B", b"\0" + cstr(name) + b"\0\0" + b"\0\0" + b"\0\0")
describe_s = lambda name: msg(b"D", b"S" + cstr(name))
execute = msg(b"E", b"\0" + b"\0\0\0\0")
close_s = lambda name: msg(b"C", b"S" + cstr(name))
ready = lambda status: msg(b"Z", status)
complete = lambda tag: msg(b"C", cstr(tag))
row = lambda v: msg(b"D", struct.pack("!h", 1) + struct.pack("!i", len(v)) + v)
error = lambda code, m: msg(b"E", b"SERROR\0" + b"C" + cstr(code) + b"M" + cstr(m) + b"\0")

# pg_startup
put("pg_startup", startup([("user", "app"), ("database", "app")]))
put("pg_startup", startup([("user", "app"), ("options", "-c search_path=x"), ("application_name", "psql")]) + query("SELECT 1"))
put("pg_startup", struct.pack("!ii", 8, 80877103))  # SSLRequest
put("pg_startup", struct.pack("!ii", 8, 80877103) + query("SELECT 1"))  # plaintext behind SSLRequest
put("pg_startup", struct.pack("!ii", 8, 80877104))  # GSSENCRequest
put("pg_startup", struct.pack("!iiii", 16, 80877102, 4242, 99))  # CancelRequest
put("pg_startup", struct.pack("!i", -8) + b"\0" * 4)


# pg_session: records of (direction byte, frame); even: client, odd: server
def session(*records):
    return b"".join(bytes([d]) + f for d, f in records)


C, S = 0, 1
put("pg_session", session((C, query("SELECT 1")), (S, row(b"1")), (S, complete("SELECT 1")), (S, ready(b"I"))))
put("pg_session", session((C, query("BEGIN")), (S, complete("BEGIN")), (S, ready(b"T")),
                          (C, query("COMMIT")), (S, complete("COMMIT")), (S, ready(b"I"))))
put("pg_session", session((C, parse("s1", "SELECT $1")), (C, bind("s1")), (C, describe_s("s1")), (C, execute), (C, sync),
                          (S, msg(b"1")), (S, msg(b"2")), (S, msg(b"t", b"\0\0")), (S, msg(b"n")),
                          (S, complete("SELECT 1")), (S, ready(b"I")),
                          (C, close_s("s1")), (C, sync), (S, msg(b"3")), (S, ready(b"I"))))
put("pg_session", session((C, parse("", "SELECT bad")), (C, bind("")), (C, execute), (C, sync),
                          (S, error("42703", "column does not exist")), (S, ready(b"I"))))
put("pg_session", session((C, query("LISTEN jobs")), (S, complete("LISTEN")), (S, ready(b"I")),
                          (C, query("UNLISTEN *")), (S, complete("UNLISTEN")), (S, ready(b"I"))))
put("pg_session", session((C, query("SET search_path TO a")), (S, complete("SET")), (S, ready(b"I"))))
put("pg_session", session((C, query("DISCARD ALL")), (C, query("DEALLOCATE ALL")), (C, query("DEALLOCATE s1"))))
put("pg_session", session((C, query("ALTER TABLE t ADD c int")), (S, complete("ALTER TABLE")), (S, ready(b"I"))))
put("pg_session", session((C, msg(b"d", b"1\t2\n")), (C, msg(b"c")), (C, msg(b"H")), (C, msg(b"X"))))


# mysql_packets
def lenenc(n):
    return bytes([n]) if n < 251 else b"\xfc" + struct.pack("<H", n)


caps = 0x00000200 | 0x00008000 | 0x00080000 | 0x00000008 | 0x00100000
hr = struct.pack("<IIB", caps, 1 << 24, 33) + b"\0" * 23 + cstr("app") + lenenc(20) + b"x" * 20 + cstr("app") + cstr("mysql_native_password")
put("mysql_packets", hr)
put("mysql_packets", struct.pack("<IIB", caps | 0x800, 1 << 24, 33) + b"\0" * 23)  # SSLRequest
greeting = b"\x0a" + cstr("10.11.6-MariaDB") + struct.pack("<I", 7) + b"a" * 8 + b"\0" + struct.pack("<H", 0xf7ff) + b"\x21" + struct.pack("<H", 2) + struct.pack("<H", 0x81bf) + b"\x15" + b"\0" * 10 + b"b" * 12 + b"\0" + cstr("mysql_native_password")
put("mysql_packets", greeting)
put("mysql_packets", b"\xff" + struct.pack("<H", 1045) + b"#28000Access denied")
put("mysql_packets", b"\xfe" + cstr("caching_sha2_password") + b"c" * 20 + b"\0")
put("mysql_packets", b"\x00\x01\x00\x02\x00\x00\x00")


# mysql_reply: kind byte, then packets
def pkt(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


ok = b"\x00\x00\x00\x02\x00\x00\x00"
eof = b"\xfe\x00\x00\x02\x00"
coldef = lenenc(3) + b"def" + b"\0" * 4 + lenenc(1) + b"a" + lenenc(1) + b"a" + b"\x0c" + b"\x21\x00" + struct.pack("<I", 11) + b"\x08\x00\x00\x00\x00\x00"
put("mysql_reply", b"\x80" + pkt(1, ok))
put("mysql_reply", b"\x80" + pkt(1, b"\x01") + pkt(2, coldef) + pkt(3, lenenc(1) + b"1") + pkt(4, b"\xfe\x00\x00\x02\x00\x00\x00"))
put("mysql_reply", b"\x00" + pkt(1, b"\x01") + pkt(2, coldef) + pkt(3, eof) + pkt(4, lenenc(1) + b"1") + pkt(5, eof))
put("mysql_reply", b"\x81" + pkt(1, b"\x00" + struct.pack("<IHHBH", 1, 1, 1, 0, 0)) + pkt(2, coldef) + pkt(3, coldef))
put("mysql_reply", b"\x80" + pkt(1, b"\xff" + struct.pack("<H", 1064) + b"#42000syntax"))
put("mysql_reply", b"\x80" + pkt(1, b"\xfb/etc/hosts"))
put("mysql_reply", b"\x84" + pkt(1, b"\xfe" + b"\0" * 4))

# sql_scanners
for sql in ["SELECT 1", "BEGIN READ ONLY; SELECT 1", "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
            "LISTEN x", "select pg_advisory_lock(1)", "CREATE TEMP TABLE t (a int)", "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SET search_path = a, b", "select set_config('a.b', 'c', false)", "RESET ALL", "DISCARD ALL", "DEALLOCATE \"x\"",
            "select $tag$ ; listen x $tag$", "select E'\\'' ; listen y", "/* c /* nested */ */ LISTEN z", "LOCK TABLES t WRITE",
            "SET @x := 1", "/*!40101 SET NAMES utf8 */", "SELECT GET_LOCK('a', 1)", "XA START 'x'", "select 'it''s', \"q\"\"q\" -- c\n",
            "BEGIN NOT ATOMIC SELECT 1; END", "HANDLER t OPEN", "SET SESSION TRANSACTION READ ONLY"]:
    put("sql_scanners", sql.encode())
put("sql_scanners", b"select '\xff\xfe unterminated")

# scram_server: client-first NUL client-final
put("scram_server", b"n,,n=,r=rOprNGfwEbeRWgbNEkqO\0c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
put("scram_server", b"y,,n=app,r=abc\0")
put("scram_server", b"p=tls-server-end-point,,n=,r=x\0c=eSws,r=x,p=AAAA")

# scram_client: server-first NUL server-final (the client's nonce is fixed for fuzzing)
N = b"fuzzNONCEfuzzNONCEfuzz"
put("scram_client", b"r=" + N + b"3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096\0v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
put("scram_client", b"r=" + N + b"x,s=AAAA,i=4294967295\0")
put("scram_client", b"r=" + N + b"x,s=AAAA,i=1000001\0e=other-error")
put("scram_client", b"r=someoneelse,s=AAAA,i=4096\0")

# mysql_auth: a 20-byte nonce then a client's scramble; AuthSwitchRequests as servers send them
NONCE = b"abcdefghijklmnopqrst"
put("mysql_auth", NONCE + bytes(range(20)))
put("mysql_auth", NONCE + bytes(range(32)))
put("mysql_auth", NONCE)
put("mysql_auth", b"\xfemysql_native_password\0" + NONCE + b"\0")
put("mysql_auth", b"\xfecaching_sha2_password\0" + NONCE + b"\0")
put("mysql_auth", b"\xfemysql_clear_password\0")

# auth_tokens: an RDS IAM token NUL a JWT (neither signed with the target's secrets)
IAM = (b"db.example.internal:5432/?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256"
       b"&X-Amz-Credential=AKIAFUZZ%2F20270115%2Fus-east-1%2Frds-db%2Faws4_request"
       b"&X-Amz-Date=20270115T080000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
       b"&X-Amz-Signature=" + b"0" * 64)
def b64url(raw):
    import base64
    return base64.urlsafe_b64encode(raw).rstrip(b"=")
JWT_BODY = b'{"sub":"app","iss":"https://issuer.example","aud":"sluice","exp":1900000000}'
for alg in [b"HS256", b"RS256", b"none", b"ES256"]:
    jwt = b64url(b'{"alg":"' + alg + b'","typ":"JWT"}') + b"." + b64url(JWT_BODY) + b".c2ln"
    put("auth_tokens", IAM + b"\0" + jwt)
put("auth_tokens", b"db.example.internal:5432/?Action=connect\0a.b.c")

# config: the committed examples and a few broken ones
for name in ["sluice.example.yaml", "demo.yaml.in"]:
    path = os.path.join(os.path.dirname(ROOT), "..", "config", name)
    if os.path.exists(path):
        with open(path, "rb") as f:
            put("config", f.read())
put("config", b"endpoints: []\n")
put("config", b"endpoints:\n  - name: w\n    listen: 127.0.0.1:6432\n    target_group: pg\ntarget_groups:\n  pg:\n    engine: postgres\n    instances: [db:5432]\nauth:\n  - username: app\n    secret: file:s.yaml#app\n")
put("config", b"a: &a [*a, *a]\n")
put("config", b"target_groups: {pg: {engine: mysql, instances: ['[::1]:99999']}}\n")

# pg_relay: a pool-size byte, then steps. A client request is (session, kind); 6/7 k: server k
# answers one/all; 8 k tag len body: a made-up server message; 9 k kind: a notice, parameter
# or notification; 10 k: server k closes; 11 p: a pause; 12 s: client s leaves.
def relay(*steps):
    return bytes(b for step in steps for b in step)


def raw(tag, body):
    return (8, 0, tag[0], len(body)) + tuple(body)


ANSWER = (7, 0)
S0, S1 = 0, 1
for pool in (0, 1):
    put("pg_relay", relay((pool,), (S0, 0), ANSWER, (S1, 0), ANSWER))  # two autocommit SELECTs
    put("pg_relay", relay((pool,), (S0, 1), ANSWER, (S1, 0), ANSWER, (S0, 2), ANSWER, ANSWER))
    put("pg_relay", relay((pool,), (S0, 8), ANSWER, (S1, 9, 0), (S1, 10, 0), ANSWER, (S0, 10, 0), ANSWER))
    put("pg_relay", relay((pool,), (S0, 1), ANSWER, (S0, 13), ANSWER, (S0, 11), ANSWER, (S0, 3), ANSWER))
    put("pg_relay", relay((pool,), (S0, 4), ANSWER, (S1, 0), ANSWER, (S0, 0), ANSWER, (S0, 7), ANSWER))
    put("pg_relay", relay((pool,), (S0, 6), ANSWER, (S1, 0), (11, 3), ANSWER, (S0, 15)))
    put("pg_relay", relay((pool,), (S0, 1), ANSWER, (10, 0), (S0, 0), ANSWER, (S0, 3), ANSWER))
    put("pg_relay", relay((pool,), (S0, 0), raw(b"Z", b"I"), ANSWER, (S1, 0), ANSWER))
    put("pg_relay", relay((pool,), (S0, 1), ANSWER, (12, 0), ANSWER, (11, 5), (S1, 0), ANSWER))
    put("pg_relay", relay((pool,), (S0, 0), (9, 0, 2), ANSWER, (9, 0, 0), (S1, 12), (S1, 11), ANSWER))
    put("pg_relay", relay((pool,), (S0, 9, 1), (S0, 12), (6, 0), (S1, 0), (6, 0), (S0, 11), ANSWER))
    put("pg_relay", relay((pool,), (S0, 1), ANSWER, raw(b"E", b"SERROR\0C57P01\0Mx\0\0"), (S1, 0), ANSWER))

# mysql_relay: the same steps; a made-up server packet is (8, k, seq, first byte, len, body),
# and a request's kinds are those of `My::request`.
def my_raw(seq, body):
    return (8, 0, seq, body[0], len(body) - 1) + tuple(body[1:])


for pool in (0, 1):
    put("mysql_relay", relay((pool,), (S0, 0), ANSWER, (S1, 0), ANSWER))
    put("mysql_relay", relay((pool,), (S0, 1), ANSWER, (S1, 0), ANSWER, (S0, 2), ANSWER, ANSWER))
    put("mysql_relay", relay((pool,), (S0, 4), ANSWER, (S1, 0), ANSWER, (S0, 0), ANSWER, (S0, 12), ANSWER))
    put("mysql_relay", relay((pool,), (S0, 6), ANSWER, (S1, 0), (11, 3), ANSWER, (S0, 7), ANSWER))
    put("mysql_relay", relay((pool,), (S0, 1), ANSWER, (10, 0), (S0, 0), ANSWER, (S0, 3), ANSWER))
    put("mysql_relay", relay((pool,), (S0, 1), ANSWER, (12, 0), ANSWER, (11, 5), (S1, 0), ANSWER))
    put("mysql_relay", relay((pool,), (S0, 9), ANSWER, (S0, 10), ANSWER, (S1, 8), (S1, 11), ANSWER))
    put("mysql_relay", relay((pool,), (S0, 5), ANSWER, (S0, 14), ANSWER, (S0, 2), (9, 0, 0), (S0, 0), ANSWER))
    put("mysql_relay", relay((pool,), (S0, 0), my_raw(1, b"\x00\x00\x00\x03\x00\x00\x00"), ANSWER, (S1, 0), ANSWER))
    put("mysql_relay", relay((pool,), (S0, 1), ANSWER, my_raw(0, b"\xff\x1f\x10#HY000x"), (S1, 15), (S0, 0), ANSWER))
