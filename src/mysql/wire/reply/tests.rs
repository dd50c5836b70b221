//! Response shapes fed packet by packet: where each one ends and what status it ends with.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::mysql::wire::{OkPacket, write_eof, write_err, write_ok, write_packet};

const IN_TRANS: u16 = 1;
const MORE: u16 = 8;

fn ok(status: u16) -> OkPacket {
    OkPacket {
        status,
        ..OkPacket::default()
    }
}

/// Packets of a result set with `cols` columns and `rows` text rows, ended per `deprecate_eof`.
fn result_set(out: &mut Vec<u8>, cols: u8, rows: usize, deprecate_eof: bool, status: u16) {
    write_packet(out, 1, &[cols]);
    for _ in 0..cols {
        write_packet(
            out,
            2,
            b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00",
        );
    }
    if !deprecate_eof {
        write_eof(out, 3, 0);
    }
    for _ in 0..rows {
        write_packet(out, 4, b"\x011\x01\xfb"[..usize::from(cols) * 2].as_ref());
    }
    if deprecate_eof {
        let mut end = Vec::new();
        write_ok(&mut end, 5, &ok(status));
        end[4] = 0xfe;
        out.extend_from_slice(&end);
    } else {
        write_eof(out, 5, status);
    }
}

/// Feeds `bytes` and returns how many packets the reply took before it was done.
fn feed(reply: &mut Reply, bytes: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while at < bytes.len() {
        assert!(!reply.done(), "done after {n} packets, before the end");
        let p = crate::mysql::wire::next_packet(&bytes[at..]).unwrap();
        let payload = &bytes[at + 4..at + p.len];
        let whole = reply.needs_whole(payload[0], p.payload_len());
        let seen = if whole { payload } else { &payload[..1] };
        reply.on_packet(seen, p.payload_len()).unwrap();
        at += p.len;
        n += 1;
    }
    n
}

#[test]
fn result_sets_end_at_their_terminator_in_both_eof_modes() {
    for deprecate in [false, true] {
        let mut bytes = Vec::new();
        result_set(&mut bytes, 2, 3, deprecate, 2 | IN_TRANS);
        let mut r = Reply::new(ReplyKind::Query, deprecate);
        feed(&mut r, &bytes);
        assert!(r.done(), "deprecate_eof={deprecate}");
        assert_eq!(r.end.unwrap().status, 2 | IN_TRANS);
    }
}

#[test]
fn multi_results_go_on_until_the_last_has_no_more_results_flag() {
    let mut bytes = Vec::new();
    result_set(&mut bytes, 1, 1, false, MORE);
    write_ok(&mut bytes, 6, &ok(MORE | 2));
    result_set(&mut bytes, 1, 0, false, MORE);
    write_ok(&mut bytes, 9, &ok(2));
    let mut r = Reply::new(ReplyKind::Query, false);
    feed(&mut r, &bytes);
    assert!(r.done());
    assert_eq!(r.results, 4);
    assert_eq!(r.end.unwrap().status, 2);
}

#[test]
fn an_error_ends_the_response_even_mid_rows() {
    let mut bytes = Vec::new();
    write_packet(&mut bytes, 1, &[1]);
    write_packet(&mut bytes, 2, b"\x03def");
    write_eof(&mut bytes, 3, 0);
    write_packet(&mut bytes, 4, b"\x011");
    write_err(
        &mut bytes,
        5,
        1317,
        "70100",
        "Query execution was interrupted",
    );
    let mut r = Reply::new(ReplyKind::Query, false);
    feed(&mut r, &bytes);
    assert!(r.done());
    assert_eq!(r.error, Some(1317));
}

#[test]
fn prepare_skips_definitions_and_their_eofs() {
    for (params, cols, deprecate) in [
        (2u16, 3u16, false),
        (0, 1, false),
        (2, 0, true),
        (0, 0, false),
    ] {
        let mut bytes = Vec::new();
        let mut head = vec![0u8];
        head.extend_from_slice(&7u32.to_le_bytes());
        head.extend_from_slice(&cols.to_le_bytes());
        head.extend_from_slice(&params.to_le_bytes());
        head.extend_from_slice(&[0, 0, 0]);
        write_packet(&mut bytes, 1, &head);
        for block in [params, cols] {
            for _ in 0..block {
                write_packet(&mut bytes, 2, b"\x03def");
            }
            if block > 0 && !deprecate {
                write_eof(&mut bytes, 3, 2);
            }
        }
        let mut r = Reply::new(ReplyKind::Prepare, deprecate);
        feed(&mut r, &bytes);
        assert!(r.done(), "{params} {cols} {deprecate}");
        let p = r.prepared.unwrap();
        assert_eq!((p.statement_id, p.params, p.columns), (7, params, cols));
    }
}

#[test]
fn a_full_size_row_continues_without_being_classified() {
    let mut r = Reply::new(ReplyKind::Query, true);
    r.on_packet(&[1], 1).unwrap();
    r.on_packet(&[3], 30).unwrap();
    // A 16 MiB row whose first column has an 8-byte length prefix (0xfe), then its tail,
    // which happens to start with 0xfe too: neither ends the result set.
    assert!(!r.needs_whole(0xfe, MAX_PAYLOAD));
    r.on_packet(&[0xfe], MAX_PAYLOAD).unwrap();
    assert!(!r.needs_whole(0xfe, 3));
    r.on_packet(&[0xfe], 3).unwrap();
    assert!(!r.done());
    let mut end = Vec::new();
    write_ok(&mut end, 0, &ok(2));
    end[4] = 0xfe;
    r.on_packet(&end[4..], end.len() - 4).unwrap();
    assert!(r.done());
}

#[test]
fn single_packet_replies_and_garbage() {
    let mut r = Reply::new(ReplyKind::Single, false);
    r.on_packet(b"Uptime: 5  Threads: 1", 21).unwrap();
    assert!(r.done());
    assert!(
        r.on_packet(b"\x00", 1).is_err(),
        "nothing may follow the end"
    );
    let mut r = Reply::new(ReplyKind::Query, false);
    r.on_packet(b"\xfbfile.csv", 9).unwrap();
    assert!(
        r.wants_file() && !r.done(),
        "LOCAL INFILE waits for the file"
    );
    assert!(
        r.on_packet(b"\x00", 1).is_err(),
        "nothing comes before the file"
    );
    r.file_sent();
    let mut end = Vec::new();
    write_ok(&mut end, 0, &ok(2));
    r.on_packet(&end[4..], end.len() - 4).unwrap();
    assert!(r.done() && r.results == 1, "its OK ends the statement");
    let mut r = Reply::new(ReplyKind::Prepare, false);
    assert!(
        r.on_packet(b"\xfbfile.csv", 9).is_err(),
        "only a query asks for a file"
    );
    let mut r = Reply::new(ReplyKind::Query, false);
    assert!(r.on_packet(b"\x00\x01", 2).is_err(), "truncated OK");
    // Found by the mysql_relay fuzz target: a result set is no answer to COM_STMT_PREPARE,
    // and taken as one it let a query's rows answer another session's PREPARE.
    let mut r = Reply::new(ReplyKind::Prepare, true);
    assert!(
        r.on_packet(b"\x01", 1).is_err(),
        "a PREPARE is answered by PREPARE_OK or ERR only"
    );
}

#[test]
fn sequence_ids_count_on_from_the_command() {
    let mut command = Vec::new();
    write_packet(&mut command, 0, &[0x03; 10]);
    assert_eq!(crate::mysql::wire::last_seq(&command), 0);
    write_packet(&mut command, 1, b"rest");
    assert_eq!(crate::mysql::wire::last_seq(&command), 1);
    let mut r = Reply::new(ReplyKind::Query, false);
    r.starts_after(1);
    assert!(r.check_seq(1).is_err(), "a repeated id");
    let mut r = Reply::new(ReplyKind::Query, false);
    r.starts_after(1);
    r.check_seq(2).unwrap();
    assert!(r.check_seq(4).is_err(), "a skipped id");
    let mut r = Reply::new(ReplyKind::Query, false);
    r.starts_after(255);
    r.check_seq(0).unwrap();
    // After a local file the server counts on from the client's packets.
    r.file_sent();
    r.check_seq(9).unwrap();
    r.check_seq(10).unwrap();
    assert!(r.check_seq(12).is_err());
}

/// Rows fed in runs by `whole_rows` end the reply where packet-by-packet feeding does, with the
/// same status, and a run stops at a row that is not all there or out of sequence.
#[test]
fn rows_fed_in_runs_end_where_rows_fed_one_by_one_do() {
    let mut bytes = Vec::new();
    write_packet(&mut bytes, 1, &[1]);
    write_packet(
        &mut bytes,
        2,
        b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x0b\x00\x00\x00",
    );
    write_eof(&mut bytes, 3, 0);
    let rows_at = bytes.len();
    for seq in 4..=8 {
        write_packet(&mut bytes, seq, b"\x0242");
    }
    let end_at = bytes.len();
    write_eof(&mut bytes, 9, IN_TRANS);
    let mut r = Reply::new(ReplyKind::Query, false);
    r.starts_after(0);
    let mut at = 0;
    while at < rows_at {
        let p = crate::mysql::wire::next_packet(&bytes[at..]).unwrap();
        r.check_seq(p.seq).unwrap();
        r.on_packet(&bytes[at + 4..at + p.len], p.payload_len())
            .unwrap();
        at += p.len;
    }
    assert_eq!(
        r.clone().whole_rows(&bytes[at..end_at - 1]),
        4 * 7,
        "the last row is cut short"
    );
    let mut fed = r.clone();
    assert_eq!(
        fed.whole_rows(&bytes[at..]),
        end_at - rows_at,
        "stops at the EOF"
    );
    let eof = &bytes[end_at..];
    fed.check_seq(eof[3]).unwrap();
    fed.on_packet(&eof[4..], eof.len() - 4).unwrap();
    assert!(fed.done());
    assert_eq!(fed.end.unwrap().status, IN_TRANS);
    // A row out of sequence is left to the packet-by-packet check, which refuses it.
    let mut skipped = bytes[at..end_at].to_vec();
    skipped[7 + 3] = 9;
    assert_eq!(r.whole_rows(&skipped), 7);
    assert!(r.check_seq(skipped[7 + 3]).is_err());
}
