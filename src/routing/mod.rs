//! Which instance an endpoint sends its transactions to.
//!
//! Until health probes find the writer (the failover work), the writer of a target group is
//! its first instance, and only `read_write` endpoints are served.

use crate::config::{Role, TargetGroup};

/// The instance a `read_write` endpoint of `group` uses; `None` for roles not served yet.
pub fn instance_for(group: &TargetGroup, role: Role) -> Option<&str> {
    match role {
        Role::ReadWrite => group.instances.first().map(String::as_str),
        Role::ReadOnly => None,
    }
}
