/**
 * The user's deployment (seeds/single-node-commercial-deployment.md, kept in
 * test/fixtures/seed.env) grown to two nodes behind one Redis (issue 5
 * acceptance 5; SPEC preamble, §1, §3, §6.1, §7, §8).
 *
 * Each node is a real `node dist/cli.js serve` process started from its own
 * directory holding the seed `.env` with its placeholders replaced by real
 * secrets, loopback host and a free port, REDIS_URL=redis://127.0.0.1:6379,
 * and three lines added: CLUSTER_ENABLED=true, a REDIS_KEY_PREFIX of this
 * run (keys deleted afterwards) and a CLUSTER_SERVER_ID. Everything else —
 * production mode, tenancy, CORS, JWT issuer/audience, rate limits, queue,
 * acks — stays as the seed has it. The Redis trigger is on (the seed does
 * not turn it off), so the trigger check publishes on the shared Redis: it
 * targets a channel of a tenant unique to this run, which no other test's
 * node has.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import { TestWs } from '../helpers/clients.ts';
import { CliProcess, REPO_ROOT, cleanEnv, ensureBuilt, freePort, tempDir } from '../helpers/cli-process.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';
const PREFIX = `ara-t-seed2-${randomBytes(4).toString('hex')}`;
const TENANT = `seed2-${randomBytes(4).toString('hex')}`;
const JWT_SECRET = randomBytes(48).toString('base64url');
const API_KEY = `k${randomBytes(24).toString('base64url')}`;
const seedEnv = readFileSync(join(REPO_ROOT, 'test', 'fixtures', 'seed.env'), 'utf8');

/** Replaces `NAME=…` lines; each name must occur exactly once in the seed. */
function substitute(envText: string, values: Record<string, string>): string {
  let text = envText;
  for (const [name, value] of Object.entries(values)) {
    const line = new RegExp(`^${name}=.*$`, 'gm');
    assert.equal(text.match(line)?.length, 1, `${name}= appears exactly once in the seed .env`);
    text = text.replace(line, `${name}=${value}`);
  }
  return text;
}

interface SeedNode {
  name: string;
  port: number;
  proc: CliProcess;
  dir: string;
}

const nodes: SeedNode[] = [];
const clients: TestWs[] = [];

function token(sub: string): Promise<string> {
  return new SignJWT({ tenant_id: TENANT, iss: 'your-company', aud: 'your-product' })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + 600)
    .sign(new TextEncoder().encode(JWT_SECRET));
}

async function connect(node: SeedNode, user: string, channels: string[] = []): Promise<TestWs> {
  const query = channels.length > 0 ? `&channels=${channels.join(',')}` : '';
  const ws = await TestWs.connect(`ws://127.0.0.1:${node.port}/ws?token=${await token(user)}${query}`, {
    headers: { Origin: 'https://app.example.com' },
  });
  await ws.nextOfType('connected');
  clients.push(ws);
  return ws;
}

async function api(node: SeedNode, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = { 'x-api-key': API_KEY, 'x-tenant-id': TENANT };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`http://127.0.0.1:${node.port}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: response.status, json: await response.json() };
}

function ids(ws: TestWs, id: string): number {
  return ws.messages.filter((m) => m.type === 'notification' && m.id === id).length;
}

/** Each client in `expected` gets `id` once; each in `others` nothing (after a quiet 300 ms). */
async function assertOnce(id: string, expected: TestWs[], others: TestWs[] = []): Promise<void> {
  for (const ws of expected) await ws.next((m) => m.type === 'notification' && m.id === id);
  await new Promise((resolve) => setTimeout(resolve, 300));
  for (const ws of expected) assert.equal(ids(ws, id), 1);
  for (const ws of others) assert.equal(ids(ws, id), 0);
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

before(async () => {
  await ensureBuilt();
  for (const name of ['seed-a', 'seed-b']) {
    const port = await freePort();
    const dir = tempDir('seed-two');
    const env = substitute(seedEnv, {
      JWT_SECRET,
      API_KEY,
      REDIS_URL,
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: String(port),
    });
    writeFileSync(join(dir, '.env'), `${env}\n# Two nodes\nCLUSTER_ENABLED=true\nREDIS_KEY_PREFIX=${PREFIX}\nCLUSTER_SERVER_ID=${name}\n`);
    const proc = CliProcess.dist(['serve'], { cwd: dir, env: cleanEnv() });
    nodes.push({ name, port, proc, dir });
  }
  for (const node of nodes) assert.equal(await node.proc.waitForHealth(node.port, 20_000), 200, node.proc.output());
});

after(async () => {
  for (const ws of clients) ws.socket.terminate();
  for (const node of nodes) {
    await node.proc.kill();
    rmSync(node.dir, { recursive: true, force: true });
  }
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${PREFIX}:*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
});

describe('the seed .env as two cluster nodes behind one Redis (SPEC §8)', () => {
  let memberA: TestWs;
  let memberB: TestWs;
  let readerA: TestWs;
  let readerB: TestWs;

  test('both nodes run in production with tenancy and list each other', async () => {
    memberA = await connect(nodes[0]!, 'member');
    memberB = await connect(nodes[1]!, 'member');
    readerA = await connect(nodes[0]!, 'reader-a', ['news']);
    readerB = await connect(nodes[1]!, 'reader-b', ['news']);
    await until('presence of the four connections', async () => {
      const status = await api(nodes[1]!, 'GET', '/api/v1/cluster/status');
      return JSON.stringify(status.json.nodes?.map((n: any) => [n.server_id, n.connections])) === JSON.stringify([['seed-a', 2], ['seed-b', 2]]);
    });
    const health = await fetch(`http://127.0.0.1:${nodes[0]!.port}/health`).then((r) => r.json() as Promise<any>);
    assert.deepEqual(
      { status: health.status, redis: health.redis.status, queue: health.queue, cluster: health.cluster },
      { status: 'healthy', redis: 'healthy', queue: { enabled: true, backend: 'redis' }, cluster: { enabled: true, server_id: 'seed-a' } },
    );
    // Production: no generated credentials were announced.
    assert.doesNotMatch(nodes[0]!.proc.stdout, /generated/i);
  });

  test('a user send through each node reaches the user\'s connections on both nodes once', async () => {
    for (const node of nodes) {
      const sent = await api(node, 'POST', '/api/v1/notifications/send', { target_user_id: 'member', event_type: 'invoice.paid', payload: { via: node.name } });
      assert.equal(sent.status, 200);
      assert.deepEqual(
        { success: sent.json.success, delivered_to: sent.json.delivered_to, failed: sent.json.failed, queued: sent.json.queued, nodes: sent.json.nodes },
        { success: true, delivered_to: 2, failed: 0, queued: 0, nodes: 2 },
      );
      await assertOnce(sent.json.notification_id, [memberA, memberB], [readerA, readerB]);
    }
  });

  test('a channel send through each node reaches the subscribers on both nodes once', async () => {
    for (const node of nodes) {
      const sent = await api(node, 'POST', '/api/v1/notifications/channel', { channel: 'news', event_type: 'news.posted', payload: { via: node.name } });
      assert.equal(sent.status, 200);
      assert.deepEqual({ delivered_to: sent.json.delivered_to, queued: sent.json.queued, nodes: sent.json.nodes }, { delivered_to: 2, queued: 0, nodes: 2 });
      await assertOnce(sent.json.notification_id, [readerA, readerB], [memberA, memberB]);
    }
  });

  test('a user offline on both nodes is queued once and replayed once on the other node', async () => {
    const sent = await api(nodes[0]!, 'POST', '/api/v1/notifications/send', { target_user_id: 'away', event_type: 'invoice.due', payload: { n: 1 } });
    assert.deepEqual(
      { status: sent.status, success: sent.json.success, delivered_to: sent.json.delivered_to, queued: sent.json.queued, nodes: sent.json.nodes },
      { status: 200, success: true, delivered_to: 0, queued: 1, nodes: 0 },
    );
    const stats = await api(nodes[1]!, 'GET', '/api/v1/stats');
    assert.deepEqual({ total_messages: stats.json.queue.total_messages, users_with_queue: stats.json.queue.users_with_queue }, { total_messages: 1, users_with_queue: 1 });
    const away = await connect(nodes[1]!, 'away');
    const replayed = (await away.quietFor(500)).filter((m) => m.type === 'notification');
    assert.deepEqual(replayed.map((m) => [m.id, m.event_type]), [[sent.json.notification_id, 'invoice.due']]);
    away.socket.terminate();
    await until('away offline', async () => (await api(nodes[0]!, 'GET', '/api/v1/cluster/users/away')).json.found === false);
    const again = await connect(nodes[0]!, 'away');
    assert.deepEqual((await again.quietFor(400)).filter((m) => m.type === 'notification'), []);
  });

  test('a trigger published with redis-cli reaches the subscribers on both nodes once', async () => {
    const nonce = randomBytes(6).toString('hex');
    const message = JSON.stringify({ type: 'channel', target: 'news', tenant_id: TENANT, event: { event_type: 'news.flash', payload: { nonce } } });
    const receivers = await new Promise<number>((resolve, reject) => {
      const child = spawn('redis-cli', ['-p', '6379', '-x', 'PUBLISH', 'notification:channel:news'], { stdio: ['pipe', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
      child.on('error', reject);
      child.on('close', () => resolve(Number(out.trim())));
      child.stdin.on('error', reject);
      child.stdin.end(message);
    });
    assert.ok(receivers >= 2, `both nodes subscribed (${receivers} receivers)`);
    const got = [];
    for (const ws of [readerA, readerB]) got.push(await ws.next((m) => m.type === 'notification' && m.payload?.nonce === nonce));
    await new Promise((resolve) => setTimeout(resolve, 300));
    for (const ws of [readerA, readerB]) {
      assert.equal(ws.messages.filter((m) => m.type === 'notification' && m.payload?.nonce === nonce).length, 1);
    }
    for (const ws of [memberA, memberB]) assert.equal(ws.messages.filter((m) => m.payload?.nonce === nonce).length, 0);
    for (const message of got) {
      assert.equal(message.metadata.source, 'redis:notification:channel:news');
      assert.equal(message.event_type, 'news.flash');
    }
  });
});
