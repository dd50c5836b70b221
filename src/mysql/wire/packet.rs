//! Packet framing (3-byte little-endian payload length + sequence id) and length-encoded values.

use thiserror::Error;

pub const HEADER_LEN: usize = 4;
/// A payload of exactly this length continues in the next packet.
pub const MAX_PAYLOAD: usize = 0xff_ffff;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("{0} is truncated")]
    Truncated(&'static str),
    #[error("{0} is malformed")]
    Malformed(&'static str),
}

/// One physical packet at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Header plus payload.
    pub len: usize,
    pub seq: u8,
}

impl Packet {
    pub fn payload_len(self) -> usize {
        self.len - HEADER_LEN
    }

    /// A full-size payload: the logical packet goes on in the next one.
    pub fn continues(self) -> bool {
        self.payload_len() == MAX_PAYLOAD
    }
}

/// The packet at the front of `buf` once its header is in; `len` may exceed what `buf` holds.
pub fn next_packet(buf: &[u8]) -> Option<Packet> {
    let header = buf.get(..HEADER_LEN)?;
    let payload =
        usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    Some(Packet {
        len: HEADER_LEN + payload,
        seq: header[3],
    })
}

/// The sequence id of the last whole packet in `bytes` (0 when there is none): a reply's
/// first packet carries the next one.
pub fn last_seq(bytes: &[u8]) -> u8 {
    let (mut at, mut seq) = (0, 0);
    while let Some(p) = next_packet(&bytes[at..]).filter(|p| at + p.len <= bytes.len()) {
        seq = p.seq;
        at += p.len;
    }
    seq
}

/// Appends one packet with `payload` (callers keep payloads under `MAX_PAYLOAD`).
pub fn write_packet(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    let w = PacketWriter::begin(out, seq);
    out.extend_from_slice(payload);
    w.finish(out);
}

/// A packet being appended to a buffer: the header's length is filled in at `finish`.
#[derive(Debug)]
#[must_use]
pub struct PacketWriter {
    start: usize,
}

impl PacketWriter {
    pub fn begin(out: &mut Vec<u8>, seq: u8) -> Self {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, seq]);
        Self { start }
    }

    pub fn finish(self, out: &mut [u8]) {
        let len = out.len() - self.start - HEADER_LEN;
        debug_assert!(len < MAX_PAYLOAD);
        out[self.start..self.start + 3].copy_from_slice(&(len as u32).to_le_bytes()[..3]);
    }
}

pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

pub fn put_lenenc_str(out: &mut Vec<u8>, s: &[u8]) {
    put_lenenc_int(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A cursor over one payload; every read checks bounds and names what was being read.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn peek(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn lenenc_int(&mut self) -> Result<u64, WireError> {
        let width = match self.u8()? {
            v @ 0..=250 => return Ok(u64::from(v)),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => return Err(WireError::Malformed(self.what)),
        };
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(self.take(width)?);
        Ok(u64::from_le_bytes(v))
    }

    pub fn lenenc_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.lenenc_int()?;
        let n = usize::try_from(n).map_err(|_| WireError::Malformed(self.what))?;
        self.take(n)
    }

    /// Bytes up to a NUL, which is consumed.
    pub fn cstr(&mut self) -> Result<&'a [u8], WireError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::Truncated(self.what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// Bytes up to a NUL or the end of the payload (fields some clients leave unterminated).
    pub fn cstr_or_rest(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|&b| b == 0) {
            Some(end) => {
                let s = &self.buf[..end];
                self.buf = &self.buf[end + 1..];
                s
            }
            None => self.rest(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_lenenc_round_trip() {
        let mut out = Vec::new();
        write_packet(&mut out, 3, b"\x03select 1");
        let p = next_packet(&out).unwrap();
        assert_eq!((p.len, p.seq, p.continues()), (13, 3, false));
        assert_eq!(next_packet(&out[..3]), None);
        for v in [
            0,
            250,
            251,
            0xffff,
            0x1_0000,
            0xff_ffff,
            0x100_0000,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_lenenc_int(&mut b, v);
            let mut r = Reader::new(&b, "int");
            assert_eq!(r.lenenc_int().unwrap(), v);
            assert!(r.is_empty());
        }
        let mut r = Reader::new(b"\xfc\x01", "short");
        assert_eq!(r.lenenc_int(), Err(WireError::Truncated("short")));
        assert!(Reader::new(b"\xff", "bad").lenenc_int().is_err());
        assert!(Reader::new(b"abc", "nonul").cstr().is_err());
    }
}
