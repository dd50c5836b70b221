//! The MySQL engine on a replicated MariaDB cluster, with PyMySQL clients: through a writer
//! failover, and on the reader and read_write_split endpoints.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use super::cluster_config;
use crate::my_proxy::python;
use crate::support::cluster::MariaCluster;
use crate::support::mariadb::{MY_APPDB, MariaOptions};
use crate::support::sluice::Sluice;

#[test]
fn mariadb_writer_failover_keeps_idle_clients_and_their_commits() {
    let mut cluster = MariaCluster::start();
    cluster.primary().sql(&format!(
        "CREATE TABLE {MY_APPDB}.t (id int PRIMARY KEY, who text)"
    ));
    cluster.wait_caught_up();
    let proxy = Sluice::start(&cluster_config("mysql", &cluster.addrs(), "100ms", ""));
    let all = drive(
        python("pymysql_failover.py", proxy.port(), &[MY_APPDB]),
        &proxy,
        |line| match line {
            "READY" => {
                cluster.wait_caught_up();
                cluster.kill9(0);
                Some("KILLED")
            }
            "WAITING" => {
                cluster.promote(1);
                Some("PROMOTED")
            }
            _ => None,
        },
    );
    println!("{all}");
    let count = |who: &str| {
        cluster
            .member(1)
            .sql(&format!(
                "SELECT count(*) FROM {MY_APPDB}.t WHERE who = '{who}'"
            ))
            .trim()
            .to_owned()
    };
    assert_eq!(count("before"), "4", "committed before the kill");
    assert_eq!(count("after"), "4");
    assert_eq!(count("waited"), "3");
    assert_eq!(count("cut"), "0");
}

#[test]
fn mariadb_reader_and_split_endpoints_spread_skip_laggards_and_read_their_writes() {
    let mut cluster = MariaCluster::start_with(2, MariaOptions::default());
    cluster
        .primary()
        .sql(&format!("CREATE TABLE {MY_APPDB}.r (id int)"));
    cluster.wait_caught_up();
    let proxy = Sluice::start(&cluster_config("mysql", &cluster.addrs(), "100ms", ""));
    let ports: Vec<String> = proxy
        .listen_addrs()
        .iter()
        .map(|a| a.port().to_string())
        .collect();
    let members: Vec<String> = (0..3)
        .map(|i| cluster.member(i).port().to_string())
        .collect();
    let mut args = vec![MY_APPDB, &ports[1], &ports[2]];
    args.extend(members.iter().map(String::as_str));
    drive(
        python("pymysql_routing.py", proxy.port(), &args),
        &proxy,
        |line| match line {
            "STALL_BOTH" => {
                cluster.stop_sql_thread(1);
                cluster.stop_sql_thread(2);
                Some("STALLED")
            }
            "RESUME_R2" => {
                cluster.start_sql_thread(2);
                Some("RESUMED")
            }
            "RESUME_R1" => {
                cluster.start_sql_thread(1);
                cluster.wait_caught_up();
                Some("RESUMED")
            }
            _ => None,
        },
    );
}

/// Runs a check script that the test drives step by step: each line it prints goes to `step`,
/// whose answer (if any) is written back to its stdin. Panics unless the script passed;
/// returns everything it printed.
pub(crate) fn drive(
    mut cmd: Command,
    proxy: &Sluice,
    mut step: impl FnMut(&str) -> Option<&'static str>,
) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        if let Some(reply) = step(&line) {
            writeln!(stdin, "{reply}").unwrap();
        }
        seen.push(line);
    }
    let out = child.wait_with_output().unwrap();
    let all = seen.join("\n");
    assert!(
        out.status.success() && all.contains("RESULT "),
        "{all}\n{}\nsluice log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log_contents()
    );
    all
}
