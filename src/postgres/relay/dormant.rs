//! A parked session's compact form: what its idle wait left non-empty, without the buffers,
//! timers and in-flight bookkeeping a running session carries. A parked client costs this
//! rather than the whole session, which is most of what an idle client costs sluice.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::time::Instant;

use super::{IdleLimits, Phase, Route, Session};
use crate::postgres::cancel::CancelHandle;
use crate::postgres::pipeline::Pipeline;
use crate::postgres::pools::PgPool;
use crate::postgres::settings::Settings;

#[derive(Debug)]
pub struct Dormant {
    id: u64,
    route: Route,
    pg: Arc<PgPool>,
    cancel: CancelHandle,
    startup: Settings,
    settings: Settings,
    /// `None`: as a new session's (no named statements, nothing tracked); most sessions.
    pipeline: Option<Box<Pipeline>>,
    idle_since: Option<Instant>,
    phase: Phase,
    commit_in_flight: bool,
    settings_known: bool,
}

impl Session {
    /// The session as it waits parked. Only an idle wait parks, and it parks only once the
    /// buffers are gone, so nothing but empty state, the idle timer and the drain's slot is
    /// dropped here.
    pub fn into_dormant(self) -> Dormant {
        let Self {
            id,
            route,
            pg,
            cancel,
            startup,
            settings,
            mut pipeline,
            cin,
            cout,
            sout,
            idle: _,
            client_streaming,
            server_streaming,
            idle_timer,
            drain_watch,
            idle_since,
            clock: _,
            phase,
            commit_in_flight,
            server_fatal,
            settings_known,
            listening,
        } = self;
        debug_assert!(cin.is_empty() && cout.is_empty() && sout.is_empty());
        // A listening session does not park (its inbox needs its task).
        debug_assert!(listening.is_none());
        debug_assert!(client_streaming == 0 && server_streaming == 0 && !server_fatal);
        drop((idle_timer, drain_watch));
        pipeline.forget_scan();
        Dormant {
            id,
            route,
            pg,
            cancel,
            startup,
            settings,
            pipeline: (!pipeline.pristine()).then(|| Box::new(pipeline)),
            idle_since,
            phase,
            commit_in_flight,
            settings_known,
        }
    }
}

impl Dormant {
    /// The session again, with its endpoint's idle limits, ready to resume its idle wait.
    pub fn wake(self, idle: IdleLimits) -> Session {
        let Self {
            id,
            route,
            pg,
            cancel,
            startup,
            settings,
            pipeline,
            idle_since,
            phase,
            commit_in_flight,
            settings_known,
        } = self;
        Session {
            id,
            route,
            pg,
            cancel,
            startup,
            settings,
            pipeline: pipeline.map_or_else(|| Pipeline::new(id), |p| *p),
            cin: BytesMut::new(),
            cout: BytesMut::new(),
            sout: BytesMut::new(),
            idle,
            client_streaming: 0,
            server_streaming: 0,
            idle_timer: None,
            drain_watch: None,
            idle_since,
            clock: None,
            phase,
            commit_in_flight,
            server_fatal: false,
            settings_known,
            listening: None,
        }
    }

    /// When its idle timeout falls due.
    pub fn idle_deadline(&self, idle: IdleLimits) -> Option<Instant> {
        self.idle_since?.checked_add(idle.timeout)
    }
}
