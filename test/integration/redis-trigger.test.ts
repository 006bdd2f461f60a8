/**
 * The Redis trigger (issue 5 acceptance 2; SPEC §8, §4 `metadata.source`,
 * §9 `ara_trigger_messages_total`).
 *
 * Messages are published by a Redis client that is not this project's code:
 * `redis-cli -x PUBLISH <channel>` with the message on stdin. Trigger
 * channels are global Redis channels (no key prefix), so every scenario runs
 * on a throwaway `redis-server` this file starts on a free port: nothing
 * published here reaches another test file's nodes, and `CLIENT KILL TYPE
 * pubsub` touches only these nodes. The shared Redis is never used.
 *
 * Settings beyond the defaults: REDIS_BACKOFF_MAX_DELAY_MS=500 so the
 * pub/sub connection comes back quickly after CLIENT KILL.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { freePort } from '../helpers/cli-process.ts';
import { redisCli, spawnRedisServer, untilPong } from '../helpers/redis-server.ts';
import { sleep, startTestNode, type TestNode } from '../helpers/node.ts';

// ---------------------------------------------------------------------------
// A throwaway Redis and redis-cli

const servers: ChildProcess[] = [];

async function startRedis(): Promise<number> {
  const port = await freePort();
  servers.push(spawnRedisServer(port));
  await untilPong(port);
  return port;
}

/** PUBLISH through redis-cli; resolves with the number of subscribers Redis delivered it to. */
async function publish(port: number, channel: string, message: string): Promise<number> {
  return Number(await redisCli(port, ['PUBLISH', channel], message));
}

/** Patterns each pub/sub connection holds (`psub=` of CLIENT LIST TYPE pubsub). */
async function patternCounts(port: number): Promise<number[]> {
  const list = await redisCli(port, ['CLIENT', 'LIST', 'TYPE', 'pubsub']);
  return [...list.matchAll(/ psub=(\d+)/g)].map((m) => Number(m[1]));
}

after(() => {
  for (const server of servers) server.kill('SIGKILL');
});

// ---------------------------------------------------------------------------

interface Client {
  name: string;
  ws: TestWs;
}

function nonce(): string {
  return randomBytes(6).toString('hex');
}

function trigger(type: string, target: unknown, nonceValue: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ type, target, ...extra, event: { event_type: 'trigger.test', payload: { nonce: nonceValue } } });
}

function copies(client: Client, nonceValue: string): any[] {
  return client.ws.messages.filter((m) => m.type === 'notification' && m.payload?.nonce === nonceValue);
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * Each client in `expected` receives the message carrying `nonceValue`
 * exactly once with `metadata.source` = `redis:<channel>`; every other
 * client in `all` receives nothing of it (after a quiet 300 ms).
 */
async function assertOnce(all: Client[], expected: Client[], nonceValue: string, channel: string): Promise<void> {
  await waitFor(`${nonceValue} at ${expected.map((c) => c.name).join(', ')}`, () => expected.every((c) => copies(c, nonceValue).length > 0));
  await sleep(300);
  for (const client of all) {
    const got = copies(client, nonceValue);
    assert.equal(got.length, expected.includes(client) ? 1 : 0, `copies at ${client.name}`);
    for (const message of got) {
      assert.equal(message.metadata.source, `redis:${channel}`, `source at ${client.name}`);
      assert.equal(message.event_type, 'trigger.test');
    }
  }
}

async function metricValue(node: TestNode, name: string, labels: string): Promise<number> {
  const text = (await node.api('GET', '/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`) || (labels === '' && l.startsWith(`${name} `)));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function open(node: TestNode, name: string, user: string, tenant: string | null, channels: string[] = []): Promise<Client> {
  const claims = tenant === null ? {} : { tenant_id: tenant };
  const query = `?token=${await node.token(user, claims)}${channels.length > 0 ? `&channels=${channels.join(',')}` : ''}`;
  return { name, ws: await TestWs.open(node.wsUrl(query)) };
}

const INVALID_PROBLEMS = [
  'message is not valid JSON',
  'message must be a JSON object',
  'type must be one of user, users, broadcast, channel, channels',
  'tenant_id must be a valid tenant id ("*" only for broadcast)',
  'message is larger than 1 MiB',
];

/** Five malformed messages, each carrying `marker` so a log line quoting any of them is caught. */
function malformed(marker: string): string[] {
  return [
    `{"type":"user","target":"u1","event":{"event_type":"x","payload":"${marker}"}`,
    JSON.stringify([marker]),
    JSON.stringify({ type: 'shout', target: 'u1', event: { event_type: 'x', payload: marker } }),
    JSON.stringify({ type: 'user', target: 'u1', tenant_id: `bad tenant ${marker}`, event: { event_type: 'x', payload: marker } }),
    JSON.stringify({ type: 'broadcast', event: { event_type: 'x', payload: `${marker}${'x'.repeat(2 * 1024 * 1024)}` } }),
  ];
}

function invalidWarnings(node: TestNode): any[] {
  return node.lines.map((line) => JSON.parse(line)).filter((entry) => entry.msg === 'dropped an invalid trigger message');
}

// ---------------------------------------------------------------------------

describe('Redis trigger on a three-node cluster (SPEC §8)', () => {
  const prefix = `ara-t-trig-${randomBytes(4).toString('hex')}`;
  let port: number;
  const nodes: TestNode[] = [];
  const clients: Client[] = [];
  const by = (name: string) => clients.find((c) => c.name === name)!;

  /** Waits until every node listens: patterns, the broadcast channel and the bus. */
  async function listening(): Promise<void> {
    await waitFor('trigger subscriptions on every node', async () => {
      const numsub = (await redisCli(port, ['PUBSUB', 'NUMSUB', 'notification:broadcast'])).split('\n');
      return (await patternCounts(port)).join() === '2,2,2' && Number(numsub[1]) === 3;
    });
  }

  before(async () => {
    port = await startRedis();
    const env = {
      CLUSTER_ENABLED: 'true',
      REDIS_URL: `redis://127.0.0.1:${port}`,
      REDIS_KEY_PREFIX: prefix,
      QUEUE_ENABLED: 'true',
      TENANT_ENABLED: 'true',
      CLUSTER_SESSION_TTL_SECONDS: '3',
      WEBSOCKET_HEARTBEAT_INTERVAL: '1',
      REDIS_BACKOFF_MAX_DELAY_MS: '500',
    };
    for (let i = 0; i < 3; i++) nodes.push(await startTestNode({ ...env, CLUSTER_SERVER_ID: `trig-${i}` }));
    clients.push(
      await open(nodes[0]!, 'u1@0', 'u1', 'acme', ['orders']),
      await open(nodes[2]!, 'u1@2', 'u1', 'acme'),
      await open(nodes[1]!, 'u2@1', 'u2', 'acme', ['orders', 'news']),
      await open(nodes[2]!, 'u3@2', 'u3', 'acme', ['news']),
      await open(nodes[1]!, 'u1@1/globex', 'u1', 'globex', ['orders', 'news']),
      await open(nodes[0]!, 'u1@0/default', 'u1', null, ['orders']),
    );
    await listening();
    await sleep(200);
  });

  after(async () => {
    for (const client of clients) client.ws.socket.terminate();
    for (const node of nodes) await node.stop();
  });

  test('notification:user:<anything> with a user body reaches that user\'s connections on every node once', async () => {
    const n = nonce();
    const channel = `notification:user:${nonce()}`;
    assert.equal(await publish(port, channel, trigger('user', 'u1', n, { tenant_id: 'acme' })), 3, 'every node heard it');
    await assertOnce(clients, [by('u1@0'), by('u1@2')], n, channel);
  });

  test('the body decides the target, the channel only the source', async () => {
    const n1 = nonce();
    await publish(port, 'notification:broadcast', trigger('user', 'u2', n1, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u2@1')], n1, 'notification:broadcast');
    const n2 = nonce();
    await publish(port, 'notification:user:u2', trigger('channel', 'news', n2, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u2@1'), by('u3@2')], n2, 'notification:user:u2');
    const n3 = nonce();
    await publish(port, 'notification:channel:orders', trigger('users', ['u1', 'u3'], n3, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u1@0'), by('u1@2'), by('u3@2')], n3, 'notification:channel:orders');
  });

  test('notification:channel:<anything> with channel and channels bodies reaches subscribers on every node once', async () => {
    const n1 = nonce();
    await publish(port, 'notification:channel:orders', trigger('channel', 'orders', n1, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u1@0'), by('u2@1')], n1, 'notification:channel:orders');
    // u2@1 is in both channels: one copy.
    const n2 = nonce();
    await publish(port, 'notification:channel:x', trigger('channels', ['orders', 'news'], n2, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u1@0'), by('u2@1'), by('u3@2')], n2, 'notification:channel:x');
  });

  test('notification:broadcast reaches only the named tenant; no tenant_id means default; "*" reaches every tenant', async () => {
    const acme = nonce();
    await publish(port, 'notification:broadcast', trigger('broadcast', null, acme, { tenant_id: 'acme' }));
    await assertOnce(clients, clients.filter((c) => !c.name.includes('/')), acme, 'notification:broadcast');
    const globex = nonce();
    await publish(port, 'notification:broadcast', trigger('broadcast', null, globex, { tenant_id: 'globex' }));
    await assertOnce(clients, [by('u1@1/globex')], globex, 'notification:broadcast');
    const fallback = nonce();
    await publish(port, 'notification:broadcast', trigger('broadcast', null, fallback));
    await assertOnce(clients, [by('u1@0/default')], fallback, 'notification:broadcast');
    const everyone = nonce();
    await publish(port, 'notification:broadcast', trigger('broadcast', null, everyone, { tenant_id: '*' }));
    await assertOnce(clients, clients, everyone, 'notification:broadcast');
  });

  test('a tenant-scoped user trigger does not reach the same user id in another tenant', async () => {
    const n = nonce();
    await publish(port, 'notification:user:u1', trigger('user', 'u1', n, { tenant_id: 'globex' }));
    await assertOnce(clients, [by('u1@1/globex')], n, 'notification:user:u1');
  });

  test('an offline user targeted by a trigger is queued exactly once by the three nodes and replayed once', async () => {
    const enqueued = async () => {
      let sum = 0;
      for (const node of nodes) sum += await metricValue(node, 'ara_queue_enqueued_total', '');
      return sum;
    };
    const before = await enqueued();
    const delivered = () => Promise.all(nodes.map((node) => metricValue(node, 'ara_trigger_messages_total', 'result="delivered"')));
    const deliveredBefore = await delivered();
    const n = nonce();
    const channel = 'notification:user:offline';
    assert.equal(await publish(port, channel, trigger('user', 'offline-1', n, { tenant_id: 'quiet' })), 3);
    const stats = async () => (await nodes[0]!.api('GET', '/api/v1/stats', undefined, { 'x-tenant-id': 'quiet' })).json.queue;
    await waitFor('the trigger queued', async () => (await stats()).total_messages > 0);
    // Every node has handled it (each counts delivered), then the queue holds one entry.
    await waitFor('every node handled the trigger', async () => (await delivered()).every((count, i) => count === deliveredBefore[i]! + 1));
    await sleep(200);
    assert.deepEqual(await stats(), { enabled: true, backend: 'redis', total_messages: 1, users_with_queue: 1 });
    assert.equal((await enqueued()) - before, 1, 'ara_queue_enqueued_total summed over the nodes');

    const first = await open(nodes[1]!, 'offline-1@1', 'offline-1', 'quiet');
    const got = (await first.ws.quietFor(400)).filter((m) => m.type === 'notification');
    assert.equal(got.length, 1);
    assert.deepEqual(got[0].payload, { nonce: n });
    assert.equal(got[0].metadata.source, `redis:${channel}`);
    await first.ws.close();
    const second = await open(nodes[2]!, 'offline-1@2', 'offline-1', 'quiet');
    assert.deepEqual((await second.ws.quietFor(400)).filter((m) => m.type === 'notification'), []);
    await second.ws.close();
  });

  test('malformed messages are counted as invalid and logged at warn without the payload on every node; the subscriber carries on', async () => {
    const marker = `PAYLOAD-${nonce()}`;
    const before = await Promise.all(nodes.map((node) => metricValue(node, 'ara_trigger_messages_total', 'result="invalid"')));
    const warningsBefore = nodes.map((node) => invalidWarnings(node).length);
    for (const message of malformed(marker)) assert.equal(await publish(port, 'notification:user:bad', message), 3);
    const n = nonce();
    await publish(port, 'notification:user:after', trigger('user', 'u3', n, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u3@2')], n, 'notification:user:after');
    for (const [i, node] of nodes.entries()) {
      assert.equal((await metricValue(node, 'ara_trigger_messages_total', 'result="invalid"')) - before[i]!, 5, `invalid count on trig-${i}`);
      const warnings = invalidWarnings(node).slice(warningsBefore[i]);
      assert.deepEqual(warnings.map((w) => w.problem), INVALID_PROBLEMS, `warnings on trig-${i}`);
      for (const warning of warnings) {
        assert.equal(warning.level, 40, 'warn');
        assert.equal(warning.channel, 'notification:user:bad');
      }
      assert.equal(node.logText().includes(marker), false, `no log line of trig-${i} quotes a payload`);
    }
  });

  test('after CLIENT KILL TYPE pubsub the trigger and the cluster bus work again without a restart', async (t) => {
    const pubsubIds = async () => [...(await redisCli(port, ['CLIENT', 'LIST', 'TYPE', 'pubsub'])).matchAll(/^id=(\d+) /gm)].map((m) => m[1]);
    const before = await pubsubIds();
    assert.equal(before.length, 3, `one pub/sub connection per node: ${before.join(', ')}`);
    const killed = await redisCli(port, ['CLIENT', 'KILL', 'TYPE', 'pubsub']);
    assert.equal(killed, '3', 'CLIENT KILL TYPE pubsub closed the three');
    const started = Date.now();
    // Three new pub/sub connections, none of the killed ones, with every subscription back.
    await waitFor('new pub/sub connections', async () => {
      const now = await pubsubIds();
      return now.length === 3 && now.every((id) => !before.includes(id));
    });
    await listening();
    // The bus: every user and channel channel is subscribed again (u1 lives on three nodes in two tenants…).
    await waitFor('bus resubscribed', async () => {
      const reply = (await redisCli(port, ['PUBSUB', 'NUMSUB', `${prefix}:bus:acme:u:u1`, `${prefix}:bus:acme:c:news`])).split('\n');
      return Number(reply[1]) === 2 && Number(reply[3]) === 2;
    });
    const resubscribedMs = Date.now() - started;
    const n = nonce();
    await publish(port, 'notification:user:again', trigger('user', 'u1', n, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u1@0'), by('u1@2')], n, 'notification:user:again');
    // Cross-node HTTP sends ride the bus.
    const sent = await nodes[1]!.api('POST', '/api/v1/notifications/send', { target_user_id: 'u1', event_type: 'bus', payload: {} }, { 'x-tenant-id': 'acme' });
    assert.equal(sent.status, 200);
    assert.deepEqual({ delivered_to: sent.json.delivered_to, queued: sent.json.queued, nodes: sent.json.nodes }, { delivered_to: 2, queued: 0, nodes: 2 });
    const channelSend = await nodes[0]!.api('POST', '/api/v1/notifications/channel', { channel: 'news', event_type: 'bus', payload: {} }, { 'x-tenant-id': 'acme' });
    for (const [client, id] of [
      [by('u1@0'), sent.json.notification_id],
      [by('u1@2'), sent.json.notification_id],
      [by('u2@1'), channelSend.json.notification_id],
      [by('u3@2'), channelSend.json.notification_id],
    ] as [Client, string][]) {
      await waitFor(`${id} at ${client.name}`, () => client.ws.messages.some((m) => m.id === id));
    }
    await sleep(300);
    for (const client of clients) {
      const count = (id: string) => client.ws.messages.filter((m) => m.type === 'notification' && m.id === id).length;
      assert.equal(count(sent.json.notification_id), ['u1@0', 'u1@2'].includes(client.name) ? 1 : 0, client.name);
      assert.equal(count(channelSend.json.notification_id), ['u2@1', 'u3@2'].includes(client.name) ? 1 : 0, client.name);
    }
    for (const client of clients) assert.equal(client.ws.socket.readyState, 1, `${client.name} still open`);
    t.diagnostic(`pub/sub resubscribed on all three nodes ${resubscribedMs} ms after CLIENT KILL TYPE pubsub`);
  });

  // SPEC §8 / §6.1: a 200 means delivered. Pub/sub drops what nobody hears, so a channel or
  // broadcast send taken while the other nodes' pub/sub links are down must still reach
  // them: they read the bus log once they have resubscribed. The links are held down
  // deterministically: the default user is switched off, so reconnects fail (NOAUTH)
  // while the nodes' command connections, already authenticated, keep working.
  test('a channel or broadcast send taken while other nodes are resubscribing reaches them once, from the bus log', async (t) => {
    const admin = ['--user', 'trig-admin', '--pass', 'trig-admin-pass', '--no-auth-warning'];
    // Delivered live just before the links drop: the catch-up must not deliver them again.
    const before = [
      (await nodes[0]!.api('POST', '/api/v1/notifications/channel', { channel: 'news', event_type: 'pre', payload: {} }, { 'x-tenant-id': 'acme' })).json,
      (await nodes[0]!.api('POST', '/api/v1/notifications/send', { target_user_id: 'u1', event_type: 'pre', payload: {} }, { 'x-tenant-id': 'acme' })).json,
    ];
    await waitFor('pre-drop sends live', () =>
      [by('u2@1'), by('u3@2')].every((c) => c.ws.messages.some((m) => m.id === before[0].notification_id)) &&
      by('u1@2').ws.messages.some((m) => m.id === before[1].notification_id));
    await redisCli(port, ['ACL', 'SETUSER', 'trig-admin', 'on', '>trig-admin-pass', 'allcommands', 'allkeys', 'allchannels']);
    await redisCli(port, ['ACL', 'SETUSER', 'default', 'off']);
    let sends: { channel: any; broadcast: any; user: any };
    try {
      assert.equal(await redisCli(port, [...admin, 'CLIENT', 'KILL', 'TYPE', 'pubsub']), '3');
      await sleep(300);
      assert.equal((await redisCli(port, [...admin, 'CLIENT', 'LIST', 'TYPE', 'pubsub'])).trim(), '', 'no pub/sub link is back');
      const channel = await nodes[0]!.api('POST', '/api/v1/notifications/channel', { channel: 'news', event_type: 'gap', payload: {} }, { 'x-tenant-id': 'acme' });
      const broadcast = await nodes[1]!.api('POST', '/api/v1/notifications/broadcast', { event_type: 'gap', payload: {} }, { 'x-tenant-id': 'acme' });
      // u1 has a connection on node 0 (the sender: never queued) and one on node 2.
      const user = await nodes[0]!.api('POST', '/api/v1/notifications/send', { target_user_id: 'u1', event_type: 'gap', payload: {} }, { 'x-tenant-id': 'acme' });
      sends = { channel: channel.json, broadcast: broadcast.json, user: user.json };
      assert.equal(channel.status, 200, JSON.stringify(channel.json));
      assert.equal(broadcast.status, 200, JSON.stringify(broadcast.json));
      assert.equal(user.status, 200, JSON.stringify(user.json));
      assert.equal(user.json.queued, 0);
    } finally {
      await redisCli(port, [...admin, 'ACL', 'SETUSER', 'default', 'on']);
    }
    const expected: [string, string, string[]][] = [
      ['channel', sends.channel.notification_id, ['u2@1', 'u3@2']],
      ['broadcast', sends.broadcast.notification_id, ['u1@0', 'u1@2', 'u2@1', 'u3@2']],
      ['user', sends.user.notification_id, ['u1@0', 'u1@2']],
      ['channel before the drop', before[0].notification_id, ['u2@1', 'u3@2']],
      ['user before the drop', before[1].notification_id, ['u1@0', 'u1@2']],
    ];
    for (const [, id, names] of expected) {
      for (const name of names) await waitFor(`${id} at ${name}`, () => by(name).ws.messages.some((m) => m.id === id), 10_000);
    }
    await sleep(500);
    for (const [kind, id, names] of expected) {
      for (const client of clients) {
        const count = client.ws.messages.filter((m) => m.type === 'notification' && m.id === id).length;
        assert.equal(count, names.includes(client.name) ? 1 : 0, `${kind} copies at ${client.name}`);
      }
    }
    const caughtUp = nodes.map((node) => node.lines.map((line) => JSON.parse(line)).filter((e) => e.msg === 'bus catch-up after the pub/sub link came back').at(-1)?.delivered);
    t.diagnostic(`bus catch-up deliveries per node: ${JSON.stringify(caughtUp)}`);
    // Connections reached by catching up: node 0 u1@0 (the broadcast); node 1 u2@1 (the
    // channel send; it sent the broadcast); node 2 u3@2 twice (channel, broadcast), u1@2
    // twice (broadcast, user send).
    assert.deepEqual(caughtUp, [1, 1, 4]);
  });

  // The same for a user send heard by one node and missed by another: the user-send script
  // publishes, and since a node heard it, does not queue it but logs it for the others.
  test('a user send heard by one node reaches the user\'s connection on a node that was resubscribing, once, unqueued', async (t) => {
    const admin = ['--user', 'trig-admin', '--pass', 'trig-admin-pass', '--no-auth-warning'];
    const linesBefore = nodes[2]!.lines.length;
    await redisCli(port, ['ACL', 'SETUSER', 'default', 'off']);
    let user: any;
    let offlineHere: any;
    try {
      const list = await redisCli(port, [...admin, 'CLIENT', 'LIST', 'TYPE', 'pubsub']);
      const id = /^id=(\d+) .* name=ara:trig-2:pubsub /m.exec(list)?.[1];
      assert.ok(id, `node 2's pub/sub connection is named in CLIENT LIST: ${list}`);
      assert.equal(await redisCli(port, [...admin, 'CLIENT', 'KILL', 'ID', id]), '1');
      await sleep(300);
      // Sent through node 1, which holds no connection of u1: node 0 hears it, node 2 does not.
      const sent = await nodes[1]!.api('POST', '/api/v1/notifications/send', { target_user_id: 'u1', event_type: 'gap-user', payload: {} }, { 'x-tenant-id': 'acme' });
      // u3 is only on node 2, which hears nothing: queued, as for an offline user.
      const queued = await nodes[1]!.api('POST', '/api/v1/notifications/send', { target_user_id: 'u3', event_type: 'gap-user', payload: {} }, { 'x-tenant-id': 'acme' });
      assert.equal(sent.status, 200, JSON.stringify(sent.json));
      assert.equal(queued.status, 200, JSON.stringify(queued.json));
      user = sent.json;
      offlineHere = queued.json;
    } finally {
      await redisCli(port, [...admin, 'ACL', 'SETUSER', 'default', 'on']);
    }
    assert.equal(user.queued, 0, 'node 0 heard it: not queued');
    assert.equal(offlineHere.queued, 1, 'no node heard it: queued');
    for (const name of ['u1@0', 'u1@2']) await waitFor(`${user.notification_id} at ${name}`, () => by(name).ws.messages.some((m) => m.id === user.notification_id), 10_000);
    await sleep(500);
    for (const client of clients) {
      const count = (id: string) => client.ws.messages.filter((m) => m.type === 'notification' && m.id === id).length;
      assert.equal(count(user.notification_id), ['u1@0', 'u1@2'].includes(client.name) ? 1 : 0, `user send copies at ${client.name}`);
      assert.equal(count(offlineHere.notification_id), 0, `the queued send is not delivered live at ${client.name}`);
    }
    const caughtUp = nodes[2]!.lines.slice(linesBefore).map((line) => JSON.parse(line)).filter((e) => e.msg === 'bus catch-up after the pub/sub link came back').map((e) => e.delivered);
    t.diagnostic(`node 2 catch-up deliveries: ${JSON.stringify(caughtUp)}`);
    assert.deepEqual(caughtUp, [1]);
    // The queued one is replayed once on u3's next connect (SPEC §7), on any node.
    const again = await open(nodes[0]!, 'u3-again', 'u3', 'acme');
    const replayed = (await again.ws.quietFor(500)).filter((m) => m.type === 'notification').map((m) => m.id);
    again.ws.socket.terminate();
    assert.deepEqual(replayed, [offlineHere.notification_id]);
  });
});

describe('Redis trigger on a single node (SPEC §8)', () => {
  let port: number;
  let single: TestNode;
  let custom: TestNode;
  const clients: Client[] = [];
  const customClients: Client[] = [];
  const by = (name: string) => clients.find((c) => c.name === name)!;

  before(async () => {
    port = await startRedis();
    single = await startTestNode({
      REDIS_URL: `redis://127.0.0.1:${port}`,
      REDIS_KEY_PREFIX: 'single',
      TENANT_ENABLED: 'true',
      QUEUE_ENABLED: 'true',
    });
    custom = await startTestNode({
      REDIS_URL: `redis://127.0.0.1:${port}`,
      REDIS_KEY_PREFIX: 'custom',
      REDIS_CHANNELS: 'ops-exact,app:*:events',
    });
    clients.push(
      await open(single, 'u1', 'u1', 'acme', ['orders']),
      await open(single, 'u2', 'u2', 'acme', ['news']),
      await open(single, 'u1/globex', 'u1', 'globex', ['orders']),
      await open(single, 'u1/default', 'u1', null),
    );
    customClients.push(await open(custom, 'c1', 'c1', null, ['orders']), await open(custom, 'c2', 'c2', null));
    await waitFor('single and custom subscribed', async () => (await patternCounts(port)).sort().join() === '1,2');
    await sleep(100);
  });

  after(async () => {
    for (const client of [...clients, ...customClients]) client.ws.socket.terminate();
    await single.stop();
    await custom.stop();
  });

  test('each default trigger channel delivers once with metadata.source redis:<channel>', async () => {
    const n1 = nonce();
    assert.equal(await publish(port, 'notification:user:u1', trigger('user', 'u1', n1, { tenant_id: 'acme' })), 1, 'only the default-channel node listens');
    await assertOnce(clients, [by('u1')], n1, 'notification:user:u1');
    const n2 = nonce();
    await publish(port, 'notification:channel:orders', trigger('channel', 'orders', n2, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u1')], n2, 'notification:channel:orders');
    const n3 = nonce();
    await publish(port, 'notification:broadcast', trigger('broadcast', null, n3, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u1'), by('u2')], n3, 'notification:broadcast');
    const n4 = nonce();
    await publish(port, 'notification:broadcast', trigger('broadcast', null, n4, { tenant_id: '*' }));
    await assertOnce(clients, clients, n4, 'notification:broadcast');
    const n5 = nonce();
    await publish(port, 'notification:user:anything', trigger('users', ['u1', 'u2'], n5));
    await assertOnce(clients, [by('u1/default')], n5, 'notification:user:anything');
    // The custom node listens on none of these.
    for (const client of customClients) assert.deepEqual(client.ws.messages.filter((m) => m.type === 'notification'), []);
  });

  test('an offline user targeted by a trigger is queued and replayed once', async () => {
    const n = nonce();
    await publish(port, 'notification:user:later', trigger('user', 'later', n, { tenant_id: 'acme' }));
    await waitFor('queued', async () => (await single.api('GET', '/api/v1/stats', undefined, { 'x-tenant-id': 'acme' })).json.queue.total_messages === 1);
    const later = await open(single, 'later', 'later', 'acme');
    const got = (await later.ws.quietFor(400)).filter((m) => m.type === 'notification');
    assert.deepEqual(got.map((m) => [m.payload.nonce, m.metadata.source]), [[n, 'redis:notification:user:later']]);
    await later.ws.close();
  });

  test('malformed messages are counted, logged at warn without the payload, and the next valid one is delivered', async () => {
    const marker = `PAYLOAD-${nonce()}`;
    const before = await metricValue(single, 'ara_trigger_messages_total', 'result="invalid"');
    const warningsBefore = invalidWarnings(single).length;
    for (const message of malformed(marker)) await publish(port, 'notification:channel:bad', message);
    const n = nonce();
    await publish(port, 'notification:channel:bad', trigger('channel', 'news', n, { tenant_id: 'acme' }));
    await assertOnce(clients, [by('u2')], n, 'notification:channel:bad');
    assert.equal((await metricValue(single, 'ara_trigger_messages_total', 'result="invalid"')) - before, 5);
    const warnings = invalidWarnings(single).slice(warningsBefore);
    assert.deepEqual(warnings.map((w) => [w.level, w.problem, w.channel]), INVALID_PROBLEMS.map((p) => [40, p, 'notification:channel:bad']));
    assert.equal(single.logText().includes(marker), false, 'no log line quotes a payload');
  });

  test('REDIS_CHANNELS with an exact channel and a pattern replaces the defaults', async () => {
    const n1 = nonce();
    assert.equal(await publish(port, 'ops-exact', trigger('user', 'c1', n1)), 1);
    await assertOnce(customClients, [customClients[0]!], n1, 'ops-exact');
    const n2 = nonce();
    assert.equal(await publish(port, 'app:billing:events', trigger('broadcast', null, n2)), 1);
    await assertOnce(customClients, customClients, n2, 'app:billing:events');
    const n3 = nonce();
    await publish(port, 'app:x:events', trigger('channel', 'orders', n3));
    await assertOnce(customClients, [customClients[0]!], n3, 'app:x:events');
    // Not matched: a near miss of the pattern, and a default channel.
    for (const channel of ['app:billing:other', 'ops-exact-2', 'notification:user:c1']) {
      const n = nonce();
      await publish(port, channel, trigger('user', 'c1', n));
      await assertOnce(customClients, [], n, channel);
    }
  });
});
