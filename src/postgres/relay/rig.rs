//! A Postgres target group of one scripted instance, for driving the relay without a database:
//! the relay's unit tests and the `pg_relay` fuzz target build their sessions on it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Duration;

use super::{Route, Session};
use crate::pool::scripted::{self, Peer, Servers};
use crate::pool::{Instance, PoolSettings};
use crate::postgres::cancel::CancelRegistry;
use crate::postgres::cluster::PgCluster;
use crate::postgres::pools::PgPool;
use crate::postgres::server::{ServerConn, ServerLogin};
use crate::postgres::statements::{SchemaEpoch, StatementRegistry};
use crate::postgres::wire::BackendKeyData;
use crate::routing::{Router, Want};
use crate::session::{PinCounts, SessionInfo};
use crate::tls::Socket;
use crate::tls::memory::{self, MemorySocket};

pub fn server_conn(sock: MemorySocket) -> ServerConn {
    ServerConn {
        stream: Socket::Memory(sock),
        buf: BytesMut::new(),
        peer: crate::postgres::server::ServerAddr::Tcp("127.0.0.1:5432".parse().unwrap()),
        key: BackendKeyData { pid: 7, key: 7 },
        reported: Vec::new(),
        settings: Default::default(),
        statements: Default::default(),
    }
}

/// A target group of one scripted instance with a pool of `max` connections.
pub struct Rig {
    pub cluster: Arc<PgCluster>,
    pub pool: Arc<PgPool>,
    pub instance: Arc<Instance<ServerConn>>,
    pub servers: Servers,
    pub cancel: Arc<CancelRegistry>,
}

impl Rig {
    pub fn new(max: usize) -> Self {
        let (instance, pool, servers) = scripted::instance("db:5432", max, server_conn);
        let settings = PoolSettings::uniform(Duration::from_secs(2));
        let login = ServerLogin {
            addr: "db:5432".into(),
            user: "app".into(),
            credentials: scripted::credentials(),
            database: "app".into(),
            scram: Default::default(),
            access: Default::default(),
            role: Default::default(),
        };
        let schema = Arc::new(SchemaEpoch::default());
        let pool = Arc::new(PgPool {
            pool,
            login,
            statements: Arc::new(StatementRegistry::new("_sluice_t_".into(), schema)),
            prefix: "_sluice_t_".into(),
            init_query: "".into(),
            reported: Default::default(),
            startup: Default::default(),
            plain_parameters: Default::default(),
            listeners: Default::default(),
        });
        let cluster = Arc::new(PgCluster {
            router: Arc::new(Router::fixed_writer(instance.borrowed().clone())),
            members: Box::new([]),
            settings,
            drain: Default::default(),
            metrics: Default::default(),
            pin_counts: Arc::new(PinCounts::default()),
            parking: None,
        });
        Self {
            cluster,
            pool,
            instance,
            servers,
            cancel: Arc::default(),
        }
    }

    /// Session `id`'s client end; its task ends when the client leaves.
    pub fn session_numbered(&self, id: u64) -> (Peer, tokio::task::JoinHandle<Session>) {
        let (client, ours) = memory::pair();
        let info = SessionInfo::new(
            id,
            (&"e".into(), &"g".into()),
            "app",
            "127.0.0.1:1".parse().unwrap(),
            false,
        );
        let route = Route {
            cluster: self.cluster.clone(),
            last_write: 0,
            member: 0,
            ryw_ms: 0,
            want: Want::Writer,
        };
        let mut session = Session::new(
            id,
            route,
            self.pool.clone(),
            crate::postgres::cancel::register(&self.cancel, info),
            Default::default(),
            BytesMut::new(),
            crate::postgres::relay::IdleLimits {
                timeout: Duration::from_secs(60),
                park_after: None,
            },
        );
        let task = tokio::spawn(async move {
            let _ = session.run(&mut Socket::Memory(ours)).await;
            session
        });
        (Peer::new(client), task)
    }
}
