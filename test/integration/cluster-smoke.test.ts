import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { deleteRedisKeys } from '../helpers/store-backends.ts';
import { startTestNode, sleep, type TestNode } from '../helpers/node.ts';

describe('two nodes sharing Redis (SPEC §8)', () => {
  const prefix = `ara-t-cluster-${randomBytes(4).toString('hex')}`;
  let a: TestNode;
  let b: TestNode;
  before(async () => {
    const env = {
      CLUSTER_ENABLED: 'true',
      REDIS_URL: 'redis://127.0.0.1:6379',
      REDIS_KEY_PREFIX: prefix,
      REDIS_TRIGGER_ENABLED: 'false',
      QUEUE_ENABLED: 'true',
      CLUSTER_SESSION_TTL_SECONDS: '3',
      WEBSOCKET_HEARTBEAT_INTERVAL: '1',
    };
    a = await startTestNode({ ...env, CLUSTER_SERVER_ID: 'node-a' });
    b = await startTestNode({ ...env, CLUSTER_SERVER_ID: 'node-b' });
  });
  after(async () => {
    await a.stop();
    await b.stop();
    await deleteRedisKeys([prefix]);
  });

  test('a user on node B receives a send made through node A, once', async () => {
    const client = await TestWs.open(b.wsUrl(`?token=${await b.token('alice')}`));
    await sleep(100);
    const sent = await a.api('POST', '/api/v1/notifications/send', { target_user_id: 'alice', event_type: 'x', payload: 1 });
    assert.equal(sent.status, 200);
    assert.equal(sent.json.delivered_to, 1);
    assert.equal(sent.json.queued, 0);
    assert.equal(sent.json.nodes, 1);
    const got = await client.nextOfType('notification');
    assert.equal(got.id, sent.json.notification_id);
    assert.deepEqual((await client.quietFor(200)).filter((m) => m.type === 'notification'), []);
    await client.close();
  });

  test('channel subscribers on both nodes receive one copy each', async () => {
    const onA = await TestWs.open(a.wsUrl(`?token=${await a.token('bob')}&channels=orders,news`));
    const onB = await TestWs.open(b.wsUrl(`?token=${await b.token('carl')}&channels=orders,news`));
    await sleep(100);
    const sent = await b.api('POST', '/api/v1/notifications/channels', { channels: ['orders', 'news'], event_type: 'x', payload: 1 });
    assert.equal(sent.status, 200);
    assert.equal(sent.json.nodes, 2);
    for (const client of [onA, onB]) {
      assert.equal((await client.nextOfType('notification')).id, sent.json.notification_id);
      assert.deepEqual((await client.quietFor(200)).filter((m) => m.type === 'notification'), []);
    }
    await onA.close();
    await onB.close();
  });

  test('a user offline everywhere is queued once and replayed on the other node', async () => {
    const sent = await a.api('POST', '/api/v1/notifications/send', { target_user_id: 'dora', event_type: 'x', payload: 1 });
    assert.equal(sent.json.queued, 1);
    assert.equal(sent.json.delivered_to, 0);
    const client = await TestWs.open(b.wsUrl(`?token=${await b.token('dora')}`));
    assert.equal((await client.nextOfType('notification')).id, sent.json.notification_id);
    assert.deepEqual((await client.quietFor(200)).filter((m) => m.type === 'notification'), []);
    await client.close();
  });

  test('cluster status lists both nodes; the user route finds sessions on the other node', async () => {
    const client = await TestWs.open(b.wsUrl(`?token=${await b.token('erin')}&channels=orders`));
    await sleep(200);
    const status = await a.api('GET', '/api/v1/cluster/status');
    assert.equal(status.status, 200);
    assert.equal(status.json.mode, 'distributed');
    assert.deepEqual(status.json.nodes.map((n: any) => n.server_id), ['node-a', 'node-b']);
    const user = await a.api('GET', '/api/v1/cluster/users/erin');
    assert.equal(user.json.found, true);
    assert.equal(user.json.sessions.length, 1);
    assert.equal(user.json.sessions[0].server_id, 'node-b');
    assert.deepEqual(user.json.sessions[0].channels, ['orders']);
    await client.close();
  });
});
