/**
 * `/ws?channels=` and `/ws?last_event_id=` (beyond SPEC, as on /sse in
 * SPEC §5 and §7): subscribe and resume at connect, so a reconnecting
 * client gets what it missed in send order before any live message.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

describe('WebSocket connect options', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({ QUEUE_ENABLED: 'true' });
  });
  after(() => node.stop());

  const send = async (body: object) => {
    const response = await node.api('POST', `/api/v1/notifications/${'channel' in body ? 'channel' : 'send'}`, body);
    assert.equal(response.status, 200);
    return response.json.notification_id as string;
  };

  test('?channels= subscribes at connect; channel sends reach the connection', async () => {
    const client = await TestWs.open(node.wsUrl(`?token=${await node.token('dana')}&channels=orders,news`));
    await send({ channel: 'news', event_type: 'n', payload: 1 });
    const received = await client.nextOfType('notification');
    assert.equal(received.event_type, 'n');
    const subscriptions = await node.api('GET', '/api/v1/users/dana/subscriptions');
    assert.deepEqual(subscriptions.json.subscriptions, ['news', 'orders']);
    await client.close();
  });

  test('?channels= with an invalid or unpermitted name is refused before the upgrade with 400', async () => {
    const token = await node.token('erin', { channels: ['orders'] });
    for (const channels of ['a:b', 'billing']) {
      const refusal = (await TestWs.connect(node.wsUrl(`?token=${token}&channels=${channels}`)).then(
        () => assert.fail(`connected with channels=${channels}`),
        (error: HandshakeRefusal) => error,
      )) as HandshakeRefusal;
      assert.equal(refusal.status, 400);
      assert.equal(refusal.json.error.code, 'VALIDATION_ERROR');
    }
  });

  test('?last_event_id= resumes user and channel history in send order, then live', async () => {
    const token = await node.token('fay');
    const first = await TestWs.open(node.wsUrl(`?token=${token}&channels=orders`));
    const n1 = await send({ target_user_id: 'fay', event_type: 'n1', payload: 1 });
    await first.nextOfType('notification');
    await first.close();
    const n2 = await send({ target_user_id: 'fay', event_type: 'n2', payload: 2 });
    const c1 = await send({ channel: 'orders', event_type: 'c1', payload: 3 });
    const n3 = await send({ target_user_id: 'fay', event_type: 'n3', payload: 4 });
    const again = await TestWs.open(node.wsUrl(`?token=${token}&channels=orders&last_event_id=${n1}`));
    const n4 = await send({ target_user_id: 'fay', event_type: 'n4', payload: 5 });
    const got: string[] = [];
    for (let i = 0; i < 4; i++) got.push((await again.nextOfType('notification')).id);
    assert.deepEqual(got, [n2, c1, n3, n4]);
    assert.deepEqual(await again.quietFor(200), []);
    await again.close();
  });

  test('an unknown ?last_event_id= gets resume_gap first, then everything history holds', async () => {
    const token = await node.token('gil');
    const n1 = await send({ target_user_id: 'gil', event_type: 'n1', payload: 1 });
    const client = await TestWs.connect(node.wsUrl(`?token=${token}&last_event_id=00000000-0000-4000-8000-000000000000`));
    await client.nextOfType('connected');
    const gap = await client.next();
    assert.deepEqual(gap, { type: 'resume_gap', since: '00000000-0000-4000-8000-000000000000' });
    assert.equal((await client.nextOfType('notification')).id, n1);
    assert.deepEqual(await client.quietFor(200), []);
    await client.close();
  });
});
