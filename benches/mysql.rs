//! Criterion micro-benchmarks of the MySQL hot path: the statement scanner every COM_QUERY goes
//! through, and walking a reply's packets to find where it ends (what `relay::forward` does
//! besides copying bytes).
//!
//! `cargo bench --bench mysql` (add `-- --quick` for a fast pass). Results are in docs/benchmarks.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::mysql::pinning::effects;
use sluice::mysql::wire::{self, OkPacket, Reply, ReplyKind};

const QUERIES: &[(&str, &str)] = &[
    ("point_select", "SELECT c FROM sbtest1 WHERE id=5012"),
    (
        "range_order",
        "SELECT c FROM sbtest3 WHERE id BETWEEN 4001 AND 4100 ORDER BY c",
    ),
    (
        "update_index",
        "UPDATE sbtest2 SET k=k+1 WHERE id=5012 /* sysbench */",
    ),
    (
        "set_names",
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_general_ci'",
    ),
    ("begin", "BEGIN"),
];

fn bench_effects(c: &mut Criterion) {
    let mut group = c.benchmark_group("mysql_effects");
    for (name, sql) in QUERIES {
        group.throughput(Throughput::Bytes(sql.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| effects(black_box(sql.as_bytes())))
        });
    }
    group.finish();
}

/// A text result set of `rows` rows of one 120-byte column, ended per DEPRECATE_EOF.
fn result_set(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_packet(&mut out, 1, &[1]);
    wire::write_packet(&mut out, 2, b"\x03def\x06sbtest\x07sbtest1\x07sbtest1\x01c\x01c\x0c\x08\x00\xf0\x00\x00\x00\xfe\x00\x00\x00\x00\x00");
    let mut row = vec![120u8];
    row.extend_from_slice(&[b'x'; 120]);
    for i in 0..rows {
        wire::write_packet(&mut out, (3 + i) as u8, &row);
    }
    let mut end = Vec::new();
    let ok = OkPacket {
        status: 2,
        ..OkPacket::default()
    };
    wire::write_ok(&mut end, 0, &ok);
    end[4] = 0xfe;
    out.extend_from_slice(&end);
    out
}

/// Walks `bytes` as the relay does: classify each packet, feed the state machine.
fn walk(bytes: &[u8]) -> Option<u16> {
    let mut reply = Reply::new(ReplyKind::Query, true);
    let mut at = 0;
    while let Some(p) = wire::next_packet(&bytes[at..]) {
        let payload = &bytes[at + wire::HEADER_LEN..at + p.len];
        let whole = reply.needs_whole(payload[0], p.payload_len());
        let seen = if whole { payload } else { &payload[..1] };
        reply.on_packet(seen, p.payload_len()).ok()?;
        at += p.len;
    }
    reply.end.map(|e| e.status)
}

fn bench_reply(c: &mut Criterion) {
    let mut group = c.benchmark_group("mysql_reply");
    for rows in [1usize, 100] {
        let bytes = result_set(rows);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(rows), &bytes, |b, bytes| {
            b.iter(|| walk(black_box(bytes)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_effects, bench_reply);
criterion_main!(benches);
