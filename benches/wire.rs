//! Criterion micro-benchmarks of the hot-path codec: framing server output, the pinning scanner,
//! and the extended-protocol pipeline bookkeeping of one Bind/Execute/Sync round trip.
//!
//! `cargo bench --bench wire` (add `-- --quick` for a fast pass). Results are in docs/benchmarks.md.

use std::hint::black_box;

use bytes::{BufMut, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::postgres::pinning::pin_reason;
use sluice::postgres::pipeline::Pipeline;
use sluice::postgres::statements::{ServerStatements, StatementRegistry};
use sluice::postgres::wire::{self, Frames};

const MAX_MESSAGE: usize = 1 << 20;
const PREFIX: &str = "_sluice_b_";

/// One complete message: tag, length word, body.
fn frame(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

/// A DataRow of `(aid int4 as text, abalance int4 as text, filler char(84))`, like pgbench_accounts.
fn data_row(out: &mut BytesMut, i: usize) {
    let aid = i.to_string();
    let filler = [b' '; 84];
    let mut body = Vec::with_capacity(128);
    body.extend_from_slice(&3i16.to_be_bytes());
    for col in [aid.as_bytes(), b"0", &filler] {
        body.extend_from_slice(&(col.len() as i32).to_be_bytes());
        body.extend_from_slice(col);
    }
    frame(out, b'D', &body);
}

/// What the server sends for a `SELECT` of `rows` rows: RowDescription is left out (it is not
/// on the steady path for prepared statements), DataRows, CommandComplete, ReadyForQuery.
fn result_set(rows: usize) -> BytesMut {
    let mut out = BytesMut::new();
    for i in 0..rows {
        data_row(&mut out, i);
    }
    frame(&mut out, b'C', format!("SELECT {rows}\0").as_bytes());
    frame(&mut out, b'Z', b"I");
    out
}

fn bench_frames(c: &mut Criterion) {
    let mut group = c.benchmark_group("frames");
    for rows in [1usize, 100, 1000] {
        let buf = result_set(rows);
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_with_input(BenchmarkId::new("data_rows", rows), &buf, |b, buf| {
            b.iter(|| {
                // What the relay does with a read: walk the headers, look at the last status byte.
                let mut frames = Frames::new(black_box(buf), MAX_MESSAGE);
                let mut status = 0u8;
                for item in frames.by_ref() {
                    let (at, f) = item.expect("well-formed");
                    if f.tag == b'Z' {
                        status = buf[at + wire::FRAME_HEADER_LEN];
                    }
                }
                (frames.consumed(), status)
            })
        });
    }
    group.finish();
}

/// Typical statements, none of which pins, and a few that do.
const QUERIES: &[(&str, &str)] = &[
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    ),
    (
        "pgbench_update",
        "UPDATE pgbench_accounts SET abalance = abalance + -4172 WHERE aid = 48213;",
    ),
    ("begin", "BEGIN"),
    (
        "orm_select",
        "/* app=web route=/orders/:id */ SELECT \"orders\".\"id\", \"orders\".\"customer_id\", \
         \"orders\".\"status\", \"orders\".\"total_cents\", \"orders\".\"created_at\" FROM \"orders\" \
         INNER JOIN \"customers\" ON \"customers\".\"id\" = \"orders\".\"customer_id\" \
         WHERE \"orders\".\"id\" = $1 AND \"customers\".\"deleted_at\" IS NULL \
         AND \"orders\".\"note\" <> 'don''t; set anything' ORDER BY \"orders\".\"created_at\" DESC LIMIT 1",
    ),
    (
        "insert_literals",
        "INSERT INTO events (kind, payload, at) VALUES ('signup', E'{\"plan\": \"pro\", \"note\": \"it\\'s\"}', now()) RETURNING id",
    ),
    ("set_local", "SET LOCAL statement_timeout = '5s'"),
    ("pins_set", "SET search_path TO app, public"),
    (
        "pins_temp_table",
        "CREATE TEMP TABLE scratch (id int primary key, v text)",
    ),
    (
        "pins_advisory_lock",
        "SELECT pg_advisory_lock(hashtext('nightly-job'))",
    ),
];

fn bench_pin_reason(c: &mut Criterion) {
    let mut group = c.benchmark_group("pin_reason");
    for (name, sql) in QUERIES {
        group.throughput(Throughput::Bytes(sql.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| pin_reason(black_box(sql.as_bytes())))
        });
    }
    group.finish();
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

fn parse_msg(name: &[u8], sql: &[u8]) -> BytesMut {
    let mut body = Vec::new();
    cstr(&mut body, name);
    cstr(&mut body, sql);
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&23i32.to_be_bytes()); // int4
    let mut out = BytesMut::new();
    frame(&mut out, b'P', &body);
    out
}

/// Bind of the unnamed portal to `stmt` with one text parameter.
fn bind_msg(stmt: &[u8], param: &[u8]) -> BytesMut {
    let mut body = Vec::new();
    cstr(&mut body, b"");
    cstr(&mut body, stmt);
    body.extend_from_slice(&0i16.to_be_bytes()); // parameter formats: all text
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&(param.len() as i32).to_be_bytes());
    body.extend_from_slice(param);
    body.extend_from_slice(&0i16.to_be_bytes()); // result formats: all text
    let mut out = BytesMut::new();
    frame(&mut out, b'B', &body);
    out
}

fn simple(tag: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    frame(&mut out, tag, body);
    out
}

/// One client session on one server connection, with its output buffers.
struct Rig {
    pipeline: Pipeline,
    server: ServerStatements,
    registry: StatementRegistry,
    sout: BytesMut,
    cout: BytesMut,
}

impl Rig {
    fn new() -> Self {
        Self {
            pipeline: Pipeline::new(1),
            server: ServerStatements::default(),
            registry: StatementRegistry::new(PREFIX.into(), Default::default()),
            sout: BytesMut::with_capacity(8192),
            cout: BytesMut::with_capacity(8192),
        }
    }

    /// Feeds a batch of client messages, then the server's answer, the way the relay does
    /// (frame by frame over each buffer); returns the bytes that went each way.
    fn round_trip(&mut self, client: &[u8], server: &[u8]) -> (usize, usize) {
        self.sout.clear();
        self.cout.clear();
        for item in Frames::new(client, MAX_MESSAGE) {
            let (at, f) = item.expect("well-formed");
            self.pipeline
                .client_message(
                    &client[at..at + f.len],
                    &mut self.server,
                    &self.registry,
                    PREFIX,
                    &mut self.sout,
                    &mut self.cout,
                )
                .expect("valid client message");
        }
        for item in Frames::new(server, MAX_MESSAGE) {
            let (at, f) = item.expect("well-formed");
            self.pipeline.server_message(
                &server[at..at + f.len],
                &mut self.server,
                &self.registry,
                PREFIX,
                &mut self.sout,
                &mut self.cout,
            );
        }
        assert!(self.pipeline.releasable(), "round trip left work in flight");
        (self.sout.len(), self.cout.len())
    }
}

fn bench_pipeline(c: &mut Criterion) {
    const SQL: &[u8] = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let mut row = BytesMut::new();
    data_row(&mut row, 48213);
    let tail = [
        row.to_vec(),
        simple(b'C', b"SELECT 1\0").to_vec(),
        simple(b'Z', b"I").to_vec(),
    ]
    .concat();

    let mut group = c.benchmark_group("pipeline");

    // A named statement prepared once (as pgbench -M prepared and most pooled drivers do):
    // the steady path is Bind + Execute + Sync, renamed to the server's statement name.
    {
        let mut rig = Rig::new();
        let prepare = [parse_msg(b"q", SQL).to_vec(), simple(b'S', b"").to_vec()].concat();
        rig.round_trip(
            &prepare,
            &[simple(b'1', b"").to_vec(), simple(b'Z', b"I").to_vec()].concat(),
        );
        let client = [
            bind_msg(b"q", b"48213").to_vec(),
            simple(b'E', b"\0\0\0\0\0").to_vec(),
            simple(b'S', b"").to_vec(),
        ]
        .concat();
        let server = [simple(b'2', b"").to_vec(), tail.clone()].concat();
        group.throughput(Throughput::Elements(1));
        group.bench_function("bind_execute_sync_named", |b| {
            b.iter(|| rig.round_trip(black_box(&client), black_box(&server)))
        });
    }

    // The unnamed statement (pgbench -M extended, libpq PQexecParams): Parse + Bind + Describe
    // portal + Execute + Sync each time, so the pinning scanner runs on every Parse.
    {
        let mut rig = Rig::new();
        let client = [
            parse_msg(b"", SQL).to_vec(),
            bind_msg(b"", b"48213").to_vec(),
            simple(b'D', b"P\0").to_vec(),
            simple(b'E', b"\0\0\0\0\0").to_vec(),
            simple(b'S', b"").to_vec(),
        ]
        .concat();
        let mut desc = Vec::new();
        desc.extend_from_slice(&1i16.to_be_bytes());
        cstr(&mut desc, b"abalance");
        desc.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        let server = [
            simple(b'1', b"").to_vec(),
            simple(b'2', b"").to_vec(),
            simple(b'T', &desc).to_vec(),
            tail,
        ]
        .concat();
        group.bench_function("parse_bind_describe_execute_sync_unnamed", |b| {
            b.iter(|| rig.round_trip(black_box(&client), black_box(&server)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_frames, bench_pin_reason, bench_pipeline);
criterion_main!(benches);
