// node-postgres load through sluice, run by tests/it/drivers/node.rs with NODE_PATH from tools::node().
//
// usage: node node_pg_load.js HOST PORT USER PASSWORD DB CLIENTS ITERATIONS
//
// CLIENTS pg.Client connections at once, far more than the pool, so sessions keep moving between
// server connections. Each client sets its own search_path, application_name, statement_timeout
// and a custom GUC, then checks on every query that it still sees its own values: state replayed
// onto the wrong server connection, or left behind on one, shows up as a mismatch. Named queries
// are prepared once per client by pg and then only bound, so sluice must remap them wherever the
// client lands. Prints one `RESULT {json}` line; exits 1 on any failure.
'use strict';
const pg = require('pg');

const [host, port, user, password, database, clientsArg, itersArg] = process.argv.slice(2);
const clients = Number(clientsArg);
const iterations = Number(itersArg);
if (!database || !(clients > 0) || !(iterations > 0)) {
  console.error('usage: node node_pg_load.js HOST PORT USER PASSWORD DB CLIENTS ITERATIONS');
  process.exit(2);
}
const config = { host, port: Number(port), user, password, database, connectionTimeoutMillis: 10000 };

const BY_ID = "select $1::int + 1 as v, current_setting('sluice.client') as who,"
  + " current_setting('statement_timeout') as st, current_schema() as sch";
const INSERT = "insert into node_load (client, iter, val, who)"
  + " values ($1, $2, $3, current_setting('sluice.client'))";

// How PostgreSQL prints a millisecond setting: in whole seconds when it can.
const shownMs = (ms) => (ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);

function check(cond, what) {
  if (!cond) throw new Error(what);
}

const totals = { named: 0, inserts: 0, unnamed: 0, rows: 0, sum: 0, clients_ok: 0 };

async function setup() {
  const c = new pg.Client(config);
  await c.connect();
  try {
    await c.query('drop table if exists node_load');
    await c.query('create table node_load (client int not null, iter int not null,'
      + ' val int not null, who text not null, primary key (client, iter))');
    for (let i = 0; i < clients; i++) {
      await c.query(`drop schema if exists node_c${i} cascade`);
      await c.query(`create schema node_c${i}`);
    }
  } finally {
    await c.end();
  }
}

async function work(i) {
  const c = new pg.Client(config);
  await c.connect();
  try {
    const mine = { who: String(i), st: shownMs(1000 + i), sch: `node_c${i}`, app: `node-${i}` };
    await c.query(`SET search_path TO node_c${i}, public`);
    await c.query(`SET application_name = '${mine.app}'`);
    await c.query(`SET statement_timeout = '${1000 + i}ms'`);
    await c.query(`SELECT set_config('sluice.client', '${i}', false)`);
    for (let k = 0; k < iterations; k++) {
      const r = await c.query({ name: 'by_id', text: BY_ID, values: [k] });
      const row = r.rows[0];
      check(r.rows.length === 1 && row.v === k + 1, `client ${i} by_id(${k}) = ${JSON.stringify(r.rows)}`);
      for (const key of ['who', 'st', 'sch']) {
        check(row[key] === mine[key], `client ${i} iter ${k}: ${key} is ${row[key]}, not ${mine[key]}`);
      }
      totals.named++;

      const val = i * 1000 + k;
      await c.query('BEGIN');
      const ins = await c.query({ name: 'ins', text: INSERT, values: [i, k, val] });
      check(ins.rowCount === 1, `client ${i} insert rowCount ${ins.rowCount}`);
      await c.query('COMMIT');
      totals.inserts++;
      totals.rows++;
      totals.sum += val;

      if (k % 4 === 3) {
        const u = await c.query({
          text: "select $1::text || '/' || current_setting('application_name') as s",
          values: [`u${k}`],
        });
        check(u.rows[0].s === `u${k}/${mine.app}`, `client ${i} unnamed: ${u.rows[0].s}`);
        totals.unnamed++;
      }
    }
    const n = await c.query({ text: 'select count(*)::int as n from node_load where client = $1', values: [i] });
    check(n.rows[0].n === iterations, `client ${i} sees ${n.rows[0].n} of its ${iterations} rows`);
    totals.clients_ok++;
  } finally {
    await c.end().catch(() => {});
  }
}

async function main() {
  await setup();
  const results = await Promise.allSettled(Array.from({ length: clients }, (_, i) => work(i)));
  const failures = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
  for (const f of failures) console.error(f && f.stack ? f.stack : String(f));
  console.log('RESULT ' + JSON.stringify({ ...totals, failures: failures.length }));
  process.exit(failures.length === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
