/**
 * What the Redis stores add to the shared contracts (test/contract/redis.test.ts):
 * several nodes on one Redis (two connections with one REDIS_KEY_PREFIX),
 * the key layout (SPEC §3: the tenant is its own key segment), key TTLs
 * that let abandoned data vanish, script reload, and the wiring in
 * createStores (SPEC §1 QUEUE_BACKEND / ACK_BACKEND / TEMPLATE_BACKEND).
 * Runs against the Redis on 127.0.0.1:6379, each test under its own prefix.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { parseConfig } from '../../src/config/config.ts';
import { RedisAckTracker } from '../../src/storage/acks/redis-acks.ts';
import { RedisHistory } from '../../src/storage/history/redis-history.ts';
import { KEY_GRACE_MS, RedisQueue } from '../../src/storage/queue/redis-queue.ts';
import { RedisConnection, keySegment, keyTail } from '../../src/storage/redis/redis-connection.ts';
import { createStores } from '../../src/storage/stores.ts';
import { RedisTemplateStore } from '../../src/storage/templates/redis-templates.ts';
import type { StoredNotification, TemplateRecord } from '../../src/storage/types.ts';
import { freePort } from '../helpers/cli-process.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';
const HOUR = 3_600_000;

/** `count` connections ("nodes") sharing one fresh prefix; keys deleted afterwards. */
async function nodes(t: TestContext, count: number): Promise<RedisConnection[]> {
  const keyPrefix = `test-unit-${randomBytes(6).toString('hex')}`;
  const connections: RedisConnection[] = [];
  for (let i = 0; i < count; i++) {
    const redis = new RedisConnection({ url: REDIS_URL, keyPrefix });
    await redis.start();
    connections.push(redis);
  }
  t.after(async () => {
    await connections[0]!.scan(`${keyPrefix}:*`, async (keys) => {
      await connections[0]!.client.unlink(...keys);
    });
    await Promise.all(connections.map((redis) => redis.close()));
  });
  return connections;
}

async function keysOf(redis: RedisConnection): Promise<string[]> {
  const keys: string[] = [];
  await redis.scan(`${redis.keyPrefix}:*`, async (batch) => {
    keys.push(...batch);
  });
  return [...new Set(keys)].sort();
}

let lastOrder = 0;

function stored(label: string, expiresAtMs = Date.now() + HOUR): StoredNotification {
  const id = randomUUID();
  return { id, json: JSON.stringify({ type: 'notification', id, payload: { label } }), lane: 2, expiresAtMs, order: ++lastOrder };
}

function labels(entries: { json: string }[]): string[] {
  return entries.map((entry) => (JSON.parse(entry.json) as { payload: { label: string } }).payload.label);
}

describe('key layout (SPEC §3: the tenant is its own key segment)', () => {
  test('valid tenant ids and plain user ids appear as they are, the user id last', () => {
    const redis = new RedisConnection({ url: REDIS_URL, keyPrefix: 'ara' });
    assert.equal(redis.key('queue', 'acme', 'alice'), 'ara:queue:acme:alice');
    assert.equal(redis.key('queue', 'acme', 'a:b'), 'ara:queue:acme:a:b');
    assert.equal(redis.key('history', 'acme', 'c', 'orders'), 'ara:history:acme:c:orders');
    assert.equal(redis.key('templates', 'acme'), 'ara:templates:acme');
  });

  test('a crafted tenant or user id can never produce another pair\'s key', () => {
    const redis = new RedisConnection({ url: REDIS_URL, keyPrefix: 'ara' });
    const pairs: Array<[string, string]> = [
      ['a', 'b:c'],
      ['a:b', 'c'],
      ['a', '~b:c'],
      ['~a', 'b:c'],
      ['a', '\uD800'],
      ['a', '\uFFFD'],
      ['a', '~%D800'],
      ['a', '%D800'],
      ['a%3A', 'b'],
      ['a', ''],
      ['', 'a'],
    ];
    const keys = pairs.map(([tenant, user]) => redis.key('queue', tenant, user));
    assert.equal(new Set(keys).size, pairs.length, keys.join('\n'));
    for (const [tenant] of pairs) assert.ok(!keySegment(tenant).includes(':'), `segment of ${JSON.stringify(tenant)}`);
    // No key holds a lone surrogate (it would reach Redis as U+FFFD).
    for (const key of keys) assert.doesNotMatch(key, /\p{Cs}/u);
    assert.notEqual(keyTail('\uD800'), keyTail('\uFFFD'));
  });

  test('a queue, its history and its acks live only under the configured prefix', async (t) => {
    const [redis] = await nodes(t, 1);
    const p = redis!.keyPrefix;
    const note = stored('one');
    await new RedisQueue(redis!).enqueue('acme', 'alice', note, 10);
    await new RedisHistory(redis!).append('acme', [{ kind: 'user', id: 'alice' }, { kind: 'channel', id: 'orders' }], note, {
      user: 10,
      channel: 10,
    });
    await new RedisAckTracker(redis!).track('acme', 'alice', note, Date.now(), Date.now() + 30_000);
    await new RedisTemplateStore(redis!).create('acme', template('welcome'));
    assert.deepEqual(await keysOf(redis!), [
      `${p}:ack-deadlines`,
      `${p}:ack-order`,
      `${p}:ack-stats:acme`,
      `${p}:ack-tenants`,
      `${p}:ack:acme:alice`,
      `${p}:history-seq:acme`,
      `${p}:history:acme:c:orders`,
      `${p}:history:acme:u:alice`,
      `${p}:queue-exp:acme:alice`,
      `${p}:queue-seq:acme`,
      `${p}:queue:acme:alice`,
      `${p}:templates:acme`,
    ]);
  });
});

describe('offline queue on Redis: several nodes, TTLs, scripts (SPEC §7)', () => {
  test('a queue key expires a grace period after its longest-lived entry, and vanishes once drained', async (t) => {
    const [redis] = await nodes(t, 1);
    const queue = new RedisQueue(redis!);
    const later = Date.now() + 120_000;
    await queue.enqueue('t1', 'alice', stored('long', later), 10);
    await queue.enqueue('t1', 'alice', stored('short', Date.now() + 60_000), 10);
    const key = redis!.key('queue', 't1', 'alice');
    assert.equal(await redis!.client.pexpiretime(key), later + KEY_GRACE_MS);
    assert.equal(await redis!.client.pexpiretime(redis!.key('queue-exp', 't1', 'alice')), later + KEY_GRACE_MS);
    const entries = await queue.peek('t1', 'alice', Date.now(), 10);
    assert.equal(await queue.remove('t1', 'alice', entries[1]!.seq), 2);
    assert.equal(await redis!.client.exists(key, redis!.key('queue-exp', 't1', 'alice')), 0);
  });

  test('enqueues from two nodes to one user share one order and one cap', async (t) => {
    const [a, b] = await nodes(t, 2);
    const queues = [new RedisQueue(a!), new RedisQueue(b!)];
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => queues[i % 2]!.enqueue('t1', 'alice', stored(`n${i}`), 25)),
    );
    assert.equal(results.reduce((sum, result) => sum + result.dropped, 0), 15);
    const left = await queues[0]!.peek('t1', 'alice', Date.now(), 100);
    assert.equal(left.length, 25);
    assert.deepEqual(await queues[1]!.peek('t1', 'alice', Date.now(), 100), left);
    for (let i = 1; i < left.length; i++) assert.ok(left[i]!.seq > left[i - 1]!.seq);
  });

  test('two nodes draining one queue page by page deliver each entry exactly once', async (t) => {
    const [a, b] = await nodes(t, 2);
    const writer = new RedisQueue(a!);
    for (let i = 0; i < 50; i++) await writer.enqueue('t1', 'alice', stored(`n${i}`), 100);
    // Each node peeks a page, then removes up to its last seq; a page seen
    // by both nodes is removed once (the second remove finds nothing).
    const drained: number[] = [];
    await Promise.all(
      [new RedisQueue(a!), new RedisQueue(b!)].map(async (queue) => {
        for (;;) {
          const page = await queue.peek('t1', 'alice', Date.now(), 7);
          if (page.length === 0) return;
          drained.push(await queue.remove('t1', 'alice', page[page.length - 1]!.seq));
        }
      }),
    );
    assert.equal(drained.reduce((sum, n) => sum + n, 0), 50);
    assert.deepEqual(await writer.stats(null), { messages: 0, users: 0 });
  });

  test('scripts are loaded again by themselves after the server forgot them (SCRIPT FLUSH)', async (t) => {
    const [redis] = await nodes(t, 1);
    const queue = new RedisQueue(redis!);
    await queue.enqueue('t1', 'alice', stored('before'), 10);
    await redis!.client.script('FLUSH');
    await queue.enqueue('t1', 'alice', stored('after'), 10);
    assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 10)), ['before', 'after']);
  });
});

describe('history on Redis: one send order across nodes (SPEC §7 resume)', () => {
  test('appends from two nodes merge in the order they were made', async (t) => {
    const [a, b] = await nodes(t, 2);
    const histories = [new RedisHistory(a!), new RedisHistory(b!)];
    const sizes = { user: 100, channel: 100 };
    const sent: string[] = [];
    for (let i = 0; i < 10; i++) {
      const scope = i % 3 === 0 ? { kind: 'user' as const, id: 'alice' } : { kind: 'channel' as const, id: `ch${i % 2}` };
      await histories[i % 2]!.append('t1', [scope], stored(`n${i}`), sizes);
      sent.push(`n${i}`);
    }
    const scopes = [
      { kind: 'user' as const, id: 'alice' },
      { kind: 'channel' as const, id: 'ch0' },
      { kind: 'channel' as const, id: 'ch1' },
    ];
    const result = await histories[1]!.since('t1', scopes, randomUUID(), Date.now());
    assert.equal(result.found, false);
    assert.deepEqual(labels(result.entries), sent);
  });
});

describe('acks on Redis: two nodes settle each record once (SPEC §7 ACK)', () => {
  test('expiry racing on two nodes counts and returns each timed-out record exactly once', async (t) => {
    const [a, b] = await nodes(t, 2);
    const trackers = [new RedisAckTracker(a!), new RedisAckTracker(b!)];
    const sent = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      const id = randomUUID();
      ids.push(id);
      await trackers[i % 2]!.track('t1', `user-${i % 5}`, { id, json: `{"n":${i}}`, lane: 1 }, sent, sent + 1000);
    }
    const rounds = await Promise.all([
      trackers[0]!.expire(sent + 2000),
      trackers[1]!.expire(sent + 2000),
      trackers[0]!.expire(sent + 2000),
      trackers[1]!.expire(sent + 2000),
    ]);
    const expired = rounds.flat();
    assert.equal(expired.length, 60);
    assert.deepEqual(expired.map((ack) => ack.notificationId).sort(), [...ids].sort());
    const stats = await trackers[1]!.stats(null);
    assert.deepEqual(stats, { totalTracked: 60, totalAcked: 0, totalExpired: 60, pendingCount: 0, totalLatencyMs: 0 });
  });

  test('an ack on one node and expiry on another never both count the same record', async (t) => {
    const [a, b] = await nodes(t, 2);
    const acking = new RedisAckTracker(a!);
    const expiring = new RedisAckTracker(b!);
    const sent = Date.now();
    const ids = Array.from({ length: 40 }, () => randomUUID());
    for (const id of ids) await acking.track('t1', 'alice', { id, json: null, lane: 2 }, sent, sent + 1000);
    // The ack node's clock says "in time", the expiry node's says "past due".
    const [acks, expired] = await Promise.all([
      Promise.all(ids.map((id) => acking.acknowledge('t1', 'alice', id, sent + 500))),
      expiring.expire(sent + 5000),
    ]);
    const ackedCount = acks.filter((result) => result !== null).length;
    assert.equal(ackedCount + expired.length, 40);
    const stats = await acking.stats('t1');
    assert.equal(stats.totalAcked, ackedCount);
    assert.equal(stats.totalExpired, expired.length);
    assert.equal(stats.pendingCount, 0);
  });

  test('a node acknowledges a delivery another node tracked, for that user only', async (t) => {
    const [a, b] = await nodes(t, 2);
    const sent = Date.now();
    const id = randomUUID();
    await new RedisAckTracker(a!).track('t1', 'a:b', { id, json: null, lane: 2 }, sent, sent + 30_000);
    const other = new RedisAckTracker(b!);
    assert.equal(await other.acknowledge('t1', 'a', id, sent + 10), null);
    assert.equal(await other.acknowledge('t2', 'a:b', id, sent + 10), null);
    assert.deepEqual(await other.acknowledge('t1', 'a:b', id, sent + 10), { latencyMs: 10 });
    assert.equal(await new RedisAckTracker(a!).acknowledge('t1', 'a:b', id, sent + 20), null);
  });
});

function template(id: string, payload: unknown = { z: 1, a: 2 }): TemplateRecord {
  const now = new Date().toISOString();
  return { id, name: id, event_type: 'demo', payload_template: payload, default_priority: 'Normal', created_at: now, updated_at: now };
}

describe('templates on Redis are shared by nodes (SPEC §6.2, TEMPLATE_BACKEND)', () => {
  test('a template created on one node reads back on another with its payload key order', async (t) => {
    const [a, b] = await nodes(t, 2);
    const record = template('welcome', { z: 1, a: 2, m: { y: [1, { b: 0, a: 1 }], x: null } });
    assert.equal(await new RedisTemplateStore(a!).create('acme', record), true);
    const read = await new RedisTemplateStore(b!).get('acme', 'welcome');
    assert.equal(JSON.stringify(read), JSON.stringify(record));
    assert.equal(JSON.stringify(read!.payload_template), '{"z":1,"a":2,"m":{"y":[1,{"b":0,"a":1}],"x":null}}');
  });

  test('two nodes creating one id at once: exactly one wins', async (t) => {
    const [a, b] = await nodes(t, 2);
    const results = await Promise.all([
      new RedisTemplateStore(a!).create('acme', template('race', { from: 'a' })),
      new RedisTemplateStore(b!).create('acme', template('race', { from: 'b' })),
    ]);
    assert.deepEqual(results.filter(Boolean).length, 1);
    const stored = await new RedisTemplateStore(a!).get('acme', 'race');
    assert.deepEqual(stored!.payload_template, { from: results[0] ? 'a' : 'b' });
  });
});

describe('createStores wiring (SPEC §1 QUEUE_BACKEND, ACK_BACKEND, TEMPLATE_BACKEND = redis)', () => {
  const log = pino({ level: 'silent' });

  function config(extra: Record<string, string>) {
    const result = parseConfig({
      RUN_MODE: 'development',
      JWT_SECRET: 'wiring-test-secret-0123456789-abcdefgh',
      API_KEY: 'wiring-test-operator-key',
      QUEUE_ENABLED: 'true',
      QUEUE_BACKEND: 'redis',
      ACK_ENABLED: 'true',
      ACK_BACKEND: 'redis',
      TEMPLATE_BACKEND: 'redis',
      REDIS_TRIGGER_ENABLED: 'false',
      ...extra,
    });
    assert.ok(result.ok, JSON.stringify(!result.ok && result.problems));
    return result.config;
  }

  test('every store uses the one Redis connection under REDIS_KEY_PREFIX, and close ends it', async () => {
    const prefix = `test-wiring-${randomBytes(6).toString('hex')}`;
    const stores = createStores(config({ REDIS_URL, REDIS_KEY_PREFIX: prefix }), log);
    assert.equal(stores.queue!.backend, 'redis');
    assert.equal(stores.acks!.backend, 'redis');
    assert.equal(stores.templates.backend, 'redis');
    assert.ok(stores.history instanceof RedisHistory);
    await stores.start();
    const note = stored('wired');
    await stores.queue!.enqueue('default', 'alice', note, 10);
    await stores.templates.create('default', template('wired'));
    const seen = new RedisConnection({ url: REDIS_URL, keyPrefix: prefix });
    await seen.start();
    try {
      assert.deepEqual(await keysOf(seen), [
        `${prefix}:queue-exp:default:alice`,
        `${prefix}:queue-seq:default`,
        `${prefix}:queue:default:alice`,
        `${prefix}:templates:default`,
      ]);
      await stores.close();
      await assert.rejects(stores.queue!.peek('default', 'alice', Date.now(), 10));
      await seen.client.unlink(...(await keysOf(seen)));
    } finally {
      await seen.close();
    }
  });

  test('start fails with a message naming the server when Redis is unreachable', async () => {
    const port = await freePort();
    const stores = createStores(config({ REDIS_URL: `redis://127.0.0.1:${port}` }), log);
    await assert.rejects(stores.start(), new RegExp(`Redis at redis://127\\.0\\.0\\.1:${port} is unreachable`));
    await stores.close();
  });
});
