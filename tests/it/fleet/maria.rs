//! The fleet on MariaDB: sysbench through three processes, the processlist counting.

use std::path::Path;
use std::process::{Child, Stdio};

use super::{Drive, Member, finished, number, three_busy_then_two_stop};
use crate::support::mariadb::{APP, MONITOR, MariaDb, client, sysbench};
use crate::support::sluice::{ProxyOptions, config_for_mariadb};
use crate::support::tools::command_output;

/// The fleet's connections (pools as `app`; probes and advertising connections as `monitor`)
/// from one `SHOW PROCESSLIST` as root over the socket, its own row left out.
fn fleet_threads(socket: &Path) -> usize {
    let (status, out, err) = command_output(
        client()
            .args(["-u", "root"])
            .arg(format!("--socket={}", socket.display()))
            .args(["-e", "SHOW PROCESSLIST"]),
    );
    assert!(status.success(), "SHOW PROCESSLIST: {err}");
    out.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|f| matches!(f.get(1), Some(&u) if u == APP.0 || u == MONITOR.0))
        .filter(|f| f.get(4) != Some(&"Daemon"))
        .count()
}

fn load(member: &Member, secs: u32) -> Child {
    sysbench(member.proxy.port(), 1000)
        .args([
            "--threads=40",
            &format!("--time={secs}"),
            "--report-interval=0",
        ])
        .args(["--db-ps-mode=disable", "oltp_point_select", "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// sysbench's transaction count, after checking it ended well with no error.
fn transactions(child: Child, who: &str) -> u64 {
    let text = finished(child, who);
    assert_eq!(number(&text, "ignored errors:"), Some(0), "{who}:\n{text}");
    number(&text, "transactions:").unwrap_or_else(|| panic!("{who}: no transaction count:\n{text}"))
}

#[test]
fn three_processes_share_twelve_connections_and_the_last_one_grows() {
    let db = MariaDb::start();
    let (status, out, err) =
        command_output(sysbench(db.port(), 1000).args(["oltp_point_select", "prepare"]));
    assert!(status.success(), "sysbench prepare: {out}\n{err}");
    let opts = ProxyOptions {
        pool_size: 20,
        borrow_timeout: "60s".into(),
        client_auth_type: "mysql_native_password".into(),
        health_interval: Some("100ms".into()),
        ..ProxyOptions::default()
    };
    let members: Vec<Member> = (0..3)
        .map(|_| {
            let (yaml, secrets) = config_for_mariadb(&db, &opts);
            Member::start(&yaml, &secrets)
        })
        .collect();
    let socket = db.socket();
    let drive = Drive {
        load,
        finish: transactions,
        count: move || fleet_threads(&socket),
        // Each member holds a probe and an advertising connection.
        share_of_three: 2.0,
        alone: 10.0,
    };
    three_busy_then_two_stop(members, drive);
}
