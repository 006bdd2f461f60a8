import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { deleteRedisKeys } from '../helpers/store-backends.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

describe('RATELIMIT_BACKEND=redis: buckets shared by nodes (SPEC §1)', () => {
  const prefix = `ara-t-rl-${randomBytes(4).toString('hex')}`;
  let a: TestNode;
  let b: TestNode;
  before(async () => {
    const env = {
      REDIS_URL: 'redis://127.0.0.1:6379',
      REDIS_KEY_PREFIX: prefix,
      REDIS_TRIGGER_ENABLED: 'false',
      RATELIMIT_ENABLED: 'true',
      RATELIMIT_BACKEND: 'redis',
      RATELIMIT_HTTP_REQUESTS_PER_SECOND: '1',
      RATELIMIT_HTTP_BURST_SIZE: '6',
      RATELIMIT_WS_CONNECTIONS_PER_MINUTE: '2',
    };
    a = await startTestNode(env);
    b = await startTestNode(env);
  });
  after(async () => {
    await a.stop();
    await b.stop();
    await deleteRedisKeys([prefix]);
  });

  test('one caller spending through two nodes draws from one bucket', async () => {
    const statuses: number[] = [];
    const remaining: string[] = [];
    for (let i = 0; i < 8; i++) {
      const response = await (i % 2 === 0 ? a : b).api('GET', '/api/v1/channels');
      statuses.push(response.status);
      remaining.push(response.headers.get('x-ratelimit-remaining')!);
    }
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 429, 429]);
    assert.deepEqual(remaining, ['5', '4', '3', '2', '1', '0', '0', '0']);
  });

  test('connects per client address are counted across nodes', async () => {
    const token = await a.token('alice');
    const codes: number[] = [];
    for (const node of [a, b, a]) {
      const response = await fetch(`${node.httpUrl}/sse?token=${token}`);
      codes.push(response.status);
      await response.body?.cancel();
    }
    assert.deepEqual(codes, [200, 200, 429]);
  });
});
