//! node-postgres' own integration tests (the snapshot's `packages/pg/test/integration`, run with
//! that snapshot's `lib` and the published sibling packages at its versions), against PostgreSQL
//! directly and through sluice. Each test file is a suite that stops at its first failure, so a
//! file is one test here; the failing case's name goes to the log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Outcomes, Via, compare, compat_dir, rerun_differences};
use crate::drivers::wait_limited;
use crate::support::postgres::{APP, APPDB, PgServer};
use crate::support::sluice::{ProxyOptions, Sluice};
use crate::support::tools::{self, repo_root, run_ok};

/// The suite's own cases time out after 5 s; a file that waits for an event that never comes
/// through sluice (gh-issues/130) costs this much.
const FILE_LIMIT: Duration = Duration::from_secs(20);

/// Every `*-tests.js` under `dir`, sorted.
fn test_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            test_files(&path, out);
        } else if path.to_string_lossy().ends_with("-tests.js") {
            out.push(path);
        }
    }
}

/// Runs one test file against `port`; whether it passed, and the case that failed.
fn run_file(node: &Path, pg: &Path, file: &Path, port: u16) -> (bool, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(node)
        .current_dir(pg)
        .arg(file)
        .envs([
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port.to_string()),
            ("PGUSER", APP.0),
            ("PGPASSWORD", APP.1),
            ("PGDATABASE", APPDB),
        ])
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let status = wait_limited(&mut child, FILE_LIMIT, || {});
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    let failed_case = output
        .lines()
        .find(|l| l.contains("FAILED!") || l.contains("did not complete"))
        .unwrap_or(if status.is_none() { "timed out" } else { "" })
        .trim()
        .to_owned();
    let ok = status.is_some_and(|s| s.success());
    let code = status.map_or("timed out".to_owned(), |s| s.to_string());
    let detail = if ok {
        String::new()
    } else {
        format!("{failed_case} ({code})\n{}", tools::tail(&output, 1500))
    };
    (ok, detail)
}

fn run(node: &Path, pg: &Path, files: &[PathBuf], port: u16, what: &str) -> Outcomes {
    let mut out = Outcomes::new();
    for file in files {
        let id = file
            .strip_prefix(pg)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (ok, detail) = run_file(node, pg, file, port);
        if !ok {
            eprintln!("{what}: FAILED {id}: {detail}");
        }
        out.insert(id, ok);
    }
    out
}

#[test]
fn node_postgres_suite_direct_and_through_sluice() {
    let Some(compat) = compat_dir() else { return };
    let node = tools::require("node");
    let dir = repo_root().join("target/test-node-compat");
    tools::npm_ci(&repo_root().join("tests/it/compat/node"), &dir);
    // A fresh copy of the snapshot's package next to the installed node_modules.
    let pg_dir = dir.join("pg");
    let _ = std::fs::remove_dir_all(&pg_dir);
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(compat.join("node-postgres/packages/pg"))
            .arg(&pg_dir),
    );
    let mut files = Vec::new();
    test_files(&pg_dir.join("test/integration"), &mut files);
    assert!(files.len() >= 50, "{} test files", files.len());
    // To look at a few files only (their comparison then proves nothing: it is skipped).
    let only = std::env::var("SLUICE_COMPAT_ONLY").unwrap_or_default();
    if !only.is_empty() {
        files.retain(|f| f.to_string_lossy().contains(&only));
    }

    let server = PgServer::start();
    let sluice = Sluice::start_for(&server, ProxyOptions::pool(4));
    let mut direct = run(&node, &pg_dir, &files, server.port(), "direct");
    let mut proxied = run(&node, &pg_dir, &files, sluice.port(), "sluice");
    rerun_differences("node-postgres", &mut direct, &mut proxied, |ids, via| {
        let again: Vec<PathBuf> = ids.iter().map(|id| pg_dir.join(id)).collect();
        match via {
            Via::Direct => run(&node, &pg_dir, &again, server.port(), "direct again"),
            Via::Sluice => run(&node, &pg_dir, &again, sluice.port(), "sluice again"),
        }
    });
    if only.is_empty() {
        compare("node-postgres", &direct, &proxied);
    }
}
