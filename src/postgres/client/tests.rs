//! The Postgres login and session entry points: task sizes, parked sizes, startup parameters.
#![allow(clippy::unwrap_used)]

use super::*;

/// A parked session is this one allocation besides its socket and the lot's slot: it
/// must stay far below the running session's `Life` (a 448-byte size class), since idle
/// clients by the thousand are mostly parked ones.
#[test]
fn a_parked_session_stays_small() {
    let (parked, life) = (std::mem::size_of::<Parked>(), std::mem::size_of::<Life>());
    eprintln!("Parked {parked} bytes, Life {life}");
    assert!(
        parked <= 160,
        "Parked grew to {parked} bytes (a 160-byte size class today)"
    );
}

/// What an idle client costs is mostly this future: tokio allocates it once per session
/// task. PgBouncer measures 0.8 KiB per idle client here (docs/benchmarks.md); this budget
/// stops the future from growing back while that gap is closed (routing through failovers
/// added 32 bytes: the session's cluster, instance and a lost server's pending error; TLS
/// 96: a socket's readiness wait also carries its TLS branch, and the select holds two;
/// a capped user's session slot 8).
#[tokio::test]
async fn a_session_task_stays_small() {
    use std::sync::atomic::AtomicU64;

    use crate::auth::users::Users;
    use crate::pool::{Instance, Limit, PoolSettings};
    use crate::routing::Want;
    let instance = Arc::new(Instance::new("x:1".into(), Limit::Absolute(1), 50));
    let second = Duration::from_secs(1);
    let settings = PoolSettings::uniform(second);
    let router = Arc::new(crate::routing::Router::fixed_writer(
        instance.borrowed().clone(),
    ));
    let pools = PgPools::new(instance, settings, String::new(), Default::default());
    let cluster = Arc::new(PgCluster {
        router,
        members: Box::new([Arc::new(pools)]),
        settings,
        drain: Default::default(),
        metrics: Default::default(),
        pin_counts: Default::default(),
        parking: None,
    });
    let ep = Arc::new(PgEndpoint {
        name: "e".into(),
        group: "test".into(),
        want: Want::Writer,
        read_your_writes_timeout: second,
        users: Arc::new(Users::default()),
        port: 0,
        tls: None,
        require_tls: false,
        idle_client_timeout: second,
        idle_client_park_after: None,
        session_ids: Arc::new(AtomicU64::new(0)),
        metrics: Default::default(),
        engine: PgSide {
            cluster,
            cancel: Arc::new(CancelRegistry::default()),
        },
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let peer = client.local_addr().unwrap();
    let size = std::mem::size_of_val(&serve(client, peer, ep));
    assert!(size <= 1440, "a session task is {size} bytes");
}

#[test]
fn startup_settings_and_options() {
    let params = vec![
        ("user".to_owned(), "app".to_owned()),
        ("application_name".to_owned(), "psql".to_owned()),
        (
            "options".to_owned(),
            "-c search_path=a,b --statement-timeout=5s".to_owned(),
        ),
    ];
    let s = session_settings(&params).unwrap();
    assert_eq!(
        s,
        vec![
            ("application_name".into(), "psql".into()),
            ("search_path".into(), "a,b".into()),
            ("statement_timeout".into(), "5s".into()),
        ]
    );
    let bad = vec![("options".to_owned(), "-X".to_owned())];
    assert!(session_settings(&bad).is_err());
    let evil = vec![("a;drop".to_owned(), "x".to_owned())];
    assert!(session_settings(&evil).is_err());
    assert_eq!(normalize("client_encoding", "utf-8"), "UTF8");
}
