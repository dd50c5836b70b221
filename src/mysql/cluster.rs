//! A MySQL target group as sessions see it: the pools of each instance and the router that
//! says which instance a transaction goes to.

use std::sync::Arc;

use tokio::time::Instant;

use super::pools::{MyPool, MyPools};
use crate::pool::{BorrowError, PoolSettings};
use crate::routing::{Router, Want};

#[derive(Debug)]
pub struct MyCluster {
    pub router: Arc<Router>,
    /// By instance, in the order of the target group's `instances`.
    pub members: Box<[Arc<MyPools>]>,
    pub settings: PoolSettings,
}

impl MyCluster {
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

    /// The pool on instance `member` with the same key as `like`.
    pub fn pool_like(&self, member: usize, like: &MyPool) -> Arc<MyPool> {
        self.members[member].get(&like.key, &like.login.keys, &like.dialect)
    }
}
