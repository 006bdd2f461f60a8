/**
 * C15 Several connections of one user (cases/README.md; SPEC §4 idle
 * close 4002 "never left half-registered", SPEC §7 "user sends reach every
 * live connection of that user").
 *
 * alice opens WS#1, WS#2 and SSE#3. N1 reaches all three once. WS#1 closes
 * cleanly and WS#2's TCP goes silent without a close (its socket is paused,
 * so it sends nothing, not even pongs); N2 reaches SSE#3 and WS#2 is reaped
 * by the idle sweep. WS#1 reconnects; N3 reaches WS#1 and SSE#3 once each.
 * At every step `connection_count` shows that closing one socket never
 * unregistered another.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { sleep, type TestNode } from '../helpers/node.ts';
import { BackendScope, STORE_BACKENDS } from '../helpers/store-backends.ts';

function rawSocket(ws: TestWs): Socket {
  return (ws.socket as unknown as { _socket: Socket })._socket;
}

for (const backend of STORE_BACKENDS) describe(`C15 several connections of one user on ${backend} (SPEC §4, §7)`, () => {
  const scope = new BackendScope(backend, 'c15');
  let node: TestNode;

  before(async () => {
    // The queue is on, so each step also shows that an online user is never queued.
    node = await scope.start({
      QUEUE_ENABLED: 'true',
      WEBSOCKET_HEARTBEAT_INTERVAL: '0.2',
      WEBSOCKET_CONNECTION_TIMEOUT: '1',
      WEBSOCKET_CLEANUP_INTERVAL: '0.2',
    });
  });
  after(() => scope.cleanup());

  async function connectionCount(): Promise<number> {
    const res = await node.api('GET', '/api/v1/users/alice/subscriptions');
    if (res.status === 404) {
      assert.equal(res.json.error.code, 'USER_NOT_CONNECTED');
      return 0;
    }
    assert.equal(res.status, 200);
    return res.json.connection_count;
  }

  async function countBecomes(expected: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let count = await connectionCount();
    while (count !== expected && Date.now() < deadline) {
      await sleep(25);
      count = await connectionCount();
    }
    assert.equal(count, expected);
  }

  async function send(label: string): Promise<{ id: string; deliveredTo: number }> {
    const res = await node.api('POST', '/api/v1/notifications/send', {
      target_user_id: 'alice',
      event_type: 'c15',
      payload: { label },
    });
    assert.equal(res.status, 200);
    assert.equal(res.json.queued, 0);
    return { id: res.json.notification_id, deliveredTo: res.json.delivered_to };
  }

  const idsOnWs = (ws: TestWs) => ws.messages.filter((m) => m.type === 'notification').map((m) => m.id);
  const idsOnSse = (sse: TestSse) => sse.events.filter((e) => e.event === 'notification').map((e) => e.id);

  test('each connection gets each notification once, and closing or losing one never unregisters another', async () => {
    const token = await node.token('alice');
    const ws1 = await TestWs.open(node.wsUrl(`?token=${token}`));
    const ws2 = await TestWs.open(node.wsUrl(`?token=${token}`));
    const sse3 = await TestSse.open(`${node.httpUrl}/sse?token=${token}`);
    assert.equal(await connectionCount(), 3);

    // N1 reaches all three, once each.
    const n1 = await send('N1');
    assert.equal(n1.deliveredTo, 3);
    await ws1.next((m) => m.id === n1.id);
    await ws2.next((m) => m.id === n1.id);
    await sse3.next((e) => e.id === n1.id);
    await sleep(200);
    assert.deepEqual(idsOnWs(ws1), [n1.id]);
    assert.deepEqual(idsOnWs(ws2), [n1.id]);
    assert.deepEqual(idsOnSse(sse3), [n1.id]);

    // WS#1 closes cleanly: only it goes.
    assert.deepEqual(await ws1.close(), { code: 1000, reason: '' });
    await countBecomes(2, 2000);

    // WS#2's TCP goes silent: no close frame, no pong, nothing.
    const idleBefore = await node.api('GET', '/metrics');
    assert.equal(/ara_ws_connections_closed_total\{reason="idle"\} /.test(idleBefore.text), false);
    // The server's own record of WS#2's last sign of life (a pong), read the moment it is reaped.
    const ws2Connection = [...node.node.hub.space('default')!.users.get('alice')!].find((c) => c.kind === 'ws')!;
    let silentForMs = -1;
    node.node.hub.addListener({
      connectionUnregistered: (connection, reason) => {
        if (connection === ws2Connection && reason === 'idle') silentForMs = Date.now() - connection.lastSeenMs;
      },
    });
    rawSocket(ws2).pause();

    // N2, sent while WS#2 is still registered, reaches SSE#3 once.
    const n2 = await send('N2');
    assert.equal(n2.deliveredTo, 2); // SSE#3, and WS#2 whose kernel buffer still takes it
    await sse3.next((e) => e.id === n2.id);
    assert.deepEqual(idsOnSse(sse3), [n1.id, n2.id]);
    assert.equal(await connectionCount(), 2);

    // The idle sweep reaps WS#2 (timeout 1 s) and nothing else.
    await countBecomes(1, 3000);
    // Measured from its last pong as the server saw it, not from the pause: on a busy
    // machine the client may have fallen silent well before the pause took effect.
    assert.ok(silentForMs >= 1000, `WS#2 was reaped ${silentForMs} ms after its last pong, before WEBSOCKET_CONNECTION_TIMEOUT (1 s)`);
    const metrics = await node.api('GET', '/metrics');
    assert.match(metrics.text, /^ara_ws_connections_closed_total\{reason="idle"\} 1$/m);
    assert.match(metrics.text, /^ara_ws_connections_closed_total\{reason="client"\} 1$/m);
    const [only] = node.node.hub.space('default')!.users.get('alice')!;
    assert.equal(only!.kind, 'sse');

    // WS#1 reconnects; N3 reaches WS#1 and SSE#3 once each.
    const ws1again = await TestWs.open(node.wsUrl(`?token=${token}`));
    assert.equal(await connectionCount(), 2);
    const n3 = await send('N3');
    assert.equal(n3.deliveredTo, 2);
    await ws1again.next((m) => m.id === n3.id);
    await sse3.next((e) => e.id === n3.id);
    await sleep(300); // past a heartbeat or two: anything duplicated would be here by now
    assert.deepEqual(idsOnWs(ws1again), [n3.id]);
    assert.deepEqual(idsOnSse(sse3), [n1.id, n2.id, n3.id]);
    assert.equal(await connectionCount(), 2);

    // The silent client, once it reads again, finds N2 and then the 4002 close that was waiting for it.
    rawSocket(ws2).resume();
    assert.deepEqual(await ws2.closed, { code: 4002, reason: 'idle timeout' });
    assert.deepEqual(idsOnWs(ws2), [n1.id, n2.id]);
    assert.equal(await connectionCount(), 2);

    // Closing the reconnected WS leaves SSE#3 alone, and SSE#3 leaving empties the user.
    await ws1again.close();
    await countBecomes(1, 2000);
    sse3.close();
    await countBecomes(0, 2000);
    assert.equal(node.node.hub.connectionCount, 0);
  });
});
