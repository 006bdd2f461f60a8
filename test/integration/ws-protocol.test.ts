/**
 * The realtime protocols end to end against a real node: every WebSocket
 * client → server message and server → client message of SPEC §4 with its
 * exact reply, heartbeats and the idle timeout, the connection and
 * subscription caps, and the SSE protocol of SPEC §5.
 *
 * (Priority ordering of the backlog, SPEC §7, is covered by
 * test/unit/connection.test.ts: it cannot be observed reliably through a
 * real socket.)
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { sleep, startTestNode, type TestNode } from '../helpers/node.ts';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * Sends `message`, then a Ping, and returns every reply that arrived before
 * the pong (heartbeats left out). The server handles a connection's frames
 * in order, so these are exactly the replies to `message` when it is
 * handled synchronously (everything but Refresh).
 */
async function exchange(ws: TestWs, message: unknown): Promise<any[]> {
  ws.send(message);
  ws.send({ type: 'Ping' });
  const replies: any[] = [];
  for (;;) {
    const reply = await ws.next();
    if (reply.type === 'pong') return replies;
    if (reply.type !== 'heartbeat') replies.push(reply);
  }
}

/** The next message that is not a heartbeat. */
function nextReply(ws: TestWs, timeoutMs = 3000): Promise<any> {
  return ws.next((m) => m.type !== 'heartbeat', timeoutMs);
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A sample of GET /metrics, e.g. metric(node, 'ara_ws_connections_closed_total', '{reason="idle"}'). */
async function metric(node: TestNode, name: string, labels = ''): Promise<number> {
  const res = await node.api('GET', '/metrics');
  assert.equal(res.status, 200);
  const line = res.text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

function userConnections(node: TestNode, userId: string, tenantId = 'default') {
  return node.node.hub.space(tenantId)?.users.get(userId);
}

function rawSocket(ws: TestWs): Socket {
  return (ws.socket as unknown as { _socket: Socket })._socket;
}

async function refused(attempt: Promise<unknown>): Promise<HandshakeRefusal> {
  try {
    await attempt;
  } catch (error) {
    return error as HandshakeRefusal;
  }
  throw new Error('expected the handshake to be refused');
}

describe('WebSocket client → server messages (SPEC §4)', () => {
  let node: TestNode;
  let ws: TestWs;
  let token: string;

  before(async () => {
    node = await startTestNode();
    token = await node.token('alice');
    ws = await TestWs.connect(node.wsUrl(`?token=${token}`));
  });
  after(async () => {
    await ws.close();
    await node.stop();
  });

  test('greets first with connected: connection_id, user_id, tenant_id, heartbeat_interval', async () => {
    const connected = await ws.next();
    assert.deepEqual(Object.keys(connected), ['type', 'connection_id', 'user_id', 'tenant_id', 'heartbeat_interval']);
    assert.equal(connected.type, 'connected');
    assert.match(connected.connection_id, UUID_V4);
    assert.equal(connected.user_id, 'alice');
    assert.equal(connected.tenant_id, 'default');
    assert.equal(connected.heartbeat_interval, 30);
    const registered = [...userConnections(node, 'alice')!];
    assert.deepEqual(registered.map((c) => c.id), [connected.connection_id]);
  });

  test('answers Ping with exactly {"type":"pong"}', async () => {
    assert.deepEqual(await ws.request({ type: 'Ping' }, 'pong'), { type: 'pong' });
  });

  test('Subscribe answers subscribed with the names and registers the subscription', async () => {
    assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: ['orders'] } }), [
      { type: 'subscribed', payload: ['orders'] },
    ]);
    const subs = await node.api('GET', '/api/v1/users/alice/subscriptions');
    assert.deepEqual(subs.json, { user_id: 'alice', connection_count: 1, subscriptions: ['orders'] });
  });

  test('subscribing again to a subscribed channel succeeds, is listed, and counts once', async () => {
    assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: ['orders'] } }), [
      { type: 'subscribed', payload: ['orders'] },
    ]);
    // Repeated inside one request: every entry succeeds and is echoed as requested.
    assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: ['orders', 'orders'] } }), [
      { type: 'subscribed', payload: ['orders', 'orders'] },
    ]);
    const channel = await node.api('GET', '/api/v1/channels/orders');
    assert.deepEqual(channel.json, { name: 'orders', subscriber_count: 1 });
    const subs = await node.api('GET', '/api/v1/users/alice/subscriptions');
    assert.deepEqual(subs.json.subscriptions, ['orders']);
    const [connection] = userConnections(node, 'alice')!;
    assert.equal(connection!.channels.size, 1);
  });

  test('an empty channel list answers subscribed with [] and no error', async () => {
    assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: [] } }), [
      { type: 'subscribed', payload: [] },
    ]);
  });

  test('a mixed list answers subscribed with the valid names, then one SUBSCRIPTION_ERROR naming each failure', async () => {
    const replies = await exchange(ws, {
      type: 'Subscribe',
      payload: { channels: ['good-1', 'bad:name', 'good.2', '*', 42, 'café'] },
    });
    assert.deepEqual(replies, [
      { type: 'subscribed', payload: ['good-1', 'good.2', 'café'] },
      {
        type: 'error',
        code: 'SUBSCRIPTION_ERROR',
        message: 'Invalid channel name: "bad:name"; Invalid channel name: "*"; Invalid channel name: 42',
      },
    ]);
    const subs = await node.api('GET', '/api/v1/users/alice/subscriptions');
    assert.deepEqual(subs.json.subscriptions, ['café', 'good-1', 'good.2', 'orders']);
  });

  test('a request in which every name fails gets only the SUBSCRIPTION_ERROR', async () => {
    const replies = await exchange(ws, { type: 'Subscribe', payload: { channels: ['a b', '', 'x/y'] } });
    assert.deepEqual(replies, [
      {
        type: 'error',
        code: 'SUBSCRIPTION_ERROR',
        message: 'Invalid channel name: "a b"; Invalid channel name: ""; Invalid channel name: "x/y"',
      },
    ]);
  });

  test('channel names are 1–64 UTF-8 bytes of Unicode letters, digits, "-", "_", "."', async () => {
    const ok64 = 'a'.repeat(64);
    const ascii65 = 'a'.repeat(65);
    const twoByte64 = 'é'.repeat(32); // 32 characters, 64 bytes
    const twoByte65 = `${'é'.repeat(32)}a`; // 33 characters, 65 bytes
    const threeByte63 = '注'.repeat(21); // 63 bytes
    const threeByte66 = '注'.repeat(22); // 22 characters, 66 bytes
    const letters = ['заказы', '注文', 'αβγ.δ_1-2', 'Ünïcödé', '٣٤'];
    const replies = await exchange(ws, {
      type: 'Subscribe',
      payload: { channels: [ok64, ascii65, twoByte64, twoByte65, threeByte63, threeByte66, ...letters, 'emoji🙂'] },
    });
    assert.deepEqual(replies, [
      { type: 'subscribed', payload: [ok64, twoByte64, threeByte63, ...letters] },
      {
        type: 'error',
        code: 'SUBSCRIPTION_ERROR',
        message: [ascii65, twoByte65, threeByte66, 'emoji🙂'].map((n) => `Invalid channel name: "${n}"`).join('; '),
      },
    ]);
    await exchange(ws, { type: 'Unsubscribe', payload: { channels: [ok64, twoByte64, threeByte63, ...letters] } });
  });

  test('Unsubscribe answers unsubscribed with the names and removes the subscriptions', async () => {
    const replies = await exchange(ws, {
      type: 'Unsubscribe',
      payload: { channels: ['good-1', 'good.2', 'never-subscribed'] },
    });
    assert.deepEqual(replies, [{ type: 'unsubscribed', payload: ['good-1', 'good.2', 'never-subscribed'] }]);
    const subs = await node.api('GET', '/api/v1/users/alice/subscriptions');
    assert.deepEqual(subs.json.subscriptions, ['café', 'orders']);
    assert.equal((await node.api('GET', '/api/v1/channels/good-1')).status, 404);
  });

  test('Ack with ACK disabled gets no reply at all', async () => {
    ws.send({ type: 'Ack', payload: { notification_id: '6f1c2a43-1b2d-4c3e-8f4a-5b6c7d8e9f00' } });
    assert.deepEqual((await ws.quietFor(300)).filter((m) => m.type !== 'heartbeat'), []);
    assert.deepEqual(await ws.request({ type: 'Ping' }, 'pong'), { type: 'pong' });
  });

  test('Ack with a notification_id that is not a UUID is INVALID_MESSAGE', async () => {
    assert.deepEqual(await exchange(ws, { type: 'Ack', payload: { notification_id: 'not-a-uuid' } }), [
      { type: 'error', code: 'INVALID_MESSAGE', message: 'Ack needs payload.notification_id as a UUID' },
    ]);
    assert.deepEqual(await exchange(ws, { type: 'Ack', payload: {} }), [
      { type: 'error', code: 'INVALID_MESSAGE', message: 'Ack needs payload.notification_id as a UUID' },
    ]);
  });

  test('Refresh with a fresh token of the same sub answers refreshed with its exp as an ISO string', async () => {
    const fresh = await node.token('alice', {}, { ttlSeconds: 7200 });
    const exp = decodeJwt(fresh).exp!;
    const [connection] = userConnections(node, 'alice')!;
    assert.equal(connection!.expiresAtMs, decodeJwt(token).exp! * 1000);
    ws.send({ type: 'Refresh', payload: { token: fresh } });
    const reply = await nextReply(ws);
    assert.deepEqual(reply, { type: 'refreshed', expires_at: new Date(exp * 1000).toISOString() });
    assert.match(reply.expires_at, ISO_UTC);
    assert.equal(connection!.expiresAtMs, exp * 1000);
  });

  test('Refresh with a token of another sub is INVALID_TOKEN and the old expiry stands', async () => {
    const [connection] = userConnections(node, 'alice')!;
    const before = connection!.expiresAtMs;
    ws.send({ type: 'Refresh', payload: { token: await node.token('bob', {}, { ttlSeconds: 9000 }) } });
    assert.deepEqual(await nextReply(ws), {
      type: 'error',
      code: 'INVALID_TOKEN',
      message: 'Token belongs to another user or tenant',
    });
    assert.equal(connection!.expiresAtMs, before);
  });

  test('Refresh with a garbage or wrongly signed token is INVALID_TOKEN "Invalid token"', async () => {
    const [connection] = userConnections(node, 'alice')!;
    const before = connection!.expiresAtMs;
    ws.send({ type: 'Refresh', payload: { token: 'garbage.not.ajwt' } });
    assert.deepEqual(await nextReply(ws), { type: 'error', code: 'INVALID_TOKEN', message: 'Invalid token' });
    const forged = await node.token('alice', {}, { secret: 'another-secret-0123456789-abcdefghijkl' });
    ws.send({ type: 'Refresh', payload: { token: forged } });
    assert.deepEqual(await nextReply(ws), { type: 'error', code: 'INVALID_TOKEN', message: 'Invalid token' });
    assert.equal(connection!.expiresAtMs, before);
  });

  test('Refresh without a token string is INVALID_MESSAGE', async () => {
    assert.deepEqual(await exchange(ws, { type: 'Refresh', payload: { token: '' } }), [
      { type: 'error', code: 'INVALID_MESSAGE', message: 'Refresh needs payload.token as a string' },
    ]);
  });

  // SPEC §4/§7: Resume replays from history, which exists only with QUEUE_ENABLED
  // (resume itself is tested where the queue is on). Here the queue is off.
  test('Resume with QUEUE_ENABLED off answers INVALID_MESSAGE naming QUEUE_ENABLED', async () => {
    assert.deepEqual(
      await exchange(ws, { type: 'Resume', payload: { since: '6f1c2a43-1b2d-4c3e-8f4a-5b6c7d8e9f00' } }),
      [
        {
          type: 'error',
          code: 'INVALID_MESSAGE',
          message: 'Resume is not available: QUEUE_ENABLED is off on this server',
        },
      ],
    );
  });

  test('Resume whose since is not a notification id is INVALID_MESSAGE', async () => {
    assert.deepEqual(await exchange(ws, { type: 'Resume', payload: { since: 'nope' } }), [
      { type: 'error', code: 'INVALID_MESSAGE', message: 'Resume needs payload.since as a notification id' },
    ]);
  });

  const unknownType = 'unknown message type; expected Subscribe, Unsubscribe, Ping, Ack, Refresh or Resume';
  const malformed: Array<[string, string, string]> = [
    ['invalid JSON', '{"type":"Ping"', 'message is not valid JSON'],
    ['a JSON array', '[{"type":"Ping"}]', 'message must be a JSON object'],
    ['a JSON string', '"Ping"', 'message must be a JSON object'],
    ['an unknown type', '{"type":"Dance"}', unknownType],
    ['a lower-case type', '{"type":"ping"}', unknownType],
    ['a lower-case Subscribe', '{"type":"subscribe","payload":{"channels":["a"]}}', unknownType],
    ['no type', '{"payload":{}}', unknownType],
    ['channels as a string', '{"type":"Subscribe","payload":{"channels":"orders"}}', 'Subscribe needs payload.channels as an array'],
    ['Subscribe without payload', '{"type":"Subscribe"}', 'Subscribe needs payload.channels as an array'],
    ['Unsubscribe with a payload array', '{"type":"Unsubscribe","payload":["a"]}', 'Unsubscribe needs payload.channels as an array'],
  ];
  for (const [what, text, problem] of malformed) {
    test(`${what} is INVALID_MESSAGE and the connection stays open`, async () => {
      assert.deepEqual(await exchange(ws, text), [{ type: 'error', code: 'INVALID_MESSAGE', message: problem }]);
      assert.equal(ws.socket.readyState, ws.socket.OPEN);
    });
  }

  test('a binary frame is UNSUPPORTED_FORMAT and the connection stays open', async () => {
    ws.socket.send(Buffer.from(JSON.stringify({ type: 'Ping' })), { binary: true });
    assert.deepEqual(await nextReply(ws), {
      type: 'error',
      code: 'UNSUPPORTED_FORMAT',
      message: 'Binary messages are not supported',
    });
    assert.deepEqual(await ws.request({ type: 'Ping' }, 'pong'), { type: 'pong' });
    assert.equal(ws.socket.readyState, ws.socket.OPEN);
  });

  test('a channel send reaches only the channel subscribers', async () => {
    const bob = await TestWs.open(node.wsUrl(`?token=${await node.token('bob')}`));
    await exchange(bob, { type: 'Subscribe', payload: { channels: ['other'] } });
    const sent = await node.api('POST', '/api/v1/notifications/channel', {
      channel: 'orders',
      event_type: 'order.created',
      payload: { n: 1 },
    });
    assert.equal(sent.status, 200);
    assert.equal(sent.json.delivered_to, 1);
    const received = await ws.nextOfType('notification');
    assert.equal(received.id, sent.json.notification_id);
    assert.deepEqual(received.payload, { n: 1 });
    assert.deepEqual((await bob.quietFor(200)).filter((m) => m.type === 'notification'), []);
    await bob.close();
  });
});

describe('Refresh with tenancy on (SPEC §3, §4)', () => {
  test('a token of the same sub in another tenant is INVALID_TOKEN; the same tenant is refreshed', async () => {
    const node = await startTestNode({ TENANT_ENABLED: 'true' });
    try {
      const ws = await TestWs.open(node.wsUrl(`?token=${await node.token('alice', { tenant_id: 't-a' })}`));
      ws.send({ type: 'Refresh', payload: { token: await node.token('alice', { tenant_id: 't-b' }, { ttlSeconds: 9000 }) } });
      assert.deepEqual(await nextReply(ws), {
        type: 'error',
        code: 'INVALID_TOKEN',
        message: 'Token belongs to another user or tenant',
      });
      // No tenant_id claim means tenant "default": another tenant too.
      ws.send({ type: 'Refresh', payload: { token: await node.token('alice', {}, { ttlSeconds: 9000 }) } });
      assert.equal((await nextReply(ws)).code, 'INVALID_TOKEN');
      const same = await node.token('alice', { tenant_id: 't-a' }, { ttlSeconds: 9000 });
      ws.send({ type: 'Refresh', payload: { token: same } });
      assert.deepEqual(await nextReply(ws), {
        type: 'refreshed',
        expires_at: new Date(decodeJwt(same).exp! * 1000).toISOString(),
      });
      await ws.close();
    } finally {
      await node.stop();
    }
  });
});

describe('WebSocket heartbeats and idle timeout, SSE stream (SPEC §4, §5)', () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode({
      WEBSOCKET_HEARTBEAT_INTERVAL: '0.2',
      WEBSOCKET_CONNECTION_TIMEOUT: '1',
      WEBSOCKET_CLEANUP_INTERVAL: '0.2',
    });
  });
  after(() => node.stop());

  test('sends {"type":"heartbeat"} and a protocol ping every heartbeat interval', async () => {
    const ws = await TestWs.connect(node.wsUrl(`?token=${await node.token('hb')}`));
    let pings = 0;
    ws.socket.on('ping', () => pings++);
    const connected = await ws.nextOfType('connected');
    assert.equal(connected.heartbeat_interval, 0.2);
    assert.deepEqual(await ws.nextOfType('heartbeat', 2000), { type: 'heartbeat' });
    assert.deepEqual(await ws.nextOfType('heartbeat', 2000), { type: 'heartbeat' });
    await waitFor(() => pings >= 2, 2000, 'two protocol pings');
    await ws.close();
  });

  test('closes a client that sends nothing, not even pongs, with 4002, while an answering client stays', async () => {
    const idleBefore = await metric(node, 'ara_ws_connections_closed_total', '{reason="idle"}');
    const silent = await TestWs.open(node.wsUrl(`?token=${await node.token('silent')}`));
    const active = await TestWs.open(node.wsUrl(`?token=${await node.token('active')}`));
    const startedAt = Date.now();
    const countBefore = node.node.hub.connectionCount;
    rawSocket(silent).pause(); // reads nothing, so it never answers a ping

    await waitFor(() => userConnections(node, 'silent') === undefined, 4000, 'the silent client to be reaped');
    // Its last pong may precede the pause by up to one heartbeat interval (0.2 s).
    assert.ok(Date.now() - startedAt >= 750, 'not reaped before WEBSOCKET_CONNECTION_TIMEOUT');
    assert.equal(node.node.hub.connectionCount, countBefore - 1);
    assert.equal(await metric(node, 'ara_ws_connections_closed_total', '{reason="idle"}'), idleBefore + 1);

    // The answering client outlives the timeout.
    await sleep(Math.max(0, startedAt + 1600 - Date.now()));
    assert.equal(userConnections(node, 'active')?.size, 1);
    assert.deepEqual(await active.request({ type: 'Ping' }, 'pong'), { type: 'pong' });
    assert.equal(active.socket.readyState, active.socket.OPEN);

    rawSocket(silent).resume();
    assert.deepEqual(await silent.closed, { code: 4002, reason: 'idle timeout' });
    assert.equal(await metric(node, 'ara_ws_connections_closed_total', '{reason="idle"}'), idleBefore + 1);
    await active.close();
  });

  test('SSE answers with the event-stream headers and a connected event', async () => {
    const sse = await TestSse.connect(`${node.httpUrl}/sse?token=${await node.token('sse-user')}`);
    assert.equal(sse.response.statusCode, 200);
    // The charset parameter is allowed by the EventSource spec (UTF-8 is its only encoding).
    assert.equal(sse.response.headers['content-type'], 'text/event-stream; charset=utf-8');
    assert.equal(sse.response.headers['cache-control'], 'no-cache, no-transform');
    assert.equal(sse.response.headers['x-accel-buffering'], 'no');
    const connected = await sse.nextEvent('connected');
    assert.equal(sse.events[0], connected);
    assert.equal(connected.id, undefined);
    // SPEC §5 lists type, connection_id, user_id, tenant_id; heartbeat_interval is sent too (as on WS, §4).
    assert.deepEqual(Object.keys(connected.data), ['type', 'connection_id', 'user_id', 'tenant_id', 'heartbeat_interval']);
    assert.equal(connected.data.type, 'connected');
    assert.match(connected.data.connection_id, UUID_V4);
    assert.equal(connected.data.user_id, 'sse-user');
    assert.equal(connected.data.tenant_id, 'default');
    assert.equal(connected.data.heartbeat_interval, 0.2);
    sse.close();
  });

  test('SSE notification events carry id: <notification id> and the exact WebSocket JSON', async () => {
    const token = await node.token('twin');
    const ws = await TestWs.open(node.wsUrl(`?token=${token}`));
    const wsRaw: string[] = [];
    ws.socket.on('message', (data) => wsRaw.push(data.toString()));
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${token}`);
    let sseRaw = '';
    sse.response.on('data', (chunk: string) => (sseRaw += chunk));
    const sent = await node.api('POST', '/api/v1/notifications/send', {
      target_user_id: 'twin',
      event_type: 'order.shipped',
      payload: { z: 1, a: [true, null, 'ü'] },
      priority: 'High',
      ttl: 60,
    });
    assert.equal(sent.json.delivered_to, 2);
    const event = await sse.nextEvent('notification');
    const viaWs = await ws.nextOfType('notification');
    assert.equal(event.id, sent.json.notification_id);
    assert.deepEqual(event.data, viaWs);
    const wsText = wsRaw.find((text) => text.includes(sent.json.notification_id))!;
    assert.ok(sseRaw.includes(`id: ${sent.json.notification_id}\nevent: notification\ndata: ${wsText}\n\n`));
    assert.deepEqual(Object.keys(viaWs.payload), ['z', 'a']);
    await ws.close();
    sse.close();
  });

  test('SSE sends heartbeat events {"type":"heartbeat","timestamp":<ISO>} every heartbeat interval', async () => {
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${await node.token('sse-hb')}`);
    const first = await sse.nextEvent('heartbeat', 2000);
    const second = await sse.nextEvent('heartbeat', 2000);
    for (const heartbeat of [first, second]) {
      assert.deepEqual(Object.keys(heartbeat.data), ['type', 'timestamp']);
      assert.equal(heartbeat.data.type, 'heartbeat');
      assert.match(heartbeat.data.timestamp, ISO_UTC);
      assert.equal(new Date(heartbeat.data.timestamp).toISOString(), heartbeat.data.timestamp);
      assert.equal(heartbeat.id, undefined);
    }
    assert.ok(Date.parse(second.data.timestamp) > Date.parse(first.data.timestamp));
    sse.close();
  });

  test('SSE streams are never closed for inactivity (past WEBSOCKET_CONNECTION_TIMEOUT)', async () => {
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${await node.token('sse-quiet')}`);
    let ended = false;
    void sse.ended.then(() => (ended = true));
    await sleep(1700); // timeout 1 s + sweeps every 0.2 s
    assert.equal(ended, false);
    assert.equal(userConnections(node, 'sse-quiet')?.size, 1);
    const sent = await node.api('POST', '/api/v1/notifications/send', {
      target_user_id: 'sse-quiet',
      event_type: 'still.here',
      payload: {},
    });
    assert.equal(sent.json.delivered_to, 1);
    assert.equal((await sse.nextEvent('notification')).id, sent.json.notification_id);
    sse.close();
  });

  test('SSE ?channels=a,b subscribes at connect', async () => {
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${await node.token('sse-ch')}&channels=alpha,beta`);
    const subs = await node.api('GET', '/api/v1/users/sse-ch/subscriptions');
    assert.deepEqual(subs.json, { user_id: 'sse-ch', connection_count: 1, subscriptions: ['alpha', 'beta'] });
    const sent = await node.api('POST', '/api/v1/notifications/channel', {
      channel: 'beta',
      event_type: 'beta.news',
      payload: { b: true },
    });
    assert.equal(sent.json.delivered_to, 1);
    const event = await sse.nextEvent('notification');
    assert.equal(event.id, sent.json.notification_id);
    assert.deepEqual(event.data.payload, { b: true });
    sse.close();
  });

  test('SSE with an invalid ?channels= name is 400 VALIDATION_ERROR before any stream', async () => {
    const refusal = await refused(
      TestSse.connect(`${node.httpUrl}/sse?token=${await node.token('sse-bad')}&channels=good,bad:name`),
    );
    assert.equal(refusal.status, 400);
    assert.match(String(refusal.headers['content-type']), /^application\/json/);
    assert.deepEqual(refusal.json, {
      error: {
        code: 'VALIDATION_ERROR',
        message: 'Invalid channels parameter',
        details: [{ path: 'channels', message: 'Invalid channel name: "bad:name"' }],
      },
    });
    assert.equal(userConnections(node, 'sse-bad'), undefined);
  });

  test('SSE without a token is 401 "Missing authentication token"', async () => {
    const refusal = await refused(TestSse.connect(`${node.httpUrl}/sse`));
    assert.equal(refusal.status, 401);
    assert.deepEqual(refusal.json, { error: { code: 'UNAUTHORIZED', message: 'Missing authentication token' } });
  });

  test('SSE with an invalid token is 401 "Invalid token"', async () => {
    for (const token of ['garbage', await node.token('x', {}, { secret: 'another-secret-0123456789-abcdefghijkl' })]) {
      const refusal = await refused(TestSse.connect(`${node.httpUrl}/sse?token=${token}`));
      assert.equal(refusal.status, 401);
      assert.deepEqual(refusal.json, { error: { code: 'UNAUTHORIZED', message: 'Invalid token' } });
    }
  });

  test('SSE user data containing CR, LF and "\\n\\nevent: x" arrives intact as one event, with no raw CR/LF in the frame', async () => {
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${await node.token('sse-crlf')}`);
    let raw = '';
    sse.response.on('data', (chunk: string) => (raw += chunk));
    const payload = {
      text: 'line1\r\nline2\rline3\n',
      inject: '\n\nevent: x\ndata: {"type":"evil"}\n\n',
      'key\r\nid: 1': 'id: 2\r\n\r\n',
    };
    const sent = await node.api('POST', '/api/v1/notifications/send', {
      target_user_id: 'sse-crlf',
      event_type: 'crlf\r\nevent: x',
      payload,
      correlation_id: 'c\nid: 9',
    });
    assert.equal(sent.status, 200);
    const event = await sse.nextEvent('notification');
    assert.equal(event.id, sent.json.notification_id);
    assert.deepEqual(event.data.payload, payload);
    assert.equal(event.data.event_type, 'crlf\r\nevent: x');
    assert.equal(event.data.metadata.correlation_id, 'c\nid: 9');
    await sse.nextEvent('heartbeat', 2000); // a later event: the stream is still well framed
    assert.deepEqual(sse.events.filter((e) => e.event !== 'heartbeat').map((e) => e.event), ['connected', 'notification']);
    assert.equal(raw.includes('\r'), false);
    const frame = raw.slice(raw.indexOf(`id: ${sent.json.notification_id}`));
    const block = frame.slice(0, frame.indexOf('\n\n'));
    const lines = block.split('\n');
    assert.equal(lines.length, 3);
    assert.equal(lines[0], `id: ${sent.json.notification_id}`);
    assert.equal(lines[1], 'event: notification');
    assert.deepEqual(JSON.parse(lines[2]!.slice('data: '.length)).payload, payload);
    sse.close();
  });
});

describe('connection caps (SPEC §1, §3, §4, §5)', () => {
  test('the node cap answers the next WS with CONNECTION_LIMIT naming the cap and closes 1013; SSE gets 503', async () => {
    const node = await startTestNode({ WEBSOCKET_MAX_CONNECTIONS: '2' });
    try {
      const a = await TestWs.open(node.wsUrl(`?token=${await node.token('u1')}`));
      const b = await TestWs.open(node.wsUrl(`?token=${await node.token('u2')}`));
      const third = await TestWs.connect(node.wsUrl(`?token=${await node.token('u3')}`));
      assert.deepEqual(await third.closed, { code: 1013, reason: 'connection limit' });
      assert.deepEqual(third.messages, [
        { type: 'error', code: 'CONNECTION_LIMIT', message: 'Node connection limit reached (2/2)' },
      ]);
      assert.equal(node.node.hub.connectionCount, 2);

      const sse = await refused(TestSse.connect(`${node.httpUrl}/sse?token=${await node.token('u4')}`));
      assert.equal(sse.status, 503);
      assert.deepEqual(sse.json, {
        error: { code: 'CONNECTION_LIMIT', message: 'Node connection limit reached (2/2)' },
      });

      // A freed slot can be taken again.
      await a.close();
      await waitFor(() => node.node.hub.connectionCount === 1, 2000, 'the closed connection to be unregistered');
      const again = await TestWs.open(node.wsUrl(`?token=${await node.token('u3')}`));
      assert.equal(node.node.hub.connectionCount, 2);
      await again.close();
      await b.close();
    } finally {
      await node.stop();
    }
  });

  test('the per-user cap refuses the third connection of a user with CONNECTION_LIMIT and 1008; other users connect; SSE gets 429', async () => {
    const node = await startTestNode({ WEBSOCKET_MAX_CONNECTIONS_PER_USER: '2' });
    try {
      const alice = await node.token('alice');
      const a1 = await TestWs.open(node.wsUrl(`?token=${alice}`));
      const a2 = await TestWs.open(node.wsUrl(`?token=${alice}`));
      const a3 = await TestWs.connect(node.wsUrl(`?token=${alice}`));
      assert.deepEqual(await a3.closed, { code: 1008, reason: 'connection limit' });
      assert.deepEqual(a3.messages, [
        { type: 'error', code: 'CONNECTION_LIMIT', message: 'User connection limit reached (2/2)' },
      ]);
      const bob = await TestWs.open(node.wsUrl(`?token=${await node.token('bob')}`));
      assert.equal(userConnections(node, 'alice')?.size, 2);
      assert.equal(userConnections(node, 'bob')?.size, 1);

      const sse = await refused(TestSse.connect(`${node.httpUrl}/sse?token=${alice}`));
      assert.equal(sse.status, 429);
      assert.deepEqual(sse.json, {
        error: { code: 'CONNECTION_LIMIT', message: 'User connection limit reached (2/2)' },
      });
      await Promise.all([a1.close(), a2.close(), bob.close()]);
    } finally {
      await node.stop();
    }
  });

  test('the tenant cap refuses the third connection in that tenant with 1008 while another tenant connects', async () => {
    const node = await startTestNode({ TENANT_ENABLED: 'true', TENANT_DEFAULT_MAX_CONNECTIONS: '2' });
    try {
      const alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice', { tenant_id: 't-a' })}`));
      const bob = await TestWs.open(node.wsUrl(`?token=${await node.token('bob', { tenant_id: 't-a' })}`));
      assert.equal(alice.messages[0].tenant_id, 't-a');
      const extraToken = await node.token('extra', { tenant_id: 't-a' });
      const extra = await TestWs.connect(node.wsUrl(`?token=${extraToken}`));
      assert.deepEqual(await extra.closed, { code: 1008, reason: 'connection limit' });
      assert.deepEqual(extra.messages, [
        { type: 'error', code: 'CONNECTION_LIMIT', message: 'Tenant connection limit reached (2/2)' },
      ]);
      const carol = await TestWs.open(node.wsUrl(`?token=${await node.token('carol', { tenant_id: 't-b' })}`));
      assert.equal(carol.messages[0].tenant_id, 't-b');
      assert.equal(node.node.hub.space('t-a')?.connections.size, 2);
      assert.equal(node.node.hub.space('t-b')?.connections.size, 1);

      const sse = await refused(TestSse.connect(`${node.httpUrl}/sse?token=${extraToken}`));
      assert.equal(sse.status, 429);
      assert.deepEqual(sse.json, {
        error: { code: 'CONNECTION_LIMIT', message: 'Tenant connection limit reached (2/2)' },
      });
      await Promise.all([alice.close(), bob.close(), carol.close()]);
    } finally {
      await node.stop();
    }
  });

  test('the subscription cap fails the 4th channel with SUBSCRIPTION_ERROR while re-subscribing an existing one succeeds', async () => {
    const node = await startTestNode({ WEBSOCKET_MAX_SUBSCRIPTIONS_PER_CONNECTION: '3' });
    try {
      const ws = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
      assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: ['a', 'b', 'a', 'c'] } }), [
        { type: 'subscribed', payload: ['a', 'b', 'a', 'c'] },
      ]);
      assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: ['d'] } }), [
        { type: 'error', code: 'SUBSCRIPTION_ERROR', message: 'Subscription limit reached (3/3): "d"' },
      ]);
      assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: ['b'] } }), [
        { type: 'subscribed', payload: ['b'] },
      ]);
      assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: ['c', 'e', 'a'] } }), [
        { type: 'subscribed', payload: ['c', 'a'] },
        { type: 'error', code: 'SUBSCRIPTION_ERROR', message: 'Subscription limit reached (3/3): "e"' },
      ]);
      const subs = await node.api('GET', '/api/v1/users/alice/subscriptions');
      assert.deepEqual(subs.json.subscriptions, ['a', 'b', 'c']);
      // Unsubscribing frees a slot.
      await exchange(ws, { type: 'Unsubscribe', payload: { channels: ['a'] } });
      assert.deepEqual(await exchange(ws, { type: 'Subscribe', payload: { channels: ['d'] } }), [
        { type: 'subscribed', payload: ['d'] },
      ]);
      // SSE ?channels= beyond the cap is refused before the stream.
      const sse = await refused(TestSse.connect(`${node.httpUrl}/sse?token=${await node.token('bob')}&channels=a,b,c,d`));
      assert.equal(sse.status, 400);
      assert.deepEqual(sse.json, {
        error: {
          code: 'VALIDATION_ERROR',
          message: 'Invalid channels parameter',
          details: [{ path: 'channels', message: 'Subscription limit exceeded (4/3)' }],
        },
      });
      await ws.close();
    } finally {
      await node.stop();
    }
  });
});
