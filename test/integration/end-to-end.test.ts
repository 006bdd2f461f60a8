import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

describe('a notification end to end (SPEC §4, §5, §6.1)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode();
  });
  after(() => node.stop());

  test('reaches the user on WebSocket and SSE with the same JSON', async () => {
    const token = await node.token('alice');
    const ws = await TestWs.connect(node.wsUrl(`?token=${token}`));
    const connected = await ws.nextOfType('connected');
    assert.equal(connected.user_id, 'alice');
    assert.equal(connected.tenant_id, 'default');
    assert.equal(connected.heartbeat_interval, 30);
    assert.match(connected.connection_id, /^[0-9a-f-]{36}$/);
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${token}`);

    const sent = await node.api('POST', '/api/v1/notifications/send', {
      target_user_id: 'alice',
      event_type: 'order.created',
      payload: { order: 42, items: ['a', 'b'] },
      correlation_id: 'c-1',
    });
    assert.equal(sent.status, 200);
    assert.equal(sent.json.success, true);
    assert.equal(sent.json.delivered_to, 2);
    assert.equal(sent.json.failed, 0);
    assert.equal(sent.json.queued, 0);

    const viaWs = await ws.nextOfType('notification');
    const viaSse = await sse.nextEvent('notification');
    assert.deepEqual(viaSse.data, viaWs);
    assert.equal(viaSse.id, sent.json.notification_id);
    assert.equal(viaWs.id, sent.json.notification_id);
    assert.equal(viaWs.event_type, 'order.created');
    assert.deepEqual(viaWs.payload, { order: 42, items: ['a', 'b'] });
    assert.deepEqual(viaWs.metadata, { source: 'http-api', priority: 'Normal', correlation_id: 'c-1' });
    await ws.close();
    sse.close();
  });
});
