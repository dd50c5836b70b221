//! A Postgres target group as sessions see it: [`Cluster`] over each instance's pools.

use std::sync::Arc;

use super::pools::{PgPool, PgPools};
use crate::routing::Cluster;

pub type PgCluster = Cluster<PgPools>;

impl Cluster<PgPools> {
    /// The pool on instance `member` for what `like` serves (database, user).
    pub fn pool_like(&self, member: usize, like: &PgPool) -> Arc<PgPool> {
        let l = &like.login;
        self.members[member].get(&l.database, &l.user, &l.credentials)
    }
}
