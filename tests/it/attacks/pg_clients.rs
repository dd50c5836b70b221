//! Hostile PostgreSQL clients.
