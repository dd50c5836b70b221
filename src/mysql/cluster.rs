//! A MySQL target group as sessions see it: [`Cluster`] over each instance's pools.

use std::sync::Arc;

use super::pools::{MyPool, MyPools};
use crate::routing::Cluster;

pub type MyCluster = Cluster<MyPools>;

impl Cluster<MyPools> {
    /// The pool on instance `member` with the same key as `like`.
    pub fn pool_like(&self, member: usize, like: &MyPool) -> Arc<MyPool> {
        self.members[member].get(&like.key, &like.login.credentials, &like.dialect)
    }
}
