import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

describe('HTTP rate limit (SPEC §1 RATELIMIT_HTTP_*, §6)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({
      RATELIMIT_ENABLED: 'true',
      RATELIMIT_HTTP_REQUESTS_PER_SECOND: '1',
      RATELIMIT_HTTP_BURST_SIZE: '5',
    });
  });
  after(() => node.stop());

  test('lets the burst through with exact headers, then answers 429 with Retry-After', async () => {
    const statuses: number[] = [];
    const remaining: string[] = [];
    for (let i = 0; i < 6; i++) {
      const response = await node.api('GET', '/api/v1/channels');
      statuses.push(response.status);
      remaining.push(response.headers.get('x-ratelimit-remaining')!);
      assert.equal(response.headers.get('x-ratelimit-limit'), '5');
      const reset = Number(response.headers.get('x-ratelimit-reset'));
      assert.ok(reset >= Math.floor(Date.now() / 1000) && reset <= Math.ceil(Date.now() / 1000) + 6, `reset ${reset}`);
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429]);
    assert.deepEqual(remaining, ['4', '3', '2', '1', '0', '0']);
    const limited = await node.api('GET', '/api/v1/channels');
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('retry-after'), '1');
    assert.equal(limited.json.error.code, 'RATE_LIMITED');
  });

  test('limits requests with wrong keys per client address, not per key', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const response = await node.api('GET', '/api/v1/channels', undefined, { 'x-api-key': `bogus-key-${i}` });
      statuses.push(response.status);
    }
    assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429]);
  });

  test('does not limit /health or /metrics', async () => {
    for (let i = 0; i < 8; i++) assert.equal((await node.api('GET', '/health')).status, 200);
  });
});

describe('realtime connect rate per client address (SPEC §4, §5)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({ RATELIMIT_ENABLED: 'true', RATELIMIT_WS_CONNECTIONS_PER_MINUTE: '3' });
  });
  after(() => node.stop());

  test('refuses the connection after the allowance with 429 RATE_LIMITED and Retry-After, WS and SSE alike', async () => {
    const token = await node.token('alice');
    const clients = [
      await TestWs.open(node.wsUrl(`?token=${token}`)),
      await TestWs.open(node.wsUrl(`?token=${token}`)),
    ];
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${token}`);
    const wsRefusal = (await TestWs.connect(node.wsUrl(`?token=${token}`)).then(
      () => assert.fail('fourth connect was accepted'),
      (error: HandshakeRefusal) => error,
    )) as HandshakeRefusal;
    assert.equal(wsRefusal.status, 429);
    assert.equal(wsRefusal.json.error.code, 'RATE_LIMITED');
    assert.equal(wsRefusal.headers['retry-after'], '20');
    const sseRefusal = (await TestSse.connect(`${node.httpUrl}/sse?token=${token}`).then(
      () => assert.fail('SSE connect was accepted'),
      (error: HandshakeRefusal) => error,
    )) as HandshakeRefusal;
    assert.equal(sseRefusal.status, 429);
    assert.equal(sseRefusal.json.error.code, 'RATE_LIMITED');
    for (const client of clients) await client.close();
    sse.close();
  });
});

describe('inbound WebSocket message rate (SPEC §4)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({ RATELIMIT_ENABLED: 'true', RATELIMIT_WS_MESSAGES_PER_SECOND: '5' });
  });
  after(() => node.stop());

  test('drops each excess message with one RATE_LIMITED error, and closes 1008 after three seconds over', async () => {
    const client = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
    // Align to the start of a second so a burst stays within one window.
    await new Promise((resolve) => setTimeout(resolve, 1000 - (Date.now() % 1000) + 20));
    for (let i = 0; i < 8; i++) client.send({ type: 'Ping' });
    await new Promise((resolve) => setTimeout(resolve, 300));
    const replies = client.messages.filter((m) => m.type === 'pong' || m.type === 'error');
    assert.equal(replies.filter((m) => m.type === 'pong').length, 5);
    const errors = replies.filter((m) => m.type === 'error');
    assert.equal(errors.length, 3);
    assert.deepEqual(new Set(errors.map((m) => m.code)), new Set(['RATE_LIMITED']));
    // Two more seconds over the limit: the third closes the connection.
    for (let second = 0; second < 2; second++) {
      await new Promise((resolve) => setTimeout(resolve, 1000 - (Date.now() % 1000) + 20));
      for (let i = 0; i < 8; i++) client.send({ type: 'Ping' });
    }
    const closed = await client.closed;
    assert.equal(closed.code, 1008);
  });
});
