//! Test harness: private PostgreSQL and MariaDB servers, the sluice binary under test, and client
//! tools.
//!
//! - [`postgres::PgServer`]: initdb + pg_ctl in a temp dir on a free loopback port, with the
//!   standard test roles (`app`, `md5user`, `plainuser`, `monitor`) and database `appdb`.
//! - [`mariadb::MariaDb`]: mariadb-install-db + mariadbd in a temp dir on a free loopback port,
//!   with the test users (`app`, `monitor`) and databases `appdb` and `otherdb`.
//! - [`cluster`]: a PostgreSQL primary with streaming replicas ([`cluster::PgCluster`]) and a
//!   MariaDB primary with a GTID replica ([`cluster::MariaCluster`]): kill -9, promotion, lag.
//! - [`sluice::Sluice`]: runs `sluice run --config ...` and waits until it listens.
//! - [`client`]: a tokio-postgres login to sluice and query helpers.
//! - [`fake`]: scripted fake servers and a tampering relay, for the attack tests.
//! - [`tools`]: the Python driver venv (psycopg, PyMySQL, mysql-connector-python), pgjdbc,
//!   java, free ports, command helpers.
//!
//! Everything tears itself down in `Drop`, also when a test panics.

pub mod certs;
pub mod client;
pub mod cluster;
pub mod fake;
pub mod mariadb;
pub mod moto;
pub mod postgres;
pub mod sluice;
pub mod tools;
