//! The MySQL engine through a MariaDB writer failover, with PyMySQL clients.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use super::cluster_config;
use crate::my_proxy::python;
use crate::support::cluster::MariaCluster;
use crate::support::mariadb::MY_APPDB;
use crate::support::sluice::Sluice;

#[test]
fn mariadb_writer_failover_keeps_idle_clients_and_their_commits() {
    let mut cluster = MariaCluster::start();
    cluster.primary().sql(&format!(
        "CREATE TABLE {MY_APPDB}.t (id int PRIMARY KEY, who text)"
    ));
    cluster.wait_caught_up();
    let proxy = Sluice::start(&cluster_config("mysql", &cluster.addrs(), "100ms", ""));
    let mut child = python("pymysql_failover.py", proxy.port(), &[MY_APPDB])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        seen.push(line.clone());
        match line.as_str() {
            "READY" => {
                cluster.wait_caught_up();
                cluster.kill9(0);
                writeln!(stdin, "KILLED").unwrap();
            }
            "WAITING" => {
                cluster.promote(1);
                writeln!(stdin, "PROMOTED").unwrap();
            }
            _ => {}
        }
    }
    let out = child.wait_with_output().unwrap();
    let all = seen.join("\n");
    assert!(
        out.status.success() && all.contains("RESULT "),
        "{all}\n{}\nsluice log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log_contents()
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
