/**
 * C06 Cross-site WebSocket hijacking (cases/README.md; SPEC §2 "Origin").
 *
 * CORS_ORIGINS=https://app.example.com. A WS upgrade or SSE request with a
 * valid token but an Origin outside the list is refused with 403
 * ORIGIN_NOT_ALLOWED before any upgrade (no 101, nothing registered).
 * `https://APP.example.com` (the same origin, as URLs compare hosts) and
 * no Origin at all are accepted: 101 on /ws, a 200 stream on /sse.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { sleep, startTestNode, type TestNode } from '../helpers/node.ts';

const ALLOWED = 'https://app.example.com';
const FOREIGN_ORIGINS = [
  'https://evil.example',
  'null',
  'file://',
  'https://app.example.com.evil.example',
  'https://evilapp.example.com',
  'http://app.example.com',
  'https://app.example.com:8443',
];
const REFUSED = { error: { code: 'ORIGIN_NOT_ALLOWED', message: 'Origin not allowed' } };

async function refusalOf(open: () => Promise<TestWs | TestSse>): Promise<HandshakeRefusal> {
  try {
    const client = await open();
    if (client instanceof TestWs) await client.close();
    else client.close();
  } catch (error) {
    return error as HandshakeRefusal;
  }
  throw new Error('the connection was accepted');
}

describe('C06 foreign origins are refused on /ws and /sse before any upgrade (SPEC §2)', () => {
  let node: TestNode;
  let token: string;
  before(async () => {
    node = await startTestNode({ CORS_ORIGINS: ALLOWED });
    token = await node.token('alice');
  });
  after(() => node.stop());

  const openedCount = async () => (await node.node.metrics.wsOpened.get()).values[0]?.value ?? 0;

  for (const origin of FOREIGN_ORIGINS) {
    test(`/ws with Origin ${origin} is 403 ORIGIN_NOT_ALLOWED, no 101`, async () => {
      const before = await openedCount();
      const refusal = await refusalOf(() => TestWs.open(node.wsUrl(`?token=${token}`), { origin }));
      assert.equal(refusal.status, 403);
      assert.notEqual(refusal.status, 101);
      assert.match(String(refusal.headers['content-type']), /^application\/json/);
      assert.deepEqual(refusal.json, REFUSED);
      assert.equal(refusal.headers['sec-websocket-accept'], undefined);
      assert.equal(await openedCount(), before);
      assert.equal(node.node.hub.connectionCount, 0);
    });

    test(`/sse with Origin ${origin} is 403 ORIGIN_NOT_ALLOWED, no stream`, async () => {
      const refusal = await refusalOf(() => TestSse.open(`${node.httpUrl}/sse?token=${token}`, { origin }));
      assert.equal(refusal.status, 403);
      assert.match(String(refusal.headers['content-type']), /^application\/json/);
      assert.deepEqual(refusal.json, REFUSED);
      assert.equal(node.node.hub.connectionCount, 0);
    });
  }

  test('a foreign origin is refused even with the token in Authorization instead of the URL', async () => {
    const headers = { authorization: `Bearer ${token}` };
    const ws = await refusalOf(() => TestWs.open(node.wsUrl(), { origin: 'https://evil.example', headers }));
    assert.equal(ws.status, 403);
    assert.deepEqual(ws.json, REFUSED);
    const sse = await refusalOf(() => TestSse.open(`${node.httpUrl}/sse`, { ...headers, origin: 'https://evil.example' }));
    assert.equal(sse.status, 403);
    assert.deepEqual(sse.json, REFUSED);
  });

  for (const origin of [ALLOWED, 'https://APP.example.com', undefined]) {
    const label = origin === undefined ? 'no Origin' : `Origin ${origin}`;

    test(`/ws with ${label} upgrades (101) and is registered`, async () => {
      const options = origin === undefined ? {} : { origin };
      const ws = await TestWs.connect(node.wsUrl(`?token=${token}`), options);
      const connected = await ws.nextOfType('connected');
      assert.equal(connected.user_id, 'alice');
      assert.equal(node.node.hub.connectionCount, 1);
      await ws.close();
      await waitForNoConnections(node);
    });

    test(`/sse with ${label} opens a 200 event stream`, async () => {
      const headers: Record<string, string> = origin === undefined ? {} : { origin };
      const sse = await TestSse.open(`${node.httpUrl}/sse?token=${token}`, headers);
      assert.equal(sse.response.statusCode, 200);
      assert.match(String(sse.response.headers['content-type']), /^text\/event-stream/);
      assert.equal(sse.events[0]!.data.user_id, 'alice');
      assert.equal(node.node.hub.connectionCount, 1);
      sse.close();
      await waitForNoConnections(node);
    });
  }

  test('an allowed origin still needs a valid token', async () => {
    const ws = await refusalOf(() => TestWs.open(node.wsUrl('?token=not-a-token'), { origin: ALLOWED }));
    assert.equal(ws.status, 401);
    const sse = await refusalOf(() => TestSse.open(`${node.httpUrl}/sse`, { origin: ALLOWED }));
    assert.equal(sse.status, 401);
  });
});

describe('C06 without CORS_ORIGINS in development any origin may connect (SPEC §1)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode();
  });
  after(() => node.stop());

  test('/ws and /sse accept a foreign Origin when no list is configured', async () => {
    const token = await node.token('alice');
    const ws = await TestWs.open(node.wsUrl(`?token=${token}`), { origin: 'https://evil.example' });
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${token}`, { origin: 'https://evil.example' });
    assert.equal(node.node.hub.connectionCount, 2);
    await ws.close();
    sse.close();
  });
});

async function waitForNoConnections(node: TestNode): Promise<void> {
  const deadline = Date.now() + 2000;
  while (node.node.hub.connectionCount > 0) {
    if (Date.now() > deadline) throw new Error('connections were not unregistered');
    await sleep(10);
  }
}
