"""IAM and JWT logins through sluice as Lambda code and pods make them: boto3's
generate_db_auth_token (good, reused, expired, forged, wrong user, wrong host or port) and
JWTs the test minted, sent with psycopg or PyMySQL over TLS. Prints one JSON object: each
case's outcome, and every token used (so the test can search sluice's log for them)."""

import datetime
import json
import sys

import boto3
import botocore.auth

cfg = json.loads(sys.argv[1])
engine, port, ca = cfg["engine"], cfg["port"], cfg["ca"]
secrets = []


def iam_token(user=None, host=None, token_port=None, secret=None, at=None):
    client = boto3.client(
        "rds",
        region_name=cfg["region"],
        aws_access_key_id=cfg["key_id"],
        aws_secret_access_key=secret or cfg["secret"],
    )
    saved = botocore.auth.get_current_datetime
    if at is not None:
        botocore.auth.get_current_datetime = lambda *a, **k: at
    try:
        token = client.generate_db_auth_token(
            DBHostname=host or cfg["iam_host"],
            Port=token_port or port,
            DBUsername=user or cfg["iam_user"],
        )
    finally:
        botocore.auth.get_current_datetime = saved
    secrets.append(token)
    return token


def login(user, password, tls=True):
    """The database user the session runs as, or the error code sluice answered with."""
    if engine == "postgres":
        import psycopg

        ssl = {"sslmode": "verify-ca", "sslrootcert": ca} if tls else {"sslmode": "disable"}
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=user, password=password,
                dbname="appdb", connect_timeout=10, **ssl,
            ) as conn:
                return conn.execute("select current_user").fetchone()[0]
        except psycopg.OperationalError as e:
            text = str(e)
            if "password authentication failed" in text:
                return "28P01"
            if "requires SSL" in text:
                return "28000"
            return "other: " + text
    import pymysql

    ssl = {"ssl_ca": ca, "ssl_verify_cert": True, "ssl_verify_identity": False} if tls else {"ssl_disabled": True}
    try:
        conn = pymysql.connect(
            host="127.0.0.1", port=port, user=user, password=password,
            database="appdb", connect_timeout=10, **ssl,
        )
    except pymysql.err.OperationalError as e:
        return str(e.args[0]) if e.args[0] in (1045, 3159) else repr(e)
    with conn:
        with conn.cursor() as cur:
            cur.execute("select current_user()")
            return cur.fetchone()[0].split("@")[0]


now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
good = iam_token()
cases = {
    "iam_good": login(cfg["iam_user"], good),
    "iam_reused": [login(cfg["iam_user"], good) for _ in range(3)],
    "iam_plaintext": login(cfg["iam_user"], good, tls=False),
    "iam_wrong_user": login(cfg["iam_user"], iam_token(user="app")),
    "iam_wrong_host": login(cfg["iam_user"], iam_token(host="other.proxy.example.com")),
    "iam_wrong_port": login(cfg["iam_user"], iam_token(token_port=port + 1)),
    "iam_forged": login(cfg["iam_user"], iam_token(secret="not-the-real-secret-key-0123456789")),
    "iam_expired": login(cfg["iam_user"], iam_token(at=now - datetime.timedelta(minutes=20))),
    "iam_from_the_future": login(cfg["iam_user"], iam_token(at=now + datetime.timedelta(minutes=20))),
    "jwt_good": login(cfg["jwt_user"], cfg["jwts"]["good"]),
    "jwt_other_user": login(cfg["jwt_user"], cfg["jwts"]["other_user"]),
    "jwt_expired": login(cfg["jwt_user"], cfg["jwts"]["expired"]),
    "jwt_stranger": login(cfg["jwt_user"], cfg["jwts"]["stranger"]),
    "password_user": login(cfg["password_user"][0], cfg["password_user"][1]),
}
print(json.dumps({"cases": cases, "secrets": secrets}))
