/**
 * The durable queue survives a crash (SPEC §7 offline queue, QUEUE_BACKEND
 * =postgres; issue 4 acceptance item 2): a real `ara-notify serve` process
 * queues 500 notifications for an offline user, is killed with SIGKILL,
 * and the next process replays exactly those 500, in send order, once.
 *
 * Also measures (does not assert) how fast a 10 000-message queue replays.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import WebSocket from 'ws';
import { TestWs } from '../helpers/clients.ts';
import { CliProcess, cleanEnv, freePort, tempDir } from '../helpers/cli-process.ts';
import { createTestSchema, type TestSchema } from '../helpers/postgres.ts';
import { signToken } from '../helpers/node.ts';

const SECRET = 'crash-test-secret-0123456789-abcdefghijklmnop';
const API_KEY = 'crash-test-operator-key-0123';
const SENDS = 500;
const BULK = 10_000;

let schema: TestSchema;
let cwd: string;
const processes: CliProcess[] = [];

before(async () => {
  schema = await createTestSchema('ara_crash');
  cwd = tempDir('crash');
});

after(async () => {
  for (const proc of processes) await proc.kill();
  rmSync(cwd, { recursive: true, force: true });
  await schema?.drop();
});

async function serve(port: number, maxQueue: number): Promise<CliProcess> {
  const proc = CliProcess.source(['serve'], {
    cwd,
    env: cleanEnv({
      JWT_SECRET: SECRET,
      API_KEY,
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: String(port),
      QUEUE_ENABLED: 'true',
      QUEUE_BACKEND: 'postgres',
      QUEUE_MAX_SIZE_PER_USER: String(maxQueue),
      DATABASE_URL: schema.url,
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
    }),
  });
  processes.push(proc);
  assert.equal(await proc.waitForHealth(port, 30_000), 200, proc.output());
  return proc;
}

const token = (sub: string) => signToken(sub, {}, { secret: SECRET });

async function sendTo(port: number, userId: string, index: number): Promise<{ status: number; json: any }> {
  const response = await fetch(`http://127.0.0.1:${port}/api/v1/notifications/send`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
    body: JSON.stringify({ target_user_id: userId, event_type: 'crash.test', payload: { index } }),
  });
  return { status: response.status, json: await response.json() };
}

describe('offline queue on postgres across a crash (SPEC §7, QUEUE_BACKEND=postgres)', () => {
  let port: number;

  test('after SIGKILL the next process replays exactly the 500 queued notifications, in send order, once', async () => {
    port = await freePort();
    const first = await serve(port, 1_000);
    const sentIds: string[] = [];
    for (let i = 0; i < SENDS; i++) {
      const sent = await sendTo(port, 'offline-user', i);
      assert.equal(sent.status, 200, JSON.stringify(sent.json));
      assert.equal(sent.json.queued, 1, `send ${i}: ${JSON.stringify(sent.json)}`);
      assert.equal(sent.json.delivered_to, 0);
      sentIds.push(sent.json.notification_id);
    }

    first.signal('SIGKILL');
    const exit = await first.waitForExit(10_000);
    assert.equal(exit.signal, 'SIGKILL');

    // The cap is raised for the measurement below; it changes nothing queued.
    await serve(port, BULK);
    const ws = await TestWs.open(`ws://127.0.0.1:${port}/ws?token=${await token('offline-user')}`);
    const received: string[] = [];
    for (let i = 0; i < SENDS; i++) {
      const message = await ws.nextOfType('notification', 10_000);
      received.push(message.id);
      assert.equal(message.payload.index, received.length - 1, 'payload matches its place in the order');
    }
    assert.deepEqual(received, sentIds);
    const more = await ws.quietFor(500);
    assert.deepEqual(
      more.filter((m) => m.type === 'notification'),
      [],
      'nothing more after the queued 500',
    );
    await ws.close();

    // Replayed means removed: a second connection gets nothing.
    const again = await TestWs.open(`ws://127.0.0.1:${port}/ws?token=${await token('offline-user')}`);
    assert.deepEqual((await again.quietFor(400)).filter((m) => m.type === 'notification'), []);
    await again.close();
  });

  test('measures the replay rate of a 10 000-message queue', async (t) => {
    assert.ok(port, 'the crash test started the node');
    // One real send gives a real queued row; 9 999 copies with their own
    // ids follow it in one statement (10 000 HTTP sends would take long).
    const seed = await sendTo(port, 'bulk-user', 0);
    assert.equal(seed.json.queued, 1);
    const client = new pg.Client({ connectionString: schema.url });
    await client.connect();
    try {
      await client.query(
        // send_order (migration 2): the copies follow the seed in send order.
        `INSERT INTO ara_queue (tenant_id, user_id, notification_id, body, lane, expires_at, send_order)
         SELECT q.tenant_id, q.user_id, g.id, replace(q.body, q.notification_id, g.id), q.lane, q.expires_at,
                q.send_order + g.n
           FROM ara_queue q,
                LATERAL (SELECT gen_random_uuid()::text AS id, n FROM generate_series(1, $2::int) AS n) g
          WHERE q.notification_id = $1
          ORDER BY g.n`,
        [seed.json.notification_id, BULK - 1],
      );
    } finally {
      await client.end();
    }

    const userToken = await token('bulk-user');
    const startedAt = performance.now();
    const ids = new Set<string>();
    let lastAt = startedAt;
    await new Promise<void>((resolve, reject) => {
      const socket = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${userToken}`);
      const timer = setTimeout(() => {
        socket.terminate();
        reject(new Error(`only ${ids.size} of ${BULK} replayed within 30 s`));
      }, 30_000);
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString()) as { type: string; id?: string };
        if (message.type !== 'notification') return;
        ids.add(message.id!);
        lastAt = performance.now();
        if (ids.size === BULK) {
          clearTimeout(timer);
          socket.close();
          resolve();
        }
      });
      socket.once('error', reject);
    });
    const seconds = (lastAt - startedAt) / 1000;
    assert.equal(ids.size, BULK);
    t.diagnostic(
      `postgres queue replay: ${BULK} messages in ${seconds.toFixed(2)} s = ` +
        `${Math.round(BULK / seconds)} messages/s (connect to last message, one WS client, loopback)`,
    );
  });
});
