//! What a MySQL endpoint adds to the shared endpoint: its cluster, the KILL registry, and
//! whether `LOAD DATA LOCAL INFILE` is offered.

use std::sync::Arc;

use super::cluster::MyCluster;
use super::kill::KillRegistry;

pub type MyEndpoint = crate::endpoint::Endpoint<MySide>;

#[derive(Debug)]
pub struct MySide {
    pub cluster: Arc<MyCluster>,
    pub kill: Arc<KillRegistry>,
    /// Offer CLIENT_LOCAL_FILES: `LOAD DATA LOCAL INFILE` reaches clients that accept it.
    pub local_infile: bool,
}
