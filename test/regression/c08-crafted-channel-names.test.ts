/**
 * Case C08: crafted channel names. A name that looks like another tenant's
 * namespace, a pattern, a path or carries control bytes is refused outright
 * (SPEC §4 "Channel names"), so it can never reach into tenant t-b or match
 * more than itself; sends to such names are VALIDATION_ERROR (SPEC §6.1).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

const KEY_A = 'c08-tenant-a-key-0123456789';
const KEY_B = 'c08-tenant-b-key-0123456789';

/** The names of the case, then more of the same kind. */
const CRAFTED: unknown[] = [
  't-b:orders',
  'orders:x',
  '*',
  'orders*',
  '?',
  '../t-b/orders',
  'a\u0000b',
  'a'.repeat(65), // 65 bytes
  '',
  `${'é'.repeat(32)}a`, // 33 characters but 65 bytes
  't-b/orders',
  'orders ',
  ' orders',
  'orders\n',
  'orders\u200b', // zero-width space
  'orders\u202e', // right-to-left override
  'orders[1]',
  'orders%2A',
  '#',
  '>',
  'orders,billing',
];

/** Not names at all: the payload is untrusted JSON. */
const NOT_STRINGS: unknown[] = [42, null, true, { name: 'orders' }, ['orders']];

/** Sends, then a Ping; the replies to the message are what arrives before the pong. */
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

function notifications(messages: any[]): any[] {
  return messages.filter((m) => m.type === 'notification');
}

describe('C08 crafted channel names over WebSocket (SPEC §3, §4)', () => {
  let node: TestNode;
  let alice: TestWs;
  let carol: TestWs;

  const asB = (path: string, body: unknown) => node.api('POST', path, body, { 'x-api-key': KEY_B });
  const asA = (path: string, body: unknown) => node.api('POST', path, body, { 'x-api-key': KEY_A });

  before(async () => {
    node = await startTestNode({ TENANT_ENABLED: 'true', TENANT_API_KEYS: `t-a:${KEY_A},t-b:${KEY_B}` });
    alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice', { tenant_id: 't-a' })}`));
    carol = await TestWs.open(node.wsUrl(`?token=${await node.token('carol', { tenant_id: 't-b' })}`));
    assert.deepEqual(await exchange(carol, { type: 'Subscribe', payload: { channels: ['orders'] } }), [
      { type: 'subscribed', payload: ['orders'] },
    ]);
  });
  after(async () => {
    await alice.close();
    await carol.close();
    await node.stop();
  });

  test(`one Subscribe of ${CRAFTED.length} crafted names gets only one SUBSCRIPTION_ERROR naming each, JSON-quoted`, async () => {
    const replies = await exchange(alice, { type: 'Subscribe', payload: { channels: CRAFTED } });
    assert.equal(replies.length, 1, `expected only the error, got ${JSON.stringify(replies)}`);
    const [error] = replies;
    assert.equal(error.type, 'error');
    assert.equal(error.code, 'SUBSCRIPTION_ERROR');
    for (const name of CRAFTED) assert.ok(error.message.includes(JSON.stringify(name)), `not named: ${JSON.stringify(name)}`);
    assert.equal(error.message, CRAFTED.map((name) => `Invalid channel name: ${JSON.stringify(name)}`).join('; '));
    assert.equal(node.node.hub.space('t-a')!.channels.size, 0);
    assert.equal([...node.node.hub.space('t-a')!.users.get('alice')!][0]!.channels.size, 0);
  });

  test(`non-string entries (${NOT_STRINGS.length}) are named in the SUBSCRIPTION_ERROR as JSON`, async () => {
    const replies = await exchange(alice, { type: 'Subscribe', payload: { channels: NOT_STRINGS } });
    assert.deepEqual(replies, [
      {
        type: 'error',
        code: 'SUBSCRIPTION_ERROR',
        message: NOT_STRINGS.map((value) => `Invalid channel name: ${JSON.stringify(value)}`).join('; '),
      },
    ]);
  });

  test("meanwhile t-b's send to its orders and t-a's send to ordersX reach alice not at all", async () => {
    const fromB = await asB('/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.order', payload: { t: 'b' } });
    assert.equal(fromB.status, 200);
    assert.equal(fromB.json.delivered_to, 1, 'carol, subscribed in t-b, is the control recipient');
    const fromA = await asA('/api/v1/notifications/channel', { channel: 'ordersX', event_type: 'a.order', payload: { t: 'a' } });
    assert.equal(fromA.status, 200);
    assert.equal(fromA.json.delivered_to, 0);
    const wild = await asA('/api/v1/notifications/broadcast', {
      audience: { type: 'Channels', value: ['orders', 'ordersX'] },
      event_type: 'a.audience',
      payload: {},
    });
    assert.equal(wild.json.delivered_to, 0);
    assert.deepEqual(notifications(await alice.quietFor(200)), []);
    assert.deepEqual(notifications(carol.messages).map((m) => m.event_type), ['b.order']);
  });

  test("alice subscribed to t-a's orders gets t-a's send there and never t-b's", async () => {
    assert.deepEqual(await exchange(alice, { type: 'Subscribe', payload: { channels: ['orders'] } }), [
      { type: 'subscribed', payload: ['orders'] },
    ]);
    const fromB = await asB('/api/v1/notifications/channel', { channel: 'orders', event_type: 'b.order.2', payload: {} });
    assert.equal(fromB.json.delivered_to, 1);
    const fromA = await asA('/api/v1/notifications/channel', { channel: 'orders', event_type: 'a.order.2', payload: {} });
    assert.equal(fromA.json.delivered_to, 1);
    const received = await alice.nextOfType('notification');
    assert.equal(received.id, fromA.json.notification_id);
    assert.equal(received.event_type, 'a.order.2');
    assert.deepEqual(notifications(await alice.quietFor(150)), []);
    assert.deepEqual(notifications(carol.messages).map((m) => m.event_type), ['b.order', 'b.order.2']);
  });
});

describe('C08 crafted channel names on POST /api/v1/notifications/channel (SPEC §6.1)', () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode({ TENANT_ENABLED: 'true', TENANT_API_KEYS: `t-a:${KEY_A},t-b:${KEY_B}` });
  });
  after(() => node.stop());

  const callers: [string, Record<string, string>][] = [
    ['the operator key with X-Tenant-ID t-a', { 'x-tenant-id': 't-a' }],
    ["t-a's tenant key", { 'x-api-key': KEY_A }],
  ];

  for (const [label, headers] of callers) {
    test(`${label}: each of the ${CRAFTED.length + NOT_STRINGS.length} names is 400 VALIDATION_ERROR on channel`, async () => {
      for (const name of [...CRAFTED, ...NOT_STRINGS]) {
        const res = await node.api('POST', '/api/v1/notifications/channel', { channel: name, event_type: 'x', payload: {} }, headers);
        assert.equal(res.status, 400, `channel ${JSON.stringify(name)}: ${res.text}`);
        assert.equal(res.json.error.code, 'VALIDATION_ERROR', JSON.stringify(name));
        assert.equal(res.json.error.details[0].path, 'channel', JSON.stringify(name));
      }
    });

    test(`${label}: names that pass the size schema are refused by the name rule, each named`, async () => {
      for (const name of CRAFTED.filter((n) => typeof n === 'string' && n.length >= 1 && n.length <= 64)) {
        const res = await node.api('POST', '/api/v1/notifications/channel', { channel: name, event_type: 'x', payload: {} }, headers);
        assert.deepEqual(res.json, {
          error: {
            code: 'VALIDATION_ERROR',
            message: 'Invalid channel name',
            details: [{ path: 'channel', message: `invalid channel name ${JSON.stringify(name)}` }],
          },
        });
      }
    });

    test(`${label}: the same names on channels, batch and audience Channels are refused too`, async () => {
      for (const name of CRAFTED) {
        const channels = await node.api('POST', '/api/v1/notifications/channels', { channels: ['orders', name], event_type: 'x', payload: {} }, headers);
        assert.equal(channels.status, 400, `channels ${JSON.stringify(name)}`);
        assert.equal(channels.json.error.code, 'VALIDATION_ERROR');
        assert.equal(channels.json.error.details[0].path, 'channels.1');

        const audience = await node.api('POST', '/api/v1/notifications/broadcast', {
          audience: { type: 'Channels', value: [name] },
          event_type: 'x',
          payload: {},
        }, headers);
        assert.equal(audience.status, 400, `audience ${JSON.stringify(name)}`);
        assert.equal(audience.json.error.code, 'VALIDATION_ERROR');

        const batch = await node.api('POST', '/api/v1/notifications/batch', {
          notifications: [{ target: { type: 'channel', value: name }, event_type: 'x', payload: {} }],
        }, headers);
        assert.equal(batch.status, 200);
        assert.equal(batch.json.results[0].success, false, `batch ${JSON.stringify(name)}`);
        assert.equal(batch.json.summary.failed, 1);
      }
    });
  }

  test('GET /api/v1/channels/{name} with a crafted name is 400, never another tenant\'s channel', async () => {
    for (const name of ['t-b:orders', 'orders*', '*', 'a\u0000b']) {
      const res = await node.api('GET', `/api/v1/channels/${encodeURIComponent(name)}`, undefined, { 'x-api-key': KEY_A });
      assert.deepEqual(res.json, {
        error: {
          code: 'VALIDATION_ERROR',
          message: 'Invalid channel name',
          details: [{ path: 'name', message: `invalid channel name ${JSON.stringify(name)}` }],
        },
      }, name);
    }
  });
});
