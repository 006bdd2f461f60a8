/**
 * A node that dies, and a node that freezes (issue 5 acceptance 4; SPEC §8
 * "A node that dies stops counting as online within
 * CLUSTER_SESSION_TTL_SECONDS", §6.2 cluster routes, §7 offline queue).
 *
 * Three real server processes (`node --import tsx src/cli.ts serve`) share
 * the shared Redis under a prefix of their own (keys deleted afterwards;
 * the trigger is off), with CLUSTER_SESSION_TTL_SECONDS=3 and
 * WEBSOCKET_HEARTBEAT_INTERVAL=1. Users are connected to the third node.
 * That node is first frozen (SIGSTOP) for longer than three session TTLs,
 * which makes the others remove its presence, and resumed; then killed
 * with SIGKILL.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { TestWs } from '../helpers/clients.ts';
import { CliProcess, cleanEnv, freePort, tempDir } from '../helpers/cli-process.ts';
import { signToken, sleep } from '../helpers/node.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';
const SECRET = 'node-death-secret-0123456789-abcdefghij';
const API_KEY = 'node-death-operator-key-0123';
const PREFIX = `ara-t-death-${randomBytes(4).toString('hex')}`;
const TTL_MS = 3000;

interface Node {
  id: string;
  port: number;
  proc: CliProcess;
}

const nodes: Node[] = [];
const clients: TestWs[] = [];

const token = (sub: string) => signToken(sub, {}, { secret: SECRET });

async function api(node: Node, method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = { 'x-api-key': API_KEY };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`http://127.0.0.1:${node.port}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: response.status, json: await response.json() };
}

async function connect(node: Node, user: string): Promise<TestWs> {
  const ws = await TestWs.open(`ws://127.0.0.1:${node.port}/ws?token=${await token(user)}`);
  clients.push(ws);
  return ws;
}

function send(node: Node, user: string, seq: number) {
  return api(node, 'POST', '/api/v1/notifications/send', { target_user_id: user, event_type: 'death.test', payload: { seq } });
}

async function statusOf(node: Node): Promise<[string, number][]> {
  const status = await api(node, 'GET', '/api/v1/cluster/status');
  assert.equal(status.status, 200);
  return status.json.nodes.map((n: any) => [n.server_id, n.connections]);
}

/** Polls until `check` holds; returns the ms it took. */
async function within(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(100);
  }
  return Date.now() - started;
}

before(async () => {
  const ports = await Promise.all([freePort(), freePort(), freePort()]);
  for (const [i, port] of ports.entries()) {
    const id = `death-${i}`;
    const proc = CliProcess.source(['serve'], {
      cwd: tempDir('node-death'),
      env: cleanEnv({
        RUN_MODE: 'development',
        SERVER_HOST: '127.0.0.1',
        SERVER_PORT: String(port),
        JWT_SECRET: SECRET,
        API_KEY,
        LOG_LEVEL: 'info',
        LOG_FORMAT: 'json',
        CLUSTER_ENABLED: 'true',
        CLUSTER_SERVER_ID: id,
        CLUSTER_SESSION_TTL_SECONDS: String(TTL_MS / 1000),
        WEBSOCKET_HEARTBEAT_INTERVAL: '1',
        REDIS_URL,
        REDIS_KEY_PREFIX: PREFIX,
        REDIS_TRIGGER_ENABLED: 'false',
        QUEUE_ENABLED: 'true',
      }),
    });
    nodes.push({ id, port, proc });
  }
  for (const node of nodes) assert.equal(await node.proc.waitForHealth(node.port, 30_000), 200, node.proc.output());
});

after(async () => {
  for (const ws of clients) ws.socket.terminate();
  for (const node of nodes) {
    node.proc.signal('SIGCONT');
    await node.proc.kill();
  }
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${PREFIX}:*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
});

describe('three node processes, users on the third (SPEC §8)', () => {
  const first = () => nodes[0]!;
  const second = () => nodes[1]!;
  const third = () => nodes[2]!;
  const expectedAll: [string, number][] = [['death-0', 1], ['death-1', 1], ['death-2', 2]];
  let alice: TestWs;
  let bob: TestWs;

  test('the cluster sees the users on the third node and delivers to them from the others', async () => {
    await connect(first(), 'watcher-0');
    await connect(second(), 'watcher-1');
    alice = await connect(third(), 'alice');
    bob = await connect(third(), 'bob');
    await within('presence of all connections', 5000, async () => JSON.stringify(await statusOf(first())) === JSON.stringify(expectedAll));
    const found = await api(second(), 'GET', '/api/v1/cluster/users/alice');
    assert.deepEqual(found.json.sessions.map((s: any) => s.server_id), ['death-2']);
    const sent = await send(first(), 'alice', 0);
    assert.deepEqual({ delivered_to: sent.json.delivered_to, queued: sent.json.queued, nodes: sent.json.nodes }, { delivered_to: 1, queued: 0, nodes: 1 });
    assert.equal((await alice.nextOfType('notification')).id, sent.json.notification_id);
  });

  test('a node frozen for more than three session TTLs drops out, and lists its connections again within a heartbeat of resuming', async (t) => {
    third().proc.signal('SIGSTOP');
    const frozenAt = Date.now();
    const gone = await within('the frozen node leaves the node list', TTL_MS + 1500, async () =>
      (await statusOf(first())).every(([id]) => id !== 'death-2'),
    );
    // A live node's janitor removes what the frozen one wrote once its beat is 3 TTLs old.
    await within('a janitor removed its presence', 3 * TTL_MS + 5000, async () =>
      [first(), second()].some((node) => node.proc.stdout.includes('"node":"death-2","msg":"removed the presence of a dead node"')),
    );
    third().proc.signal('SIGCONT');
    const frozenMs = Date.now() - frozenAt;
    const back = await within('the resumed node lists its two connections and its users again', 3000, async () => {
      const status = JSON.stringify(await statusOf(first()));
      const user = await api(first(), 'GET', '/api/v1/cluster/users/bob');
      return status === JSON.stringify(expectedAll) && user.json.found === true;
    });
    t.diagnostic(`frozen ${frozenMs} ms: out of the node list after ${gone} ms; listed with its connections ${back} ms after resuming`);
    const sent = await send(second(), 'bob', 1);
    assert.deepEqual({ delivered_to: sent.json.delivered_to, queued: sent.json.queued, nodes: sent.json.nodes }, { delivered_to: 1, queued: 0, nodes: 1 });
    assert.equal((await bob.nextOfType('notification')).id, sent.json.notification_id);
  });

  test('kill -9 of the third node: the others keep serving, it leaves the cluster within the session TTL, its users are queued and replayed on a survivor', async (t) => {
    await within('presence settled', 3000, async () => JSON.stringify(await statusOf(first())) === JSON.stringify(expectedAll));
    third().proc.signal('SIGKILL');
    const killedAt = Date.now();
    const exit = await third().proc.waitForExit(5000);
    assert.equal(exit.signal, 'SIGKILL');

    // Right away, a send to a user of the dead node finds no listener and is queued.
    const early = await send(first(), 'alice', 2);
    assert.equal(early.status, 200);
    assert.equal(early.json.queued, 1);

    const gone = await within('the dead node leaves the node list on both survivors', TTL_MS + 300, async () => {
      const lists = await Promise.all([first(), second()].map(statusOf));
      return lists.every((list) => JSON.stringify(list) === JSON.stringify([['death-0', 1], ['death-1', 1]]));
    });
    const unknown = await Promise.all(
      [first(), second()].flatMap((node) => ['alice', 'bob'].map((user) => api(node, 'GET', `/api/v1/cluster/users/${user}`))),
    );
    for (const answer of unknown) assert.deepEqual(answer.json.sessions, []);
    t.diagnostic(`the killed node left the node list ${gone} ms after kill -9 (elapsed since kill: ${Date.now() - killedAt} ms)`);

    // From then on: queued 1, delivered to nobody, routed to no node.
    const later = [await send(second(), 'alice', 3), await send(first(), 'bob', 4), await send(second(), 'bob', 5)];
    for (const sent of later) {
      assert.deepEqual(
        { status: sent.status, success: sent.json.success, delivered_to: sent.json.delivered_to, queued: sent.json.queued, nodes: sent.json.nodes },
        { status: 200, success: true, delivered_to: 0, queued: 1, nodes: 0 },
      );
    }
    // The survivors still deliver to each other.
    const between = await send(first(), 'watcher-1', 6);
    assert.deepEqual({ delivered_to: between.json.delivered_to, nodes: between.json.nodes }, { delivered_to: 1, nodes: 1 });

    // Reconnected on the survivors, each user gets what was queued once, in send order, then nothing.
    const aliceAgain = await connect(second(), 'alice');
    const bobAgain = await connect(first(), 'bob');
    const replay = async (ws: TestWs) => (await ws.quietFor(600)).filter((m) => m.type === 'notification').map((m) => m.id);
    assert.deepEqual(await replay(aliceAgain), [early.json.notification_id, later[0]!.json.notification_id]);
    assert.deepEqual(await replay(bobAgain), [later[1]!.json.notification_id, later[2]!.json.notification_id]);
    // And live delivery to them works across the survivors.
    const live = await send(first(), 'alice', 7);
    assert.deepEqual({ delivered_to: live.json.delivered_to, queued: live.json.queued, nodes: live.json.nodes }, { delivered_to: 1, queued: 0, nodes: 1 });
    await aliceAgain.next((m) => m.type === 'notification' && m.id === live.json.notification_id);
    assert.deepEqual(
      aliceAgain.messages.filter((m) => m.type === 'notification').map((m) => m.id),
      [early.json.notification_id, later[0]!.json.notification_id, live.json.notification_id],
    );
    const statuses = await Promise.all([first(), second()].map((node) => fetch(`http://127.0.0.1:${node.port}/health`).then((r) => r.status)));
    assert.deepEqual(statuses, [200, 200]);
  });
});
