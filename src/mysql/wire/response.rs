//! OK, ERR and EOF packets: the status flags and errors the relay reads, and the ones sluice sends.

use super::packet::{MAX_PAYLOAD, PacketWriter, Reader, WireError, put_lenenc_int};

/// The parts of an OK (or EOF) packet that sessions act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub state: String,
    pub message: String,
}

/// A row-stream terminator: EOF, or the OK packet that replaces it under DEPRECATE_EOF. A row
/// can start with 0xfe only as an 8-byte length prefix, which makes its packet full-size.
pub fn is_terminator(first: u8, payload_len: usize) -> bool {
    first == 0xfe && payload_len < MAX_PAYLOAD
}

/// Parses an OK packet (header 0x00 or 0xfe) or a classic 5-byte EOF packet.
pub fn parse_ok(payload: &[u8]) -> Result<OkPacket, WireError> {
    let mut r = Reader::new(payload, "OK packet");
    let header = r.u8()?;
    if header == 0xfe && payload.len() == 5 {
        let warnings = r.u16()?;
        let status = r.u16()?;
        return Ok(OkPacket {
            status,
            warnings,
            ..OkPacket::default()
        });
    }
    if header != 0x00 && header != 0xfe {
        return Err(WireError::Malformed("OK packet"));
    }
    Ok(OkPacket {
        affected_rows: r.lenenc_int()?,
        last_insert_id: r.lenenc_int()?,
        status: r.u16()?,
        warnings: r.u16()?,
    })
}

pub fn parse_err(payload: &[u8]) -> Result<ErrPacket, WireError> {
    let mut r = Reader::new(payload, "ERR packet");
    if r.u8()? != 0xff {
        return Err(WireError::Malformed("ERR packet"));
    }
    let code = r.u16()?;
    let mut rest = r.rest();
    let mut state = String::new();
    if rest.first() == Some(&b'#') && rest.len() >= 6 {
        state = String::from_utf8_lossy(&rest[1..6]).into_owned();
        rest = &rest[6..];
    }
    Ok(ErrPacket {
        code,
        state,
        message: String::from_utf8_lossy(rest).into_owned(),
    })
}

pub fn write_ok(out: &mut Vec<u8>, seq: u8, ok: &OkPacket) {
    let w = PacketWriter::begin(out, seq);
    out.push(0x00);
    put_lenenc_int(out, ok.affected_rows);
    put_lenenc_int(out, ok.last_insert_id);
    out.extend_from_slice(&ok.status.to_le_bytes());
    out.extend_from_slice(&ok.warnings.to_le_bytes());
    w.finish(out);
}

pub fn write_eof(out: &mut Vec<u8>, seq: u8, status: u16) {
    let w = PacketWriter::begin(out, seq);
    out.push(0xfe);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&status.to_le_bytes());
    w.finish(out);
}

/// An ERR packet with a SQLSTATE (`state` is five characters).
pub fn write_err(out: &mut Vec<u8>, seq: u8, code: u16, state: &str, message: &str) {
    let w = PacketWriter::begin(out, seq);
    out.push(0xff);
    out.extend_from_slice(&code.to_le_bytes());
    out.push(b'#');
    let mut st = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in st.iter_mut().zip(state.bytes()) {
        *d = s;
    }
    out.extend_from_slice(&st);
    // Keep the packet single: messages are short, but a quoted identifier could be anything.
    let max = MAX_PAYLOAD - 16;
    out.extend_from_slice(&message.as_bytes()[..message.len().min(max)]);
    w.finish(out);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mysql::wire::next_packet;

    #[test]
    fn ok_eof_err_round_trip() {
        let ok = OkPacket {
            affected_rows: 3,
            last_insert_id: 70_000,
            status: 0x0003,
            warnings: 1,
        };
        let mut out = Vec::new();
        write_ok(&mut out, 2, &ok);
        let p = next_packet(&out).unwrap();
        assert_eq!(p.seq, 2);
        assert_eq!(parse_ok(&out[4..p.len]).unwrap(), ok);

        out.clear();
        write_eof(&mut out, 5, 0x0002);
        assert_eq!(parse_ok(&out[4..]).unwrap().status, 0x0002);
        assert!(is_terminator(out[4], out.len() - 4));
        assert!(!is_terminator(0xfe, MAX_PAYLOAD));

        out.clear();
        write_err(&mut out, 1, 1045, "28000", "Access denied");
        let e = parse_err(&out[4..]).unwrap();
        assert_eq!(
            (e.code, e.state.as_str(), e.message.as_str()),
            (1045, "28000", "Access denied")
        );
        assert!(parse_ok(b"\x00\x01").is_err());
    }
}
