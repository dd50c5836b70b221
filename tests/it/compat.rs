//! Drivers' own upstream test suites (`../shared/compat`, or `$SLUICE_COMPAT`), run against a
//! private server directly and through sluice: every test that passes direct must pass through
//! sluice, except those in `tests/it/compat/expected.txt`, each with a reason from a closed list.
//! Without the snapshots (a plain clone) the suites are skipped, and the test says so.

mod node_postgres;
mod pymysql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::support::tools::repo_root;

/// Where the snapshots are, if they are.
fn compat_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SLUICE_COMPAT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/compat"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: the drivers' suites are not here ({}); set SLUICE_COMPAT to the snapshot \
             folder (see ../shared/compat/README.md) to run them",
            dir.display()
        );
        None
    }
}

/// Why a test may fail through sluice and pass direct: the closed list.
const REASONS: [&str; 3] = ["server-catalog", "backend-pid", "wait-timeout"];

/// The expected differences of `suite`: test id → reason.
fn expected(suite: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("tests/it/compat/expected.txt")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(s), Some(test), Some(reason)) = (words.next(), words.next(), words.next()) else {
            panic!("expected.txt: malformed line {line:?}");
        };
        assert!(
            REASONS.contains(&reason),
            "expected.txt: reason {reason:?} is not one of {REASONS:?}"
        );
        assert!(line.contains("--"), "expected.txt: {line:?} says no why");
        if s == suite {
            out.insert(test.to_owned(), reason.to_owned());
        }
    }
    out
}

/// Per-test outcomes of one run: test id → passed.
type Outcomes = BTreeMap<String, bool>;

/// Where a rerun goes.
#[derive(Clone, Copy, Debug)]
enum Via {
    Direct,
    Sluice,
}

/// Runs once more what would fail the comparison only by timing: tests that passed direct and
/// failed through sluice without being expected to (run again through sluice), and expected
/// differences that failed direct (run again direct). The suites have timing-bound cases and CI
/// machines are busy; the second outcome stands.
fn rerun_differences(
    suite: &str,
    direct: &mut Outcomes,
    proxied: &mut Outcomes,
    mut rerun: impl FnMut(&[String], Via) -> Outcomes,
) {
    let expected = expected(suite);
    let through_sluice: Vec<String> = direct
        .iter()
        .filter(|(t, ok)| **ok && proxied.get(*t) != Some(&true) && !expected.contains_key(*t))
        .map(|(t, _)| t.clone())
        .collect();
    let again_direct: Vec<String> = expected
        .keys()
        .filter(|t| direct.get(*t) == Some(&false))
        .cloned()
        .collect();
    for (ids, via, outcomes) in [
        (through_sluice, Via::Sluice, &mut *proxied),
        (again_direct, Via::Direct, &mut *direct),
    ] {
        if ids.is_empty() {
            continue;
        }
        eprintln!("{suite}: running again {via:?}: {ids:?}");
        for (test, ok) in rerun(&ids, via) {
            outcomes.insert(test, ok);
        }
    }
}

/// Compares two runs of `suite`: what passed direct passes through sluice, but for the expected
/// differences, each of which must really differ (the list stays true).
fn compare(suite: &str, direct: &Outcomes, proxied: &Outcomes) {
    let expected = expected(suite);
    let passed = |o: &Outcomes| o.values().filter(|p| **p).count();
    eprintln!(
        "{suite}: {} tests; passed {} direct, {} through sluice",
        direct.len(),
        passed(direct),
        passed(proxied)
    );
    assert!(
        passed(direct) >= 50,
        "{suite}: too few tests passed direct: {direct:?}"
    );
    let mut worse = BTreeSet::new();
    for (test, ok) in direct {
        if *ok && !proxied.get(test).copied().unwrap_or(false) && !expected.contains_key(test) {
            worse.insert(test.clone());
        }
    }
    let stale: Vec<_> = expected
        .keys()
        .filter(|t| direct.get(*t) != Some(&true) || proxied.get(*t) != Some(&false))
        .collect();
    assert!(
        worse.is_empty(),
        "{suite}: pass direct, fail through sluice: {worse:#?}"
    );
    assert!(
        stale.is_empty(),
        "{suite}: listed in expected.txt but not a difference now: {stale:?}"
    );
}

/// Test outcomes from a JUnit XML report (pytest's and mocha's shape): `classname.name` → passed;
/// skipped tests are left out.
fn junit(xml: &str) -> Outcomes {
    let mut out = Outcomes::new();
    for case in xml.split("<testcase ").skip(1) {
        let attr = |name: &str| {
            // Preceded by a space: `name="` is also the end of `classname="`.
            format!(" {case}")
                .split_once(&format!(" {name}=\""))
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_owned())
                .unwrap_or_default()
        };
        let head_end = case.find('>').unwrap_or(case.len());
        let self_closing = case[..head_end].ends_with('/');
        let body = if self_closing {
            ""
        } else {
            case.split("</testcase>").next().unwrap_or("")
        };
        if body.contains("<skipped") {
            continue;
        }
        let failed = body.contains("<failure") || body.contains("<error");
        out.insert(format!("{}.{}", attr("classname"), attr("name")), !failed);
    }
    out
}
