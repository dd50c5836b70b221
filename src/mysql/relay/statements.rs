//! Binary-protocol statements as a session sees them, and COM_STMT_EXECUTE rewritten for the
//! server connection that runs it.

use std::sync::Arc;

use crate::mysql::wire::{self, PacketWriter, command};

/// A protocol-level statement as its client prepared it.
#[derive(Debug)]
pub(in crate::mysql) struct Prepared {
    pub sql: Arc<[u8]>,
    pub params: u16,
    /// Parameter types of the last execute that sent them (COM_STMT_EXECUTE may omit them once
    /// sent, but the server connection that saw them may not be the one that runs it now).
    pub types: Option<Box<[u8]>>,
}

/// Appends COM_STMT_EXECUTE (`payload` from the client) with the server's statement id and the
/// parameter types always included.
pub(super) fn execute_packet(
    stmt: &mut Prepared,
    payload: &[u8],
    server_id: u32,
    out: &mut Vec<u8>,
) {
    let params = usize::from(stmt.params);
    // command, id, flags, iteration count, then the NULL bitmap and the new-params flag.
    let flag_at = 10 + params.div_ceil(8);
    let start = out.len();
    let w = PacketWriter::begin(out, 0);
    out.push(command::STMT_EXECUTE);
    out.extend_from_slice(&server_id.to_le_bytes());
    if params == 0 || payload.len() <= flag_at || payload.len() >= wire::MAX_PAYLOAD {
        out.extend_from_slice(&payload[5..]);
    } else if payload[flag_at] == 1 {
        if let Some(types) = payload.get(flag_at + 1..flag_at + 1 + 2 * params)
            && stmt.types.as_deref() != Some(types)
        {
            stmt.types = Some(types.into());
        }
        out.extend_from_slice(&payload[5..]);
    } else if let Some(types) = &stmt.types {
        out.extend_from_slice(&payload[5..flag_at]);
        out.push(1);
        out.extend_from_slice(types);
        out.extend_from_slice(&payload[flag_at + 1..]);
    } else {
        out.extend_from_slice(&payload[5..]);
    }
    if out.len() - start - wire::HEADER_LEN < wire::MAX_PAYLOAD {
        w.finish(out);
    } else {
        // A full-size first packet continues in packets forwarded as they are: keep its header.
        let len = payload.len().to_le_bytes();
        out[start..start + 3].copy_from_slice(&len[..3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute(id: u32, bound: bool, types: &[u8], values: &[u8]) -> Vec<u8> {
        let mut p = vec![command::STMT_EXECUTE];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(0); // NULL bitmap of two parameters
        p.push(u8::from(bound));
        if bound {
            p.extend_from_slice(types);
        }
        p.extend_from_slice(values);
        p
    }

    #[test]
    fn types_sent_once_go_with_every_execute() {
        let mut stmt = Prepared {
            sql: Arc::from(&b"SELECT ?, ?"[..]),
            params: 2,
            types: None,
        };
        let types = [3, 0, 253, 0];
        let values = b"\x01\x00\x00\x00\x02hi";
        let mut out = Vec::new();
        execute_packet(&mut stmt, &execute(7, true, &types, values), 41, &mut out);
        assert_eq!(&out[4..], &execute(41, true, &types, values)[..]);
        assert_eq!(stmt.types.as_deref(), Some(&types[..]));

        // The client leaves the types out now; the server connection may never have seen them.
        out.clear();
        execute_packet(&mut stmt, &execute(7, false, &[], values), 99, &mut out);
        let p = wire::next_packet(&out).map(|p| p.len);
        assert_eq!(p, Some(out.len()), "the header counts the inserted types");
        assert_eq!(&out[4..], &execute(99, true, &types, values)[..]);
    }

    #[test]
    fn statements_without_parameters_only_change_the_id() {
        let mut stmt = Prepared {
            sql: Arc::from(&b"SELECT 1"[..]),
            params: 0,
            types: None,
        };
        let payload = [command::STMT_EXECUTE, 7, 0, 0, 0, 0, 1, 0, 0, 0];
        let mut out = Vec::new();
        execute_packet(&mut stmt, &payload, 3, &mut out);
        assert_eq!(
            &out[4..],
            &[command::STMT_EXECUTE, 3, 0, 0, 0, 0, 1, 0, 0, 0]
        );
    }
}
