// A schema migration while node-postgres sessions hold named prepared statements, run by
// tests/it/drivers/migration.rs:  node node_pg_migration.js HOST PORT DDL_PORT DB USER PASSWORD
// Four clients on PORT take turns running two named queries (`select * from mig_t where id = $1`
// and `select cast($1 as mig_mood)::text`); between rounds a client on DDL_PORT runs
// ALTER TABLE ... ADD COLUMN, then DROP TYPE / CREATE TYPE of the enum. Prints
// `PHASE name ok=N errors=N codes=...` per phase and `COLUMNS n` for a client that connects
// after the migration.
const { Client } = require('pg');

const [host, port, ddlPort, database, user, password] = process.argv.slice(2);
const connect = async (p) => {
  const c = new Client({ host, port: Number(p), database, user, password });
  await c.connect();
  return c;
};
const ROWS = { name: 'mig_rows', text: 'select * from mig_t where id = $1' };
const CAST = { name: 'mig_cast', text: 'select cast($1 as mig_mood)::text as m' };

async function main() {
  const ddl = await connect(ddlPort);
  for (const sql of [
    'drop table if exists mig_t',
    'drop type if exists mig_mood',
    "create type mig_mood as enum ('happy', 'sad')",
    'create table mig_t (id int primary key, v text)',
    "insert into mig_t select g, 'v' || g from generate_series(1, 10) g",
  ]) await ddl.query(sql);
  const clients = [];
  for (let i = 0; i < 4; i++) clients.push(await connect(port));

  async function phase(name, rounds) {
    let ok = 0, errors = 0;
    const codes = new Set();
    const one = async (c, q, arg, check) => {
      try {
        const r = await c.query({ ...q, values: [arg] });
        if (!check(r.rows[0])) throw new Error(`wrong row ${JSON.stringify(r.rows[0])}`);
        ok++;
      } catch (e) {
        if (!e.code) throw e;
        errors++;
        codes.add(e.code);
        console.error(`${name}: ${e.code} ${e.message}`);
      }
    };
    for (let r = 0; r < rounds; r++) {
      const key = 1 + (r % 10);
      for (const c of clients) {
        await one(c, ROWS, key, (row) => row.id === key);
        await one(c, CAST, 'happy', (row) => row.m === 'happy');
      }
    }
    console.log(`PHASE ${name} ok=${ok} errors=${errors} codes=${[...codes].sort().join('|')}`);
  }

  await phase('warm', 10);
  await ddl.query('alter table mig_t add column extra int default 7');
  await phase('after_alter', 20);
  await ddl.query('drop type mig_mood');
  await ddl.query("create type mig_mood as enum ('happy', 'sad', 'ok')");
  await phase('after_type', 20);
  const late = await connect(port);
  let fields = 0;
  for (let i = 0; i < 10; i++) {
    fields = (await late.query({ ...ROWS, values: [1 + i] })).fields.length;
  }
  console.log(`COLUMNS ${fields}`);
  for (const c of [...clients, late, ddl]) await c.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
