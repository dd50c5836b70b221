//! Two users through one sluice never share a server connection.

use std::collections::{HashMap, HashSet};

use super::proxy;
use crate::support::postgres::{APP, APPDB, MD5USER, PgServer};

/// One client session of `user`: runs `rounds` times `current_user, backend identity` (an extended
/// query with named statements, then a simple query) and returns the identities seen.
async fn identities(
    port: u16,
    (user, password): (&'static str, &'static str),
    rounds: usize,
) -> HashSet<String> {
    let conn_str = format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname={APPDB} \
         connect_timeout=10"
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot log in through sluice: {e}"));
    tokio::spawn(conn);
    // pid plus backend start time: a pid the OS reuses is not mistaken for the same backend.
    let sql = "select current_user::text, pg_backend_pid() || '@' || \
               (select backend_start::text from pg_stat_activity where pid = pg_backend_pid())";
    let mut seen = HashSet::new();
    for round in 0..rounds {
        let (who, backend) = if round % 2 == 0 {
            let row = client.query_one(sql, &[]).await.unwrap();
            (row.get::<_, String>(0), row.get::<_, String>(1))
        } else {
            let rows = client.simple_query(sql).await.unwrap();
            let row = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            });
            let row = row.expect("a row");
            (
                row.get(0).unwrap().to_owned(),
                row.get(1).unwrap().to_owned(),
            )
        };
        assert_eq!(who, user, "session of {user} ran on a connection of {who}");
        seen.insert(backend);
        if round % 5 == 4 {
            tokio::task::yield_now().await;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_users_never_share_a_server_connection() {
    let pg = PgServer::start();
    let sluice = proxy(&pg);
    let port = sluice.port();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let role = if i % 2 == 0 { APP } else { MD5USER };
        tasks.push(tokio::spawn(async move {
            (role.0, identities(port, role, 60).await)
        }));
    }
    let mut seen: HashMap<&str, HashSet<String>> = HashMap::new();
    for task in tasks {
        let (user, ids) = task.await.unwrap();
        seen.entry(user).or_default().extend(ids);
    }
    // Then strictly alternating single transactions, so each user borrows right after the other.
    for _ in 0..20 {
        for role in [APP, MD5USER] {
            seen.entry(role.0)
                .or_default()
                .extend(identities(port, role, 2).await);
        }
    }
    let (app, md5) = (&seen[APP.0], &seen[MD5USER.0]);
    let shared: Vec<_> = app.intersection(md5).collect();
    assert!(shared.is_empty(), "backends used by both users: {shared:?}");
    assert!(!app.is_empty() && !md5.is_empty(), "{seen:?}");
    eprintln!("app used {} backends, md5user {}", app.len(), md5.len());
    drop(sluice);
}
