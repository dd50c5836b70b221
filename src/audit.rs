//! Audit events: who connected from where, how they authenticated and why they were refused.
//! Each is one structured log line under the `sluice::audit` target (JSON with
//! `--log-format json`); user names and reasons only, never a password, token or secret.

use std::net::SocketAddr;

/// A client connection accepted by an endpoint (before any protocol byte).
pub fn connected(endpoint: &str, peer: SocketAddr) {
    tracing::info!(target: "sluice::audit", event = "connect", endpoint, %peer);
}

/// A connection closed before login: allow-list, connection caps, handshake rate.
pub fn turned_away(endpoint: &str, peer: SocketAddr, reason: &str) {
    tracing::warn!(target: "sluice::audit", event = "connect_refused", endpoint, %peer, reason);
}

/// A login that succeeded; `method` is password, iam or jwt, `tls` whether the client used it.
pub fn auth_succeeded(endpoint: &str, peer: SocketAddr, user: &str, method: &str, tls: bool) {
    tracing::info!(target: "sluice::audit", event = "auth_success", endpoint, %peer, user, method, tls);
}

/// A login that failed, with the reason sluice logs (the client gets the engine's generic one).
pub fn auth_failed(endpoint: &str, peer: SocketAddr, user: &str, method: &str, reason: &str) {
    tracing::warn!(target: "sluice::audit", event = "auth_failure", endpoint, %peer, user, method, reason);
}
