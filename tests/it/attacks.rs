//! Known attacks on connection poolers, each test named after its advisory: hostile clients of
//! both engines and malicious servers behind sluice. Each may end only the attacker's own
//! connection: sluice stays up, answers in the client's protocol, and no other session notices.

use std::fmt::Write as _;

use crate::support::certs::Certs;
use crate::support::tools::free_port;

mod my_clients;
mod pg_clients;
mod pg_routing;
mod servers;

/// `yaml` (from `config_for*`) with a second endpoint, `evil`, on a free port in front of a
/// second target group of `engine` whose one instance is `addr`, with `extra` group keys (each
/// line indented by four); returns the config and the port.
fn with_group(yaml: &str, engine: &str, addr: &str, extra: &str) -> (String, u16) {
    let port = free_port();
    let mut endpoint = String::new();
    let _ = write!(
        endpoint,
        "  - name: evil\n    listen: 127.0.0.1:{port}\n    target_group: evil\n    role: read_write\n\
         target_groups:\n  evil:\n    engine: {engine}\n    instances: [{addr}]\n    \
         monitor_user: monitor\n    health: {{ interval: 1s }}\n{extra}    connection_pool:\n      \
         max_connections: 2\n      connection_borrow_timeout: 5s\n"
    );
    (yaml.replacen("target_groups:\n", &endpoint, 1), port)
}

/// CPU time a process has used, user plus system, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// `yaml` with a client-facing certificate from a fresh test CA (kept alive by the caller).
fn with_client_tls(yaml: &str) -> (String, Certs) {
    let certs = Certs::new("attack");
    let leaf = certs.leaf("sluice", &["127.0.0.1"], None);
    let yaml = format!(
        "{yaml}tls: {{ cert: {}, key: {} }}\n",
        leaf.cert.display(),
        leaf.key.display()
    );
    (yaml, certs)
}
