import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Connection, type Transport } from '../../src/hub/connection.ts';
import { Hub, tighterCap } from '../../src/hub/hub.ts';

const transport = (): Transport => ({
  kind: 'ws', write() {}, bufferedBytes: () => 0, needsDrain: () => false, ping() {}, end() {},
});
const owner = { connectionEnded() {} };
let next = 0;
function connection(tenantId: string, userId: string): Connection {
  return new Connection(`c${++next}`, { tenantId, userId, roles: [], permittedChannels: null, expiresAtMs: Date.now() + 60_000 }, transport(), owner, 1 << 20);
}

describe('Hub', () => {
  test('refuses at each cap with the cap named, and counts nothing for a refusal', () => {
    const hub = new Hub({ maxConnections: 3, maxConnectionsPerUser: 2, maxSubscriptionsPerConnection: 0 }, (tenantId) =>
      tenantId === 'small' ? { maxConnections: 1, maxConnectionsPerUser: 0, maxSubscriptionsPerConnection: 0 } : null);
    assert.deepEqual(hub.register(connection('t', 'alice')), { ok: true });
    assert.deepEqual(hub.register(connection('t', 'alice')), { ok: true });
    assert.deepEqual(hub.register(connection('t', 'alice')), { ok: false, cap: 'user', message: 'User connection limit reached (2/2)' });
    assert.deepEqual(hub.register(connection('small', 'bob')), { ok: true });
    assert.deepEqual(hub.register(connection('small', 'carol')), { ok: false, cap: 'node', message: 'Node connection limit reached (3/3)' });
    assert.equal(hub.connectionCount, 3);
  });

  test('the tenant cap applies per tenant', () => {
    const hub = new Hub({ maxConnections: 0, maxConnectionsPerUser: 0, maxSubscriptionsPerConnection: 0 }, () =>
      ({ maxConnections: 1, maxConnectionsPerUser: 0, maxSubscriptionsPerConnection: 0 }));
    assert.deepEqual(hub.register(connection('t-a', 'alice')), { ok: true });
    assert.deepEqual(hub.register(connection('t-a', 'bob')), { ok: false, cap: 'tenant', message: 'Tenant connection limit reached (1/1)' });
    assert.deepEqual(hub.register(connection('t-b', 'carol')), { ok: true });
  });

  test('tells listeners about the first and last connection of a user and subscriber of a channel', () => {
    const hub = new Hub({ maxConnections: 0, maxConnectionsPerUser: 0, maxSubscriptionsPerConnection: 0 }, () => null);
    const events: string[] = [];
    hub.addListener({
      userOnline: (t, u) => events.push(`online ${t}/${u}`),
      userOffline: (t, u) => events.push(`offline ${t}/${u}`),
      channelActive: (t, c) => events.push(`active ${t}/${c}`),
      channelInactive: (t, c) => events.push(`inactive ${t}/${c}`),
    });
    const one = connection('t', 'alice');
    const two = connection('t', 'alice');
    hub.register(one);
    hub.register(two);
    hub.subscribe(one, 'orders');
    hub.subscribe(two, 'orders');
    hub.subscribe(two, 'news');
    hub.unsubscribe(two, 'news');
    hub.unregister(one, 'client');
    hub.unregister(two, 'client');
    hub.unregister(two, 'client');
    assert.deepEqual(events, [
      'online t/alice', 'active t/orders', 'active t/news', 'inactive t/news', 'inactive t/orders', 'offline t/alice',
    ]);
    assert.equal(hub.connectionCount, 0);
    assert.equal(hub.space('t'), undefined);
  });

  test('subscriptions: duplicates count once; the cap counts distinct channels', () => {
    const hub = new Hub({ maxConnections: 0, maxConnectionsPerUser: 0, maxSubscriptionsPerConnection: 2 }, () => null);
    const one = connection('t', 'alice');
    hub.register(one);
    assert.equal(hub.subscribe(one, 'a'), 'subscribed');
    assert.equal(hub.subscribe(one, 'a'), 'already_subscribed');
    assert.equal(hub.subscribe(one, 'b'), 'subscribed');
    assert.equal(hub.subscribe(one, 'c'), 'limit');
    assert.equal(hub.subscribe(one, 'b'), 'already_subscribed');
  });

  test('tighterCap treats 0 as unlimited', () => {
    assert.equal(tighterCap(0, 5), 5);
    assert.equal(tighterCap(5, 0), 5);
    assert.equal(tighterCap(3, 5), 3);
    assert.equal(tighterCap(0, 0), 0);
  });
});
