//! A MySQL target group of one scripted instance, for driving the relay without a database:
//! the relay's unit tests and the `mysql_relay` fuzz target build their sessions on it.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::time::Duration;

use super::Session;
use crate::auth::users::Users;
use crate::endpoint::Endpoint;
use crate::mysql::cluster::MyCluster;
use crate::mysql::endpoint::{MyEndpoint, MySide};
use crate::mysql::kill::KillRegistry;
use crate::mysql::pools::{MyPool, PoolKey};
use crate::mysql::server::{ServerConn, ServerLogin};
use crate::mysql::state::Dialect;
use crate::mysql::wire::caps;
use crate::pool::scripted::{self, Peer, Servers};
use crate::pool::{Instance, PoolSettings};
use crate::routing::{Router, Want};
use crate::session::{PinCounts, SessionInfo};
use crate::tls::Socket;
use crate::tls::memory::{self, MemorySocket};

pub fn server_conn(sock: MemorySocket) -> ServerConn {
    ServerConn {
        stream: Socket::Memory(sock),
        buf: BytesMut::new(),
        thread_id: 11,
        caps: caps::PROTOCOL_41 | caps::DEPRECATE_EOF | caps::TRANSACTIONS,
        state: Default::default(),
        pending: Vec::new(),
    }
}

/// A target group of one scripted instance with a pool of `max` connections.
pub struct Rig {
    pub ep: Arc<MyEndpoint>,
    pub pool: Arc<MyPool>,
    pub instance: Arc<Instance<ServerConn>>,
    pub servers: Servers,
}

impl Rig {
    pub fn new(max: usize) -> Self {
        let (instance, pool, servers) = scripted::instance("db:3306", max, server_conn);
        let settings = PoolSettings::uniform(Duration::from_secs(2));
        let login = ServerLogin {
            addr: "db:3306".into(),
            user: "app".into(),
            credentials: scripted::credentials(),
            caps: 0,
            collation: 33,
            access: Default::default(),
            program_name: crate::mysql::server::POOL_PROGRAM,
        };
        let pool = Arc::new(MyPool {
            pool,
            key: PoolKey {
                user: "app".into(),
                caps: 0,
                collation: 33,
            },
            login,
            addr: "db:3306".into(),
            dialect: Arc::new(Dialect::for_version("10.11.6-MariaDB")),
            init_query: "".into(),
            baseline: Default::default(),
            baseline_role: Default::default(),
            known_schemas: Mutex::new(HashSet::new()),
        });
        let cluster = Arc::new(MyCluster {
            router: Arc::new(Router::fixed_writer(instance.borrowed().clone())),
            members: Box::new([]),
            settings,
            drain: Default::default(),
            metrics: Default::default(),
            pin_counts: Arc::new(PinCounts::default()),
            parking: None,
        });
        let ep = Arc::new(Endpoint {
            name: "e".into(),
            group: "g".into(),
            want: Want::Writer,
            read_your_writes_timeout: Duration::from_secs(1),
            users: Arc::new(Users::default()),
            port: 0,
            tls: None,
            require_tls: false,
            idle_client_timeout: Duration::from_secs(60),
            idle_client_park_after: None,
            metrics: Default::default(),
            session_ids: Default::default(),
            engine: MySide {
                cluster,
                kill: Arc::new(KillRegistry::default()),
                local_infile: false,
            },
        });
        Self {
            ep,
            pool,
            instance,
            servers,
        }
    }

    /// Session `id`'s client end; its task ends when the client leaves.
    pub fn session_numbered(&self, id: u32) -> (Peer, tokio::task::JoinHandle<Session>) {
        let (client, ours) = memory::pair();
        let peer = "127.0.0.1:1".parse().unwrap();
        let info = SessionInfo::new(id.into(), (&"e".into(), &"g".into()), "app", peer, false);
        let kill = crate::mysql::kill::register(&self.ep.engine.kill, id, "app", info);
        let mut session = Session::new(
            id,
            self.ep.clone(),
            peer,
            (0, self.pool.clone()),
            kill,
            None,
            BytesMut::new(),
        );
        let task = tokio::spawn(async move {
            let _ = session.run(&mut Socket::Memory(ours)).await;
            session
        });
        (Peer::new(client), task)
    }
}
