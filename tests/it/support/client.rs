//! A tokio-postgres client aimed at sluice, and the small query helpers tests share.

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::sluice::Sluice;

/// Logs in to sluice's first endpoint as `(user, password)`; the connection task is spawned.
pub async fn connect(
    proxy: &Sluice,
    login: (&str, &str),
    db: &str,
) -> Result<Client, tokio_postgres::Error> {
    connect_port(proxy.port(), login, db).await
}

/// Logs in to whatever listens on `port` as `(user, password)`; the connection task is spawned.
pub async fn connect_port(
    port: u16,
    (user, password): (&str, &str),
    db: &str,
) -> Result<Client, tokio_postgres::Error> {
    let dsn = format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname={db} connect_timeout=10"
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The SQLSTATE of an error, or a description when there is none (e.g. a closed connection).
pub fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// The first column of the first row of a simple query.
pub async fn scalar(c: &Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .unwrap()
}
