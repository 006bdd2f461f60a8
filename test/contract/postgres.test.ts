/**
 * The four store contracts on the PostgreSQL backends, plus what only this
 * backend has: migrations at start (SPEC §1 DATABASE_URL: "schema is
 * created/migrated at start"), the shared pool wiring of stores.ts, and
 * data that outlives the connection that wrote it.
 *
 * Everything runs in a schema created for this file and dropped after it.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/config.ts';
import { PostgresAckTracker } from '../../src/storage/acks/postgres-acks.ts';
import { PostgresHistory } from '../../src/storage/history/postgres-history.ts';
import { MIGRATIONS } from '../../src/storage/postgres/migrations.ts';
import { fromSqlKey, PostgresConnection, sqlKey } from '../../src/storage/postgres/postgres-connection.ts';
import { PostgresQueue } from '../../src/storage/queue/postgres-queue.ts';
import { createStores } from '../../src/storage/stores.ts';
import { PostgresTemplateStore } from '../../src/storage/templates/postgres-templates.ts';
import { createTestSchema, TEST_DATABASE_URL, type TestSchema } from '../helpers/postgres.ts';
import { runAckContract } from './acks.contract.ts';
import { runHistoryContract } from './history.contract.ts';
import { runQueueContract, storedNote } from './queue.contract.ts';
import { runTemplateContract } from './templates.contract.ts';

const TABLES = ['ara_queue', 'ara_history', 'ara_acks', 'ara_ack_stats', 'ara_templates'];

let schema: TestSchema;
let db: PostgresConnection;
/** Schemas made by single tests, dropped with the file's own. */
const extraSchemas: TestSchema[] = [];

before(async () => {
  schema = await createTestSchema();
  db = new PostgresConnection({ url: schema.url, poolSize: 8 });
  await db.start();
});

after(async () => {
  await db?.close();
  await Promise.all([schema, ...extraSchemas].filter(Boolean).map((s) => s.drop()));
});

/** Stores on the file's pool; each test starts from empty tables. */
function onPool<T>(create: (connection: PostgresConnection) => T) {
  return async () => ({
    store: create(db),
    cleanup: async () => void (await db.query(`TRUNCATE ${TABLES.join(', ')}`)),
  });
}

runQueueContract('postgres', onPool((c) => new PostgresQueue(c)));
runHistoryContract('postgres', onPool((c) => new PostgresHistory(c)));
runAckContract('postgres', onPool((c) => new PostgresAckTracker(c)));
runTemplateContract('postgres', onPool((c) => new PostgresTemplateStore(c)));

async function freshSchema(): Promise<TestSchema> {
  const fresh = await createTestSchema('ara_mig');
  extraSchemas.push(fresh);
  return fresh;
}

async function appliedVersions(connection: PostgresConnection): Promise<Array<{ version: number; applied_at: Date }>> {
  const { rows } = await connection.query<{ version: number; applied_at: Date }>(
    'SELECT version, applied_at FROM ara_schema_migrations ORDER BY version',
  );
  return rows;
}

describe('PostgreSQL migrations (SPEC §1 DATABASE_URL)', () => {
  test('start creates every table in the schema named by the URL search_path', async () => {
    const target = await freshSchema();
    const connection = new PostgresConnection({ url: target.url, poolSize: 2 });
    try {
      await connection.start();
      const { rows } = await connection.query<{ table_name: string }>(
        `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
        [target.name],
      );
      assert.deepEqual(
        rows.map((row) => row.table_name),
        [...TABLES, 'ara_schema_migrations'].sort(),
      );
    } finally {
      await connection.close();
    }
  });

  test('running start twice applies nothing the second time', async () => {
    const target = await freshSchema();
    const connection = new PostgresConnection({ url: target.url, poolSize: 2 });
    try {
      await connection.start();
      const first = await appliedVersions(connection);
      const queue = new PostgresQueue(connection);
      await queue.enqueue('t1', 'alice', storedNote('kept'), 10);
      await connection.start();
      assert.deepEqual(await appliedVersions(connection), first);
      assert.deepEqual(await queue.stats(null), { messages: 1, users: 1 });
    } finally {
      await connection.close();
    }
  });

  test('two nodes starting at once on a fresh schema both succeed, each version recorded once', async () => {
    const target = await freshSchema();
    const nodes = [0, 1, 2].map(() => new PostgresConnection({ url: target.url, poolSize: 2 }));
    try {
      const outcomes = await Promise.allSettled(nodes.map((node) => node.start()));
      assert.deepEqual(
        outcomes.map((outcome) => outcome.status),
        ['fulfilled', 'fulfilled', 'fulfilled'],
        JSON.stringify(outcomes.map((o) => (o.status === 'rejected' ? String(o.reason) : 'ok'))),
      );
      const versions = await appliedVersions(nodes[0]!);
      assert.deepEqual(
        versions.map((row) => row.version),
        MIGRATIONS.map((migration) => migration.version),
      );
      for (const row of versions) assert.ok(row.applied_at instanceof Date);
    } finally {
      await Promise.all(nodes.map((node) => node.close()));
    }
  });

  test('a later migration is applied on the next start, once', async () => {
    const target = await freshSchema();
    const first = new PostgresConnection({ url: target.url, poolSize: 1 });
    await first.start();
    await first.close();
    const extra = [...MIGRATIONS, { version: 9_999, sql: 'CREATE TABLE ara_test_extra (x int)' }];
    const second = new PostgresConnection({ url: target.url, poolSize: 1, migrations: extra });
    try {
      await second.start();
      await second.start();
      assert.deepEqual(
        (await appliedVersions(second)).map((row) => row.version),
        extra.map((migration) => migration.version),
      );
    } finally {
      await second.close();
    }
  });

  test('a failing migration leaves nothing half applied', async () => {
    const target = await freshSchema();
    const broken = [...MIGRATIONS, { version: 9_998, sql: 'CREATE TABLE ara_half (x int); SELECT no_such_function()' }];
    const connection = new PostgresConnection({ url: target.url, poolSize: 1, migrations: broken });
    try {
      await assert.rejects(connection.start(), /no_such_function/);
      const { rows } = await connection.query<{ n: string }>(
        `SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = $1`,
        [target.name],
      );
      assert.equal(rows[0]!.n, '0');
    } finally {
      await connection.close();
    }
  });

  test('start fails with a clear message when the search_path names no existing schema', async () => {
    const separator = TEST_DATABASE_URL.includes('?') ? '&' : '?';
    const url = `${TEST_DATABASE_URL}${separator}options=${encodeURIComponent('-c search_path=ara_no_such_schema')}`;
    const connection = new PostgresConnection({ url, poolSize: 1 });
    try {
      await assert.rejects(connection.start(), /no schema to create tables in/);
    } finally {
      await connection.close();
    }
  });

  test('start fails within the connect timeout when the server is unreachable', async () => {
    // Port 1 on loopback: nothing listens there.
    const connection = new PostgresConnection({
      url: 'postgres://postgres@127.0.0.1:1/test',
      poolSize: 1,
      connectTimeoutMs: 2_000,
    });
    try {
      await assert.rejects(connection.start(), /ECONNREFUSED|timeout/i);
    } finally {
      await connection.close();
    }
  });
});

describe('PostgreSQL stores', () => {
  test('what one connection wrote is there for the next (survives a restart)', async () => {
    const target = await freshSchema();
    const writer = new PostgresConnection({ url: target.url, poolSize: 2 });
    await writer.start();
    const note = storedNote('durable');
    await new PostgresQueue(writer).enqueue('t1', 'alice', note, 10);
    await new PostgresTemplateStore(writer).create('t1', {
      id: 'tpl',
      name: 'n',
      event_type: 'e',
      payload_template: { z: 1, a: 2 },
      default_priority: 'Low',
      created_at: 'c',
      updated_at: 'u',
    });
    await new PostgresAckTracker(writer).track('t1', 'alice', { id: note.id, json: null, lane: 1 }, 1, 2);
    await writer.close();

    const reader = new PostgresConnection({ url: target.url, poolSize: 2 });
    try {
      await reader.start();
      const [entry] = await new PostgresQueue(reader).peek('t1', 'alice', Date.now(), 10);
      assert.equal(entry?.id, note.id);
      assert.equal(entry?.json, note.json);
      const template = await new PostgresTemplateStore(reader).get('t1', 'tpl');
      assert.equal(JSON.stringify(template?.payload_template), '{"z":1,"a":2}');
      assert.deepEqual(await new PostgresAckTracker(reader).expire(3), [
        { tenantId: 't1', userId: 'alice', notificationId: note.id, json: null, lane: 1 },
      ]);
    } finally {
      await reader.close();
    }
  });

  test('createStores builds every store on one pool when the backends are postgres', async () => {
    const target = await freshSchema();
    const result = parseConfig({
      JWT_SECRET: 'contract-test-secret-0123456789-abcdef',
      API_KEY: 'contract-test-api-key',
      QUEUE_ENABLED: 'true',
      QUEUE_BACKEND: 'postgres',
      ACK_ENABLED: 'true',
      ACK_BACKEND: 'postgres',
      TEMPLATE_BACKEND: 'postgres',
      DATABASE_URL: target.url,
      DATABASE_POOL_SIZE: '3',
    });
    assert.ok(result.ok, JSON.stringify(!result.ok && result.problems));
    const stores = createStores(result.config, pino({ level: 'silent' }));
    assert.ok(stores.queue instanceof PostgresQueue);
    assert.ok(stores.history instanceof PostgresHistory);
    assert.ok(stores.acks instanceof PostgresAckTracker);
    assert.ok(stores.templates instanceof PostgresTemplateStore);
    await stores.start();
    try {
      const note = storedNote('wired');
      await stores.queue.enqueue('t1', 'alice', note, 10);
      await stores.history!.append('t1', [{ kind: 'user', id: 'alice' }], note, { user: 10, channel: 10 });
      const check = new pg.Client({ connectionString: target.url });
      await check.connect();
      try {
        const { rows } = await check.query<{ q: string; h: string }>(
          'SELECT (SELECT count(*) FROM ara_queue) AS q, (SELECT count(*) FROM ara_history) AS h',
        );
        assert.deepEqual(rows[0], { q: '1', h: '1' });
      } finally {
        await check.end();
      }
    } finally {
      await stores.close();
    }
    // Closed means the pool is gone: the next call fails instead of hanging.
    await assert.rejects(stores.queue.stats(null));
  });

  test('a call that runs too long fails with the statement timeout instead of hanging', async () => {
    const connection = new PostgresConnection({ url: schema.url, poolSize: 1, statementTimeoutMs: 300 });
    try {
      await assert.rejects(connection.query('SELECT pg_sleep(5)'), /statement timeout|canceling statement/);
    } finally {
      await connection.close();
    }
  });
});

describe('PostgreSQL send order (migration 2, StoredNotification.order)', () => {
  const HOUR = 3_600_000;
  const label = (entry: { json: string }) => (JSON.parse(entry.json) as { payload: { label: string } }).payload.label;

  test('an entry whose write completes after a later-ordered one is still returned first, and remove goes by order', async () => {
    await db.query(`TRUNCATE ${TABLES.join(', ')}`);
    const queue = new PostgresQueue(db);
    const first = storedNote('first', Date.now() + HOUR, 2, 1_000);
    const second = storedNote('second', Date.now() + HOUR, 2, 2_000);
    // The later-ordered write completes first.
    await queue.enqueue('t1', 'alice', second, 10);
    await queue.enqueue('t1', 'alice', first, 10);
    const peeked = await queue.peek('t1', 'alice', Date.now(), 10);
    assert.deepEqual(peeked.map(label), ['first', 'second']);
    // The seq the store returns is the send order.
    assert.deepEqual(peeked.map((entry) => entry.seq), [1_000, 2_000]);
    assert.equal(await queue.remove('t1', 'alice', 1_000), 1);
    assert.deepEqual((await queue.peek('t1', 'alice', Date.now(), 10)).map(label), ['second']);

    const history = new PostgresHistory(db);
    const sizes = { user: 10, channel: 10 };
    await history.append('t1', [{ kind: 'user', id: 'alice' }], second, sizes);
    await history.append('t1', [{ kind: 'user', id: 'alice' }, { kind: 'channel', id: 'news' }], first, sizes);
    const scopes = [{ kind: 'user', id: 'alice' }, { kind: 'channel', id: 'news' }] as const;
    const all = await history.since('t1', scopes, 'unknown', Date.now());
    assert.deepEqual({ found: all.found, labels: all.entries.map(label), seqs: all.entries.map((e) => e.seq) }, {
      found: false,
      labels: ['first', 'second'],
      seqs: [1_000, 2_000],
    });
    assert.deepEqual((await history.since('t1', scopes, first.id, Date.now())).entries.map(label), ['second']);
    assert.deepEqual(await history.since('t1', scopes, second.id, Date.now()), { found: true, entries: [] });
  });

  test('rows written under migration 1 survive the upgrade in their order, before every newer row', async () => {
    const target = await freshSchema();
    const old = new PostgresConnection({ url: target.url, poolSize: 2, migrations: MIGRATIONS.slice(0, 1) });
    await old.start();
    const expires = new Date(Date.now() + HOUR);
    const body = (text: string) => JSON.stringify({ type: 'notification', payload: { label: text } });
    for (const text of ['old-1', 'old-2']) {
      await old.query('SELECT ara_queue_push($1, $2, $3, $4, $5, $6, $7)', ['t1', 'alice', randomUUID(), body(text), 2, expires, 10]);
    }
    const oldIds = [randomUUID(), randomUUID()];
    for (const [i, text] of ['old-1', 'old-2'].entries()) {
      await old.query('SELECT ara_history_push($1, $2, $3, $4, $5, $6, $7, $8)', [
        't1', ['u'], ['alice'], [10], oldIds[i], body(text), 2, expires,
      ]);
    }
    const oldSeqs = (await old.query<{ seq: string }>('SELECT seq FROM ara_queue ORDER BY seq')).rows.map((row) => Number(row.seq));
    await old.close();

    const upgraded = new PostgresConnection({ url: target.url, poolSize: 2 });
    try {
      await upgraded.start();
      assert.deepEqual((await appliedVersions(upgraded)).map((row) => row.version), [1, 2]);
      const queue = new PostgresQueue(upgraded);
      await queue.enqueue('t1', 'alice', storedNote('new', Date.now() + HOUR, 2, Date.now() * 1000), 10);
      const peeked = await queue.peek('t1', 'alice', Date.now(), 10);
      assert.deepEqual(peeked.map(label), ['old-1', 'old-2', 'new']);
      assert.deepEqual(peeked.slice(0, 2).map((entry) => entry.seq), oldSeqs);
      // remove(uptoSeq) with an old row's seq still means that row.
      assert.equal(await queue.remove('t1', 'alice', oldSeqs[0]!), 1);
      assert.deepEqual((await queue.peek('t1', 'alice', Date.now(), 10)).map(label), ['old-2', 'new']);

      const history = new PostgresHistory(upgraded);
      await history.append('t1', [{ kind: 'user', id: 'alice' }], storedNote('new', Date.now() + HOUR, 2, Date.now() * 1000), {
        user: 10,
        channel: 10,
      });
      const resumed = await history.since('t1', [{ kind: 'user', id: 'alice' }], oldIds[0]!, Date.now());
      assert.equal(resumed.found, true);
      assert.deepEqual(resumed.entries.map(label), ['old-2', 'new']);

      // Only the new function signatures remain.
      const { rows } = await upgraded.query<{ name: string; args: number }>(
        `SELECT proname AS name, pronargs AS args FROM pg_proc
          WHERE pronamespace = current_schema()::regnamespace AND proname LIKE 'ara_%' ORDER BY proname`,
      );
      assert.deepEqual(rows, [
        { name: 'ara_history_push', args: 9 },
        { name: 'ara_queue_push', args: 8 },
      ]);
    } finally {
      await upgraded.close();
    }
  });

  test('migration 2 run again on a migrated schema changes nothing', async () => {
    const target = await freshSchema();
    const connection = new PostgresConnection({ url: target.url, poolSize: 1 });
    try {
      await connection.start();
      const queue = new PostgresQueue(connection);
      await queue.enqueue('t1', 'alice', storedNote('kept', Date.now() + HOUR, 2, 7), 10);
      await connection.query(MIGRATIONS.find((migration) => migration.version === 2)!.sql);
      const [entry] = await queue.peek('t1', 'alice', Date.now(), 10);
      assert.deepEqual([entry && label(entry), entry?.seq], ['kept', 7]);
    } finally {
      await connection.close();
    }
  });
});

describe('sqlKey', () => {
  test('leaves ordinary ids unchanged and maps look-alikes to distinct stored values', () => {
    assert.equal(sqlKey('alice'), 'alice');
    assert.equal(sqlKey('ünï 😀 x:y'), 'ünï 😀 x:y');
    const crafted = [
      ...['\u0000', '\\0', '\\\\0', '\\', 'a\u0000', '\uD800', '\uDC00', '\uFFFD', '\\ud800'],
      ...['\uD83D\uDE00', '\uDE00\uD83D', randomUUID()],
    ];
    const stored = crafted.map(sqlKey);
    assert.equal(new Set(stored).size, crafted.length);
    for (const value of stored) {
      // What PostgreSQL text can hold: no NUL, and UTF-8 round trips it exactly.
      assert.equal(value.includes('\u0000'), false);
      assert.equal(Buffer.from(value, 'utf8').toString('utf8'), value);
    }
    assert.deepEqual(stored.map(fromSqlKey), crafted);
  });
});
