/**
 * A WebSocket reader that falls behind and catches up again (SPEC §4, §7):
 * what the server held back while the socket pushed back is written once
 * the socket drains, every message once and in send order.
 *
 * The server listens for the socket's 'drain' only from the first time the
 * socket pushes back (src/transport/ws.ts); this is the check that it then
 * does. The client stops reading (its TCP socket is paused) until the
 * server's own connection reports congestion, so the backlog is real, not
 * assumed.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

const BLOB = 'x'.repeat(4096);
/** Well past what the kernel buffers of one loopback connection hold before it pushes back. */
const MAX_SENDS = 5000;
const AFTER_CONGESTION = 20;

function rawSocket(ws: TestWs): Socket {
  return (ws.socket as unknown as { _socket: Socket })._socket;
}

function serverConnection(node: TestNode, userId: string) {
  const connections = node.node.hub.space('default')?.users.get(userId);
  assert.equal(connections?.size, 1);
  return [...connections][0]!;
}

for (const compression of [false, true]) {
  describe(`a WebSocket reader that stops and resumes (WEBSOCKET_COMPRESSION=${compression})`, () => {
    let node: TestNode;

    before(async () => {
      node = await startTestNode({
        WEBSOCKET_COMPRESSION: String(compression),
        WEBSOCKET_MAX_BUFFERED_BYTES: String(64 * 1024 * 1024),
      });
    });
    after(() => node.stop());

    test('gets every notification held back while it did not read, once each and in send order', async () => {
      const ws = await TestWs.open(node.wsUrl(`?token=${await node.token('reader')}`), { perMessageDeflate: compression });
      const connection = serverConnection(node, 'reader');
      rawSocket(ws).pause();

      const send = async (n: number) => {
        const res = await node.api('POST', '/api/v1/notifications/send', {
          target_user_id: 'reader',
          event_type: 'seq',
          payload: { n, blob: compression ? randomText(4096) : BLOB },
        });
        assert.equal(res.status, 200);
        assert.equal((res.json as { delivered_to: number }).delivered_to, 1);
      };
      let sent = 0;
      while (!connection.congested && sent < MAX_SENDS) await send(++sent);
      assert.equal(connection.congested, true, `no backpressure after ${sent} notifications of 4 KB`);
      // These wait in the server's backlog: only 'drain' writes them.
      for (let i = 0; i < AFTER_CONGESTION; i++) await send(++sent);
      assert.equal(connection.ended, false);

      rawSocket(ws).resume();
      await ws.next((m) => m.type === 'notification' && m.payload.n === sent, 15_000);
      const received = ws.messages.filter((m) => m.type === 'notification').map((m) => m.payload.n as number);
      assert.deepEqual(received, Array.from({ length: sent }, (_, i) => i + 1));
      assert.equal(connection.congested, false);
      await ws.close();
    });
  });
}

/** Text deflate cannot shrink much, so compressed frames still fill the buffers. */
function randomText(length: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let text = '';
  for (let i = 0; i < length; i++) text += alphabet[Math.floor(Math.random() * alphabet.length)];
  return text;
}
