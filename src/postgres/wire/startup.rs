//! The untagged first message of a connection: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.

use bytes::{Buf, BytesMut};

use super::frame::WireError;

pub const PROTOCOL_3_0: u32 = 3 << 16;
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A startup packet is small; anything larger is garbage or an attack.
const MAX_STARTUP_LEN: usize = 10_000;

/// Name/value pairs of a StartupMessage, in the order the client sent them.
pub type StartupParams = Vec<(String, String)>;

#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    Ssl,
    GssEnc,
    Cancel { pid: i32, key: i32 },
    Startup { params: StartupParams },
}

/// Takes one startup packet off `buf` once it is complete.
pub fn read_startup(buf: &mut BytesMut) -> Result<Option<Startup>, WireError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(WireError::BadLength { len: len as i64 });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    let code = packet.get_u32();
    let startup = match code {
        SSL_REQUEST_CODE if len == 8 => Startup::Ssl,
        GSSENC_REQUEST_CODE if len == 8 => Startup::GssEnc,
        CANCEL_REQUEST_CODE if len == 16 => Startup::Cancel {
            pid: packet.get_i32(),
            key: packet.get_i32(),
        },
        PROTOCOL_3_0 => Startup::Startup {
            params: parse_params(&packet)?,
        },
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE | CANCEL_REQUEST_CODE => {
            return Err(WireError::Malformed { what: "startup" });
        }
        other => {
            return Err(WireError::UnsupportedVersion {
                major: (other >> 16) as u16,
                minor: (other & 0xffff) as u16,
            });
        }
    };
    Ok(Some(startup))
}

fn parse_params(mut body: &[u8]) -> Result<StartupParams, WireError> {
    let malformed = WireError::Malformed { what: "startup" };
    let mut params = Vec::new();
    loop {
        let end = body.iter().position(|&b| b == 0).ok_or(malformed.clone())?;
        if end == 0 {
            return Ok(params);
        }
        let name = std::str::from_utf8(&body[..end]).map_err(|_| malformed.clone())?;
        body = &body[end + 1..];
        let vend = body.iter().position(|&b| b == 0).ok_or(malformed.clone())?;
        let value = std::str::from_utf8(&body[..vend]).map_err(|_| malformed.clone())?;
        params.push((name.to_owned(), value.to_owned()));
        body = &body[vend + 1..];
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::postgres::wire::write::startup_message;

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        startup_message(&mut buf, &[("user", "app"), ("database", "db")]);
        let s = read_startup(&mut buf).unwrap().unwrap();
        assert_eq!(
            s,
            Startup::Startup {
                params: vec![
                    ("user".into(), "app".into()),
                    ("database".into(), "db".into())
                ]
            }
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn ssl_cancel_and_garbage() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 4, 210, 22, 47][..]);
        assert_eq!(read_startup(&mut buf).unwrap(), Some(Startup::Ssl));
        let mut buf = BytesMut::from(&[0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 7, 0, 0, 0, 9][..]);
        assert_eq!(
            read_startup(&mut buf).unwrap(),
            Some(Startup::Cancel { pid: 7, key: 9 })
        );
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(read_startup(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0, 0, 0, 9, 0, 3, 0, 0, b'x'][..]);
        assert!(read_startup(&mut buf).is_err(), "unterminated params");
    }
}
