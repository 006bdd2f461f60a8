/**
 * The HTTP API of SPEC §6: the error envelope and every error row that
 * exists today (at its edges), every send route with live WebSocket and
 * SSE clients (§6.1, notification JSON of §4), the batch route (§6.1),
 * queries and stats (§6.2), and the operations endpoints (§6.3, §9).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { TEST_API_KEY, sleep, startTestNode, type ApiResponse, type TestNode } from '../helpers/node.ts';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const SEND = '/api/v1/notifications/send';
const CONTENT = { event_type: 'edge.test', payload: { ok: true } };

type Client = TestWs | TestSse;

function assertEnvelope(
  res: ApiResponse,
  status: number,
  code: string,
  message: string,
  details?: Array<{ path: string; message: string }>,
): void {
  assert.equal(res.status, status, `status of ${res.text}`);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  const error: Record<string, unknown> = { code, message };
  if (details !== undefined) error.details = details;
  assert.deepEqual(res.json, { error });
}

/** A 400 VALIDATION_ERROR from schema validation naming exactly these fields. */
function assertInvalid(res: ApiResponse, details: Array<{ path: string; message: string }>): void {
  assertEnvelope(res, 400, 'VALIDATION_ERROR', 'Request is invalid', details);
}

/** The single-send response of SPEC §6.1, exactly. */
function assertSendResponse(
  res: ApiResponse,
  expected: { success: boolean; delivered_to: number; failed?: number; queued?: number },
): void {
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(Object.keys(res.json), ['success', 'notification_id', 'delivered_to', 'failed', 'queued', 'timestamp']);
  assert.equal(res.json.success, expected.success);
  assert.match(res.json.notification_id, UUID_V4);
  assert.equal(res.json.delivered_to, expected.delivered_to);
  assert.equal(res.json.failed, expected.failed ?? 0);
  assert.equal(res.json.queued, expected.queued ?? 0);
  assert.match(res.json.timestamp, RFC3339_UTC);
}

/** Notifications with this id a client has received so far. */
function copies(client: Client, id: string): number {
  if (client instanceof TestWs) {
    return client.messages.filter((m) => m.type === 'notification' && m.id === id).length;
  }
  return client.events.filter((e) => e.event === 'notification' && e.data.id === id).length;
}

/** A notification message as a client parsed it (SPEC §4). */
interface Received {
  type: string;
  id: string;
  occurred_at: string;
  event_type: string;
  payload: unknown;
  metadata: Record<string, unknown>;
}

function notificationFor(client: Client, id: string): Promise<Received> {
  if (client instanceof TestWs) return client.next((m) => m.type === 'notification' && m.id === id);
  return client.next((e) => e.event === 'notification' && e.data.id === id).then((e) => e.data);
}

/**
 * Waits for the notification at every client expected to get it, lets
 * stragglers arrive, then checks each client holds exactly the expected
 * number of copies (1 for receivers, 0 for everyone else).
 */
async function assertReceivers(id: string, receivers: Client[], others: Client[]): Promise<Received[]> {
  const received = await Promise.all(receivers.map((client) => notificationFor(client, id)));
  await sleep(100);
  for (const client of receivers) assert.equal(copies(client, id), 1, 'a receiver got exactly one copy');
  for (const client of others) assert.equal(copies(client, id), 0, 'a non-target got nothing');
  return received;
}

async function waitUntil(condition: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(10);
  }
}

async function closeAll(node: TestNode, clients: Client[]): Promise<void> {
  await Promise.all(clients.map((client) => (client instanceof TestWs ? client.close() : client.close())));
  await waitUntil(() => node.node.hub.connectionCount === 0, 'every connection is unregistered');
}

async function subscribe(ws: TestWs, channels: string[]): Promise<void> {
  const reply = await ws.request({ type: 'Subscribe', payload: { channels } }, 'subscribed');
  assert.deepEqual(reply.payload, channels);
}

/** A JSON body of exactly `bytes` bytes: `prefix"xxx…"suffix`. */
function paddedBody(prefix: string, suffix: string, bytes: number): string {
  const fixed = Buffer.byteLength(prefix) + Buffer.byteLength(suffix) + 2;
  const body = `${prefix}"${'x'.repeat(bytes - fixed)}"${suffix}`;
  assert.equal(Buffer.byteLength(body), bytes);
  return body;
}

// ---------------------------------------------------------------------------

describe('HTTP API errors and validation (SPEC §6 error table, §6.1 field rules)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode();
  });
  after(() => node.stop());

  const send = (body: unknown, path = SEND) => node.api('POST', path, body);

  test('a malformed JSON body is 400 INVALID_JSON in the envelope', async () => {
    assertEnvelope(await send('{"target_user_id":'), 400, 'INVALID_JSON', 'Request body is not valid JSON');
    assertEnvelope(await send('[1,2'), 400, 'INVALID_JSON', 'Request body is not valid JSON');
  });

  test('an empty body with a JSON content type is 400 INVALID_JSON', async () => {
    assertEnvelope(await send(''), 400, 'INVALID_JSON', 'Request body is empty');
  });

  test('event_type of 128 characters is accepted; 129 and empty fail naming event_type', async () => {
    assertSendResponse(await send({ target_user_id: 'nobody', event_type: 'e'.repeat(128), payload: 1 }), {
      success: false,
      delivered_to: 0,
    });
    assertInvalid(await send({ target_user_id: 'nobody', event_type: 'e'.repeat(129), payload: 1 }), [
      { path: 'event_type', message: 'must NOT have more than 128 characters' },
    ]);
    assertInvalid(await send({ target_user_id: 'nobody', event_type: '', payload: 1 }), [
      { path: 'event_type', message: 'must NOT have fewer than 1 characters' },
    ]);
  });

  test('target_user_id of 256 characters is accepted; 257 fails; missing fails', async () => {
    assertSendResponse(await send({ target_user_id: 'u'.repeat(256), ...CONTENT }), { success: false, delivered_to: 0 });
    assertInvalid(await send({ target_user_id: 'u'.repeat(257), ...CONTENT }), [
      { path: 'target_user_id', message: 'must NOT have more than 256 characters' },
    ]);
    assertInvalid(await send({ ...CONTENT }), [
      { path: 'target_user_id', message: "must have required property 'target_user_id'" },
    ]);
  });

  test('target_user_ids takes 10,000 ids; 10,001 and [] fail', async () => {
    const path = '/api/v1/notifications/send-to-users';
    const ids = (n: number) => Array.from({ length: n }, (_, i) => (i % 2 === 0 ? 'a' : 'b'));
    assertSendResponse(await send({ target_user_ids: ids(10_000), ...CONTENT }, path), { success: false, delivered_to: 0 });
    assertInvalid(await send({ target_user_ids: ids(10_001), ...CONTENT }, path), [
      { path: 'target_user_ids', message: 'must NOT have more than 10000 items' },
    ]);
    assertInvalid(await send({ target_user_ids: [], ...CONTENT }, path), [
      { path: 'target_user_ids', message: 'must NOT have fewer than 1 items' },
    ]);
  });

  test('channels takes 100 names; 101 fails', async () => {
    const path = '/api/v1/notifications/channels';
    const names = (n: number) => Array.from({ length: n }, (_, i) => `ch-${i}`);
    assertSendResponse(await send({ channels: names(100), ...CONTENT }, path), { success: false, delivered_to: 0 });
    assertInvalid(await send({ channels: names(101), ...CONTENT }, path), [
      { path: 'channels', message: 'must NOT have more than 100 items' },
    ]);
    assertInvalid(await send({ channels: [], ...CONTENT }, path), [
      { path: 'channels', message: 'must NOT have fewer than 1 items' },
    ]);
  });

  test('channel names follow SPEC §4: 64 bytes ok, 65 bytes, ":", "*", "../x" and empty fail', async () => {
    const path = '/api/v1/notifications/channel';
    const sixtyFourBytes = 'é'.repeat(32);
    assert.equal(Buffer.byteLength(sixtyFourBytes), 64);
    for (const ok of ['orders', 'orders.eu-west_1', 'заказы', sixtyFourBytes, 'c'.repeat(64)]) {
      assertSendResponse(await send({ channel: ok, ...CONTENT }, path), { success: false, delivered_to: 0 });
    }
    const invalidName = (name: string) => [{ path: 'channel', message: `invalid channel name ${JSON.stringify(name)}` }];
    for (const bad of [`${sixtyFourBytes}a`, 'a:b', '*', '../x', 'a b', 'orders*']) {
      assertEnvelope(await send({ channel: bad, ...CONTENT }, path), 400, 'VALIDATION_ERROR', 'Invalid channel name', invalidName(bad));
    }
    assertInvalid(await send({ channel: 'c'.repeat(65), ...CONTENT }, path), [
      { path: 'channel', message: 'must NOT have more than 64 characters' },
    ]);
    assertInvalid(await send({ channel: '', ...CONTENT }, path), [
      { path: 'channel', message: 'must NOT have fewer than 1 characters' },
    ]);
    assertEnvelope(
      await send({ channels: ['fine', 'a:b', 'ok', '../x'], ...CONTENT }, '/api/v1/notifications/channels'),
      400,
      'VALIDATION_ERROR',
      'Invalid channel name',
      [
        { path: 'channels.1', message: 'invalid channel name "a:b"' },
        { path: 'channels.3', message: 'invalid channel name "../x"' },
      ],
    );
  });

  test('correlation_id of 128 characters is accepted; 129 fails', async () => {
    assertSendResponse(await send({ target_user_id: 'nobody', ...CONTENT, correlation_id: 'c'.repeat(128) }), {
      success: false,
      delivered_to: 0,
    });
    assertInvalid(await send({ target_user_id: 'nobody', ...CONTENT, correlation_id: 'c'.repeat(129) }), [
      { path: 'correlation_id', message: 'must NOT have more than 128 characters' },
    ]);
  });

  test('ttl 0 is accepted; -1, 1.5 and "5" fail naming ttl', async () => {
    assertSendResponse(await send({ target_user_id: 'nobody', ...CONTENT, ttl: 0 }), { success: false, delivered_to: 0 });
    assertInvalid(await send({ target_user_id: 'nobody', ...CONTENT, ttl: -1 }), [{ path: 'ttl', message: 'must be >= 0' }]);
    assertInvalid(await send({ target_user_id: 'nobody', ...CONTENT, ttl: 1.5 }), [{ path: 'ttl', message: 'must be integer' }]);
    assertInvalid(await send({ target_user_id: 'nobody', ...CONTENT, ttl: '5' }), [{ path: 'ttl', message: 'must be integer' }]);
  });

  test('priority must be one of Low Normal High Critical exactly; lowercase fails', async () => {
    for (const priority of ['Low', 'Normal', 'High', 'Critical']) {
      assertSendResponse(await send({ target_user_id: 'nobody', ...CONTENT, priority }), { success: false, delivered_to: 0 });
    }
    for (const priority of ['high', 'NORMAL', '']) {
      const res = await send({ target_user_id: 'nobody', ...CONTENT, priority });
      assert.equal(res.status, 400);
      assert.equal(res.json.error.code, 'VALIDATION_ERROR');
      assert.equal(res.json.error.message, 'Request is invalid');
      assert.ok(res.json.error.details.length > 0);
      for (const detail of res.json.error.details) assert.equal(detail.path, 'priority');
      assert.deepEqual(Object.keys(res.json.error), ['code', 'message', 'details']);
    }
  });

  test('event_type without payload fails naming payload; payload null is a valid payload', async () => {
    assertEnvelope(
      await send({ target_user_id: 'nobody', event_type: 'e' }),
      400,
      'VALIDATION_ERROR',
      'payload is required with event_type',
      [{ path: 'payload', message: 'is required with event_type' }],
    );
    assertSendResponse(await send({ target_user_id: 'nobody', event_type: 'e', payload: null }), {
      success: false,
      delivered_to: 0,
    });
  });

  test('neither event_type nor template_id fails naming event_type', async () => {
    assertEnvelope(
      await send({ target_user_id: 'nobody', payload: { a: 1 } }),
      400,
      'VALIDATION_ERROR',
      'Either event_type with payload, or template_id, is required',
      [{ path: 'event_type', message: 'is required when template_id is absent' }],
    );
  });

  test('a send naming an unknown template_id is 404 TEMPLATE_NOT_FOUND', async () => {
    assertEnvelope(
      await send({ target_user_id: 'nobody', template_id: 'no-such-template', variables: { a: 1 } }),
      404,
      'TEMPLATE_NOT_FOUND',
      "Template 'no-such-template' not found",
    );
  });

  test('creating a template id twice is 409 TEMPLATE_EXISTS; a send naming it renders it', async () => {
    const template = { id: 'welcome', name: 'Welcome', event_type: 'user.welcome', payload_template: { text: 'Hi {{ name }}' } };
    const created = await node.api('POST', '/api/v1/templates', template);
    assert.equal(created.status, 201, created.text);
    assertEnvelope(await node.api('POST', '/api/v1/templates', template), 409, 'TEMPLATE_EXISTS', "Template 'welcome' already exists");
    assertSendResponse(await send({ target_user_id: 'nobody', template_id: 'welcome', variables: { name: 'Ann' } }), {
      success: false,
      delivered_to: 0,
    });
    assertEnvelope(await node.api('GET', '/api/v1/templates/absent'), 404, 'TEMPLATE_NOT_FOUND', "Template 'absent' not found");
    const patch = await node.api('PATCH', '/api/v1/templates/welcome', {});
    assertEnvelope(patch, 405, 'METHOD_NOT_ALLOWED', 'Method PATCH is not allowed here');
    assert.equal(patch.headers.get('allow'), 'DELETE, GET, HEAD, PUT');
  });

  test('a missing or wrong API key is 401 UNAUTHORIZED in the envelope', async () => {
    const body = { target_user_id: 'nobody', ...CONTENT };
    const res = await fetch(`${node.httpUrl}${SEND}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), { error: { code: 'UNAUTHORIZED', message: 'Missing API key' } });
    assertEnvelope(await node.api('POST', SEND, body, { 'x-api-key': '' }), 401, 'UNAUTHORIZED', 'Missing API key');
    assertEnvelope(await node.api('POST', SEND, body, { 'x-api-key': 'wrong-key' }), 401, 'UNAUTHORIZED', 'Invalid API key');
    assertEnvelope(
      await node.api('POST', SEND, body, { 'x-api-key': `${TEST_API_KEY}x` }),
      401,
      'UNAUTHORIZED',
      'Invalid API key',
    );
    assertEnvelope(await node.api('GET', '/api/v1/channels', undefined, { 'x-api-key': 'nope' }), 401, 'UNAUTHORIZED', 'Invalid API key');
    assertEnvelope(await node.api('GET', '/stats', undefined, { 'x-api-key': 'nope' }), 401, 'UNAUTHORIZED', 'Invalid API key');
  });

  test('an unknown route is 404 NOT_FOUND in the envelope', async () => {
    assertEnvelope(await node.api('GET', '/api/v1/nothing-here'), 404, 'NOT_FOUND', 'Route not found');
    assertEnvelope(await node.api('POST', '/api/v1/notifications/nowhere', CONTENT), 404, 'NOT_FOUND', 'Route not found');
    assertEnvelope(await node.api('GET', '/'), 404, 'NOT_FOUND', 'Route not found');
  });

  test('an unknown channel is 404 CHANNEL_NOT_FOUND; an unknown user is 404 USER_NOT_CONNECTED', async () => {
    assertEnvelope(
      await node.api('GET', '/api/v1/channels/quiet'),
      404,
      'CHANNEL_NOT_FOUND',
      "Channel 'quiet' not found or has no subscribers",
    );
    assertEnvelope(
      await node.api('GET', '/api/v1/users/ghost/subscriptions'),
      404,
      'USER_NOT_CONNECTED',
      "User 'ghost' has no active connections",
    );
  });

  test('a known path with another method is 405 METHOD_NOT_ALLOWED with Allow', async () => {
    const get = await node.api('GET', SEND);
    assertEnvelope(get, 405, 'METHOD_NOT_ALLOWED', 'Method GET is not allowed here');
    assert.equal(get.headers.get('allow'), 'POST');
    const del = await node.api('DELETE', '/health');
    assertEnvelope(del, 405, 'METHOD_NOT_ALLOWED', 'Method DELETE is not allowed here');
    assert.equal(del.headers.get('allow'), 'GET, HEAD');
    const put = await node.api('PUT', '/api/v1/channels/orders', {});
    assertEnvelope(put, 405, 'METHOD_NOT_ALLOWED', 'Method PUT is not allowed here');
    assert.equal(put.headers.get('allow'), 'GET, HEAD');
  });

  test('a send body of exactly 65,536 bytes is accepted; 65,537 is 413 PAYLOAD_TOO_LARGE', async () => {
    const prefix = '{"target_user_id":"nobody","event_type":"pad","payload":';
    const ok = await send(paddedBody(prefix, '}', 65_536));
    assertSendResponse(ok, { success: false, delivered_to: 0 });
    assertEnvelope(await send(paddedBody(prefix, '}', 65_537)), 413, 'PAYLOAD_TOO_LARGE', 'Request body is too large');
    const channelPrefix = '{"channel":"orders","event_type":"pad","payload":';
    assertEnvelope(
      await send(paddedBody(channelPrefix, '}', 65_537), '/api/v1/notifications/channel'),
      413,
      'PAYLOAD_TOO_LARGE',
      'Request body is too large',
    );
  });

  test('a batch body of exactly 1,048,576 bytes is accepted; 1,048,577 is 413', async () => {
    const path = '/api/v1/notifications/batch';
    const prefix = '{"notifications":[{"target":{"type":"user","value":"nobody"},"event_type":"pad","payload":';
    const ok = await send(paddedBody(prefix, '}]}', 1_048_576), path);
    assert.equal(ok.status, 200, ok.text.slice(0, 300));
    assert.equal(ok.json.summary.total, 1);
    assertEnvelope(
      await send(paddedBody(prefix, '}]}', 1_048_577), path),
      413,
      'PAYLOAD_TOO_LARGE',
      'Request body is too large',
    );
  });

  test('a non-JSON content type is 415; application/vnd.foo+json is JSON', async () => {
    const body = JSON.stringify({ target_user_id: 'nobody', ...CONTENT });
    for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'application/xml']) {
      assertEnvelope(
        await node.api('POST', SEND, body, { 'content-type': type }),
        415,
        'UNSUPPORTED_MEDIA_TYPE',
        'Content-Type must be application/json',
      );
    }
    assertSendResponse(await node.api('POST', SEND, body, { 'content-type': 'application/vnd.foo+json' }), {
      success: false,
      delivered_to: 0,
    });
    assertSendResponse(await node.api('POST', SEND, body, { 'content-type': 'application/json; charset=utf-8' }), {
      success: false,
      delivered_to: 0,
    });
  });

  test('/metrics is open when METRICS_TOKEN is unset (SPEC §6.3)', async () => {
    const res = await node.api('GET', '/metrics', undefined, { 'x-api-key': '' });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(res.text, /^ara_connections_total 0$/m);
  });
});

// ---------------------------------------------------------------------------

describe('tenant scope of API requests (SPEC §3, §6: INVALID_TENANT, TENANT_ACCESS_DENIED)', () => {
  const KEY_A = 'tenant-a-key-0123456789';
  const KEY_B = 'tenant-b-key-0123456789';
  let node: TestNode;
  let aliceA: TestWs;
  let aliceB: TestSse;
  before(async () => {
    node = await startTestNode({ TENANT_ENABLED: 'true', TENANT_API_KEYS: `t-a:${KEY_A},t-b:${KEY_B}` });
    aliceA = await TestWs.open(node.wsUrl(`?token=${await node.token('alice', { tenant_id: 't-a' })}`));
    aliceB = await TestSse.open(`${node.httpUrl}/sse?token=${await node.token('alice', { tenant_id: 't-b' })}`);
  });
  after(async () => {
    await closeAll(node, [aliceA, aliceB]);
    await node.stop();
  });

  const body = { target_user_id: 'alice', ...CONTENT };

  test('the operator key without X-Tenant-ID on a send route is 400 INVALID_TENANT', async () => {
    assertEnvelope(await node.api('POST', SEND, body), 400, 'INVALID_TENANT', 'X-Tenant-ID is required with the operator key');
    assertEnvelope(await node.api('GET', '/api/v1/channels'), 400, 'INVALID_TENANT', 'X-Tenant-ID is required with the operator key');
  });

  test('a malformed X-Tenant-ID is 400 INVALID_TENANT; 64 characters are fine', async () => {
    const message = 'X-Tenant-ID must be 1-64 characters of A-Z a-z 0-9 . _ -';
    for (const tenant of ['a:b', 't'.repeat(65), 'a b', '../t-b', 'tenant*']) {
      assertEnvelope(await node.api('POST', SEND, body, { 'x-tenant-id': tenant }), 400, 'INVALID_TENANT', message);
    }
    assertSendResponse(await node.api('POST', SEND, body, { 'x-tenant-id': 't'.repeat(64) }), { success: false, delivered_to: 0 });
  });

  test("a tenant key with another tenant's X-Tenant-ID is 403 TENANT_ACCESS_DENIED", async () => {
    for (const [key, other] of [[KEY_A, 't-b'], [KEY_B, 't-a'], [KEY_A, 'default']] as const) {
      assertEnvelope(
        await node.api('POST', SEND, body, { 'x-api-key': key, 'x-tenant-id': other }),
        403,
        'TENANT_ACCESS_DENIED',
        'This API key cannot act for that tenant',
      );
    }
    await sleep(50);
    assert.equal(aliceA.messages.filter((m) => m.type === 'notification').length, 0);
    assert.equal(aliceB.events.filter((e) => e.event === 'notification').length, 0);
  });

  test('a tenant key with its own X-Tenant-ID or none acts in its own tenant only', async () => {
    const own = await node.api('POST', SEND, body, { 'x-api-key': KEY_A, 'x-tenant-id': 't-a' });
    assertSendResponse(own, { success: true, delivered_to: 1 });
    await assertReceivers(own.json.notification_id, [aliceA], [aliceB]);
    const none = await node.api('POST', SEND, body, { 'x-api-key': KEY_B });
    assertSendResponse(none, { success: true, delivered_to: 1 });
    await assertReceivers(none.json.notification_id, [aliceB], [aliceA]);
    const ghost = await node.api('POST', SEND, { ...body, target_user_id: 'carol' }, { 'x-api-key': KEY_A });
    assertSendResponse(ghost, { success: false, delivered_to: 0 });
  });

  test('an unknown tenant is 404 TENANT_NOT_FOUND for the operator', async () => {
    assertEnvelope(await node.api('GET', '/api/v1/tenants/t-zzz'), 404, 'TENANT_NOT_FOUND', "Tenant 't-zzz' not found");
    const known = await node.api('GET', '/api/v1/tenants/t-a');
    assert.equal(known.status, 200);
    assert.equal(known.json.tenant_id, 't-a');
  });

  test('the operator key with X-Tenant-ID acts in that tenant only', async () => {
    const res = await node.api('POST', SEND, body, { 'x-tenant-id': 't-b' });
    assertSendResponse(res, { success: true, delivered_to: 1 });
    await assertReceivers(res.json.notification_id, [aliceB], [aliceA]);
    const broadcast = await node.api('POST', '/api/v1/notifications/broadcast', CONTENT, { 'x-tenant-id': 't-a' });
    assertSendResponse(broadcast, { success: true, delivered_to: 1 });
    await assertReceivers(broadcast.json.notification_id, [aliceA], [aliceB]);
  });
});

// ---------------------------------------------------------------------------

describe('every send route delivers to live WebSocket and SSE clients (SPEC §6.1, §4)', () => {
  let node: TestNode;
  let aliceWs: TestWs; // channels c1, c2
  let aliceSse: TestSse; // channel c3
  let bobWs: TestWs; // channel c2
  let rootWs: TestWs; // roles admin
  let opsSse: TestSse; // roles ops, viewer
  let all: Client[];
  const rawAliceWs: string[] = [];
  let rawAliceSse = '';

  before(async () => {
    node = await startTestNode();
    aliceWs = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
    aliceWs.socket.on('message', (data) => rawAliceWs.push(data.toString()));
    await subscribe(aliceWs, ['c1', 'c2']);
    aliceSse = await TestSse.open(`${node.httpUrl}/sse?channels=c3&token=${await node.token('alice')}`);
    aliceSse.response.on('data', (chunk: string) => (rawAliceSse += chunk));
    bobWs = await TestWs.open(node.wsUrl(`?token=${await node.token('bob')}`));
    await subscribe(bobWs, ['c2']);
    rootWs = await TestWs.open(node.wsUrl(`?token=${await node.token('root', { roles: ['admin'] })}`));
    opsSse = await TestSse.open(`${node.httpUrl}/sse?token=${await node.token('ops-user', { roles: ['ops', 'viewer'] })}`);
    all = [aliceWs, aliceSse, bobWs, rootWs, opsSse];
  });
  after(async () => {
    await closeAll(node, all);
    await node.stop();
  });

  const others = (...receivers: Client[]) => all.filter((client) => !receivers.includes(client));

  test('send reaches every connection of the user once, as the exact notification JSON', async () => {
    const res = await node.api('POST', SEND, {
      target_user_id: 'alice',
      event_type: 'order.created',
      payload: { z: 1, a: 2, m: 3 },
      priority: 'High',
      ttl: 60,
      correlation_id: 'corr-1',
    });
    assertSendResponse(res, { success: true, delivered_to: 2 });
    const id = res.json.notification_id;
    const [viaWs, viaSse] = (await assertReceivers(id, [aliceWs, aliceSse], others(aliceWs, aliceSse))) as [Received, Received];
    assert.deepEqual(viaSse, viaWs);
    assert.equal(viaWs.id, id);
    assert.match(viaWs.occurred_at, RFC3339_UTC);
    const expected =
      `{"type":"notification","id":"${id}","occurred_at":"${viaWs.occurred_at}","event_type":"order.created",` +
      `"payload":{"z":1,"a":2,"m":3},"metadata":{"source":"http-api","priority":"High","ttl":60,"correlation_id":"corr-1"}}`;
    assert.ok(rawAliceWs.includes(expected), `raw WS text preserved key order: ${rawAliceWs.at(-1)}`);
    assert.ok(rawAliceSse.includes(`id: ${id}\nevent: notification\ndata: ${expected}\n\n`), 'raw SSE frame');
  });

  test('optional metadata is omitted when not given; a payload of any JSON type passes through', async () => {
    for (const payload of ['text', 7, [3, 1, 2], null, { nested: { b: [1, { y: 2, x: 1 }] } }]) {
      const res = await node.api('POST', SEND, { target_user_id: 'bob', event_type: 'plain', payload });
      assertSendResponse(res, { success: true, delivered_to: 1 });
      const [got] = (await assertReceivers(res.json.notification_id, [bobWs], [])) as [Received];
      assert.deepEqual(Object.keys(got), ['type', 'id', 'occurred_at', 'event_type', 'payload', 'metadata']);
      assert.deepEqual(got.metadata, { source: 'http-api', priority: 'Normal' });
      assert.deepEqual(got.payload, payload);
    }
    const zero = await node.api('POST', SEND, { target_user_id: 'bob', event_type: 'ttl0', payload: 1, ttl: 0 });
    const [got] = (await assertReceivers(zero.json.notification_id, [bobWs], [])) as [Received];
    assert.deepEqual(got.metadata, { source: 'http-api', priority: 'Normal', ttl: 0 });
  });

  test('send to an offline user answers success false with nothing delivered or queued', async () => {
    const res = await node.api('POST', SEND, { target_user_id: 'nobody-online', ...CONTENT });
    assertSendResponse(res, { success: false, delivered_to: 0, failed: 0, queued: 0 });
  });

  test('send-to-users reaches each listed user once; duplicate ids are sent once', async () => {
    const res = await node.api('POST', '/api/v1/notifications/send-to-users', {
      target_user_ids: ['alice', 'bob', 'alice', 'ghost', 'bob', 'alice'],
      ...CONTENT,
    });
    assertSendResponse(res, { success: true, delivered_to: 3 });
    await assertReceivers(res.json.notification_id, [aliceWs, aliceSse, bobWs], [rootWs, opsSse]);
  });

  test('broadcast without audience reaches every connection, metadata without audience', async () => {
    const res = await node.api('POST', '/api/v1/notifications/broadcast', CONTENT);
    assertSendResponse(res, { success: true, delivered_to: 5 });
    const received = await assertReceivers(res.json.notification_id, all, []);
    for (const got of received) assert.deepEqual(got.metadata, { source: 'http-api', priority: 'Normal' });
  });

  test('broadcast to audience All reaches every connection and names the audience', async () => {
    const res = await node.api('POST', '/api/v1/notifications/broadcast', { ...CONTENT, audience: { type: 'All' } });
    assertSendResponse(res, { success: true, delivered_to: 5 });
    const received = await assertReceivers(res.json.notification_id, all, []);
    for (const got of received) assert.deepEqual(got.metadata, { source: 'http-api', priority: 'Normal', audience: { type: 'All' } });
  });

  test('broadcast to audience Roles reaches only connections whose JWT roles intersect', async () => {
    const audience = { type: 'Roles', value: ['admin', 'ops'] };
    const res = await node.api('POST', '/api/v1/notifications/broadcast', { ...CONTENT, audience });
    assertSendResponse(res, { success: true, delivered_to: 2 });
    const received = await assertReceivers(res.json.notification_id, [rootWs, opsSse], others(rootWs, opsSse));
    for (const got of received) assert.deepEqual(got.metadata.audience, audience);
    const none = await node.api('POST', '/api/v1/notifications/broadcast', {
      ...CONTENT,
      audience: { type: 'Roles', value: ['auditor'] },
    });
    assertSendResponse(none, { success: false, delivered_to: 0 });
  });

  test('broadcast to audience Users reaches only those users', async () => {
    const audience = { type: 'Users', value: ['alice', 'ghost'] };
    const res = await node.api('POST', '/api/v1/notifications/broadcast', { ...CONTENT, audience });
    assertSendResponse(res, { success: true, delivered_to: 2 });
    await assertReceivers(res.json.notification_id, [aliceWs, aliceSse], others(aliceWs, aliceSse));
  });

  test('broadcast to audience Channels gives a connection in two of them one copy', async () => {
    const audience = { type: 'Channels', value: ['c1', 'c2'] };
    const res = await node.api('POST', '/api/v1/notifications/broadcast', { ...CONTENT, audience });
    assertSendResponse(res, { success: true, delivered_to: 2 });
    await assertReceivers(res.json.notification_id, [aliceWs, bobWs], others(aliceWs, bobWs));
  });

  test('broadcast with an unknown audience type is 400 VALIDATION_ERROR', async () => {
    const res = await node.api('POST', '/api/v1/notifications/broadcast', { ...CONTENT, audience: { type: 'Everyone' } });
    assert.equal(res.status, 400);
    assert.equal(res.json.error.code, 'VALIDATION_ERROR');
    assert.ok(res.json.error.details.every((d: { path: string }) => d.path.startsWith('audience')));
  });

  test('broadcast to audience Channels with an invalid channel name is 400 VALIDATION_ERROR', async () => {
    const res = await node.api('POST', '/api/v1/notifications/broadcast', {
      ...CONTENT,
      audience: { type: 'Channels', value: ['c1', 'a:b', '*'] },
    });
    assertEnvelope(res, 400, 'VALIDATION_ERROR', 'Invalid channel name', [
      { path: 'audience.value.1', message: 'invalid channel name "a:b"' },
      { path: 'audience.value.2', message: 'invalid channel name "*"' },
    ]);
    await sleep(50);
    assert.equal(aliceWs.messages.filter((m) => m.type === 'notification' && m.event_type === CONTENT.event_type && m.metadata.audience?.value?.includes('a:b')).length, 0);
  });

  test('channel reaches the subscribers of that channel only', async () => {
    const res = await node.api('POST', '/api/v1/notifications/channel', { channel: 'c2', ...CONTENT });
    assertSendResponse(res, { success: true, delivered_to: 2 });
    await assertReceivers(res.json.notification_id, [aliceWs, bobWs], others(aliceWs, bobWs));
    const sse = await node.api('POST', '/api/v1/notifications/channel', { channel: 'c3', ...CONTENT });
    assertSendResponse(sse, { success: true, delivered_to: 1 });
    await assertReceivers(sse.json.notification_id, [aliceSse], others(aliceSse));
    const empty = await node.api('POST', '/api/v1/notifications/channel', { channel: 'nobody-here', ...CONTENT });
    assertSendResponse(empty, { success: false, delivered_to: 0 });
  });

  test('channels gives a connection subscribed to several listed channels exactly one copy', async () => {
    const res = await node.api('POST', '/api/v1/notifications/channels', { channels: ['c1', 'c2', 'c3', 'c9'], ...CONTENT });
    assertSendResponse(res, { success: true, delivered_to: 3 });
    await assertReceivers(res.json.notification_id, [aliceWs, bobWs, aliceSse], [rootWs, opsSse]);
  });
});

// ---------------------------------------------------------------------------

describe('batch sends (SPEC §6.1)', () => {
  let node: TestNode;
  let alice: TestWs;
  let bob: TestSse;
  const BATCH = '/api/v1/notifications/batch';
  const NIL = '00000000-0000-0000-0000-000000000000';
  const toUser = (value: string, event_type = 'b.event', payload: unknown = { n: 1 }) => ({
    target: { type: 'user', value },
    event_type,
    payload,
  });

  before(async () => {
    node = await startTestNode();
    alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
    await subscribe(alice, ['news']);
    bob = await TestSse.open(`${node.httpUrl}/sse?channels=news,sport&token=${await node.token('bob')}`);
  });
  after(async () => {
    await closeAll(node, [alice, bob]);
    await node.stop();
  });

  function assertBatchShape(res: ApiResponse, total: number): void {
    assert.equal(res.status, 200, res.text.slice(0, 300));
    assert.deepEqual(Object.keys(res.json), ['batch_id', 'results', 'summary', 'timestamp']);
    assert.match(res.json.batch_id, UUID_V4);
    assert.match(res.json.timestamp, RFC3339_UTC);
    assert.equal(res.json.results.length, total);
    res.json.results.forEach((result: { index: number }, index: number) => assert.equal(result.index, index));
  }

  test('a batch of one item is delivered with source "batch"', async () => {
    const res = await node.api('POST', BATCH, { notifications: [toUser('alice', 'b.one', { z: 2, a: 1 })] });
    assertBatchShape(res, 1);
    const [result] = res.json.results;
    assert.match(result.notification_id, UUID_V4);
    assert.deepEqual(result, {
      index: 0,
      success: true,
      notification_id: result.notification_id,
      delivered_to: 1,
      failed: 0,
      queued: 0,
    });
    assert.deepEqual(res.json.summary, { total: 1, succeeded: 1, failed: 0, skipped: 0, total_delivered: 1 });
    const [got] = (await assertReceivers(result.notification_id, [alice], [bob])) as [Received];
    assert.equal(got.event_type, 'b.one');
    assert.deepEqual(Object.keys(got.payload as object), ['z', 'a']);
    assert.deepEqual(got.metadata, { source: 'batch', priority: 'Normal' });
  });

  test('a batch of 100 items is accepted and each is delivered in order', async () => {
    const items = Array.from({ length: 100 }, (_, i) => toUser('bob', `b.many.${i}`, { i }));
    const res = await node.api('POST', BATCH, { notifications: items });
    assertBatchShape(res, 100);
    assert.deepEqual(res.json.summary, { total: 100, succeeded: 100, failed: 0, skipped: 0, total_delivered: 100 });
    const ids = res.json.results.map((r: { notification_id: string }) => r.notification_id);
    assert.equal(new Set(ids).size, 100);
    await notificationFor(bob, ids[99]);
    const received = bob.events.filter((e) => e.event === 'notification' && e.data.event_type.startsWith('b.many.'));
    assert.deepEqual(received.map((e) => e.data.id), ids);
    assert.ok(received.every((e) => e.data.metadata.source === 'batch'));
  });

  test('a batch of 0 or 101 items is 400 VALIDATION_ERROR naming notifications', async () => {
    assertInvalid(await node.api('POST', BATCH, { notifications: [] }), [
      { path: 'notifications', message: 'must NOT have fewer than 1 items' },
    ]);
    const items = Array.from({ length: 101 }, () => toUser('nobody'));
    assertInvalid(await node.api('POST', BATCH, { notifications: items }), [
      { path: 'notifications', message: 'must NOT have more than 100 items' },
    ]);
    assertInvalid(await node.api('POST', BATCH, {}), [
      { path: 'notifications', message: "must have required property 'notifications'" },
    ]);
  });

  test('every target type works in a batch', async () => {
    const res = await node.api('POST', BATCH, {
      notifications: [
        toUser('alice', 't.user'),
        { target: { type: 'users', value: ['alice', 'bob', 'alice'] }, event_type: 't.users', payload: 1 },
        { target: { type: 'broadcast' }, event_type: 't.broadcast', payload: 1 },
        { target: { type: 'channel', value: 'sport' }, event_type: 't.channel', payload: 1 },
        { target: { type: 'channels', value: ['news', 'sport'] }, event_type: 't.channels', payload: 1 },
      ],
    });
    assertBatchShape(res, 5);
    assert.deepEqual(
      res.json.results.map((r: { delivered_to: number }) => r.delivered_to),
      [1, 2, 2, 1, 2],
    );
    assert.deepEqual(res.json.summary, { total: 5, succeeded: 5, failed: 0, skipped: 0, total_delivered: 8 });
    const [user, users, broadcast, channel, channels] = res.json.results.map((r: { notification_id: string }) => r.notification_id);
    await assertReceivers(user, [alice], [bob]);
    await assertReceivers(users, [alice, bob], []);
    await assertReceivers(broadcast, [alice, bob], []);
    await assertReceivers(channel, [bob], [alice]);
    await assertReceivers(channels, [alice, bob], []);
  });

  test('an invalid item fails alone with an error text; the others are delivered', async () => {
    const res = await node.api('POST', BATCH, {
      notifications: [
        toUser('alice', 'mix.0'),
        { target: { type: 'planet', value: 'mars' }, event_type: 'mix.1', payload: 1 },
        { target: { type: 'channel', value: 'a:b' }, event_type: 'mix.2', payload: 1 },
        { target: { type: 'user', value: 'bob' }, event_type: 'mix.3' },
        toUser('bob', 'mix.4'),
      ],
    });
    assertBatchShape(res, 5);
    const [first, second, third, fourth, fifth] = res.json.results;
    assert.equal(first.success, true);
    assert.equal(first.delivered_to, 1);
    assert.equal(fifth.success, true);
    assert.equal(fifth.delivered_to, 1);
    for (const failed of [second, third, fourth]) {
      assert.equal(failed.success, false);
      assert.equal(failed.delivered_to, 0);
      assert.equal(failed.notification_id, NIL);
      assert.equal(typeof failed.error, 'string');
      assert.ok(failed.error.length > 0);
      assert.equal(failed.skipped, undefined);
    }
    assert.match(second.error, /^target/);
    assert.equal(third.error, 'VALIDATION_ERROR: target.value: invalid channel name "a:b"');
    assert.equal(fourth.error, 'VALIDATION_ERROR: payload: is required with event_type');
    assert.deepEqual(res.json.summary, { total: 5, succeeded: 2, failed: 3, skipped: 0, total_delivered: 2 });
    await assertReceivers(first.notification_id, [alice], [bob]);
    await assertReceivers(fifth.notification_id, [bob], [alice]);
    await sleep(50);
    assert.equal(bob.events.filter((e) => e.data.event_type === 'mix.3').length, 0);
  });

  test('stop_on_error reports every item after the first invalid one as skipped', async () => {
    const res = await node.api('POST', BATCH, {
      notifications: [
        toUser('alice', 'stop.0'),
        { target: { type: 'user', value: '' }, event_type: 'stop.1', payload: 1 },
        toUser('bob', 'stop.2'),
        toUser('alice', 'stop.3'),
      ],
      options: { stop_on_error: true },
    });
    assertBatchShape(res, 4);
    const [first, second, third, fourth] = res.json.results;
    assert.equal(first.success, true);
    assert.equal(second.success, false);
    assert.equal(typeof second.error, 'string');
    for (const skipped of [third, fourth]) {
      assert.equal(skipped.skipped, true);
      assert.equal(skipped.success, false);
      assert.equal(skipped.delivered_to, 0);
    }
    assert.deepEqual(res.json.summary, { total: 4, succeeded: 1, failed: 1, skipped: 2, total_delivered: 1 });
    await assertReceivers(first.notification_id, [alice], [bob]);
    await sleep(50);
    const stopEvents = [...alice.messages, ...bob.events.map((e) => e.data)].filter(
      (m) => m.type === 'notification' && /^stop\.[23]$/.test(m.event_type),
    );
    assert.deepEqual(stopEvents, []);
  });

  test('deduplicate skips a repeated (target, event_type) and the receiver sees one copy', async () => {
    const res = await node.api('POST', BATCH, {
      notifications: [
        toUser('alice', 'dup.x'),
        toUser('alice', 'dup.x', { again: true }),
        toUser('alice', 'dup.y'),
        toUser('bob', 'dup.x'),
        { target: { type: 'users', value: ['bob', 'alice'] }, event_type: 'dup.z', payload: 1 },
        { target: { type: 'users', value: ['alice', 'bob'] }, event_type: 'dup.z', payload: 2 },
      ],
      options: { deduplicate: true },
    });
    assertBatchShape(res, 6);
    const results = res.json.results;
    for (const index of [1, 5]) {
      assert.equal(results[index].skipped, true);
      assert.equal(results[index].delivered_to, 0);
    }
    for (const index of [0, 2, 3, 4]) {
      assert.equal(results[index].skipped, undefined);
      assert.equal(results[index].success, true);
    }
    assert.deepEqual(res.json.summary, { total: 6, succeeded: 4, failed: 0, skipped: 2, total_delivered: 5 });
    await assertReceivers(results[4].notification_id, [alice, bob], []);
    await sleep(50);
    assert.equal(alice.messages.filter((m) => m.type === 'notification' && m.event_type === 'dup.x').length, 1);
    assert.equal(alice.messages.filter((m) => m.type === 'notification' && m.event_type === 'dup.z').length, 1);
    assert.equal(bob.events.filter((e) => e.event === 'notification' && e.data.event_type === 'dup.z').length, 1);
  });

  test('without deduplicate the same item twice is delivered twice', async () => {
    const res = await node.api('POST', BATCH, { notifications: [toUser('alice', 'twice'), toUser('alice', 'twice')] });
    assertBatchShape(res, 2);
    assert.deepEqual(res.json.summary, { total: 2, succeeded: 2, failed: 0, skipped: 0, total_delivered: 2 });
    await assertReceivers(res.json.results[1].notification_id, [alice], [bob]);
    assert.equal(alice.messages.filter((m) => m.type === 'notification' && m.event_type === 'twice').length, 2);
  });
});

// ---------------------------------------------------------------------------

describe('queries, stats, health and metrics (SPEC §6.2, §6.3, §9)', () => {
  const METRICS_TOKEN = 'metrics-token-0123456789';
  let node: TestNode;
  let aliceWs: TestWs;
  let aliceSse: TestSse;
  let bobWs: TestWs;

  before(async () => {
    node = await startTestNode({ METRICS_TOKEN });
    aliceWs = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
    await subscribe(aliceWs, ['orders', 'news']);
    aliceSse = await TestSse.open(`${node.httpUrl}/sse?channels=news&token=${await node.token('alice')}`);
    bobWs = await TestWs.open(node.wsUrl(`?token=${await node.token('bob')}`));
    await subscribe(bobWs, ['news', 'zeta']);
  });
  after(async () => {
    await closeAll(node, [aliceWs, aliceSse, bobWs]);
    await node.stop();
  });

  const metrics = () => node.api('GET', '/metrics', undefined, { authorization: `Bearer ${METRICS_TOKEN}` });

  test('GET /api/v1/channels lists every channel with its exact subscriber count, sorted', async () => {
    const res = await node.api('GET', '/api/v1/channels');
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, {
      channels: [
        { name: 'news', subscriber_count: 3 },
        { name: 'orders', subscriber_count: 1 },
        { name: 'zeta', subscriber_count: 1 },
      ],
      total_channels: 3,
    });
  });

  test('GET /api/v1/channels/{name} answers the count or 404 CHANNEL_NOT_FOUND', async () => {
    const res = await node.api('GET', '/api/v1/channels/news');
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { name: 'news', subscriber_count: 3 });
    assertEnvelope(
      await node.api('GET', '/api/v1/channels/sport'),
      404,
      'CHANNEL_NOT_FOUND',
      "Channel 'sport' not found or has no subscribers",
    );
  });

  test('GET /api/v1/users/{id}/subscriptions answers the connections and channels or 404', async () => {
    const alice = await node.api('GET', '/api/v1/users/alice/subscriptions');
    assert.equal(alice.status, 200);
    assert.deepEqual(alice.json, { user_id: 'alice', connection_count: 2, subscriptions: ['news', 'orders'] });
    const bob = await node.api('GET', '/api/v1/users/bob/subscriptions');
    assert.deepEqual(bob.json, { user_id: 'bob', connection_count: 1, subscriptions: ['news', 'zeta'] });
    assertEnvelope(
      await node.api('GET', '/api/v1/users/carol/subscriptions'),
      404,
      'USER_NOT_CONNECTED',
      "User 'carol' has no active connections",
    );
  });

  test('/stats and /api/v1/stats count exactly what a known sequence of sends did', async () => {
    const sends: Array<[string, unknown, number]> = [
      [SEND, { target_user_id: 'alice', ...CONTENT }, 2],
      [SEND, { target_user_id: 'alice', ...CONTENT }, 2],
      [SEND, { target_user_id: 'bob', ...CONTENT }, 1],
      [SEND, { target_user_id: 'ghost', ...CONTENT }, 0],
      ['/api/v1/notifications/send-to-users', { target_user_ids: ['alice', 'bob'], ...CONTENT }, 3],
      ['/api/v1/notifications/broadcast', CONTENT, 3],
      ['/api/v1/notifications/channel', { channel: 'orders', ...CONTENT }, 1],
      ['/api/v1/notifications/channels', { channels: ['news', 'zeta'], ...CONTENT }, 3],
    ];
    for (const [path, body, delivered] of sends) {
      const res = await node.api('POST', path, body);
      assertSendResponse(res, { success: delivered > 0, delivered_to: delivered });
    }
    for (const path of ['/stats', '/api/v1/stats']) {
      const res = await node.api('GET', path);
      assert.equal(res.status, 200);
      assert.deepEqual(Object.keys(res.json), ['connections', 'notifications', 'redis', 'queue', 'ack']);
      assert.deepEqual(res.json.connections, { total_connections: 3, websocket: 2, sse: 1, unique_users: 2, channels: 3 });
      assert.deepEqual(res.json.notifications, {
        total_sent: 8,
        total_delivered: 15,
        total_failed: 0,
        total_queued: 0,
        user_notifications: 5,
        broadcast_notifications: 1,
        channel_notifications: 2,
      });
      assert.equal(res.json.redis.status, 'disabled');
      assert.equal(res.json.queue.enabled, false);
      assert.equal(res.json.ack.enabled, false);
    }
    const text = (await metrics()).text;
    assert.match(text, /^ara_messages_sent_total\{target="user"\} 4$/m);
    assert.match(text, /^ara_messages_sent_total\{target="users"\} 1$/m);
    assert.match(text, /^ara_messages_sent_total\{target="broadcast"\} 1$/m);
    assert.match(text, /^ara_messages_sent_total\{target="channel"\} 1$/m);
    assert.match(text, /^ara_messages_sent_total\{target="channels"\} 1$/m);
    assert.match(text, /^ara_messages_delivered_total 15$/m);
    assert.match(text, /^ara_messages_failed_total 0$/m);
  });

  test('/health hides counts without a valid key and shows them with one', async () => {
    for (const key of ['', 'wrong-key']) {
      const res = await node.api('GET', '/health', undefined, { 'x-api-key': key });
      assert.equal(res.status, 200);
      assert.equal(res.json.status, 'healthy');
      assert.equal(typeof res.json.version, 'string');
      assert.equal(Number.isInteger(res.json.uptime_seconds), true);
      assert.deepEqual(res.json.redis, { status: 'disabled', connected: false });
      assert.deepEqual(res.json.queue, { enabled: false, backend: 'memory' });
      assert.equal('connections' in res.json, false);
    }
    const keyed = await node.api('GET', '/health');
    assert.equal(keyed.status, 200);
    assert.deepEqual(keyed.json.connections, { total: 3, unique_users: 2, channels: 3 });
  });

  test('/health/live and /health/ready answer 200 without a key', async () => {
    const live = await node.api('GET', '/health/live', undefined, { 'x-api-key': '' });
    assert.equal(live.status, 200);
    assert.deepEqual(live.json, { status: 'alive' });
    const ready = await node.api('GET', '/health/ready', undefined, { 'x-api-key': '' });
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.json, { status: 'ready' });
  });

  test('/metrics requires the bearer token when METRICS_TOKEN is set', async () => {
    for (const authorization of [undefined, 'Bearer wrong-token', `Basic ${METRICS_TOKEN}`, `Bearer ${METRICS_TOKEN}x`]) {
      const headers: Record<string, string> = { 'x-api-key': TEST_API_KEY };
      if (authorization !== undefined) headers.authorization = authorization;
      assertEnvelope(await node.api('GET', '/metrics', undefined, headers), 401, 'UNAUTHORIZED', 'Metrics require the bearer token');
    }
    const res = await metrics();
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(res.text, /^ara_connections_total 3$/m);
    assert.match(res.text, /^ara_users_connected 2$/m);
    assert.match(res.text, /^ara_channels_active 3$/m);
    assert.match(res.text, /^ara_ws_connections_opened_total 3$/m);
    assert.match(res.text, /^ara_http_requests_total\{method="GET",route="\/health\/live",status="200"\} 1$/m);
    assert.match(res.text, /^ara_http_requests_total\{method="GET",route="\/metrics",status="401"\} \d+$/m);
    assert.match(res.text, /^process_cpu_user_seconds_total /m);
  });
});
