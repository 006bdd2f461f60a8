/**
 * Case C09: cross-tenant reads. With tenant keys for t-a and t-b, t-a's key
 * reaches nothing of t-b whatever it puts in X-Tenant-ID, in paths or in
 * names; `X-Tenant-ID: default` gives no wider view; the operator key with
 * X-Tenant-ID sees exactly that tenant (SPEC §2 "HTTP API", §3, §6.2),
 * templates included.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { startTestNode, type ApiResponse, type TestNode } from '../helpers/node.ts';

const KEY_A = 'c09-tenant-a-key-0123456789';
const KEY_B = 'c09-tenant-b-key-0123456789';
const A = { 'x-api-key': KEY_A };
const CONTENT = { event_type: 'probe', payload: { from: 't-a' } };
const DENIED = { error: { code: 'TENANT_ACCESS_DENIED', message: 'This API key cannot act for that tenant' } };
const OTHER_TENANT = { error: { code: 'TENANT_ACCESS_DENIED', message: "Cannot access another tenant's data" } };

/** Every request t-a's key can make that names a tenant's data, with a body where it needs one. */
const ROUTES: [method: string, path: string, body?: unknown][] = [
  ['POST', '/api/v1/notifications/send', { target_user_id: 'carol', ...CONTENT }],
  ['POST', '/api/v1/notifications/send-to-users', { target_user_ids: ['carol'], ...CONTENT }],
  ['POST', '/api/v1/notifications/broadcast', CONTENT],
  ['POST', '/api/v1/notifications/channel', { channel: 'orders', ...CONTENT }],
  ['POST', '/api/v1/notifications/channels', { channels: ['orders'], ...CONTENT }],
  ['POST', '/api/v1/notifications/batch', { notifications: [{ target: { type: 'user', value: 'carol' }, ...CONTENT }] }],
  ['GET', '/api/v1/channels'],
  ['GET', '/api/v1/channels/orders'],
  ['GET', '/api/v1/users/carol/subscriptions'],
  ['GET', '/stats'],
  ['GET', '/api/v1/stats'],
  ['GET', '/api/v1/tenants'],
  ['GET', '/api/v1/tenants/t-b'],
  ['GET', '/api/v1/tenants/t-a'],
  ['GET', '/api/v1/stats/acks'],
  ['GET', '/api/v1/templates'],
  ['GET', '/api/v1/templates/welcome'],
  ['PUT', '/api/v1/templates/welcome', { name: 'taken over' }],
  ['DELETE', '/api/v1/templates/welcome'],
  ['POST', '/api/v1/templates', { id: 'welcome', name: 'x', event_type: 'x', payload_template: {} }],
];

const TEMPLATE_NOT_FOUND = { error: { code: 'TEMPLATE_NOT_FOUND', message: "Template 'welcome' not found" } };

const ZERO_NOTIFICATIONS = {
  total_sent: 0,
  total_delivered: 0,
  total_failed: 0,
  total_queued: 0,
  user_notifications: 0,
  broadcast_notifications: 0,
  channel_notifications: 0,
};

function sendResult(res: ApiResponse): object {
  const { success, delivered_to, failed, queued } = res.json;
  return { status: res.status, success, delivered_to, failed, queued };
}

function notificationsIn(messages: any[]): any[] {
  return messages.filter((m) => m.type === 'notification' || m.event === 'notification');
}

describe('C09 cross-tenant reads with tenant keys (SPEC §3)', () => {
  let node: TestNode;
  let alice: TestWs;
  let carol: TestWs;
  let carolSse: TestSse;
  let dave: TestWs;

  before(async () => {
    node = await startTestNode({ TENANT_ENABLED: 'true', TENANT_API_KEYS: `t-a:${KEY_A},t-b:${KEY_B}` });
    alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice', { tenant_id: 't-a' })}`));
    const carolToken = await node.token('carol', { tenant_id: 't-b', roles: ['admin'] });
    carol = await TestWs.open(node.wsUrl(`?token=${carolToken}`));
    carol.send({ type: 'Subscribe', payload: { channels: ['orders'] } });
    await carol.nextOfType('subscribed');
    carolSse = await TestSse.open(`${node.httpUrl}/sse?token=${carolToken}&channels=orders`);
    // dave lives in tenant default (no tenant_id claim).
    dave = await TestWs.open(node.wsUrl(`?token=${await node.token('dave')}`));
    const template = await node.api('POST', '/api/v1/templates', {
      id: 'welcome',
      name: "t-b's welcome",
      event_type: 'b.welcome',
      payload_template: { secret: 'of t-b' },
    }, { 'x-api-key': KEY_B });
    assert.equal(template.status, 201);
  });
  after(async () => {
    await alice.close();
    await carol.close();
    carolSse.close();
    await dave.close();
    await node.stop();
  });

  test(`t-a's key with X-Tenant-ID: t-b is 403 TENANT_ACCESS_DENIED on all ${ROUTES.length} tenant routes`, async () => {
    for (const [method, path, body] of ROUTES) {
      const res = await node.api(method, path, body, { ...A, 'x-tenant-id': 't-b' });
      assert.equal(res.status, 403, `${method} ${path}`);
      assert.deepEqual(res.json, DENIED, `${method} ${path}`);
    }
  });

  test("t-a's key with any other X-Tenant-ID spelling is 403 too: default, T-B, T-A, *, lists, paths", async () => {
    const spellings = ['default', 'T-B', 'T-A', 't-b ', ' t-b', '*', 't-a,t-b', 't-b,t-a', '../t-b', 't-a/../t-b', 't-a:t-b'];
    for (const tenant of spellings) {
      for (const [method, path, body] of ROUTES) {
        const res = await node.api(method, path, body, { ...A, 'x-tenant-id': tenant });
        assert.deepEqual({ status: res.status, body: res.json }, { status: 403, body: DENIED }, `${JSON.stringify(tenant)} ${method} ${path}`);
      }
    }
  });

  test("t-a's key sending X-Tenant-ID twice (t-a then t-b) is refused, not read as t-a", async () => {
    const res = await fetch(`${node.httpUrl}/api/v1/channels`, {
      headers: [['x-api-key', KEY_A], ['x-tenant-id', 't-a'], ['x-tenant-id', 't-b']],
    });
    assert.equal(res.status, 403);
    assert.deepEqual(await res.json(), DENIED);
  });

  test("t-a's key cannot open t-b by path: /api/v1/tenants/t-b and its variants", async () => {
    assert.deepEqual((await node.api('GET', '/api/v1/tenants/t-b', undefined, A)).json, OTHER_TENANT);
    assert.equal((await node.api('GET', '/api/v1/tenants/t-b', undefined, A)).status, 403);
    for (const id of ['default', 'T-A', 't-a%20', 't-b%2F..%2Ft-a', '..%2Ft-b', 'unknown']) {
      const res = await node.api('GET', `/api/v1/tenants/${id}`, undefined, A);
      assert.deepEqual({ status: res.status, body: res.json }, { status: 403, body: OTHER_TENANT }, id);
    }
  });

  test("t-a's key lists no t-b channel, users or tenants (only its own)", async () => {
    assert.deepEqual((await node.api('GET', '/api/v1/channels', undefined, A)).json, { channels: [], total_channels: 0 });
    const own = await node.api('GET', '/api/v1/tenants', undefined, A);
    assert.deepEqual(own.json.tenants.map((t: any) => t.tenant_id), ['t-a']);
    assert.equal(own.json.total, 1);
    assert.deepEqual(own.json.tenants[0].stats, {
      active_connections: 1,
      unique_users: 1,
      channels: 0,
      messages_sent: node.node.stats.peekTenant('t-a')?.totalSent ?? 0,
      messages_delivered: node.node.stats.peekTenant('t-a')?.totalDelivered ?? 0,
    });
    const detail = await node.api('GET', '/api/v1/tenants/t-a', undefined, A);
    assert.deepEqual(detail.json, own.json.tenants[0]);
  });

  test("t-a's key queries of t-b's names find nothing: channel orders, user carol, prefixed and pathed names", async () => {
    assert.deepEqual((await node.api('GET', '/api/v1/channels/orders', undefined, A)).json, {
      error: { code: 'CHANNEL_NOT_FOUND', message: "Channel 'orders' not found or has no subscribers" },
    });
    for (const user of ['carol', 't-b:carol', 't-b%2Fcarol', 't-b.carol', 'carol%00']) {
      const res = await node.api('GET', `/api/v1/users/${user}/subscriptions`, undefined, A);
      assert.equal(res.status, 404, user);
      assert.equal(res.json.error.code, 'USER_NOT_CONNECTED', user);
    }
    for (const name of ['t-b:orders', '..%2Ft-b%2Forders', 'orders*']) {
      const res = await node.api('GET', `/api/v1/channels/${name}`, undefined, A);
      assert.equal(res.status, 400, name);
      assert.equal(res.json.error.code, 'VALIDATION_ERROR', name);
    }
  });

  test("t-a's key sends to carol, orders, carol's role and broadcast reach no t-b connection", async () => {
    const asA = (path: string, body: object) => node.api('POST', path, { ...CONTENT, ...body }, A);
    const none = { status: 200, success: false, delivered_to: 0, failed: 0, queued: 0 };
    assert.deepEqual(sendResult(await asA('/api/v1/notifications/send', { target_user_id: 'carol' })), none);
    assert.deepEqual(sendResult(await asA('/api/v1/notifications/send-to-users', { target_user_ids: ['carol', 't-b:carol'] })), none);
    assert.deepEqual(sendResult(await asA('/api/v1/notifications/channel', { channel: 'orders' })), none);
    assert.deepEqual(sendResult(await asA('/api/v1/notifications/channels', { channels: ['orders', 'billing'] })), none);
    for (const audience of [
      { type: 'Users', value: ['carol'] },
      { type: 'Roles', value: ['admin'] },
      { type: 'Channels', value: ['orders'] },
    ]) {
      assert.deepEqual(sendResult(await asA('/api/v1/notifications/broadcast', { audience })), none, audience.type);
    }
    const all = await asA('/api/v1/notifications/broadcast', {});
    assert.deepEqual(sendResult(all), { status: 200, success: true, delivered_to: 1, failed: 0, queued: 0 });
    assert.equal((await alice.nextOfType('notification')).id, all.json.notification_id);
    const batch = await node.api('POST', '/api/v1/notifications/batch', {
      notifications: [
        { target: { type: 'user', value: 'carol' }, ...CONTENT },
        { target: { type: 'channel', value: 'orders' }, ...CONTENT },
        { target: { type: 'users', value: ['carol'] }, ...CONTENT },
      ],
    }, A);
    assert.equal(batch.status, 200);
    assert.deepEqual(batch.json.summary, { total: 3, succeeded: 0, failed: 3, skipped: 0, total_delivered: 0 });
    assert.deepEqual(notificationsIn(await carol.quietFor(150)), []);
    assert.deepEqual(notificationsIn(carolSse.events), []);
    assert.deepEqual(notificationsIn(dave.messages), []);
  });

  test("t-a's key reads t-a's stats only: no t-b or default connection is counted", async () => {
    for (const path of ['/stats', '/api/v1/stats']) {
      const res = await node.api('GET', path, undefined, A);
      assert.equal(res.status, 200, path);
      assert.deepEqual(res.json.connections, { total_connections: 1, websocket: 1, sse: 0, unique_users: 1, channels: 0 }, path);
    }
    const health = await node.api('GET', '/health', undefined, A);
    assert.deepEqual(health.json.connections, { total: 1, unique_users: 1, channels: 0 });
  });

  test("t-a's key cannot read, change, delete or send t-b's template; its own of the same id is separate", async () => {
    const original = (await node.api('GET', '/api/v1/templates/welcome', undefined, { 'x-api-key': KEY_B })).json;
    assert.equal(original.id, 'welcome');
    assert.deepEqual((await node.api('GET', '/api/v1/templates', undefined, A)).json, { templates: [], total: 0 });
    for (const [method, body] of [['GET'], ['PUT', { name: 'taken over' }], ['DELETE']] as const) {
      const res = await node.api(method, '/api/v1/templates/welcome', body, A);
      assert.deepEqual({ status: res.status, body: res.json }, { status: 404, body: TEMPLATE_NOT_FOUND }, method);
    }
    for (const id of ['welcome', 't-b.welcome', 'default.welcome']) {
      const res = await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'alice', template_id: id, variables: {} }, A);
      assert.equal(res.status, 404, id);
      assert.equal(res.json.error.code, 'TEMPLATE_NOT_FOUND', id);
    }
    const mine = await node.api('POST', '/api/v1/templates', { id: 'welcome', name: 'mine', event_type: 'a.welcome', payload_template: {} }, A);
    assert.equal(mine.status, 201);
    assert.deepEqual((await node.api('GET', '/api/v1/templates/welcome', undefined, { 'x-api-key': KEY_B })).json, original);
    assert.equal((await node.api('DELETE', '/api/v1/templates/welcome', undefined, A)).status, 204);
    assert.deepEqual((await node.api('GET', '/api/v1/templates/welcome', undefined, { 'x-api-key': KEY_B })).json, original);
  });

  test('the operator key with X-Tenant-ID: t-b sees only t-b', async () => {
    const B = { 'x-tenant-id': 't-b' };
    assert.deepEqual((await node.api('GET', '/api/v1/channels', undefined, B)).json, {
      channels: [{ name: 'orders', subscriber_count: 2 }],
      total_channels: 1,
    });
    assert.deepEqual((await node.api('GET', '/api/v1/users/carol/subscriptions', undefined, B)).json, {
      user_id: 'carol',
      connection_count: 2,
      subscriptions: ['orders'],
    });
    assert.equal((await node.api('GET', '/api/v1/users/alice/subscriptions', undefined, B)).status, 404);
    assert.equal((await node.api('GET', '/api/v1/users/dave/subscriptions', undefined, B)).status, 404);
    const stats = await node.api('GET', '/api/v1/stats', undefined, B);
    assert.deepEqual(stats.json.connections, { total_connections: 2, websocket: 1, sse: 1, unique_users: 1, channels: 1 });
    assert.deepEqual(stats.json.notifications, ZERO_NOTIFICATIONS, "t-a's sends are not counted in t-b");
    const tenants = await node.api('GET', '/api/v1/tenants', undefined, B);
    assert.deepEqual(tenants.json, {
      enabled: true,
      tenants: [
        {
          tenant_id: 't-b',
          stats: { active_connections: 2, unique_users: 1, channels: 1, messages_sent: 0, messages_delivered: 0 },
        },
      ],
      total: 1,
    });
    assert.deepEqual((await node.api('GET', '/api/v1/templates', undefined, B)).json.templates.map((t: any) => t.id), ['welcome']);
    assert.deepEqual((await node.api('GET', '/api/v1/tenants/t-a', undefined, B)).json, OTHER_TENANT);
    assert.deepEqual((await node.api('GET', '/health', undefined, B)).json.connections, { total: 2, unique_users: 1, channels: 1 });
  });

  test('the operator key with X-Tenant-ID: default sees only tenant default, nothing of t-a or t-b', async () => {
    const D = { 'x-tenant-id': 'default' };
    assert.deepEqual((await node.api('GET', '/api/v1/channels', undefined, D)).json, { channels: [], total_channels: 0 });
    assert.equal((await node.api('GET', '/api/v1/channels/orders', undefined, D)).status, 404);
    for (const user of ['alice', 'carol']) {
      assert.equal((await node.api('GET', `/api/v1/users/${user}/subscriptions`, undefined, D)).json.error.code, 'USER_NOT_CONNECTED');
    }
    assert.equal((await node.api('GET', '/api/v1/users/dave/subscriptions', undefined, D)).json.connection_count, 1);
    const stats = await node.api('GET', '/api/v1/stats', undefined, D);
    assert.deepEqual(stats.json.connections, { total_connections: 1, websocket: 1, sse: 0, unique_users: 1, channels: 0 });
    assert.deepEqual(stats.json.notifications, ZERO_NOTIFICATIONS);
    assert.deepEqual((await node.api('GET', '/api/v1/templates', undefined, D)).json, { templates: [], total: 0 });
    const tenants = await node.api('GET', '/api/v1/tenants', undefined, D);
    assert.deepEqual(tenants.json.tenants.map((t: any) => t.tenant_id), ['default']);
    const send = await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'carol', ...CONTENT }, D);
    assert.deepEqual(sendResult(send), { status: 200, success: false, delivered_to: 0, failed: 0, queued: 0 });
    assert.deepEqual(notificationsIn(await carol.quietFor(100)), []);
  });

  test('the operator key without X-Tenant-ID sees every tenant on /api/v1/tenants, and must name one elsewhere', async () => {
    const all = await node.api('GET', '/api/v1/tenants');
    assert.equal(all.status, 200);
    assert.deepEqual(all.json.tenants.map((t: any) => t.tenant_id), ['default', 't-a', 't-b']);
    assert.equal(all.json.total, 3);
    const byId = Object.fromEntries(all.json.tenants.map((t: any) => [t.tenant_id, t.stats.active_connections]));
    assert.deepEqual(byId, { default: 1, 't-a': 1, 't-b': 2 });
    const stats = await node.api('GET', '/api/v1/stats');
    assert.equal(stats.json.connections.total_connections, 4);
    const channels = await node.api('GET', '/api/v1/channels');
    assert.deepEqual(channels.json, {
      error: { code: 'INVALID_TENANT', message: 'X-Tenant-ID is required with the operator key' },
    });
  });
});
