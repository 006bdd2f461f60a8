/**
 * The cluster bus log's bounds (src/storage/redis/bus-log.ts,
 * docs/scaling.md "How a send travels"): entries, bytes and age, each
 * exact on every append, on the Redis at 127.0.0.1:6379 under a fresh prefix.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { BUS_LOG_LUA, busLogChannels, busLogLimitArgs, compareEntryIds, type BusLogLimits } from '../../src/storage/redis/bus-log.ts';
import { RedisConnection, type RedisScript } from '../../src/storage/redis/redis-connection.ts';
import { deleteRedisKeys } from '../helpers/store-backends.ts';

const prefix = `test-bus-log-${randomBytes(6).toString('hex')}`;
let redis: RedisConnection;
let append: RedisScript;
let n = 0;

before(async () => {
  redis = new RedisConnection({ url: 'redis://127.0.0.1:6379', keyPrefix: prefix });
  await redis.start();
  // KEYS: log, bytes. ARGV: limits (3), message, channels field.
  append = redis.defineScript('testBusLogAppend', 2, `${BUS_LOG_LUA}
bus_log_add(KEYS[1], ARGV[4], ARGV[5])
bus_log_trim(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), #ARGV[4] + #ARGV[5])
return 1`);
});

after(async () => {
  await deleteRedisKeys([prefix]);
  await redis.close();
});

function freshLog(limits: Partial<BusLogLimits>): BusLogLimits {
  n++;
  return { key: `${prefix}:log-${n}`, bytesKey: `${prefix}:bytes-${n}`, maxEntries: 1000, maxBytes: 1 << 20, windowMs: 60_000, ...limits };
}

async function add(log: BusLogLimits, message: string, channels = ''): Promise<void> {
  await append.run([log.key, log.bytesKey], [...busLogLimitArgs(log), message, channels]);
}

async function contents(log: BusLogLimits): Promise<{ messages: string[]; bytes: number }> {
  const entries = await redis.client.xrange(log.key, '-', '+');
  return { messages: entries.map(([, fields]) => fields[1]!), bytes: Number(await redis.client.get(log.bytesKey)) };
}

describe('bus log bounds (docs/scaling.md)', () => {
  test('keeps the newest maxEntries entries, oldest removed first, and counts their bytes', async () => {
    const log = freshLog({ maxEntries: 5 });
    for (let i = 1; i <= 8; i++) await add(log, `m${i}`);
    assert.deepEqual(await contents(log), { messages: ['m4', 'm5', 'm6', 'm7', 'm8'], bytes: 10 });
  });

  test('a large message removes only as many old entries as the byte budget needs', async () => {
    const log = freshLog({ maxBytes: 1000 });
    for (let i = 0; i < 10; i++) await add(log, `${i}`.padEnd(50, '.'));
    await add(log, 'B'.repeat(600));
    const { messages, bytes } = await contents(log);
    assert.equal(bytes, 1000);
    assert.deepEqual(messages.map((m) => m[0]), ['2', '3', '4', '5', '6', '7', '8', '9', 'B']);
  });

  test('bytes are UTF-8 bytes, not characters', async () => {
    const log = freshLog({ maxBytes: 700 });
    const wide = '字'.repeat(100); // 300 bytes
    await add(log, wide);
    await add(log, wide);
    assert.deepEqual((await contents(log)).bytes, 600);
    await add(log, wide);
    assert.deepEqual(await contents(log), { messages: [wide, wide], bytes: 600 });
  });

  test('entries older than the window are removed by the next append', async () => {
    const log = freshLog({ windowMs: 100 });
    await add(log, 'old-1');
    await add(log, 'old-2');
    await new Promise((resolve) => setTimeout(resolve, 150));
    await add(log, 'new');
    assert.deepEqual(await contents(log), { messages: ['new'], bytes: 3 });
  });

  test('a message larger than the whole budget leaves an empty log and a zero count', async () => {
    const log = freshLog({ maxBytes: 100 });
    await add(log, 'small');
    await add(log, 'x'.repeat(101));
    assert.deepEqual(await contents(log), { messages: [], bytes: 0 });
  });

  test('the channels field is stored as the JSON list of bus channels, and its bytes count', async () => {
    const log = freshLog({ maxBytes: 80 });
    await add(log, 'to-users', busLogChannels(['p:bus:t:u:alice', 'p:bus:t:u:a"b']));
    assert.equal((await contents(log)).bytes, 8 + 36);
    const entries = await redis.client.xrange(log.key, '-', '+');
    assert.deepEqual(entries.map(([, fields]) => fields), [['m', 'to-users', 'c', '["p:bus:t:u:alice","p:bus:t:u:a\\"b"]']]);
    // A second such entry passes the 80-byte budget: the first goes, with its channels.
    await add(log, 'to-users', busLogChannels(['p:bus:t:u:alice', 'p:bus:t:u:a"b']));
    assert.equal((await redis.client.xlen(log.key)), 1);
    assert.equal((await contents(log)).bytes, 44);
  });

  test('entry ids order as Redis orders them', () => {
    assert.equal(compareEntryIds('1700000000000-0', '1700000000000-0'), 0);
    assert.equal(compareEntryIds('1700000000000-2', '1700000000000-10'), -1);
    assert.equal(compareEntryIds('1700000000001-0', '1700000000000-99'), 1);
    assert.equal(compareEntryIds('999-5', '1000-0'), -1);
  });
});
