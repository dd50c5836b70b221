//! The MySQL engine on a replicated MariaDB cluster, with PyMySQL clients: through a writer
//! failover, and on the reader and read_write_split endpoints.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

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
    let mut child = python("pymysql_routing.py", proxy.port(), &args)
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
        let reply = match line.as_str() {
            "STALL_BOTH" => {
                cluster.stop_sql_thread(1);
                cluster.stop_sql_thread(2);
                "STALLED"
            }
            "RESUME_R2" => {
                cluster.start_sql_thread(2);
                "RESUMED"
            }
            "RESUME_R1" => {
                cluster.start_sql_thread(1);
                cluster.wait_caught_up();
                "RESUMED"
            }
            _ => continue,
        };
        writeln!(stdin, "{reply}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let all = seen.join("\n");
    assert!(
        out.status.success() && all.contains("RESULT "),
        "{all}\n{}\nsluice log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.log_contents()
    );
}
