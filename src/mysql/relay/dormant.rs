//! A parked session's compact form: its tracked state without the buffers, the server
//! connection slot and the timers a running session carries. A parked client costs this rather
//! than the whole session, which is most of what an idle client costs sluice.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Instant;

use super::route::LastWrite;
use super::statements::Prepared;
use super::{Hold, Pins, Session};
use crate::mysql::endpoint::MyEndpoint;
use crate::mysql::kill::KillHandle;
use crate::mysql::pools::MyPool;
use crate::mysql::state::Vars;
use crate::routing::Want;
use crate::session::keys::KeyMap;

#[derive(Debug)]
pub struct Dormant {
    id: u32,
    ep: Arc<MyEndpoint>,
    peer: SocketAddr,
    member: usize,
    want: Want,
    last_write: LastWrite,
    replayed_on: Option<usize>,
    pool: Arc<MyPool>,
    kill: KillHandle,
    schema: Option<Box<str>>,
    vars: Option<Vars>,
    pins: Option<Box<Pins>>,
    /// `None`: no prepared statements (most sessions). Boxed: 8 bytes here rather than an
    /// empty map's 48 in every parked session.
    #[allow(clippy::box_collection)]
    statements: Option<Box<KeyMap<u32, Prepared>>>,
    next_statement: u32,
    last_prepared: u32,
    last_insert_id: u64,
    status: u16,
    hold: Hold,
    long_data_lost: Option<u32>,
    set_option: bool,
    idle_since: Option<Instant>,
}

impl Session {
    /// The session as it waits parked. Only an idle wait without a server connection parks,
    /// after its buffers and timer were given back, so nothing but empty state is dropped here.
    pub fn into_dormant(self) -> Dormant {
        let Self {
            id,
            ep,
            peer,
            member,
            want,
            last_write,
            replayed_on,
            pool,
            kill,
            schema,
            vars,
            pins,
            statements,
            next_statement,
            last_prepared,
            last_insert_id,
            status,
            hold,
            long_data_lost,
            set_option,
            lost_held,
            cin,
            out,
            scratch,
            lease,
            clock: _,
            idle_since,
            park_at: _,
            idle_timer,
            drain_watch,
            plain_query,
        } = self;
        debug_assert!(cin.is_empty() && out.is_empty() && scratch.is_empty() && lease.is_none());
        debug_assert!(!lost_held);
        drop((idle_timer, drain_watch, plain_query));
        Dormant {
            id,
            ep,
            peer,
            member,
            want,
            last_write,
            replayed_on,
            pool,
            kill,
            schema,
            vars,
            pins,
            statements: (!statements.is_empty()).then(|| Box::new(statements)),
            next_statement,
            last_prepared,
            last_insert_id,
            status,
            hold,
            long_data_lost,
            set_option,
            idle_since,
        }
    }
}

impl Dormant {
    /// The session again, ready to resume its idle wait.
    pub fn wake(self) -> Session {
        let Self {
            id,
            ep,
            peer,
            member,
            want,
            last_write,
            replayed_on,
            pool,
            kill,
            schema,
            vars,
            pins,
            statements,
            next_statement,
            last_prepared,
            last_insert_id,
            status,
            hold,
            long_data_lost,
            set_option,
            idle_since,
        } = self;
        Session {
            id,
            ep,
            peer,
            member,
            want,
            last_write,
            replayed_on,
            pool,
            kill,
            schema,
            vars,
            pins,
            statements: statements.map_or_else(KeyMap::default, |s| *s),
            next_statement,
            last_prepared,
            last_insert_id,
            status,
            hold,
            long_data_lost,
            set_option,
            lost_held: false,
            cin: BytesMut::new(),
            out: Vec::new(),
            scratch: Vec::new(),
            lease: None,
            clock: None,
            idle_since,
            park_at: None,
            idle_timer: None,
            drain_watch: None,
            plain_query: Default::default(),
        }
    }

    pub fn endpoint(&self) -> &Arc<MyEndpoint> {
        &self.ep
    }

    /// When its idle timeout falls due.
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.idle_since?.checked_add(self.ep.idle_client_timeout)
    }
}
