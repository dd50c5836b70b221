//! Readers for the few message bodies whose content sluice needs; everything else is forwarded unread.

use super::frame::WireError;

/// A cursor over a message body.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    fn malformed(&self) -> WireError {
        WireError::Malformed { what: self.what }
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// A NUL-terminated string, without its NUL.
    pub fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        // std's word-at-a-time search: a query's text is read here on every Query and Parse.
        let end = std::ffi::CStr::from_bytes_until_nul(self.buf)
            .map_err(|_| self.malformed())?
            .count_bytes();
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub fn utf8(&mut self) -> Result<&'a str, WireError> {
        let s = self.cstr()?;
        std::str::from_utf8(s).map_err(|_| self.malformed())
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or(self.malformed())?;
        self.buf = rest;
        Ok(b)
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn i16(&mut self) -> Result<i16, WireError> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.malformed());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

/// The Authentication* requests a server sends.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: Vec<&'a str> },
    SaslContinue { data: &'a [u8] },
    SaslFinal { data: &'a [u8] },
    Other(i32),
}

pub fn parse_auth_request(body: &[u8]) -> Result<AuthRequest<'_>, WireError> {
    let mut r = Reader::new(body, "authentication");
    Ok(match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = r.take(4)?;
            AuthRequest::Md5 {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.utf8()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue { data: r.rest() },
        12 => AuthRequest::SaslFinal { data: r.rest() },
        other => AuthRequest::Other(other),
    })
}

pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut r = Reader::new(body, "ParameterStatus");
    Ok((r.utf8()?, r.utf8()?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendKeyData {
    pub pid: i32,
    pub key: i32,
}

pub fn parse_backend_key_data(body: &[u8]) -> Result<BackendKeyData, WireError> {
    let mut r = Reader::new(body, "BackendKeyData");
    Ok(BackendKeyData {
        pid: r.i32()?,
        key: r.i32()?,
    })
}

/// The columns of a DataRow (None for NULL).
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, WireError> {
    let mut r = Reader::new(body, "DataRow");
    let count = r.take(2)?;
    let count = u16::from_be_bytes([count[0], count[1]]);
    (0..count)
        .map(|_| match r.i32()? {
            -1 => Ok(None),
            n => Ok(Some(
                r.take(usize::try_from(n).map_err(|_| r.malformed())?)?,
            )),
        })
        .collect()
}

/// The fields of an ErrorResponse or NoticeResponse that sluice logs or acts on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    pub severity: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    /// The server function that raised it (`R`): never localized.
    pub routine: &'a str,
}

/// What a Bind says of its formats: whether every parameter is sent as text, and how many
/// result-column formats it names (0: all text, 1: one for every column, more: one per column,
/// so the Bind fits one row shape only).
pub fn bind_formats(body: &[u8]) -> Result<(bool, usize), WireError> {
    let mut r = Reader::new(body, "Bind");
    r.cstr()?;
    r.cstr()?;
    let formats = usize::try_from(r.i16()?).map_err(|_| r.malformed())?;
    let codes = r.take(2 * formats)?;
    let text = codes.iter().all(|&b| b == 0);
    for _ in 0..r.i16()? {
        let len = r.i32()?;
        r.take(usize::try_from(len).unwrap_or(0))?;
    }
    let results = usize::try_from(r.i16()?).map_err(|_| r.malformed())?;
    Ok((text, results))
}

pub fn parse_error_fields(body: &[u8]) -> Result<ErrorFields<'_>, WireError> {
    let mut r = Reader::new(body, "ErrorResponse");
    let mut fields = ErrorFields::default();
    loop {
        let kind = r.u8()?;
        if kind == 0 {
            return Ok(fields);
        }
        let value = std::str::from_utf8(r.cstr()?).unwrap_or("");
        match kind {
            // `V` (never localized, after `S`) wins where the server sends it.
            b'S' | b'V' => fields.severity = value,
            b'C' => fields.code = value,
            b'M' => fields.message = value,
            b'R' => fields.routine = value,
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::postgres::wire::{Frame, error_response, next_frame};
    use bytes::BytesMut;

    #[test]
    fn error_round_trip() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, "FATAL", "28P01", "password authentication failed");
        let Frame { tag, .. } = next_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!(tag, b'E');
        let f = parse_error_fields(&buf[5..]).unwrap();
        assert_eq!((f.severity, f.code), ("FATAL", "28P01"));
        assert_eq!(f.message, "password authentication failed");
    }

    #[test]
    fn data_rows() {
        let body = b"\0\x02\0\0\0\x02ab\xff\xff\xff\xff";
        assert_eq!(parse_data_row(body).unwrap(), vec![Some(&b"ab"[..]), None]);
        assert!(parse_data_row(b"\0\x01\0\0\0\x05ab").is_err());
        assert!(parse_data_row(b"\0\x01\xff\xff\xff\xfe").is_err());
    }

    #[test]
    fn auth_requests() {
        assert_eq!(parse_auth_request(&[0, 0, 0, 0]).unwrap(), AuthRequest::Ok);
        assert_eq!(
            parse_auth_request(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(),
            AuthRequest::Md5 { salt: [1, 2, 3, 4] }
        );
        let sasl = b"\0\0\0\x0aSCRAM-SHA-256\0\0";
        assert_eq!(
            parse_auth_request(sasl).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256"]
            }
        );
        assert!(parse_auth_request(&[0, 0, 0, 5, 1]).is_err());
    }
}
