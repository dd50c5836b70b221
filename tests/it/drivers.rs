//! Real drivers through sluice: psycopg 3, pgjdbc and node-postgres under concurrent load on a
//! small pool, cancel requests from psycopg and pgjdbc, two users that must never share a
//! server connection, and LISTEN/NOTIFY from hundreds of sessions over one listening server
//! connection without pinning.
//!
//! The client programs live in `tests/it/drivers/` next to the test modules; each checks every
//! result it gets and prints a summary line that the tests compare with what PostgreSQL (asked
//! directly) holds. While a load runs, the tests sample the server's backends to prove sluice
//! stays within its pool size.

mod cancel;
mod jdbc;
pub mod migration;
mod node;
mod notify;
mod psycopg;
mod users;

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};
use crate::support::tools::{self, tail};

pub const POOL_SIZE: u32 = 4;

pub fn script(name: &str) -> PathBuf {
    tools::repo_root().join("tests/it/drivers").join(name)
}

pub fn proxy(pg: &PgServer) -> Sluice {
    Sluice::start_for(
        pg,
        ProxyOptions {
            pool_size: POOL_SIZE,
            borrow_timeout: "60s".into(),
            ..ProxyOptions::default()
        },
    )
}

/// What a client program did, and the most `app` backends seen on `appdb` while it ran.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub max_backends: i64,
    pub samples: usize,
}

/// The JSON summary a client program prints after `RESULT `.
#[derive(Debug)]
pub struct Summary(pub serde_json::Value);

impl Summary {
    /// An integer field; panics (showing the summary) if it is missing.
    pub fn int(&self, key: &str) -> i64 {
        self.0[key]
            .as_i64()
            .unwrap_or_else(|| panic!("{key} in {}", self.0))
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Index<&str> for Summary {
    type Output = serde_json::Value;
    fn index(&self, key: &str) -> &serde_json::Value {
        &self.0[key]
    }
}

impl Run {
    pub fn result(&self) -> Summary {
        Summary(serde_json::from_str(self.line("RESULT ")).unwrap())
    }

    /// The rest of the stdout line starting with `prefix`.
    pub fn line(&self, prefix: &str) -> &str {
        let found = self.stdout.lines().find_map(|l| l.strip_prefix(prefix));
        found.unwrap_or_else(|| panic!("no {prefix:?} line in output:\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} max_backends={} samples={}\n--- stdout\n{}\n--- stderr\n{}",
            self.ok,
            self.max_backends,
            self.samples,
            tail(&self.stdout, 8000),
            tail(&self.stderr, 16000)
        )
    }
}

/// Runs `cmd` to completion (killed after `limit`) while sampling `backend_count(app, appdb)`.
pub fn run_sampling(pg: &PgServer, cmd: Command, limit: Duration) -> Run {
    run_sampling_with(cmd, limit, || pg.backend_count(APP.0, APPDB))
}

/// Runs `cmd` to completion (killed after `limit`) while sampling `count` (server connections).
pub fn run_sampling_with(mut cmd: Command, limit: Duration, mut count: impl FnMut() -> i64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let started = Instant::now();
    let (mut max_backends, mut samples) = (0, 0);
    let status = wait_limited(&mut child, limit, || {
        max_backends = max_backends.max(count());
        samples += 1;
    });
    let run = Run {
        ok: status.is_some_and(|s| s.success()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        max_backends,
        samples,
    };
    assert!(
        status.is_some(),
        "{cmd:?} did not finish within {limit:?}:\n{run}"
    );
    eprintln!(
        "{:?} took {:?}; max app backends {} over {} samples",
        cmd.get_program(),
        started.elapsed(),
        run.max_backends,
        run.samples
    );
    run
}

/// Waits for `child`, calling `tick` every 20 ms; kills it after `limit` (then `None`).
pub fn wait_limited(
    child: &mut Child,
    limit: Duration,
    mut tick: impl FnMut(),
) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tick();
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn assert_pool_bounded(run: &Run) {
    assert!(run.samples >= 3, "too few samples to judge:\n{run}");
    assert!(
        run.max_backends <= i64::from(POOL_SIZE),
        "{} app backends exceed pool size {POOL_SIZE}:\n{run}",
        run.max_backends
    );
    assert!(run.max_backends >= 1, "no backend ever seen:\n{run}");
}

/// `select` through psql straight to PostgreSQL (not through sluice), as one `a|b|c` line.
pub fn direct(pg: &PgServer, sql: &str) -> String {
    pg.psql_db(APPDB, sql)
}
