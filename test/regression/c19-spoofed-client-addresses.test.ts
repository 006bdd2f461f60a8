/**
 * Case C19: a client must not escape the per-address limiter by sending
 * its own X-Forwarded-For; behind a trusted proxy, the right-most address
 * that proxy appended is the client (SPEC §1 TRUST_PROXY).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestNode, type TestNode } from '../helpers/node.ts';

const LIMITS = {
  RATELIMIT_ENABLED: 'true',
  RATELIMIT_HTTP_REQUESTS_PER_SECOND: '1',
  RATELIMIT_HTTP_BURST_SIZE: '3',
  RATELIMIT_WS_CONNECTIONS_PER_MINUTE: '2',
};

async function statuses(node: TestNode, forwardedFor: (i: number) => string, count: number, path = '/api/v1/channels') {
  const result: number[] = [];
  for (let i = 0; i < count; i++) {
    const response = await node.api('GET', path, undefined, { 'x-api-key': 'wrong-key', 'x-forwarded-for': forwardedFor(i) });
    result.push(response.status);
  }
  return result;
}

describe('C19 spoofed client addresses, direct to the service', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode(LIMITS);
  });
  after(() => node.stop());

  test('keys the HTTP limiter on the socket peer whatever X-Forwarded-For says', async () => {
    assert.deepEqual(await statuses(node, (i) => `203.0.113.${i}`, 5), [401, 401, 401, 429, 429]);
  });

  test('keys the connect limiter on the socket peer whatever X-Forwarded-For says', async () => {
    const token = await node.token('alice');
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) {
      const response = await fetch(`${node.httpUrl}/sse?token=${token}`, {
        headers: { 'x-forwarded-for': `198.51.100.${i}` },
      });
      codes.push(response.status);
      await response.body?.cancel();
    }
    assert.deepEqual(codes, [200, 200, 429, 429]);
  });
});

describe('C19 spoofed client addresses, behind a trusted proxy', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({ ...LIMITS, TRUST_PROXY: '127.0.0.1' });
  });
  after(() => node.stop());

  test('keys on the right-most address the proxy appended; client-supplied left-most values change nothing', async () => {
    assert.deepEqual(await statuses(node, (i) => `6.6.6.${i}, 10.0.0.5`, 5), [401, 401, 401, 429, 429]);
  });

  test('gives another right-most client its own bucket', async () => {
    assert.deepEqual(await statuses(node, () => '6.6.6.6, 10.0.0.6', 2), [401, 401]);
  });
});
