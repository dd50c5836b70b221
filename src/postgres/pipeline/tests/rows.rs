//! DataRow runs taken at once: where they stop, and that sluice's own query's rows are not
//! taken.

use super::*;

fn row(value: &[u8]) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend_from_slice(&(value.len() as i32).to_be_bytes());
    body.extend_from_slice(value);
    frame(b'D', &body)
}

#[test]
fn a_run_of_rows_stops_at_the_first_other_message_or_partial_row() {
    let mut rig = Rig::new(1);
    let mut server = ServerStatements::default();
    rig.client(&mut server, &[frame(b'Q', b"SELECT 1\0")]);
    let rows: Vec<u8> = [row(b"1"), row(b"22"), row(b"333")].concat();
    let mut buf = rows.clone();
    buf.extend_from_slice(&frame(b'C', b"SELECT 3\0"));
    assert_eq!(
        rig.p.data_rows(&buf, usize::MAX),
        rows.len(),
        "stops at CommandComplete"
    );
    assert_eq!(
        rig.p.data_rows(&rows[..rows.len() - 1], usize::MAX),
        12 + 13
    );
    assert_eq!(
        rig.p.data_rows(&rows, 12 + 13),
        12 + 13,
        "at most the limit"
    );
    assert_eq!(rig.p.data_rows(&buf[rows.len()..], usize::MAX), 0);
    let mut broken = row(b"1");
    broken[1..5].copy_from_slice(&3i32.to_be_bytes());
    assert_eq!(
        rig.p.data_rows(&broken, usize::MAX),
        0,
        "an impossible length is left"
    );
    // The rest of the reply still goes through message by message.
    let out = rig.server(&mut server, &[frame(b'C', b"SELECT 3\0"), ready(b'I')]);
    assert_eq!(out, vec![s('C', ""), s('Z', "")]);
}

#[test]
fn rows_of_sluices_own_query_are_never_taken() {
    let mut rig = Rig::new(1);
    let mut sout = BytesMut::new();
    rig.p
        .internal_query(Purpose::PinCheck, "SELECT 0", &mut sout);
    assert_eq!(rig.p.data_rows(&row(b"0"), usize::MAX), 0);
}
