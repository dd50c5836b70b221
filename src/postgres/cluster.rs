//! A Postgres target group as sessions see it: the pools of each instance and the router that
//! says which instance a transaction goes to.

use std::sync::Arc;

use tokio::time::Instant;

use super::pools::{PgPool, PgPools};
use crate::pool::{BorrowError, PoolSettings};
use crate::routing::{Router, Want};

#[derive(Debug)]
pub struct PgCluster {
    pub router: Arc<Router>,
    /// By instance, in the order of the target group's `instances`.
    pub members: Box<[Arc<PgPools>]>,
    pub settings: PoolSettings,
}

impl PgCluster {
    /// The instance for `want`, waiting for one up to the borrow timeout.
    pub async fn route(&self, want: Want) -> Result<usize, BorrowError> {
        let started = Instant::now();
        self.router
            .route(want, started + self.settings.borrow_timeout)
            .await
            .ok_or(BorrowError::NoInstance {
                role: want.role(),
                waited: started.elapsed(),
            })
    }

    /// The pool on instance `member` for what `like` serves (database, user).
    pub fn pool_like(&self, member: usize, like: &PgPool) -> Arc<PgPool> {
        let l = &like.login;
        self.members[member].get(&l.database, &l.user, &l.password)
    }
}
