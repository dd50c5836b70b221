//! Client tools and small helpers: the Python driver venv (psycopg, PyMySQL,
//! mysql-connector-python), node-postgres, pgjdbc, java, free ports, running commands.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

/// The repository root (where Cargo.toml lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// True when the tests run as root (uid 0), read from /proc/self/status.
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().next().map(|uid| uid == "0"))
            .unwrap_or(false)
    })
}

/// A loopback TCP port that was free a moment ago. Never hands out the same port twice
/// within one test process, so parallel tests do not collide with each other.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut given = given.lock().unwrap_or_else(|e| e.into_inner());
        if given.insert(port) {
            return port;
        }
    }
    panic!("could not find a free loopback port");
}

/// Runs a command to completion: (status, stdout, stderr). Panics only if it cannot be spawned.
pub fn command_output(cmd: &mut Command) -> (ExitStatus, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command and panics (with its output) unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let (status, stdout, stderr) = command_output(cmd);
    assert!(
        status.success(),
        "{cmd:?} failed with {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

/// Finds an executable on PATH (plus the sbin directories, where Debian puts pgbouncer).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Like [`which`] but panics with an install hint when the tool is missing.
pub fn require(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("`{name}` not found; run scripts/test to install it"))
}

/// The `java` executable.
pub fn java() -> PathBuf {
    require("java")
}

/// Debian's pgjdbc driver (package libpostgresql-jdbc-java).
pub fn pgjdbc_jar() -> PathBuf {
    let jar = PathBuf::from("/usr/share/java/postgresql.jar");
    assert!(
        jar.is_file(),
        "{} missing; install libpostgresql-jdbc-java (scripts/test does)",
        jar.display()
    );
    jar
}

/// The venv directory: `$SLUICE_VENV`, else `<repo>/target/test-venv`.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("SLUICE_VENV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/test-venv"))
}

/// What the venv holds (scripts/test installs the same list): psycopg 3, PyMySQL (which needs
/// cryptography for caching_sha2_password / sha256_password over plain TCP) and
/// mysql-connector-python, boto3 (RDS IAM auth tokens, minted as Lambda code does), moto's
/// Secrets Manager server, and PyYAML with kubernetes-validate for deploy/check.py.
const PY_PACKAGES: [&str; 11] = [
    "psycopg[binary]",
    "asyncpg",
    "pytest",
    "PyMySQL",
    "mysql-connector-python",
    "cryptography",
    "boto3",
    "moto[server]",
    "PyYAML",
    "kubernetes-validate",
    "sslyze==6.3.1",
];
const PY_IMPORTS: &str = "import psycopg, asyncpg, pytest, pymysql, mysql.connector, cryptography, boto3, \
     moto.server, yaml, kubernetes_validate, sslyze";

/// A python interpreter with `PY_PACKAGES` installed. The venv is created (or, when a package
/// is missing, e.g. in a venv from before it was added, completed) at most once per process,
/// under an flock shared with scripts/test, so parallel test binaries do not race.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = venv_dir();
            let python = venv.join("bin/python");
            if has_drivers(&python) {
                return python;
            }
            if let Some(parent) = venv.parent() {
                std::fs::create_dir_all(parent).expect("create venv parent dir");
            }
            let lock = venv.with_extension("lock");
            // Only a venv whose python no longer runs is rebuilt: pip completes a working one.
            let script = r#"set -e
venv="$1" imports="$2"
shift 2
if ! "$venv/bin/python" -c "$imports" >/dev/null 2>&1; then
    if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "$@"
fi"#;
            run_ok(
                Command::new("flock")
                    .arg(&lock)
                    .args(["bash", "-c", script, "make-venv"])
                    .arg(&venv)
                    .arg(PY_IMPORTS)
                    .args(PY_PACKAGES),
            );
            assert!(
                has_drivers(&python),
                "venv at {} lacks one of {PY_PACKAGES:?}",
                venv.display()
            );
            python
        })
        .clone()
}

fn has_drivers(python: &Path) -> bool {
    python.is_file()
        && Command::new(python)
            .args(["-c", PY_IMPORTS])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The node-postgres install dir: `$SLUICE_NODE`, else `<repo>/target/test-node`.
pub fn node_dir() -> PathBuf {
    std::env::var_os("SLUICE_NODE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/test-node"))
}

/// The `node` executable and the `node_modules` dir to put in `NODE_PATH` so that scripts
/// outside it can `require('pg')`. Installs `tests/it/drivers/node/package-lock.json` with
/// `npm ci` at most once per process, under an flock shared with scripts/test. `installed.lock`
/// is copied only after a successful `npm ci`, so an interrupted install is redone, and so is
/// one made from an older lock.
pub fn node() -> (PathBuf, PathBuf) {
    static NODE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    NODE.get_or_init(|| {
        let node = require("node");
        let dir = node_dir();
        npm_ci(&repo_root().join("tests/it/drivers/node"), &dir);
        (node, dir.join("node_modules"))
    })
    .clone()
}

/// Installs `src`'s package.json and package-lock.json into `dir` with `npm ci`, unless `dir`
/// already holds that lock (`installed.lock`, copied only after a successful install).
pub fn npm_ci(src: &Path, dir: &Path) {
    let lock = src.join("package-lock.json");
    let fresh = || match (
        std::fs::read(dir.join("installed.lock")),
        std::fs::read(&lock),
    ) {
        (Ok(installed), Ok(wanted)) => installed == wanted,
        _ => false,
    };
    if !fresh() {
        require("npm");
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).expect("create node dir parent");
        }
        run_ok(
            Command::new("flock")
                .arg(dir.with_extension("lock"))
                .args(["bash", "-c", NPM_CI, "npm-ci"])
                .arg(src)
                .arg(dir),
        );
        assert!(fresh(), "npm ci into {} did not finish", dir.display());
    }
}

/// `npm ci` of SRC's package.json + lock into DIR unless DIR already holds that lock; the same
/// steps as scripts/test.
const NPM_CI: &str = r#"set -e
src="$1" dir="$2"
if ! cmp -s "$src/package-lock.json" "$dir/installed.lock"; then
    mkdir -p "$dir"
    rm -f "$dir/installed.lock"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$src/package-lock.json" "$dir/installed.lock"
fi"#;

/// The last lines of `text` within about `max` bytes (for failure messages; never panics).
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = &text[start..];
    match (start, cut.find('\n')) {
        (0, _) | (_, None) => cut,
        (_, Some(nl)) => &cut[nl + 1..],
    }
}

/// Appends `text` to an existing file (keeps its owner, e.g. `postgres`).
pub fn append_file(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// Resident memory of a process in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sockets a process holds open (its listeners, clients and server connections), from /proc.
pub fn open_sockets(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|link| link.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Pids whose parent is `parent`, from /proc.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// (state, ppid) from /proc/<pid>/stat; the command name may hold spaces and parentheses, so
/// the fields are counted from the last `)`.
pub fn stat_fields(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}
