// LISTEN/NOTIFY through sluice with node-postgres, run by tests/it/drivers/notify.rs with
// NODE_PATH from tools::node().
//
// usage: node node_pg_notify.js HOST PORT USER PASSWORD DB DIRECT_PORT [CLIENTS [NOTIFICATIONS [IDLE_SECONDS]]]
//
// CLIENTS pg.Client connections LISTEN on node_jobs and on one of four node_c<n> channels (plain,
// quoted inside BEGIN/COMMIT, or by the extended protocol), and take notifications from the
// 'notification' event. All clients first sit idle for IDLE_SECONDS (the test makes that longer
// than sluice's idle_client_park_after, which must not leave a listener unable to take
// notifications), then a quarter of the notifications go out while they are still idle: each
// must reach every client without the client sending anything.
// The rest go out while every client keeps running queries on a pool much smaller than their
// number. Notifications are sent through sluice (pg_notify() alone or in a transaction) and by a
// client connected straight to PostgreSQL on DIRECT_PORT (application_name notify-direct, left
// out of the test's count of server connections). Every client must get every notification on
// its channels once, in commit order, with processId the sending backend's pg_backend_pid().
// The same holds against PostgreSQL itself (both ports pointing at it). Prints one
// `RESULT {json}` line; exits 1 with every mismatch on stderr.
'use strict';
const pg = require('pg');

const [host, port, user, password, database, directPort, clientsArg, notesArg, idleArg] =
  process.argv.slice(2);
if (!directPort) {
  console.error('usage: node node_pg_notify.js HOST PORT USER PASSWORD DB DIRECT_PORT'
    + ' [CLIENTS [NOTIFICATIONS [IDLE_SECONDS]]]');
  process.exit(2);
}
const clients = Number(clientsArg || 20);
const notifications = Number(notesArg || 40);
const idleSeconds = Number(idleArg || 0);
const WAIT_MS = 30000; // a slow machine, a debug build, a small pool
const IDLE_WAIT_MS = 10000; // "at once", loosely: the failure it catches never delivers at all
const config = (p, app) => ({
  host, port: Number(p), user, password, database, connectionTimeoutMillis: 30000,
  application_name: app,
});

const failures = [];
const expectedPid = new Map(); // `${channel}\n${payload}` -> pid
const sent = new Map(); // channel -> [payload]
const byMethod = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(cond, what) {
  if (!cond) throw new Error(what);
}

class Listener {
  constructor(i) {
    this.i = i;
    this.name = `client ${i}`;
    this.channel = `node_c${i % 4}`;
    this.got = new Map(); // channel -> [[payload, pid]]
    this.queries = 0;
    this.client = new pg.Client(config(port));
    this.client.on('notification', (m) => {
      if (!this.got.has(m.channel)) this.got.set(m.channel, []);
      this.got.get(m.channel).push([m.payload, m.processId]);
    });
    // An error event with no listener would crash the process instead of failing one client.
    this.client.on('error', (e) => failures.push(`${this.name}: ${e.stack || e}`));
  }

  count(channel) {
    return (this.got.get(channel) || []).length;
  }

  async subscribe() {
    const c = this.client;
    await c.connect();
    switch (this.i % 3) {
      case 0:
        await c.query('LISTEN node_jobs');
        await c.query(`LISTEN ${this.channel}`);
        break;
      case 1:
        await c.query('BEGIN');
        await c.query('LISTEN "node_jobs"');
        await c.query(`LISTEN "${this.channel}"`);
        await c.query('COMMIT');
        break;
      default:
        await c.query({ text: 'LISTEN node_jobs', queryMode: 'extended' });
        await c.query({ text: `LISTEN ${this.channel}`, queryMode: 'extended' });
    }
  }

  async work(stop) {
    const c = this.client;
    while (!stop.done) {
      if (this.queries % 3 === 2) {
        await c.query('BEGIN');
        const r = await c.query('select $1::int as v', [this.queries]);
        check(r.rows[0].v === this.queries, `${this.name}: select in a transaction`);
        await c.query('COMMIT');
      } else {
        const r = await c.query({ text: 'select $1::int + 1 as v', values: [this.queries] });
        check(r.rows[0].v === this.queries + 1, `${this.name}: select`);
      }
      this.queries++;
      await sleep(20 + Math.random() * 80);
    }
  }
}

function describe(got, want) {
  const missing = want.filter((p) => !got.includes(p));
  const extra = got.filter((p) => !want.includes(p));
  const dups = [...new Set(got.filter((p, i) => got.indexOf(p) !== i))];
  if (missing.length || extra.length || dups.length) {
    return `${got.length} received, ${want.length} sent; missing ${JSON.stringify(missing.slice(0, 8))},`
      + ` unexpected ${JSON.stringify(extra.slice(0, 8))}, duplicated ${JSON.stringify(dups.slice(0, 8))}`;
  }
  return `out of order: ${JSON.stringify(got.slice(0, 12))}`;
}

async function main() {
  const started = Date.now();
  const direct = new pg.Client(config(directPort, 'notify-direct'));
  await direct.connect();
  const directPid = (await direct.query('select pg_backend_pid() as pid')).rows[0].pid;
  check(directPid === direct.processID,
    `direct: pg_backend_pid() ${directPid}, BackendKeyData ${direct.processID}`);
  const sender = new pg.Client(config(port));
  await sender.connect();

  const listeners = Array.from({ length: clients }, (_, i) => new Listener(i));
  await Promise.all(listeners.map((l) => l.subscribe()));

  const NOTIFY = 'select pg_notify($1, $2), pg_backend_pid() as pid';
  const methods = ['sluice', 'direct', 'sluice_txn', 'direct_txn'];
  async function send(channel, payload, how) {
    const c = how.startsWith('sluice') ? sender : direct;
    const txn = how.endsWith('_txn');
    let pid;
    if (txn) await c.query('BEGIN');
    if (how === 'direct') {
      // NOTIFY takes a literal, not a parameter.
      await c.query(`NOTIFY ${channel}, ${c.escapeLiteral(payload)}`);
      pid = directPid;
    } else {
      pid = (await c.query(NOTIFY, [channel, payload])).rows[0].pid;
    }
    if (txn) await c.query('COMMIT');
    if (c === direct) check(pid === directPid, 'direct pid changed');
    expectedPid.set(`${channel}\n${payload}`, pid);
    if (!sent.has(channel)) sent.set(channel, []);
    sent.get(channel).push(payload);
    byMethod[how] = (byMethod[how] || 0) + 1;
  }
  const payload = (k) => (k % 5 === 2 ? `${k} ünï ✓ 🐘 'q'` : String(k));

  // Idle: nobody sends anything, so whatever arrives was pushed to them.
  await sleep(idleSeconds * 1000);
  const idleSends = Math.floor(notifications / 4);
  let idleMaxMs = 0;
  for (let k = 0; k < idleSends; k++) {
    await send('node_jobs', payload(k), methods[k % 4]);
    const t = Date.now();
    while (listeners.some((l) => l.count('node_jobs') < k + 1)) {
      check(Date.now() - t < IDLE_WAIT_MS,
        `idle clients: notification ${k} not at all of them ${IDLE_WAIT_MS} ms after its commit`);
      await sleep(5);
    }
    idleMaxMs = Math.max(idleMaxMs, Date.now() - t);
  }

  const stop = { done: false };
  const work = listeners.map((l) => l.work(stop).catch((e) => {
    failures.push(`${l.name}: ${e.stack || e}`);
  }));
  for (let k = idleSends; k < notifications; k++) {
    await send('node_jobs', payload(k), methods[k % 4]);
    if (k % 2 === 0) await send(`node_c${(k >> 1) % 4}`, `c${k}`, methods[(k >> 3) % 4]);
    await sleep(5 + Math.random() * 30);
  }

  const want = (l) => ({ node_jobs: sent.get('node_jobs'), [l.channel]: sent.get(l.channel) || [] });
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline
    && listeners.some((l) => Object.entries(want(l)).some(([ch, p]) => l.count(ch) < p.length))) {
    await sleep(50);
  }
  await sleep(500); // room for duplicates to show
  stop.done = true;
  await Promise.all(work);

  let ok = 0;
  for (const l of listeners) {
    const bad = [];
    const w = want(l);
    for (const ch of new Set([...l.got.keys(), ...Object.keys(w)])) {
      const got = (l.got.get(ch) || []).map(([p]) => p);
      const expected = w[ch] || [];
      if (JSON.stringify(got) !== JSON.stringify(expected)) {
        bad.push(`${l.name}: ${ch}: ${describe(got, expected)}`);
        continue;
      }
      for (const [p, pid] of l.got.get(ch) || []) {
        const from = expectedPid.get(`${ch}\n${p}`);
        if (pid !== from) {
          bad.push(`${l.name}: ${ch} ${JSON.stringify(p)} came with processId ${pid}, sent by backend ${from}`);
          break;
        }
      }
    }
    failures.push(...bad);
    if (bad.length === 0) ok++;
    await l.client.end();
  }
  await sender.end();
  await direct.end();
  console.log('RESULT ' + JSON.stringify({
    clients,
    clients_ok: ok,
    notifications,
    idle_sends: idleSends,
    idle_max_ms: idleMaxMs,
    jobs_received: listeners.reduce((n, l) => n + l.count('node_jobs'), 0),
    channel_received: listeners.reduce((n, l) => n + l.count(l.channel), 0),
    received_total: listeners.reduce((n, l) => n + [...l.got.values()].reduce((m, v) => m + v.length, 0), 0),
    channel_sent: [0, 1, 2, 3].reduce((n, c) => n + (sent.get(`node_c${c}`) || []).length, 0),
    sent: byMethod,
    queries: listeners.reduce((n, l) => n + l.queries, 0),
    seconds: (Date.now() - started) / 1000,
  }));
}

function finish() {
  for (const f of failures) console.error(f);
  process.exit(failures.length === 0 ? 0 : 1);
}

// Ends a hung run with what went wrong so far, before the test kills it without a word.
setTimeout(() => {
  failures.push('main: not done after 200 s');
  finish();
}, 200000).unref();
main().catch((e) => failures.push(`main: ${e.stack || e}`)).finally(finish);
