/**
 * The offline queue on Redis survives a crash (SPEC §7 offline queue,
 * DESIGN "Durable means durable"; issue 4 acceptance item 2, Redis part),
 * the replay rate of a large queue (a measurement, not an assertion), and
 * Redis outages that fail fast instead of hanging (SPEC §8 last paragraph,
 * DESIGN "Redis outages are ordinary").
 *
 * The service runs as a real child process (`node --import tsx src/cli.ts
 * serve`) and is killed with SIGKILL, so nothing gets a chance to flush.
 * Each run uses its own REDIS_KEY_PREFIX on the shared Redis and deletes
 * its keys afterwards. Outages are staged on a throwaway `redis-server`
 * this file starts and kills itself; the shared Redis is never touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { RedisQueue } from '../../src/storage/queue/redis-queue.ts';
import { RedisConnection } from '../../src/storage/redis/redis-connection.ts';
import { CliProcess, cleanEnv, freePort, tempDir } from '../helpers/cli-process.ts';
import { signToken } from '../helpers/node.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';
const SECRET = 'crash-test-secret-0123456789-abcdefghij';
const API_KEY = 'crash-test-operator-key-0123';

const processes: CliProcess[] = [];
const prefixes: string[] = [];

after(async () => {
  await Promise.all(processes.map((child) => child.kill()));
  const redis = new RedisConnection({ url: REDIS_URL, keyPrefix: 'cleanup' });
  await redis.start();
  try {
    for (const prefix of prefixes) {
      await redis.scan(`${prefix}:*`, async (keys) => {
        await redis.client.unlink(...keys);
      });
    }
  } finally {
    await redis.close();
  }
});

function newPrefix(label: string): string {
  const prefix = `test-${label}-${randomBytes(6).toString('hex')}`;
  prefixes.push(prefix);
  return prefix;
}

async function serve(prefix: string, maxPerUser: number): Promise<{ child: CliProcess; port: number }> {
  const port = await freePort();
  const child = CliProcess.source(['serve'], {
    cwd: tempDir('crash-redis'),
    env: cleanEnv({
      RUN_MODE: 'development',
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: String(port),
      JWT_SECRET: SECRET,
      API_KEY,
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
      QUEUE_ENABLED: 'true',
      QUEUE_BACKEND: 'redis',
      QUEUE_MAX_SIZE_PER_USER: String(maxPerUser),
      REDIS_URL,
      REDIS_KEY_PREFIX: prefix,
      REDIS_TRIGGER_ENABLED: 'false',
    }),
  });
  processes.push(child);
  await child.waitForHealth(port, 20_000);
  return { child, port };
}

async function post(port: number, path: string, body: unknown): Promise<{ status: number; json: any }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json() };
}

const token = (sub: string) => signToken(sub, {}, { secret: SECRET });

/**
 * A raw WebSocket client (no per-message scanning, so 10 000 messages stay
 * cheap) that records notification ids and when the `expected`-th arrived.
 */
class NotificationCollector {
  readonly ids: string[] = [];
  readonly startedAt = performance.now();
  lastAt = 0;
  readonly socket: WebSocket;
  readonly #done: Promise<void>;
  #timer: NodeJS.Timeout | undefined;

  constructor(url: string, expected: number, timeoutMs: number) {
    this.socket = new WebSocket(url);
    this.#done = new Promise((resolve, reject) => {
      const timer = (this.#timer = setTimeout(
        () => reject(new Error(`received ${this.ids.length} of ${expected} notifications in ${timeoutMs} ms`)),
        timeoutMs,
      ));
      this.socket.on('error', reject);
      this.socket.on('message', (data) => {
        const message = JSON.parse(data.toString()) as { type: string; id?: string };
        if (message.type !== 'notification') return;
        this.ids.push(message.id!);
        if (this.ids.length === expected) {
          this.lastAt = performance.now();
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  done(): Promise<void> {
    return this.#done;
  }

  async close(): Promise<void> {
    clearTimeout(this.#timer);
    if (this.socket.readyState === WebSocket.CLOSED) return;
    const closed = new Promise((resolve) => this.socket.once('close', resolve));
    this.socket.close(1000);
    await closed;
  }
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('offline queue on Redis across a crash (SPEC §7, issue 4 acceptance 2)', () => {
  test('500 queued notifications survive kill -9 and arrive once each, in send order, then nothing more', async () => {
    const prefix = newPrefix('crash');
    const first = await serve(prefix, 1000);
    const sent: string[] = [];
    for (let i = 0; i < 500; i++) {
      const { status, json } = await post(first.port, '/api/v1/notifications/send', {
        target_user_id: 'offline-user',
        event_type: 'crash.test',
        payload: { i },
      });
      assert.equal(status, 200, `send ${i}`);
      assert.equal(json.queued, 1, `send ${i} queued`);
      assert.equal(json.delivered_to, 0, `send ${i} delivered_to`);
      sent.push(json.notification_id);
    }
    first.child.signal('SIGKILL');
    const exit = await first.child.waitForExit(5000);
    assert.equal(exit.signal, 'SIGKILL');

    const second = await serve(prefix, 1000);
    const url = `ws://127.0.0.1:${second.port}/ws?token=${await token('offline-user')}`;
    const client = new NotificationCollector(url, 500, 15_000);
    await client.done();
    await delay(500);
    assert.equal(client.ids.length, 500, 'nothing after the 500th');
    assert.equal(new Set(client.ids).size, 500, 'no duplicate');
    assert.deepEqual(client.ids, sent);
    await client.close();

    // Replayed messages were removed once written: a new connection gets none.
    const again = new NotificationCollector(url, 1, 60_000);
    await new Promise((resolve) => again.socket.once('open', resolve));
    await delay(700);
    assert.deepEqual(again.ids, []);
    await again.close();
    second.child.signal('SIGKILL');
    await second.child.waitForExit(5000);
  });

  test('measures the replay rate of a 10 000-message queue on Redis', async (t) => {
    const prefix = newPrefix('replay-rate');
    const { child, port } = await serve(prefix, 10_000);
    const total = 10_000;
    for (let batch = 0; batch < total / 100; batch++) {
      const notifications = Array.from({ length: 100 }, (_, i) => ({
        target: { type: 'user', value: 'bulk-user' },
        event_type: 'replay.rate',
        payload: { n: batch * 100 + i, text: 'x'.repeat(64) },
      }));
      const { status, json } = await post(port, '/api/v1/notifications/batch', { notifications });
      assert.equal(status, 200, `batch ${batch}`);
      assert.equal(json.summary.succeeded, 100, `batch ${batch} succeeded`);
    }
    const client = new NotificationCollector(`ws://127.0.0.1:${port}/ws?token=${await token('bulk-user')}`, total, 30_000);
    await client.done();
    const seconds = (client.lastAt - client.startedAt) / 1000;
    t.diagnostic(`replay of ${total} queued messages from Redis: ${seconds.toFixed(2)} s, ${Math.round(total / seconds)} messages/s (connect to last message)`);
    assert.equal(new Set(client.ids).size, total, 'each message once');
    await client.close();
    child.signal('SIGKILL');
    await child.waitForExit(5000);
  });
});

/** A throwaway redis-server of this test on its own port; the shared one is never stopped. */
async function throwawayRedis(port: number): Promise<ChildProcess> {
  const server = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    { stdio: 'ignore' },
  );
  const deadline = Date.now() + 5000;
  for (;;) {
    const probe = new RedisConnection({ url: `redis://127.0.0.1:${port}`, keyPrefix: 'probe', connectTimeoutMs: 500 });
    try {
      await probe.start();
      await probe.close();
      return server;
    } catch (error) {
      if (Date.now() > deadline) {
        server.kill('SIGKILL');
        throw error;
      }
      await delay(50);
    }
  }
}

function killed(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
  server.kill('SIGKILL');
  return exited;
}

async function elapsed<T>(work: () => Promise<T>): Promise<{ ms: number; result: PromiseSettledResult<T> }> {
  const started = Date.now();
  const [result] = await Promise.allSettled([work()]);
  return { ms: Date.now() - started, result: result! };
}

function note(label: string) {
  const now = Date.now();
  // order: send order as a node assigns it (StoredNotification.order); the Redis queue keeps its own.
  return { id: `${label}-${now}`, json: JSON.stringify({ type: 'notification', label }), lane: 2, expiresAtMs: now + 60_000, order: now * 1000 };
}

describe('Redis outages fail fast (SPEC §8 "When Redis is down")', () => {
  test('start() rejects within 6 s, naming the server, when nothing listens there', async () => {
    const port = await freePort();
    const redis = new RedisConnection({ url: `redis://127.0.0.1:${port}`, keyPrefix: 'nowhere' });
    const { ms, result } = await elapsed(() => redis.start());
    await redis.close();
    assert.equal(result.status, 'rejected');
    const message = (result as PromiseRejectedResult).reason.message as string;
    assert.match(message, new RegExp(`^Redis at redis://127\\.0\\.0\\.1:${port} is unreachable: .*ECONNREFUSED`));
    assert.ok(ms < 6000, `rejected after ${ms} ms`);
  });

  test('a store call rejects within the command timeout when the server hangs, and at once when it is gone', async (t) => {
    const port = await freePort();
    const server = await throwawayRedis(port);
    t.after(() => killed(server));
    const redis = new RedisConnection({
      url: `redis://127.0.0.1:${port}`,
      keyPrefix: 'outage',
      commandTimeoutMs: 1000,
      backoff: { initialDelayMs: 50, maxDelayMs: 200 },
    });
    await redis.start();
    t.after(() => redis.close());
    const queue = new RedisQueue(redis);
    assert.deepEqual(await queue.enqueue('t1', 'u1', note('before'), 10), { dropped: 0 });

    // A server that stops answering: the command timeout ends the wait.
    server.kill('SIGSTOP');
    const hung = await elapsed(() => queue.enqueue('t1', 'u1', note('hung'), 10));
    server.kill('SIGCONT');
    assert.equal(hung.result.status, 'rejected');
    assert.match((hung.result as PromiseRejectedResult).reason.message, /timed out/i);
    assert.ok(hung.ms >= 900 && hung.ms < 3000, `rejected after ${hung.ms} ms`);

    // A server that is gone: calls fail at once instead of queueing up.
    await killed(server);
    await delay(100);
    const gone = await elapsed(() => queue.peek('t1', 'u1', Date.now(), 10));
    assert.equal(gone.result.status, 'rejected');
    assert.ok(gone.ms < 1500, `rejected after ${gone.ms} ms`);
  });

  test('after an outage the connection comes back by itself and the stores work again', async (t) => {
    const port = await freePort();
    let server = await throwawayRedis(port);
    t.after(() => killed(server));
    const redis = new RedisConnection({
      url: `redis://127.0.0.1:${port}`,
      keyPrefix: 'recover',
      commandTimeoutMs: 1000,
      backoff: { initialDelayMs: 50, maxDelayMs: 200 },
    });
    await redis.start();
    t.after(() => redis.close());
    const queue = new RedisQueue(redis);
    await queue.enqueue('t1', 'u1', note('lost-with-the-server'), 10);
    await killed(server);
    await assert.rejects(queue.enqueue('t1', 'u1', note('during'), 10));

    // A fresh server (no data, no scripts): EVALSHA falls back to EVAL by itself.
    server = await throwawayRedis(port);
    const deadline = Date.now() + 5000;
    while (!redis.ready && Date.now() < deadline) await delay(50);
    assert.equal(redis.ready, true, 'reconnected');
    assert.deepEqual(await queue.enqueue('t1', 'u1', note('after'), 10), { dropped: 0 });
    const entries = await queue.peek('t1', 'u1', Date.now(), 10);
    assert.deepEqual(entries.map((entry) => JSON.parse(entry.json).label), ['after']);
  });
});
