/**
 * Case C10: the JWT `channels` claim limits what a connection may
 * subscribe to; entries ending in `*` are prefixes (SPEC §2 claims table).
 * A refused channel is named in SUBSCRIPTION_ERROR (SPEC §4) and nothing
 * sent there reaches the connection; on SSE a refused `?channels=` is a
 * 400 VALIDATION_ERROR before the stream starts (SPEC §5).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

const PERMITTED = ['orders', 'alice.*'];

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

function notPermitted(names: string[]): string {
  return names.map((name) => `Channel not permitted: ${JSON.stringify(name)}`).join('; ');
}

describe('C10 channel permissions from the token (SPEC §2, §4, §5)', () => {
  let node: TestNode;
  let alice: TestWs;
  let token: string;

  const sendTo = async (channel: string) => {
    const res = await node.api('POST', '/api/v1/notifications/channel', { channel, event_type: `to.${channel}`, payload: {} });
    assert.equal(res.status, 200, res.text);
    return res.json;
  };

  before(async () => {
    node = await startTestNode();
    token = await node.token('alice', { channels: PERMITTED });
    alice = await TestWs.open(node.wsUrl(`?token=${token}`));
  });
  after(async () => {
    await alice.close();
    await node.stop();
  });

  test('subscribing to orders and alice.inbox succeeds; bob.inbox and billing fail, each named', async () => {
    const replies = await exchange(alice, {
      type: 'Subscribe',
      payload: { channels: ['orders', 'bob.inbox', 'alice.inbox', 'billing'] },
    });
    assert.deepEqual(replies, [
      { type: 'subscribed', payload: ['orders', 'alice.inbox'] },
      { type: 'error', code: 'SUBSCRIPTION_ERROR', message: notPermitted(['bob.inbox', 'billing']) },
    ]);
    const subs = await node.api('GET', '/api/v1/users/alice/subscriptions');
    assert.deepEqual(subs.json.subscriptions, ['alice.inbox', 'orders']);
  });

  test('the prefix is literal: near misses of alice.* and orders are refused', async () => {
    const nearMisses = ['alice', 'Alice.inbox', 'alicex.inbox', 'xalice.inbox', 'orders2', 'order', 'ORDERS', 'orders.x'];
    assert.deepEqual(await exchange(alice, { type: 'Subscribe', payload: { channels: nearMisses } }), [
      { type: 'error', code: 'SUBSCRIPTION_ERROR', message: notPermitted(nearMisses) },
    ]);
    assert.deepEqual(await exchange(alice, { type: 'Subscribe', payload: { channels: ['alice.', 'alice.a.b'] } }), [
      { type: 'subscribed', payload: ['alice.', 'alice.a.b'] },
    ]);
  });

  test('she receives what is sent to orders and alice.inbox, and nothing sent to bob.inbox or billing', async () => {
    for (const channel of ['bob.inbox', 'billing', 'alice', 'ORDERS']) {
      assert.equal((await sendTo(channel)).delivered_to, 0, channel);
    }
    const broadcast = await node.api('POST', '/api/v1/notifications/broadcast', {
      audience: { type: 'Channels', value: ['bob.inbox', 'billing'] },
      event_type: 'audience',
      payload: {},
    });
    assert.equal(broadcast.json.delivered_to, 0);
    const orders = await sendTo('orders');
    const inbox = await sendTo('alice.inbox');
    assert.equal(orders.delivered_to, 1);
    assert.equal(inbox.delivered_to, 1);
    const received = [await alice.nextOfType('notification'), await alice.nextOfType('notification')];
    assert.deepEqual(received.map((m) => m.id), [orders.notification_id, inbox.notification_id]);
    assert.deepEqual(received.map((m) => m.event_type), ['to.orders', 'to.alice.inbox']);
    assert.deepEqual((await alice.quietFor(150)).filter((m) => m.type === 'notification'), []);
  });

  test('another connection of alice with no channels claim may subscribe to billing: the limit is per token', async () => {
    const open = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
    assert.deepEqual(await exchange(open, { type: 'Subscribe', payload: { channels: ['billing'] } }), [
      { type: 'subscribed', payload: ['billing'] },
    ]);
    const billing = await sendTo('billing');
    assert.equal(billing.delivered_to, 1);
    assert.equal((await open.nextOfType('notification')).id, billing.notification_id);
    assert.deepEqual((await alice.quietFor(100)).filter((m) => m.type === 'notification'), []);
    await open.close();
  });

  test('an empty channels claim permits no channel at all', async () => {
    const none = await TestWs.open(node.wsUrl(`?token=${await node.token('alice', { channels: [] })}`));
    assert.deepEqual(await exchange(none, { type: 'Subscribe', payload: { channels: ['orders'] } }), [
      { type: 'error', code: 'SUBSCRIPTION_ERROR', message: notPermitted(['orders']) },
    ]);
    await none.close();
  });

  test('SSE ?channels=billing with that token is 400 VALIDATION_ERROR naming billing, before any stream', async () => {
    for (const [query, refused] of [
      ['billing', ['billing']],
      ['orders,billing', ['billing']],
      ['bob.inbox,alice.inbox', ['bob.inbox']],
    ] as const) {
      let refusal: HandshakeRefusal | undefined;
      try {
        const sse = await TestSse.connect(`${node.httpUrl}/sse?token=${token}&channels=${query}`);
        sse.close();
      } catch (error) {
        refusal = error as HandshakeRefusal;
      }
      assert.ok(refusal, `?channels=${query} was accepted`);
      assert.equal(refusal.status, 400);
      assert.deepEqual(refusal.json, {
        error: {
          code: 'VALIDATION_ERROR',
          message: 'Invalid channels parameter',
          details: refused.map((name) => ({ path: 'channels', message: `Channel not permitted: ${JSON.stringify(name)}` })),
        },
      });
    }
  });

  test('SSE ?channels=orders with that token streams, and gets orders but not billing', async () => {
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${token}&channels=orders,alice.inbox`);
    assert.equal(sse.events[0]!.data.user_id, 'alice');
    const billing = await sendTo('billing');
    assert.equal(billing.delivered_to, 0);
    const orders = await sendTo('orders');
    assert.equal(orders.delivered_to, 2, 'the WebSocket and the SSE stream of alice');
    const event = await sse.nextEvent('notification');
    assert.equal(event.id, orders.notification_id);
    assert.equal(event.data.event_type, 'to.orders');
    assert.deepEqual((await sse.quietFor(100)).filter((e) => e.event === 'notification'), []);
    sse.close();
  });
});
