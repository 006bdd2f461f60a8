/**
 * Three nodes sharing one Redis (issue 5 acceptance 1; SPEC §6.1 cluster
 * `delivered_to` and `nodes`, §6.2 cluster routes, §7, §8 "Cluster").
 *
 * Three in-process nodes with CLUSTER_ENABLED, QUEUE_ENABLED and
 * TENANT_ENABLED on the shared Redis under a prefix of their own (keys
 * deleted afterwards; the Redis trigger is off so nothing published by
 * other test files reaches them). Connections are spread over the nodes:
 * users with connections on several nodes at once, channel subscribers on
 * every node, a connection subscribed to two targeted channels, role-bearing
 * connections, and look-alike users and channels in a second tenant and in
 * `default`. Expected recipients, `delivered_to` and `nodes` are computed
 * from that layout with SPEC §6.1's definition: the target's connections
 * (local ones that accepted it plus those on other live nodes) and the
 * number of nodes holding them.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { TestWs } from '../helpers/clients.ts';
import { sleep, startTestNode, type ApiResponse, type TestNode } from '../helpers/node.ts';

const REDIS_URL = 'redis://127.0.0.1:6379';
const PREFIX = `ara-t-c3-${randomBytes(4).toString('hex')}`;
const ACME_KEY = 'acme-tenant-key-0123456789abcdef';
const GLOBEX_KEY = 'globex-tenant-key-0123456789abcd';

interface Conn {
  name: string;
  user: string;
  tenant: string;
  node: number;
  channels: string[];
  roles: string[];
  ws: TestWs;
  connectionId: string;
}

type Target =
  | { type: 'user'; value: string }
  | { type: 'users'; value: string[] }
  | { type: 'channel'; value: string }
  | { type: 'channels'; value: string[] }
  | { type: 'broadcast'; audience?: { type: 'All' } | { type: 'Users' | 'Channels' | 'Roles'; value: string[] } };

const nodes: TestNode[] = [];
const conns: Conn[] = [];
let redis: Redis;

/** Connection layout: [name, user, tenant, node, channels, roles]. */
const LAYOUT: [string, string, string, number, string[], string[]][] = [
  ['alice@0', 'alice', 'acme', 0, ['orders'], []],
  ['alice@1', 'alice', 'acme', 1, [], ['admin']],
  ['bob@1', 'bob', 'acme', 1, ['orders'], []],
  ['bob@2', 'bob', 'acme', 2, ['alerts'], []],
  ['bob@2b', 'bob', 'acme', 2, [], ['admin', 'ops']],
  ['carol@2', 'carol', 'acme', 2, ['orders', 'alerts'], []],
  ['dave@0', 'dave', 'acme', 0, ['alerts'], ['ops']],
  ['erin@0', 'erin', 'acme', 0, ['news', 'sports'], []],
  ['erin@1', 'erin', 'acme', 1, ['news'], []],
  ['fay@2', 'fay', 'acme', 2, ['news', 'sports'], []],
  // Look-alikes in other tenants: never reached by acme sends.
  ['alice@2/globex', 'alice', 'globex', 2, ['orders', 'news'], ['admin']],
  ['bob@0/globex', 'bob', 'globex', 0, ['alerts'], []],
  ['alice@1/default', 'alice', 'default', 1, ['orders'], ['admin']],
];

function operator(tenant: string): Record<string, string> {
  return { 'x-tenant-id': tenant };
}

function notificationsOf(conn: Conn, id: string): number {
  return conn.ws.messages.filter((m) => m.type === 'notification' && m.id === id).length;
}

/** The connections SPEC §6.1/§7 says a target in `tenant` reaches. */
function recipients(tenant: string, target: Target): Conn[] {
  const inTenant = conns.filter((c) => c.tenant === tenant);
  switch (target.type) {
    case 'user':
      return inTenant.filter((c) => c.user === target.value);
    case 'users':
      return inTenant.filter((c) => target.value.includes(c.user));
    case 'channel':
      return inTenant.filter((c) => c.channels.includes(target.value));
    case 'channels':
      return inTenant.filter((c) => c.channels.some((ch) => target.value.includes(ch)));
    case 'broadcast': {
      const audience = target.audience;
      if (audience === undefined || audience.type === 'All') return inTenant;
      if (audience.type === 'Users') return inTenant.filter((c) => audience.value.includes(c.user));
      if (audience.type === 'Channels') return inTenant.filter((c) => c.channels.some((ch) => audience.value.includes(ch)));
      return inTenant.filter((c) => c.roles.some((r) => audience.value.includes(r)));
    }
  }
}

function expectedFigures(tenant: string, target: Target): { delivered_to: number; nodes: number } {
  const reached = recipients(tenant, target);
  return { delivered_to: reached.length, nodes: new Set(reached.map((c) => c.node)).size };
}

function routeOf(target: Target): { path: string; body: Record<string, unknown> } {
  switch (target.type) {
    case 'user':
      return { path: 'send', body: { target_user_id: target.value } };
    case 'users':
      return { path: 'send-to-users', body: { target_user_ids: target.value } };
    case 'channel':
      return { path: 'channel', body: { channel: target.value } };
    case 'channels':
      return { path: 'channels', body: { channels: target.value } };
    case 'broadcast':
      return { path: 'broadcast', body: target.audience ? { audience: target.audience } : {} };
  }
}

async function send(node: TestNode, tenant: string, target: Target, extra: Record<string, unknown> = {}): Promise<ApiResponse> {
  const { path, body } = routeOf(target);
  const response = await node.api('POST', `/api/v1/notifications/${path}`, {
    ...body,
    event_type: 'cluster.test',
    payload: { target: target.type },
    ...extra,
  }, operator(tenant));
  assert.equal(response.status, 200, response.text);
  return response;
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

interface Expectation {
  id: string;
  expected: Conn[];
  label: string;
}

/**
 * Every listed connection receives its notification once, and every other
 * connection on every node receives nothing of it (checked after a quiet 300 ms).
 */
async function assertReachedOnce(...expectations: Expectation[]): Promise<void> {
  for (const { id, expected, label } of expectations) {
    await waitFor(`${label}: ${id} at ${expected.map((c) => c.name).join(', ')}`, () =>
      expected.every((c) => notificationsOf(c, id) >= 1),
    );
  }
  await sleep(300);
  for (const { id, expected, label } of expectations) {
    for (const conn of conns) {
      const want = expected.includes(conn) ? 1 : 0;
      assert.equal(notificationsOf(conn, id), want, `${label}: copies of ${id} at ${conn.name}`);
    }
  }
}

function busChannel(tenant: string, kind: 'u' | 'c', name: string): string {
  return `${PREFIX}:bus:${tenant}:${kind}:${name}`;
}

/**
 * Waits until Redis reflects the layout: each (tenant, user) and (tenant,
 * channel) bus channel has one subscriber per node holding it, and every
 * node's presence shows its connections and sessions.
 */
async function settle(): Promise<void> {
  const wanted = new Map<string, number>();
  const holders = new Map<string, Set<number>>();
  const hold = (channel: string, node: number) => {
    if (!holders.has(channel)) holders.set(channel, new Set());
    holders.get(channel)!.add(node);
  };
  for (const c of conns) {
    hold(busChannel(c.tenant, 'u', c.user), c.node);
    for (const ch of c.channels) hold(busChannel(c.tenant, 'c', ch), c.node);
  }
  for (const [channel, set] of holders) wanted.set(channel, set.size);
  await waitFor('bus subscriptions', async () => {
    const reply = (await redis.pubsub('NUMSUB', ...wanted.keys())) as (string | number)[];
    for (let i = 0; i < reply.length; i += 2) {
      if (Number(reply[i + 1]) !== wanted.get(String(reply[i]))) return false;
    }
    return true;
  });
  const perNode = [0, 1, 2].map((n) => conns.filter((c) => c.node === n).length);
  await waitFor('presence counts', async () => {
    const status = await nodes[0]!.api('GET', '/api/v1/cluster/status');
    return status.status === 200 && JSON.stringify(status.json.nodes.map((n: any) => n.connections)) === JSON.stringify(perNode);
  });
  for (const c of conns) {
    await waitFor(`session of ${c.name}`, async () => {
      const found = await nodes[0]!.api('GET', `/api/v1/cluster/users/${c.user}`, undefined, operator(c.tenant));
      const session = found.json?.sessions?.find((s: any) => s.connection_id === c.connectionId);
      return session !== undefined && JSON.stringify(session.channels) === JSON.stringify([...c.channels].sort());
    });
  }
}

before(async () => {
  redis = new Redis(REDIS_URL);
  const env = {
    CLUSTER_ENABLED: 'true',
    REDIS_URL,
    REDIS_KEY_PREFIX: PREFIX,
    REDIS_TRIGGER_ENABLED: 'false',
    QUEUE_ENABLED: 'true',
    TENANT_ENABLED: 'true',
    TENANT_API_KEYS: `acme:${ACME_KEY},globex:${GLOBEX_KEY}`,
    CLUSTER_SESSION_TTL_SECONDS: '3',
    WEBSOCKET_HEARTBEAT_INTERVAL: '1',
  };
  for (let i = 0; i < 3; i++) nodes.push(await startTestNode({ ...env, CLUSTER_SERVER_ID: `node-${i}` }));
  for (const [name, user, tenant, node, channels, roles] of LAYOUT) {
    const claims: Record<string, unknown> = {};
    if (tenant !== 'default') claims.tenant_id = tenant;
    if (roles.length > 0) claims.roles = roles;
    const query = `?token=${await nodes[node]!.token(user, claims)}${channels.length > 0 ? `&channels=${channels.join(',')}` : ''}`;
    const ws = await TestWs.open(nodes[node]!.wsUrl(query));
    const connectionId = ws.messages.find((m) => m.type === 'connected').connection_id as string;
    conns.push({ name, user, tenant, node, channels, roles, ws, connectionId });
  }
  await settle();
});

after(async () => {
  for (const c of conns) c.ws.socket.terminate();
  for (const node of nodes) await node.stop();
  const keys = await redis.keys(`${PREFIX}:*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
});

/** One send of `target` through each node: every recipient once, figures exact. */
async function sendThroughEachNode(target: Target, label: string): Promise<void> {
  const expected = expectedFigures('acme', target);
  const checks: Expectation[] = [];
  for (let i = 0; i < 3; i++) {
    const sent = await send(nodes[i]!, 'acme', target);
    assert.equal(sent.json.success, expected.delivered_to > 0, `${label} via node-${i}: success`);
    assert.deepEqual(
      { delivered_to: sent.json.delivered_to, failed: sent.json.failed, queued: sent.json.queued, nodes: sent.json.nodes },
      { ...expected, failed: 0, queued: 0 },
      `${label} via node-${i}`,
    );
    checks.push({ id: sent.json.notification_id, expected: recipients('acme', target), label: `${label} via node-${i}` });
  }
  await assertReachedOnce(...checks);
}

describe('every target type through every node reaches each target connection once (SPEC §6.1, §7, §8)', () => {
  test('user: a user with connections on two nodes gets one copy on each', async () => {
    await sendThroughEachNode({ type: 'user', value: 'alice' }, 'user alice');
    await sendThroughEachNode({ type: 'user', value: 'bob' }, 'user bob');
  });

  test('users: users spread over all three nodes, duplicates ignored', async () => {
    await sendThroughEachNode({ type: 'users', value: ['alice', 'carol', 'dave', 'carol'] }, 'users');
  });

  test('channel: subscribers on all three nodes', async () => {
    await sendThroughEachNode({ type: 'channel', value: 'orders' }, 'channel orders');
  });

  test('channels: two channels with subscribers on all three nodes and no connection in both', async () => {
    await sendThroughEachNode({ type: 'channels', value: ['orders', 'news'] }, 'channels orders+news');
  });

  test('channels: a connection subscribed to two of the targets gets one copy, on every node', async () => {
    // carol@2 is in orders and alerts; erin@0 and fay@2 in news and sports.
    const targets: Target[] = [
      { type: 'channels', value: ['orders', 'alerts'] },
      { type: 'channels', value: ['news', 'sports'] },
    ];
    const checks: Expectation[] = [];
    for (const target of targets) {
      for (let i = 0; i < 3; i++) {
        const sent = await send(nodes[i]!, 'acme', target);
        assert.equal(sent.json.nodes, expectedFigures('acme', target).nodes, `nodes via node-${i}`);
        checks.push({ id: sent.json.notification_id, expected: recipients('acme', target), label: `${JSON.stringify(target)} via node-${i}` });
      }
    }
    await assertReachedOnce(...checks);
  });

  test('channels: delivered_to counts a connection in two of the targets on another node once (SPEC §6.1 "the target\'s connections")', async () => {
    await sendThroughEachNode({ type: 'channels', value: ['orders', 'alerts'] }, 'channels orders+alerts');
    await sendThroughEachNode({ type: 'channels', value: ['news', 'sports'] }, 'channels news+sports');
    await sendThroughEachNode({ type: 'broadcast', audience: { type: 'Channels', value: ['orders', 'alerts'] } }, 'audience Channels orders+alerts');
  });

  test('broadcast: every acme connection on every node, none of another tenant', async () => {
    await sendThroughEachNode({ type: 'broadcast' }, 'broadcast');
    await sendThroughEachNode({ type: 'broadcast', audience: { type: 'All' } }, 'broadcast All');
  });

  test('broadcast with audience Users reaches those users on every node', async () => {
    await sendThroughEachNode({ type: 'broadcast', audience: { type: 'Users', value: ['alice', 'carol'] } }, 'audience Users');
  });

  test('broadcast with audience Channels reaches those channels\' subscribers on every node', async () => {
    await sendThroughEachNode({ type: 'broadcast', audience: { type: 'Channels', value: ['orders'] } }, 'audience Channels');
  });

  test('broadcast with audience Channels: a connection in two listed channels gets one copy', async () => {
    const target: Target = { type: 'broadcast', audience: { type: 'Channels', value: ['orders', 'alerts'] } };
    const checks: Expectation[] = [];
    for (let i = 0; i < 3; i++) {
      const sent = await send(nodes[i]!, 'acme', target);
      checks.push({ id: sent.json.notification_id, expected: recipients('acme', target), label: `audience Channels orders+alerts via node-${i}` });
    }
    await assertReachedOnce(...checks);
  });

  test('broadcast with audience Roles reaches only role holders, on every node', async () => {
    const target: Target = { type: 'broadcast', audience: { type: 'Roles', value: ['admin'] } };
    const checks: Expectation[] = [];
    for (let i = 0; i < 3; i++) {
      const sent = await send(nodes[i]!, 'acme', target);
      checks.push({ id: sent.json.notification_id, expected: recipients('acme', target), label: `audience Roles via node-${i}` });
    }
    await assertReachedOnce(...checks);
  });

  test('broadcast with audience Roles: delivered_to and nodes count only role holders on other nodes, each once (SPEC §6.1)', async () => {
    await sendThroughEachNode({ type: 'broadcast', audience: { type: 'Roles', value: ['admin'] } }, 'audience Roles admin');
    // bob@2b holds both roles: one connection.
    await sendThroughEachNode({ type: 'broadcast', audience: { type: 'Roles', value: ['admin', 'ops'] } }, 'audience Roles admin+ops');
    await sendThroughEachNode({ type: 'broadcast', audience: { type: 'Roles', value: ['nobody'] } }, 'audience Roles nobody');
  });

  test('batch: each item of each target type through each node reaches its connections once with exact figures', async () => {
    const items: { target: any; expected: Target }[] = [
      { target: { type: 'user', value: 'bob' }, expected: { type: 'user', value: 'bob' } },
      { target: { type: 'users', value: ['alice', 'fay'] }, expected: { type: 'users', value: ['alice', 'fay'] } },
      { target: { type: 'broadcast' }, expected: { type: 'broadcast' } },
      { target: { type: 'channel', value: 'alerts' }, expected: { type: 'channel', value: 'alerts' } },
      { target: { type: 'channels', value: ['orders', 'news'] }, expected: { type: 'channels', value: ['orders', 'news'] } },
    ];
    const checks: Expectation[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await nodes[i]!.api('POST', '/api/v1/notifications/batch', {
        notifications: items.map((item, index) => ({ target: item.target, event_type: 'cluster.batch', payload: { index } })),
      }, operator('acme'));
      assert.equal(response.status, 200, response.text);
      assert.deepEqual(response.json.summary, {
        total: 5,
        succeeded: 5,
        failed: 0,
        skipped: 0,
        total_delivered: items.reduce((sum, item) => sum + expectedFigures('acme', item.expected).delivered_to, 0),
      });
      for (const [index, item] of items.entries()) {
        const result = response.json.results[index];
        const expected = expectedFigures('acme', item.expected);
        assert.deepEqual(
          { index: result.index, success: result.success, delivered_to: result.delivered_to, failed: result.failed, queued: result.queued },
          { index, success: true, delivered_to: expected.delivered_to, failed: 0, queued: 0 },
          `batch item ${index} via node-${i}`,
        );
        checks.push({ id: result.notification_id, expected: recipients('acme', item.expected), label: `batch item ${index} via node-${i}` });
      }
    }
    await assertReachedOnce(...checks);
  });

  test('a send in one tenant reaches the same user and channel names in no other tenant', async () => {
    const checks: Expectation[] = [];
    for (let i = 0; i < 3; i++) {
      const sent = await send(nodes[i]!, 'globex', { type: 'channel', value: 'orders' });
      assert.deepEqual({ delivered_to: sent.json.delivered_to, nodes: sent.json.nodes }, { delivered_to: 1, nodes: 1 });
      checks.push({ id: sent.json.notification_id, expected: recipients('globex', { type: 'channel', value: 'orders' }), label: `globex orders via node-${i}` });
      const toDefault = await send(nodes[i]!, 'default', { type: 'user', value: 'alice' });
      assert.deepEqual({ delivered_to: toDefault.json.delivered_to, nodes: toDefault.json.nodes }, { delivered_to: 1, nodes: 1 });
      checks.push({ id: toDefault.json.notification_id, expected: recipients('default', { type: 'user', value: 'alice' }), label: `default alice via node-${i}` });
    }
    await assertReachedOnce(...checks);
  });
});

describe('users no node holds are queued exactly once, cluster-wide (SPEC §7, §8)', () => {
  /** Waits until no node listens for the user any more (after a close). */
  async function offline(tenant: string, user: string): Promise<void> {
    await waitFor(`${user} offline`, async () => {
      const reply = (await redis.pubsub('NUMSUB', busChannel(tenant, 'u', user))) as (string | number)[];
      return Number(reply[1]) === 0;
    });
  }

  for (let sender = 0; sender < 3; sender++) {
    test(`a send through node-${sender} to an offline user is queued once, replayed once on another node, then never again`, async () => {
      const user = `olga-${sender}`;
      const sent = await send(nodes[sender]!, 'acme', { type: 'user', value: user });
      assert.deepEqual(
        { success: sent.json.success, delivered_to: sent.json.delivered_to, failed: sent.json.failed, queued: sent.json.queued, nodes: sent.json.nodes },
        { success: true, delivered_to: 0, failed: 0, queued: 1, nodes: 0 },
      );
      const stats = await nodes[(sender + 1) % 3]!.api('GET', '/api/v1/stats', undefined, { 'x-api-key': ACME_KEY });
      assert.equal(stats.status, 200);
      assert.deepEqual(
        { total_messages: stats.json.queue.total_messages, users_with_queue: stats.json.queue.users_with_queue },
        { total_messages: 1, users_with_queue: 1 },
      );
      // Every node in turn, starting with one that did not take the send.
      const order = [(sender + 1) % 3, (sender + 2) % 3, sender];
      for (const [turn, n] of order.entries()) {
        const ws = await TestWs.open(nodes[n]!.wsUrl(`?token=${await nodes[n]!.token(user, { tenant_id: 'acme' })}`));
        const got = (await ws.quietFor(400)).filter((m) => m.type === 'notification').map((m) => m.id);
        assert.deepEqual(got, turn === 0 ? [sent.json.notification_id] : [], `connect ${turn + 1} on node-${n}`);
        await ws.close();
        await offline('acme', user);
      }
    });
  }

  test('users: online users on any node are not queued; each offline one is queued once', async () => {
    for (let i = 0; i < 3; i++) {
      const ghosts = [`ghost-${i}-a`, `ghost-${i}-b`];
      const target: Target = { type: 'users', value: ['bob', ghosts[0]!, 'erin', ghosts[1]!] };
      const sent = await send(nodes[i]!, 'acme', target);
      const expected = expectedFigures('acme', target);
      assert.deepEqual(
        { delivered_to: sent.json.delivered_to, queued: sent.json.queued, nodes: sent.json.nodes },
        { delivered_to: expected.delivered_to, queued: 2, nodes: expected.nodes },
        `via node-${i}`,
      );
      await assertReachedOnce({ id: sent.json.notification_id, expected: recipients('acme', target), label: `users via node-${i}` });
      for (const ghost of ghosts) {
        const n = (i + 2) % 3;
        const ws = await TestWs.open(nodes[n]!.wsUrl(`?token=${await nodes[n]!.token(ghost, { tenant_id: 'acme' })}`));
        const got = (await ws.quietFor(300)).filter((m) => m.type === 'notification').map((m) => m.id);
        assert.deepEqual(got, [sent.json.notification_id], `${ghost} replay on node-${n}`);
        await ws.close();
      }
    }
  });

  test('ttl 0 to an offline user is neither delivered nor queued', async () => {
    const sent = await send(nodes[2]!, 'acme', { type: 'user', value: 'nobody-ttl0' }, { ttl: 0 });
    assert.deepEqual(
      { success: sent.json.success, delivered_to: sent.json.delivered_to, queued: sent.json.queued, nodes: sent.json.nodes },
      { success: false, delivered_to: 0, queued: 0, nodes: 0 },
    );
    const ws = await TestWs.open(nodes[0]!.wsUrl(`?token=${await nodes[0]!.token('nobody-ttl0', { tenant_id: 'acme' })}`));
    assert.deepEqual((await ws.quietFor(300)).filter((m) => m.type === 'notification'), []);
    await ws.close();
  });
});

describe('cluster routes (SPEC §6.2) with tenancy (SPEC §3)', () => {
  // Connections opened and closed by the queue tests are gone from presence first.
  before(settle);
  const countOn = (node: number, tenant?: string) => conns.filter((c) => c.node === node && (tenant === undefined || c.tenant === tenant)).length;

  test('/api/v1/cluster/status on each node lists the three nodes with exact connection counts', async () => {
    const total = conns.length;
    for (let i = 0; i < 3; i++) {
      const before = Date.now();
      const status = await nodes[i]!.api('GET', '/api/v1/cluster/status');
      assert.equal(status.status, 200);
      const { nodes: listed, ...rest } = status.json;
      assert.deepEqual(rest, {
        enabled: true,
        mode: 'distributed',
        server_id: `node-${i}`,
        local_connections: countOn(i),
        cluster_connections: total,
      });
      assert.deepEqual(
        listed.map((n: any) => ({ server_id: n.server_id, connections: n.connections })),
        [0, 1, 2].map((n) => ({ server_id: `node-${n}`, connections: countOn(n) })),
      );
      for (const node of listed) {
        const seen = Date.parse(node.last_seen);
        assert.ok(seen <= before + 50 && seen > before - 3000, `last_seen ${node.last_seen} within the session TTL`);
      }
    }
  });

  test('the operator with X-Tenant-ID and a tenant key see only that tenant\'s connections', async () => {
    for (const [tenant, headers] of [
      ['acme', operator('acme')],
      ['globex', operator('globex')],
      ['globex', { 'x-api-key': GLOBEX_KEY }],
      ['acme', { 'x-api-key': ACME_KEY, 'x-tenant-id': 'acme' }],
      ['default', operator('default')],
    ] as [string, Record<string, string>][]) {
      const status = await nodes[1]!.api('GET', '/api/v1/cluster/status', undefined, headers);
      assert.equal(status.status, 200, status.text);
      assert.deepEqual(
        status.json.nodes.map((n: any) => ({ server_id: n.server_id, connections: n.connections })),
        [0, 1, 2].map((n) => ({ server_id: `node-${n}`, connections: countOn(n, tenant) })),
        `${tenant} via ${JSON.stringify(Object.keys(headers))}`,
      );
      assert.equal(status.json.local_connections, countOn(1, tenant));
      assert.equal(status.json.cluster_connections, conns.filter((c) => c.tenant === tenant).length);
    }
  });

  test('a tenant key naming another tenant is refused with 403 on both cluster routes', async () => {
    for (const path of ['/api/v1/cluster/status', '/api/v1/cluster/users/alice']) {
      const refused = await nodes[0]!.api('GET', path, undefined, { 'x-api-key': GLOBEX_KEY, 'x-tenant-id': 'acme' });
      assert.equal(refused.status, 403);
      assert.equal(refused.json.error.code, 'TENANT_ACCESS_DENIED');
    }
  });

  test('/api/v1/cluster/users/{id} finds sessions on other nodes with their channels', async () => {
    const sessionsOf = (tenant: string | null, user: string) =>
      conns
        .filter((c) => c.user === user && (tenant === null || c.tenant === tenant))
        .map((c) => ({ connection_id: c.connectionId, server_id: `node-${c.node}`, tenant_id: c.tenant, channels: [...c.channels].sort() }))
        .sort((a, b) => a.connection_id.localeCompare(b.connection_id));
    const shape = (json: any) =>
      json.sessions
        .map((s: any) => ({ connection_id: s.connection_id, server_id: s.server_id, tenant_id: s.tenant_id, channels: s.channels }))
        .sort((a: any, b: any) => a.connection_id.localeCompare(b.connection_id));
    for (let i = 0; i < 3; i++) {
      // Operator without X-Tenant-ID: every tenant.
      const all = await nodes[i]!.api('GET', '/api/v1/cluster/users/alice');
      assert.equal(all.status, 200);
      assert.equal(all.json.user_id, 'alice');
      assert.equal(all.json.found, true);
      assert.deepEqual(shape(all.json), sessionsOf(null, 'alice'));
      for (const s of all.json.sessions) assert.ok(!Number.isNaN(Date.parse(s.connected_at)), s.connected_at);
      // One tenant, by header or by its key.
      const acme = await nodes[i]!.api('GET', '/api/v1/cluster/users/alice', undefined, operator('acme'));
      assert.deepEqual(shape(acme.json), sessionsOf('acme', 'alice'));
      const globex = await nodes[i]!.api('GET', '/api/v1/cluster/users/alice', undefined, { 'x-api-key': GLOBEX_KEY });
      assert.deepEqual(shape(globex.json), sessionsOf('globex', 'alice'));
      const bob = await nodes[i]!.api('GET', '/api/v1/cluster/users/bob', undefined, { 'x-api-key': ACME_KEY });
      assert.deepEqual(shape(bob.json), sessionsOf('acme', 'bob'));
      // A user only another tenant has is not found.
      const fay = await nodes[i]!.api('GET', '/api/v1/cluster/users/fay', undefined, { 'x-api-key': GLOBEX_KEY });
      assert.deepEqual(fay.json, { user_id: 'fay', found: false, sessions: [] });
    }
  });

  test('subscription changes show up in the user route of another node', async () => {
    const erin = conns.find((c) => c.name === 'erin@1')!;
    const reply = await erin.ws.request({ type: 'Subscribe', payload: { channels: ['weather'] } }, 'subscribed');
    assert.deepEqual(reply.payload, ['weather']);
    await waitFor('erin@1 in weather', async () => {
      const found = await nodes[2]!.api('GET', '/api/v1/cluster/users/erin', undefined, operator('acme'));
      const session = found.json.sessions.find((s: any) => s.connection_id === erin.connectionId);
      return JSON.stringify(session?.channels) === JSON.stringify(['news', 'weather']);
    });
    erin.channels.push('weather');
    await settle();
    // The new channel routes from every node.
    await sendThroughEachNode({ type: 'channel', value: 'weather' }, 'channel weather');
    const unsub = await erin.ws.request({ type: 'Unsubscribe', payload: { channels: ['weather'] } }, 'unsubscribed');
    assert.deepEqual(unsub.payload, ['weather']);
    erin.channels.pop();
    await waitFor('weather unsubscribed', async () => {
      const reply = (await redis.pubsub('NUMSUB', busChannel('acme', 'c', 'weather'))) as (string | number)[];
      return Number(reply[1]) === 0;
    });
    const sent = await send(nodes[0]!, 'acme', { type: 'channel', value: 'weather' });
    assert.deepEqual({ delivered_to: sent.json.delivered_to, nodes: sent.json.nodes, success: sent.json.success }, { delivered_to: 0, nodes: 0, success: false });
    await assertReachedOnce({ id: sent.json.notification_id, expected: [], label: 'weather after unsubscribe' });
  });
});
