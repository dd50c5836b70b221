//! `LOAD DATA LOCAL INFILE`: the server asks the client for a file in the middle of a query's
//! reply; the client's packets go to the server as they come, up to the empty packet that ends
//! the file, without buffering the file. Only clients that announced CLIENT_LOCAL_FILES (on
//! endpoints with `local_infile: true`) get connections that have it; the server refuses
//! everyone else itself, exactly as on a direct connection.

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use crate::mysql::server::ServerConn;
use crate::mysql::wire::{self, MAX_PAYLOAD};
use crate::tls::Socket;

const READ_CHUNK: usize = 64 << 10;

/// Which side went away during the file.
#[derive(Debug)]
pub(super) enum Gone {
    Client,
    Server,
}

/// Relays the client's file packets (already in `cin`, then read from `client`) to the server,
/// through the empty packet that ends the file.
pub(super) async fn upload(
    client: &mut Socket,
    conn: &mut ServerConn,
    cin: &mut BytesMut,
) -> Result<(), Gone> {
    // Bytes of the current packet still to pass on, and whether the previous packet was
    // full-size (an empty packet after one continues it; it does not end the file).
    let mut remaining = 0usize;
    let mut continuing = false;
    loop {
        let mut n = 0;
        let mut ended = false;
        while n < cin.len() {
            if remaining > 0 {
                let take = remaining.min(cin.len() - n);
                n += take;
                remaining -= take;
                continue;
            }
            let Some(p) = wire::next_packet(&cin[n..]) else {
                break; // a header split across reads
            };
            let payload = p.payload_len();
            let ends = payload == 0 && !continuing;
            continuing = payload == MAX_PAYLOAD;
            remaining = p.len;
            if ends {
                n += p.len;
                remaining = 0;
                ended = true;
                break;
            }
        }
        if n > 0 {
            conn.stream
                .write_all(&cin[..n])
                .await
                .map_err(|_| Gone::Server)?;
            cin.advance(n);
        }
        if ended {
            return Ok(());
        }
        cin.reserve(READ_CHUNK);
        match client.read_buf(cin).await {
            Ok(0) | Err(_) => return Err(Gone::Client),
            Ok(_) => {}
        }
    }
}
