//! Protocol details drivers read at login, through sluice and direct: the client_encoding
//! spelling (drivers pick their codec from it) and a backend pid that can never name a real
//! server process.

use std::process::Command;

use crate::drivers::script;
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};
use crate::support::tools::{self, command_output};

/// Encoding names as clients write them: every canonical name, and aliases in several spellings.
const ENCODINGS: &[&str] = &[
    "UTF8",
    "utf8",
    "utf-8",
    "Unicode",
    "UNICODE",
    "SQL_ASCII",
    "sql-ascii",
    "EUC_JP",
    "eucjp",
    "euc-jp",
    "EUC_CN",
    "euc_kr",
    "EUCTW",
    "euc-jis-2004",
    "MULE_INTERNAL",
    "LATIN1",
    "latin-1",
    "iso-8859-1",
    "ISO8859_2",
    "latin10",
    "iso885916",
    "ISO_8859_5",
    "iso-8859-7",
    "WIN1250",
    "windows-1251",
    "win",
    "alt",
    "WIN866",
    "win874",
    "KOI8",
    "koi8-r",
    "KOI8U",
    "SJIS",
    "shift_jis",
    "mskanji",
    "Shift_JIS_2004",
    "BIG5",
    "win950",
    "GBK",
    "cp936",
    "win936",
    "UHC",
    "GB18030",
    "JOHAB",
    "tcvn",
    "vscii",
    "abc",
    "klingon",
];

fn startup(port: u16) -> String {
    let (status, out, err) = command_output(
        Command::new(tools::python())
            .arg(script("psycopg_startup.py"))
            .args(["127.0.0.1", &port.to_string(), APPDB, APP.0, APP.1])
            .args(ENCODINGS),
    );
    assert!(status.success(), "{out}\n{err}");
    out
}

#[test]
fn login_reports_what_the_server_would() {
    let pg = PgServer::start();
    let sluice = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let direct = startup(pg.port());
    let proxied = startup(sluice.port());
    let encodings = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("ENCODING "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(encodings(&direct).len(), ENCODINGS.len(), "{direct}");
    assert!(direct.contains("ENCODING eucjp EUC_JP"), "{direct}");
    assert_eq!(encodings(&proxied), encodings(&direct));

    // A pid no Linux process can have (pid_max is at most 2^22), so pg_terminate_backend() of
    // the pid a driver was given can never reach another client's server backend.
    let pid: i64 = proxied
        .lines()
        .find_map(|l| l.strip_prefix("PID "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(pid > 4_194_304, "pid {pid}");
    let terminated = pg.psql_db(APPDB, &format!("select pg_terminate_backend({pid})"));
    assert!(terminated.is_empty() || terminated == "f", "{terminated}");
}

/// What a connection gets for bytes that are no startup packet (node-postgres, ended before it
/// connected, sends its Terminate ahead of the startup): PostgreSQL closes without a word, and a
/// driver that read an error would raise it.
#[test]
fn a_bad_startup_length_is_closed_without_an_answer() {
    use std::io::{Read, Write};
    let pg = PgServer::start();
    let sluice = Sluice::start_for(&pg, ProxyOptions::pool(1));
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend_from_slice(b"user\0app\0database\0appdb\0\0");
    let len = u32::try_from(startup.len()).unwrap().to_be_bytes();
    startup[..4].copy_from_slice(&len);
    for port in [pg.port(), sluice.port()] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(b"X\0\0\0\x04").unwrap();
        s.write_all(&startup).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.is_empty(), "port {port} answered {got:?}");
    }
}

/// A startup parameter the server refuses (`statement_timeout=banana`): direct, the login fails
/// and nothing runs. Through sluice the login is answered from the pool's greeting, so the
/// refusal comes at the first query; that query must never run (the parameter replay is
/// answered before the client's messages go out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_startup_parameter_runs_nothing() {
    let pg = PgServer::start();
    pg.psql_db(
        APPDB,
        "create table refused (n int); grant all on refused to app;",
    );
    let sluice = Sluice::start_for(&pg, ProxyOptions::pool(2));
    let mut tried = 0;
    for _ in 0..20 {
        let dsn = format!(
            "host=127.0.0.1 port={} user={} password={} dbname={APPDB} \
             options='-c statement_timeout=banana'",
            sluice.port(),
            APP.0,
            APP.1
        );
        let Ok((client, conn)) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await else {
            continue;
        };
        tokio::spawn(conn);
        let result = client.simple_query("insert into refused values (1)").await;
        assert!(result.is_err(), "the insert ran: {result:?}");
        tried += 1;
    }
    // sluice answers the login from its cache: the refusal comes at the first query.
    assert_eq!(tried, 20, "logins refused");
    assert_eq!(pg.psql_db(APPDB, "select count(*) from refused"), "0");
}
