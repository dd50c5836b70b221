//! Hostile MySQL clients.
