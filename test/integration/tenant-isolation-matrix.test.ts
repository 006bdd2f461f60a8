/**
 * The tenant isolation matrix (SPEC §3 "Isolation is total and structural").
 *
 * Tenant t-b has carol connected (WebSocket and SSE), subscribed to
 * `orders`. A caller of tenant t-a — (i) t-a's tenant key, (ii) the
 * operator key with X-Tenant-ID: t-a, (iii) a JWT of t-a on WS/SSE — tries
 * every HTTP route and every client message against t-b's users, channels,
 * stats, templates, queues, acks and limits. Each cell states the exact
 * outcome. After every cell a probe checks the invariant that carries the
 * whole matrix: no t-b connection ever received a notification sent by
 * t-a, and no t-a connection ever received one sent by t-b.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { sleep, startTestNode, type ApiResponse, type TestNode } from '../helpers/node.ts';

const KEY_A = 'matrix-tenant-a-key-0123456789';
const KEY_B = 'matrix-tenant-b-key-0123456789';
const TENANT_CAP = 8;
const USER_CAP = 3;

const ENV = {
  TENANT_ENABLED: 'true',
  TENANT_API_KEYS: `t-a:${KEY_A},t-b:${KEY_B}`,
  TENANT_DEFAULT_MAX_CONNECTIONS: String(TENANT_CAP),
  TENANT_DEFAULT_MAX_CONNECTIONS_PER_USER: String(USER_CAP),
  // t-b's own, tighter subscription cap must not bind t-a (SPEC §1 TENANT_<ID>_…).
  TENANT_T_B_MAX_SUBSCRIPTIONS_PER_CONNECTION: '1',
};

const CONTENT = { event_type: 'from.t-a', payload: { tenant: 't-a' } };
const NOTHING = { status: 200, success: false, delivered_to: 0, failed: 0, queued: 0 };
const DENIED = { error: { code: 'TENANT_ACCESS_DENIED', message: 'This API key cannot act for that tenant' } };
const OTHER_TENANT = { error: { code: 'TENANT_ACCESS_DENIED', message: "Cannot access another tenant's data" } };
const NOT_CONNECTED = (user: string) => ({
  error: { code: 'USER_NOT_CONNECTED', message: `User '${user}' has no active connections` },
});
const CHANNEL_NOT_FOUND = { error: { code: 'CHANNEL_NOT_FOUND', message: "Channel 'orders' not found or has no subscribers" } };
const TEMPLATE_NOT_FOUND = { error: { code: 'TEMPLATE_NOT_FOUND', message: "Template 'welcome' not found" } };

interface Caller {
  label: string;
  headers: Record<string, string>;
}

const TENANT_KEY: Caller = { label: "(i) t-a's tenant key", headers: { 'x-api-key': KEY_A } };
const OPERATOR_AS_A: Caller = { label: '(ii) operator key + X-Tenant-ID: t-a', headers: { 'x-tenant-id': 't-a' } };
const HTTP_CALLERS = [TENANT_KEY, OPERATOR_AS_A];
const JWT = '(iii) JWT of t-a';

type Client = TestWs | TestSse;

function notificationIds(client: Client): string[] {
  if (client instanceof TestWs) return client.messages.filter((m) => m.type === 'notification').map((m) => m.id);
  return client.events.filter((e) => e.event === 'notification').map((e) => e.id!);
}

/** Everything a cell can reach: the node, the standing connections, and who sent what. */
class World {
  node!: TestNode;
  alice!: TestWs;
  carol!: TestWs;
  carolSse!: TestSse;
  /** Notification ids sent in t-a / in t-b. */
  readonly sentByA = new Set<string>();
  readonly sentByB = new Set<string>();
  /** Every connection ever opened, by tenant, for the invariant. */
  readonly clientsOf = { 't-a': [] as Client[], 't-b': [] as Client[] };

  async start(env: Record<string, string>): Promise<void> {
    this.node = await startTestNode(env);
    this.carol = await this.ws('carol', 't-b');
    assert.deepEqual(await replies(this.carol, { type: 'Subscribe', payload: { channels: ['orders'] } }), [
      { type: 'subscribed', payload: ['orders'] },
    ]);
    this.carolSse = await this.sse('carol', 't-b', '&channels=orders');
    this.alice = await this.ws('alice', 't-a');
  }

  token(sub: string, tenant: string, claims: Record<string, unknown> = {}): Promise<string> {
    return this.node.token(sub, { tenant_id: tenant, ...claims });
  }

  async ws(sub: string, tenant: 't-a' | 't-b', query = ''): Promise<TestWs> {
    const client = await TestWs.open(this.node.wsUrl(`?token=${await this.token(sub, tenant)}${query}`));
    this.clientsOf[tenant].push(client);
    return client;
  }

  async sse(sub: string, tenant: 't-a' | 't-b', query = '', headers: Record<string, string> = {}): Promise<TestSse> {
    const url = `${this.node.httpUrl}/sse?token=${await this.token(sub, tenant)}${query}`;
    const client = await TestSse.open(url, headers);
    this.clientsOf[tenant].push(client);
    return client;
  }

  /** An API call as a t-a caller; ids of what it sent are recorded as t-a's. */
  async as(caller: Caller, method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<ApiResponse> {
    const res = await this.node.api(method, path, body, { ...caller.headers, ...extra });
    this.#record(res, this.sentByA);
    return res;
  }

  /** An API call acting for t-b (its own key); ids recorded as t-b's. */
  async asB(method: string, path: string, body?: unknown): Promise<ApiResponse> {
    const res = await this.node.api(method, path, body, { 'x-api-key': KEY_B });
    this.#record(res, this.sentByB);
    return res;
  }

  #record(res: ApiResponse, into: Set<string>): void {
    if (res.status !== 200 || typeof res.json !== 'object' || res.json === null) return;
    if (typeof res.json.notification_id === 'string') into.add(res.json.notification_id);
    for (const item of res.json.results ?? []) into.add(item.notification_id);
  }

  connections(tenant: string): number {
    return this.node.node.hub.space(tenant)?.connections.size ?? 0;
  }

  async settle(tenant: string, count: number): Promise<void> {
    const deadline = Date.now() + 3000;
    while (this.connections(tenant) !== count) {
      if (Date.now() > deadline) throw new Error(`${tenant} has ${this.connections(tenant)} connections, expected ${count}`);
      await sleep(10);
    }
  }

  /**
   * The matrix invariant. Probes carol and alice with one message each from
   * their own tenants and waits for them (delivery on a connection is in
   * order, so everything sent before has arrived), then checks that every
   * notification any t-b connection got came from t-b, and likewise for t-a.
   */
  async assertNoCrossing(): Promise<void> {
    const toCarol = await this.asB('POST', '/api/v1/notifications/send', { target_user_id: 'carol', event_type: 'probe', payload: {} });
    const toAlice = await this.as(TENANT_KEY, 'POST', '/api/v1/notifications/send', { target_user_id: 'alice', event_type: 'probe', payload: {} });
    await this.carol.next((m) => m.id === toCarol.json.notification_id);
    await this.carolSse.next((e) => e.id === toCarol.json.notification_id);
    await this.alice.next((m) => m.id === toAlice.json.notification_id);
    for (const [tenant, own] of [['t-b', this.sentByB], ['t-a', this.sentByA]] as const) {
      for (const client of this.clientsOf[tenant]) {
        const foreign = notificationIds(client).filter((id) => !own.has(id));
        assert.deepEqual(foreign, [], `a ${tenant} connection received notifications not sent in ${tenant}`);
      }
    }
  }
}

/**
 * Sends a message and a Ping; returns the replies that arrive before the
 * pong, leaving out heartbeats and notifications (the invariant covers
 * those). Only for messages the server answers synchronously.
 */
async function replies(ws: TestWs, message: unknown): Promise<any[]> {
  ws.send(message);
  ws.send({ type: 'Ping' });
  const out: any[] = [];
  for (;;) {
    const reply = await ws.next();
    if (reply.type === 'pong') return out;
    if (reply.type !== 'heartbeat' && reply.type !== 'notification') out.push(reply);
  }
}

/** For messages answered after an await (Refresh, Ack with a store): the first reply of the given types. */
async function reply(ws: TestWs, message: unknown, types: string[]): Promise<any> {
  ws.send(message);
  return ws.next((m) => types.includes(m.type), 3000);
}

function sendOutcome(res: ApiResponse): object {
  if (res.status !== 200) return { status: res.status, body: res.json };
  const { success, delivered_to, failed, queued } = res.json;
  return { status: res.status, success, delivered_to, failed, queued };
}

async function refusal(attempt: Promise<unknown>): Promise<HandshakeRefusal> {
  try {
    const client = await attempt;
    if (client instanceof TestSse) client.close();
    if (client instanceof TestWs) await client.close();
  } catch (error) {
    return error as HandshakeRefusal;
  }
  throw new Error('expected the connection to be refused');
}

interface Cell {
  name: string;
  run(world: World): Promise<void>;
}

/** Every tenant-scoped HTTP route that exists (src/http/routes, src/node.ts), with a body aimed at t-b's names. */
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
  ['GET', '/api/v1/stats/acks'],
  ['GET', '/api/v1/tenants'],
  ['GET', '/api/v1/tenants/t-b'],
  ['GET', '/api/v1/templates'],
  ['GET', '/api/v1/templates/welcome'],
  ['PUT', '/api/v1/templates/welcome', { name: 'taken over' }],
  ['DELETE', '/api/v1/templates/welcome'],
  ['POST', '/api/v1/templates', { id: 'welcome', name: 'x', event_type: 'x', payload_template: {} }],
];

/** A t-b action and proof that t-a's view of something did not move. */
async function unchangedByB(world: World, read: () => Promise<unknown>): Promise<void> {
  const before = await read();
  const sent = await world.asB('POST', '/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.activity', payload: {} });
  assert.equal(sent.json.delivered_to, 2, "t-b's own send reaches carol's two connections");
  assert.deepEqual(await read(), before);
}

function httpCells(caller: Caller): Cell[] {
  const c = caller.label;
  const send = (path: string, body: object) => (w: World) => w.as(caller, 'POST', path, { ...CONTENT, ...body });
  return [
    {
      name: `${c} · POST send to user carol → delivered_to 0, carol gets nothing`,
      run: async (w) => assert.deepEqual(sendOutcome(await send('/api/v1/notifications/send', { target_user_id: 'carol' })(w)), NOTHING),
    },
    {
      name: `${c} · POST send-to-users [carol, t-b:carol] → delivered_to 0`,
      run: async (w) => assert.deepEqual(
        sendOutcome(await send('/api/v1/notifications/send-to-users', { target_user_ids: ['carol', 't-b:carol'] })(w)),
        NOTHING,
      ),
    },
    {
      name: `${c} · POST broadcast → reaches t-a's one connection (alice) and no t-b connection`,
      run: async (w) => {
        const res = await send('/api/v1/notifications/broadcast', {})(w);
        assert.deepEqual(sendOutcome(res), { status: 200, success: true, delivered_to: 1, failed: 0, queued: 0 });
        await w.alice.next((m) => m.id === res.json.notification_id);
      },
    },
    {
      name: `${c} · POST broadcast audience Users [carol] → delivered_to 0`,
      run: async (w) => assert.deepEqual(
        sendOutcome(await send('/api/v1/notifications/broadcast', { audience: { type: 'Users', value: ['carol'] } })(w)),
        NOTHING,
      ),
    },
    {
      name: `${c} · POST broadcast audience Roles [carol's role] → delivered_to 0`,
      run: async (w) => assert.deepEqual(
        sendOutcome(await send('/api/v1/notifications/broadcast', { audience: { type: 'Roles', value: ['b-admin'] } })(w)),
        NOTHING,
      ),
    },
    {
      name: `${c} · POST broadcast audience Channels [orders] → delivered_to 0`,
      run: async (w) => assert.deepEqual(
        sendOutcome(await send('/api/v1/notifications/broadcast', { audience: { type: 'Channels', value: ['orders'] } })(w)),
        NOTHING,
      ),
    },
    {
      name: `${c} · POST channel orders → delivered_to 0`,
      run: async (w) => assert.deepEqual(sendOutcome(await send('/api/v1/notifications/channel', { channel: 'orders' })(w)), NOTHING),
    },
    {
      name: `${c} · POST channels [orders, orders.b] → delivered_to 0`,
      run: async (w) => assert.deepEqual(
        sendOutcome(await send('/api/v1/notifications/channels', { channels: ['orders', 'orders.b'] })(w)),
        NOTHING,
      ),
    },
    {
      name: `${c} · POST batch of user/users/broadcast/channel/channels aimed at t-b → only the broadcast reaches alice`,
      run: async (w) => {
        const res = await w.as(caller, 'POST', '/api/v1/notifications/batch', {
          notifications: [
            { target: { type: 'user', value: 'carol' }, ...CONTENT },
            { target: { type: 'users', value: ['carol'] }, ...CONTENT },
            { target: { type: 'broadcast' }, ...CONTENT },
            { target: { type: 'channel', value: 'orders' }, ...CONTENT },
            { target: { type: 'channels', value: ['orders'] }, ...CONTENT },
          ],
        });
        assert.equal(res.status, 200);
        assert.deepEqual(res.json.results.map((r: any) => r.delivered_to), [0, 0, 1, 0, 0]);
        assert.deepEqual(res.json.summary, { total: 5, succeeded: 1, failed: 4, skipped: 0, total_delivered: 1 });
      },
    },
    {
      name: `${c} · GET /api/v1/channels → lists no t-b channel`,
      run: async (w) => assert.deepEqual((await w.as(caller, 'GET', '/api/v1/channels')).json, { channels: [], total_channels: 0 }),
    },
    {
      name: `${c} · GET /api/v1/channels/orders → 404 CHANNEL_NOT_FOUND`,
      run: async (w) => {
        const res = await w.as(caller, 'GET', '/api/v1/channels/orders');
        assert.deepEqual({ status: res.status, body: res.json }, { status: 404, body: CHANNEL_NOT_FOUND });
      },
    },
    {
      name: `${c} · GET /api/v1/users/carol/subscriptions → 404 USER_NOT_CONNECTED`,
      run: async (w) => {
        const res = await w.as(caller, 'GET', '/api/v1/users/carol/subscriptions');
        assert.deepEqual({ status: res.status, body: res.json }, { status: 404, body: NOT_CONNECTED('carol') });
      },
    },
    {
      name: `${c} · GET /api/v1/users/{t-b:carol, t-b/carol}/subscriptions → 404 USER_NOT_CONNECTED`,
      run: async (w) => {
        for (const [path, user] of [['t-b:carol', 't-b:carol'], ['t-b%2Fcarol', 't-b/carol']]) {
          const res = await w.as(caller, 'GET', `/api/v1/users/${path}/subscriptions`);
          assert.deepEqual({ status: res.status, body: res.json }, { status: 404, body: NOT_CONNECTED(user!) });
        }
      },
    },
    ...['/stats', '/api/v1/stats'].map((path) => ({
      name: `${c} · GET ${path} → counts t-a's one connection only; t-b's sends move nothing`,
      run: async (w: World) => {
        const res = await w.as(caller, 'GET', path);
        assert.deepEqual(res.json.connections, { total_connections: 1, websocket: 1, sse: 0, unique_users: 1, channels: 0 });
        await unchangedByB(w, async () => (await w.as(caller, 'GET', path)).json.notifications);
      },
    })),
    {
      name: `${c} · GET /api/v1/stats/acks → t-b's activity moves nothing`,
      run: async (w) => {
        assert.equal((await w.as(caller, 'GET', '/api/v1/stats/acks')).status, 200);
        await unchangedByB(w, async () => (await w.as(caller, 'GET', '/api/v1/stats/acks')).json);
      },
    },
    {
      name: `${c} · GET /api/v1/tenants → exactly [t-a], with t-a's figures`,
      run: async (w) => {
        const res = await w.as(caller, 'GET', '/api/v1/tenants');
        const stats = (await w.as(caller, 'GET', '/api/v1/stats')).json.notifications;
        assert.deepEqual(res.json, {
          enabled: true,
          tenants: [{
            tenant_id: 't-a',
            stats: {
              active_connections: 1,
              unique_users: 1,
              channels: 0,
              messages_sent: stats.total_sent,
              messages_delivered: stats.total_delivered,
            },
          }],
          total: 1,
        });
        await unchangedByB(w, async () => (await w.as(caller, 'GET', '/api/v1/tenants')).json);
      },
    },
    {
      name: `${c} · GET /api/v1/tenants/t-b → 403 TENANT_ACCESS_DENIED`,
      run: async (w) => {
        const res = await w.as(caller, 'GET', '/api/v1/tenants/t-b');
        assert.deepEqual({ status: res.status, body: res.json }, { status: 403, body: OTHER_TENANT });
      },
    },
    {
      name: `${c} · GET /health with the key → counts t-a's one connection only`,
      run: async (w) => {
        const res = await w.as(caller, 'GET', '/health');
        assert.equal(res.status, 200);
        assert.deepEqual(res.json.connections, { total: 1, unique_users: 1, channels: 0 });
      },
    },
    {
      name: `${c} · GET /api/v1/templates → t-b's template is not listed`,
      run: async (w) => assert.deepEqual((await w.as(caller, 'GET', '/api/v1/templates')).json, { templates: [], total: 0 }),
    },
    {
      name: `${c} · GET, PUT, DELETE /api/v1/templates/welcome (t-b's id) → 404; t-b's template unchanged`,
      run: async (w) => {
        const original = (await w.asB('GET', '/api/v1/templates/welcome')).json;
        for (const [method, body] of [['GET'], ['PUT', { name: 'taken over' }], ['DELETE']] as const) {
          const res = await w.as(caller, method, '/api/v1/templates/welcome', body);
          assert.deepEqual({ status: res.status, body: res.json }, { status: 404, body: TEMPLATE_NOT_FOUND }, method);
        }
        assert.deepEqual((await w.asB('GET', '/api/v1/templates/welcome')).json, original);
      },
    },
    {
      name: `${c} · POST send with template_id of t-b's template → 404 TEMPLATE_NOT_FOUND`,
      run: async (w) => {
        const res = await w.as(caller, 'POST', '/api/v1/notifications/send', { target_user_id: 'alice', template_id: 'welcome', variables: {} });
        assert.deepEqual({ status: res.status, body: res.json }, { status: 404, body: TEMPLATE_NOT_FOUND });
      },
    },
    {
      name: `${c} · POST /api/v1/templates with t-b's id → 201 in t-a only; t-b's template unchanged`,
      run: async (w) => {
        const original = (await w.asB('GET', '/api/v1/templates/welcome')).json;
        const created = await w.as(caller, 'POST', '/api/v1/templates', { id: 'welcome', name: 'mine', event_type: 'a.welcome', payload_template: { a: 1 } });
        assert.equal(created.status, 201);
        assert.equal(created.json.name, 'mine');
        assert.deepEqual((await w.asB('GET', '/api/v1/templates/welcome')).json, original);
        assert.equal((await w.as(caller, 'DELETE', '/api/v1/templates/welcome')).status, 204);
        assert.deepEqual((await w.asB('GET', '/api/v1/templates/welcome')).json, original);
      },
    },
  ];
}

/** t-a's key naming t-b (or default) in X-Tenant-ID: refused on every route. /health ignores the header. */
function tenantHeaderCells(): Cell[] {
  const cells: Cell[] = ROUTES.map(([method, path, body]) => ({
    name: `${TENANT_KEY.label} + X-Tenant-ID: t-b · ${method} ${path} → 403 TENANT_ACCESS_DENIED`,
    run: async (w: World) => {
      const res = await w.as(TENANT_KEY, method, path, body, { 'x-tenant-id': 't-b' });
      assert.deepEqual({ status: res.status, body: res.json }, { status: 403, body: DENIED });
    },
  }));
  cells.push({
    name: `${TENANT_KEY.label} + X-Tenant-ID: default · every route → 403 TENANT_ACCESS_DENIED`,
    run: async (w) => {
      for (const [method, path, body] of ROUTES) {
        const res = await w.as(TENANT_KEY, method, path, body, { 'x-tenant-id': 'default' });
        assert.deepEqual({ status: res.status, body: res.json }, { status: 403, body: DENIED }, `${method} ${path}`);
      }
    },
  });
  cells.push({
    name: `${TENANT_KEY.label} + X-Tenant-ID: t-b · GET /health → the header is ignored, t-a's counts only`,
    run: async (w) => {
      const res = await w.as(TENANT_KEY, 'GET', '/health', undefined, { 'x-tenant-id': 't-b' });
      assert.deepEqual(res.json.connections, { total: 1, unique_users: 1, channels: 0 });
    },
  });
  return cells;
}

const REALTIME_CELLS: Cell[] = [
  {
    name: `${JWT} · WS Subscribe orders → subscribes t-a's orders; t-b's send to orders reaches carol only`,
    run: async (w) => {
      assert.deepEqual(await replies(w.alice, { type: 'Subscribe', payload: { channels: ['orders'] } }), [
        { type: 'subscribed', payload: ['orders'] },
      ]);
      const fromB = await w.asB('POST', '/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.orders', payload: {} });
      assert.equal(fromB.json.delivered_to, 2);
      assert.deepEqual((await w.as(OPERATOR_AS_A, 'GET', '/api/v1/channels')).json, {
        channels: [{ name: 'orders', subscriber_count: 1 }],
        total_channels: 1,
      });
      assert.deepEqual((await w.asB('GET', '/api/v1/channels/orders')).json, { name: 'orders', subscriber_count: 2 });
    },
  },
  {
    name: `${JWT} · t-a's send to orders while alice is subscribed → alice only (delivered_to 1)`,
    run: async (w) => {
      const res = await w.as(TENANT_KEY, 'POST', '/api/v1/notifications/channel', { channel: 'orders', ...CONTENT });
      assert.equal(res.json.delivered_to, 1);
      await w.alice.next((m) => m.id === res.json.notification_id);
    },
  },
  {
    name: `${JWT} · WS Unsubscribe orders → only alice's subscription ends; carol's two stay`,
    run: async (w) => {
      assert.deepEqual(await replies(w.alice, { type: 'Unsubscribe', payload: { channels: ['orders'] } }), [
        { type: 'unsubscribed', payload: ['orders'] },
      ]);
      assert.deepEqual((await w.asB('GET', '/api/v1/channels/orders')).json, { name: 'orders', subscriber_count: 2 });
      assert.deepEqual((await w.as(TENANT_KEY, 'GET', '/api/v1/channels')).json, { channels: [], total_channels: 0 });
    },
  },
  {
    name: `${JWT} · WS Unsubscribe from a channel only t-b has → carol stays subscribed and keeps receiving`,
    run: async (w) => {
      assert.deepEqual(await replies(w.alice, { type: 'Unsubscribe', payload: { channels: ['orders', 't-b:orders'] } }), [
        { type: 'unsubscribed', payload: ['orders', 't-b:orders'] },
      ]);
      const fromB = await w.asB('POST', '/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.orders', payload: {} });
      assert.equal(fromB.json.delivered_to, 2);
      await w.carol.next((m) => m.id === fromB.json.notification_id);
    },
  },
  {
    name: `${JWT} · WS Subscribe t-b:orders → SUBSCRIPTION_ERROR, no subscription`,
    run: async (w) => {
      assert.deepEqual(await replies(w.alice, { type: 'Subscribe', payload: { channels: ['t-b:orders'] } }), [
        { type: 'error', code: 'SUBSCRIPTION_ERROR', message: 'Invalid channel name: "t-b:orders"' },
      ]);
    },
  },
  {
    name: `${JWT} · WS Ack of a notification delivered to carol in t-b → no effect (ACK disabled: no reply)`,
    run: async (w) => {
      const fromB = await w.asB('POST', '/api/v1/notifications/send', { target_user_id: 'carol', event_type: 'b.ack', payload: {} });
      assert.equal(fromB.json.delivered_to, 2);
      assert.deepEqual(await replies(w.alice, { type: 'Ack', payload: { notification_id: fromB.json.notification_id } }), []);
    },
  },
  {
    name: `${JWT} · WS Refresh with a t-b token for alice → INVALID_TOKEN; the connection stays in t-a`,
    run: async (w) => {
      const token = await w.token('alice', 't-b');
      assert.deepEqual(await reply(w.alice, { type: 'Refresh', payload: { token } }, ['error', 'refreshed']), {
        type: 'error',
        code: 'INVALID_TOKEN',
        message: 'Token belongs to another user or tenant',
      });
      const toBAlice = await w.asB('POST', '/api/v1/notifications/send', { target_user_id: 'alice', event_type: 'b.alice', payload: {} });
      assert.equal(toBAlice.json.delivered_to, 0, 'alice did not become a t-b user');
      const toAAlice = await w.as(TENANT_KEY, 'POST', '/api/v1/notifications/send', { target_user_id: 'alice', ...CONTENT });
      assert.equal(toAAlice.json.delivered_to, 1);
    },
  },
  {
    name: `${JWT} · WS Refresh with carol's t-b token → INVALID_TOKEN`,
    run: async (w) => {
      const token = await w.token('carol', 't-b');
      assert.deepEqual(await reply(w.alice, { type: 'Refresh', payload: { token } }, ['error', 'refreshed']), {
        type: 'error',
        code: 'INVALID_TOKEN',
        message: 'Token belongs to another user or tenant',
      });
    },
  },
  {
    name: `${JWT} · WS Refresh with alice's own t-a token → refreshed (control)`,
    run: async (w) => {
      const answer = await reply(w.alice, { type: 'Refresh', payload: { token: await w.token('alice', 't-a') } }, ['error', 'refreshed']);
      assert.equal(answer.type, 'refreshed');
    },
  },
  {
    name: `${JWT} · WS Resume since a t-b notification, channels [orders] → nothing of t-b (queue off: INVALID_MESSAGE)`,
    run: async (w) => {
      const fromB = await w.asB('POST', '/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.resume', payload: {} });
      const resumer = await w.ws('alice', 't-a');
      assert.deepEqual(await replies(resumer, { type: 'Resume', payload: { since: fromB.json.notification_id, channels: ['orders'] } }), [
        { type: 'error', code: 'INVALID_MESSAGE', message: 'Resume is not available: QUEUE_ENABLED is off on this server' },
      ]);
      await resumer.close();
      await w.settle('t-a', 1);
    },
  },
  {
    name: `${JWT} · WS handshake with ?tenant_id=t-b and X-Tenant-ID: t-b → still tenant t-a`,
    run: async (w) => {
      const token = await w.token('alice', 't-a');
      const ws = await TestWs.open(w.node.wsUrl(`?token=${token}&tenant_id=t-b`), { headers: { 'x-tenant-id': 't-b' } });
      w.clientsOf['t-a'].push(ws);
      assert.equal(ws.messages[0].tenant_id, 't-a');
      await ws.close();
      await w.settle('t-a', 1);
    },
  },
  {
    name: `${JWT} · SSE ?channels=orders → t-a's orders only; t-b's send reaches carol's two connections, not this one`,
    run: async (w) => {
      const sse = await w.sse('alice', 't-a', '&channels=orders&tenant_id=t-b', { 'x-tenant-id': 't-b' });
      assert.equal(sse.events[0]!.data.tenant_id, 't-a');
      const fromB = await w.asB('POST', '/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.orders', payload: {} });
      assert.equal(fromB.json.delivered_to, 2);
      const fromA = await w.as(TENANT_KEY, 'POST', '/api/v1/notifications/channel', { channel: 'orders', ...CONTENT });
      assert.equal(fromA.json.delivered_to, 1);
      assert.equal((await sse.nextEvent('notification')).id, fromA.json.notification_id);
      sse.close();
      await w.settle('t-a', 1);
    },
  },
  {
    name: `${JWT} · SSE with Last-Event-ID of a t-b notification → connected, and nothing of t-b`,
    run: async (w) => {
      const fromB = await w.asB('POST', '/api/v1/notifications/send', { target_user_id: 'carol', event_type: 'b.last', payload: {} });
      const sse = await w.sse('alice', 't-a', `&last_event_id=${fromB.json.notification_id}`, { 'last-event-id': fromB.json.notification_id });
      assert.deepEqual((await sse.quietFor(100)).filter((e) => e.event !== 'heartbeat'), []);
      sse.close();
      await w.settle('t-a', 1);
    },
  },
  {
    name: `${JWT} · HTTP API with alice's JWT instead of an API key → 401`,
    run: async (w) => {
      const token = await w.token('alice', 't-a');
      const bearer = await w.node.api('GET', '/api/v1/channels', undefined, { 'x-api-key': '', authorization: `Bearer ${token}` });
      assert.deepEqual({ status: bearer.status, body: bearer.json }, {
        status: 401,
        body: { error: { code: 'UNAUTHORIZED', message: 'Missing API key' } },
      });
      const asKey = await w.node.api('GET', '/api/v1/channels', undefined, { 'x-api-key': token });
      assert.deepEqual({ status: asKey.status, body: asKey.json }, {
        status: 401,
        body: { error: { code: 'UNAUTHORIZED', message: 'Invalid API key' } },
      });
    },
  },
];

const LIMIT_CELLS: Cell[] = [
  {
    name: `${JWT} · t-b's subscription cap (1) does not bind t-a: alice subscribes 3, carol is refused a 2nd`,
    run: async (w) => {
      assert.deepEqual(await replies(w.alice, { type: 'Subscribe', payload: { channels: ['x1', 'x2', 'x3'] } }), [
        { type: 'subscribed', payload: ['x1', 'x2', 'x3'] },
      ]);
      assert.deepEqual(await replies(w.carol, { type: 'Subscribe', payload: { channels: ['extra'] } }), [
        { type: 'error', code: 'SUBSCRIPTION_ERROR', message: 'Subscription limit reached (1/1): "extra"' },
      ]);
      assert.deepEqual(await replies(w.alice, { type: 'Unsubscribe', payload: { channels: ['x1', 'x2', 'x3'] } }), [
        { type: 'unsubscribed', payload: ['x1', 'x2', 'x3'] },
      ]);
    },
  },
  {
    name: `${JWT} · a t-a user named carol filling the per-user cap (${USER_CAP}) does not stop t-b's carol`,
    run: async (w) => {
      const opened: TestWs[] = [];
      for (let i = 0; i < USER_CAP; i++) opened.push(await w.ws('carol', 't-a'));
      const over = await TestWs.connect(w.node.wsUrl(`?token=${await w.token('carol', 't-a')}`));
      assert.deepEqual(await over.nextOfType('error'), {
        type: 'error',
        code: 'CONNECTION_LIMIT',
        message: `User connection limit reached (${USER_CAP}/${USER_CAP})`,
      });
      assert.equal((await over.closed).code, 1008);
      const carolAgain = await w.ws('carol', 't-b');
      assert.equal(carolAgain.messages[0].tenant_id, 't-b');
      assert.deepEqual((await w.asB('GET', '/api/v1/users/carol/subscriptions')).json.connection_count, 3);
      for (const ws of [...opened, carolAgain]) await ws.close();
      await w.settle('t-a', 1);
      await w.settle('t-b', 2);
    },
  },
  {
    name: `${JWT} · t-a filling TENANT_DEFAULT_MAX_CONNECTIONS (${TENANT_CAP}) does not stop carol connecting in t-b`,
    run: async (w) => {
      const opened: TestWs[] = [];
      for (let i = 1; i < TENANT_CAP; i++) opened.push(await w.ws(`user-${i}`, 't-a'));
      assert.equal(w.connections('t-a'), TENANT_CAP);
      const over = await TestWs.connect(w.node.wsUrl(`?token=${await w.token('user-x', 't-a')}`));
      const capMessage = `Tenant connection limit reached (${TENANT_CAP}/${TENANT_CAP})`;
      assert.deepEqual(await over.nextOfType('error'), { type: 'error', code: 'CONNECTION_LIMIT', message: capMessage });
      assert.equal((await over.closed).code, 1008);
      const sseOver = await refusal(TestSse.open(`${w.node.httpUrl}/sse?token=${await w.token('user-y', 't-a')}`));
      assert.deepEqual({ status: sseOver.status, body: sseOver.json }, {
        status: 429,
        body: { error: { code: 'CONNECTION_LIMIT', message: capMessage } },
      });
      const carolWs = await w.ws('carol', 't-b');
      const cleoSse = await w.sse('cleo', 't-b');
      assert.equal(carolWs.messages[0].tenant_id, 't-b');
      assert.equal(w.connections('t-b'), 4);
      const statsA = await w.as(TENANT_KEY, 'GET', '/api/v1/stats');
      assert.equal(statsA.json.connections.total_connections, TENANT_CAP);
      const statsB = await w.asB('GET', '/api/v1/stats');
      assert.equal(statsB.json.connections.total_connections, 4);
      for (const ws of opened) await ws.close();
      await carolWs.close();
      cleoSse.close();
      await w.settle('t-a', 1);
      await w.settle('t-b', 2);
    },
  },
];

const LIVE_CELLS: Cell[] = [
  ...HTTP_CALLERS.flatMap(httpCells),
  ...tenantHeaderCells(),
  ...REALTIME_CELLS,
  ...LIMIT_CELLS,
];

/**
 * With the queue, history and acks on: what t-a queues for a user named
 * carol is t-a's; acks and resumes from t-a cannot touch t-b's records.
 */
const DURABLE_CELLS: Cell[] = [
  ...HTTP_CALLERS.map((caller): Cell => ({
    name: `${caller.label} · POST send to carol (offline in t-a) → queued in t-a only; t-b's carol never gets it`,
    run: async (w) => {
      const res = await w.as(caller, 'POST', '/api/v1/notifications/send', { target_user_id: 'carol', ...CONTENT });
      assert.deepEqual(sendOutcome(res), { status: 200, success: true, delivered_to: 0, failed: 0, queued: 1 });
      const statsB = await w.asB('GET', '/api/v1/stats');
      const fresh = await w.ws('carol', 't-b');
      assert.deepEqual((await fresh.quietFor(150)).filter((m) => m.type === 'notification'), []);
      await fresh.close();
      await w.settle('t-b', 2);
      assert.equal(statsB.json.queue.total_messages, 0);
    },
  })),
  ...HTTP_CALLERS.map((caller): Cell => ({
    name: `${caller.label} · GET /api/v1/stats/acks → t-a's records only; carol's pending ack is not counted`,
    run: async (w) => {
      await unchangedByB(w, async () => (await w.as(caller, 'GET', '/api/v1/stats/acks')).json);
      const fromB = await w.asB('POST', '/api/v1/notifications/send', { target_user_id: 'carol', event_type: 'b.pending', payload: {} });
      assert.equal(fromB.json.delivered_to, 2);
      const b = (await w.asB('GET', '/api/v1/stats/acks')).json;
      assert.ok(b.pending_count >= 1, 't-b has a pending ack');
    },
  })),
  {
    name: `${JWT} · WS Ack of carol's t-b notification → INVALID_ACK; carol can still ack it`,
    run: async (w) => {
      const fromB = await w.asB('POST', '/api/v1/notifications/send', { target_user_id: 'carol', event_type: 'b.ack', payload: {} });
      const id = fromB.json.notification_id;
      await w.carol.next((m) => m.id === id);
      assert.deepEqual(await reply(w.alice, { type: 'Ack', payload: { notification_id: id } }, ['error', 'acked']), {
        type: 'error',
        code: 'INVALID_ACK',
        message: `Unknown or invalid notification: ${id}`,
      });
      assert.deepEqual(await reply(w.carol, { type: 'Ack', payload: { notification_id: id } }, ['error', 'acked']), {
        type: 'acked',
        notification_id: id,
      });
    },
  },
  {
    name: `${JWT} · WS Resume since a t-b notification with channels [orders] → resume_gap, then nothing of t-b`,
    run: async (w) => {
      const fromB = await w.asB('POST', '/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.history', payload: {} });
      const resumer = await w.ws('alice', 't-a');
      resumer.send({ type: 'Resume', payload: { since: fromB.json.notification_id, channels: ['orders'] } });
      assert.deepEqual(await resumer.next((m) => m.type !== 'heartbeat'), { type: 'subscribed', payload: ['orders'] });
      assert.deepEqual(await resumer.next((m) => m.type !== 'heartbeat'), { type: 'resume_gap', since: fromB.json.notification_id });
      assert.deepEqual((await resumer.quietFor(150)).filter((m) => m.type !== 'heartbeat' && !w.sentByA.has(m.id)), []);
      await resumer.close();
      await w.settle('t-a', 1);
    },
  },
  {
    name: `${JWT} · SSE with Last-Event-ID of a t-b notification and ?channels=orders → resume_gap, then nothing of t-b`,
    run: async (w) => {
      const fromB = await w.asB('POST', '/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.history', payload: {} });
      const sse = await w.sse('alice', 't-a', '&channels=orders', { 'last-event-id': fromB.json.notification_id });
      const next = await sse.next((e) => e.event !== 'heartbeat');
      assert.deepEqual({ event: next.event, data: next.data }, {
        event: 'resume_gap',
        data: { type: 'resume_gap', since: fromB.json.notification_id },
      });
      assert.deepEqual((await sse.quietFor(150)).filter((e) => e.event !== 'heartbeat' && !w.sentByA.has(e.id!)), []);
      sse.close();
      await w.settle('t-a', 1);
    },
  },
];

const TOTAL = LIVE_CELLS.length + DURABLE_CELLS.length;

async function runCells(world: World, cells: Cell[]): Promise<void> {
  for (const cell of cells) {
    test(cell.name, async () => {
      await cell.run(world);
      await world.assertNoCrossing();
    });
  }
}

describe(`tenant isolation matrix, ${TOTAL} cells (SPEC §3)`, () => {
  test(`the matrix has ${TOTAL} cells with distinct names`, (t) => {
    const names = [...LIVE_CELLS, ...DURABLE_CELLS].map((cell) => cell.name);
    assert.equal(new Set(names).size, names.length);
    t.diagnostic(`tenant isolation matrix: ${TOTAL} cells (${LIVE_CELLS.length} live, ${DURABLE_CELLS.length} with queue/acks)`);
  });

  describe(`live delivery, templates and limits: ${LIVE_CELLS.length} cells`, () => {
    const world = new World();
    before(async () => {
      await world.start(ENV);
      const template = await world.asB('POST', '/api/v1/templates', {
        id: 'welcome',
        name: "t-b's welcome",
        event_type: 'b.welcome',
        payload_template: { secret: 'of t-b' },
      });
      assert.equal(template.status, 201);
    });
    after(() => world.node.stop());
    void runCells(world, LIVE_CELLS);
  });

  describe(`offline queue, history and acks: ${DURABLE_CELLS.length} cells`, () => {
    const world = new World();
    before(() => world.start({ ...ENV, QUEUE_ENABLED: 'true', ACK_ENABLED: 'true' }));
    after(() => world.node.stop());
    void runCells(world, DURABLE_CELLS);
  });
});
