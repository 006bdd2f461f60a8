/**
 * C12 Invalid UTF-8 (cases/README.md; SPEC §4 "invalid UTF-8 in a text
 * frame → close 1007").
 *
 * Each bad sequence sits inside an otherwise valid JSON Ping, so a server
 * that skipped validation (decoding with replacement characters) would
 * answer `pong` instead of closing. A valid two-byte character split across
 * two fragments must be reassembled and accepted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { sleep, startTestNode, type TestNode } from '../helpers/node.ts';

const PING_HEAD = Buffer.from('{"type":"Ping","x":"');
const PING_TAIL = Buffer.from('"}');

function pingAround(bytes: number[]): Buffer {
  return Buffer.concat([PING_HEAD, Buffer.from(bytes), PING_TAIL]);
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('C12 invalid UTF-8 in text frames (SPEC §4)', () => {
  let node: TestNode;
  let url: string;

  before(async () => {
    node = await startTestNode();
    url = node.wsUrl(`?token=${await node.token('alice')}`);
  });
  after(() => node.stop());

  async function openClient(): Promise<TestWs> {
    return TestWs.open(url, { perMessageDeflate: false });
  }

  async function assertAliveAndEmpty(): Promise<void> {
    await waitFor(() => node.node.hub.connectionCount === 0, 2000, 'the closed connection to be unregistered');
    assert.equal((await node.api('GET', '/health')).status, 200);
  }

  const sequences: Array<[string, number[]]> = [
    ['C3 28 (lead byte without continuation)', [0xc3, 0x28]],
    ['C0 AF (overlong encoding of "/")', [0xc0, 0xaf]],
    ['ED A0 80 (UTF-16 surrogate U+D800)', [0xed, 0xa0, 0x80]],
    ['F4 90 80 80 (above U+10FFFF)', [0xf4, 0x90, 0x80, 0x80]],
  ];

  for (const [name, bytes] of sequences) {
    test(`a text frame containing ${name} is closed with 1007`, async () => {
      const ws = await openClient();
      ws.socket.send(pingAround(bytes), { binary: false });
      assert.equal((await ws.closed).code, 1007);
      assert.deepEqual(
        ws.messages.map((m) => m.type),
        ['connected'],
      );
      await assertAliveAndEmpty();
    });
  }

  test('the bare sequence C3 28 as a whole text frame is closed with 1007', async () => {
    const ws = await openClient();
    ws.socket.send(Buffer.from([0xc3, 0x28]), { binary: false });
    assert.equal((await ws.closed).code, 1007);
    await assertAliveAndEmpty();
  });

  test('a valid two-byte character (é = C3 A9) split across two fragments is reassembled and accepted', async () => {
    const ws = await openClient();
    // Text frame FIN=0 ending with C3, continuation frame FIN=1 starting with A9.
    ws.socket.send(Buffer.concat([PING_HEAD, Buffer.from([0xc3])]), { binary: false, fin: false });
    ws.socket.send(Buffer.concat([Buffer.from([0xa9]), PING_TAIL]), { binary: false, fin: true });
    assert.deepEqual(await ws.nextOfType('pong'), { type: 'pong' });
    // And a channel name carried the same way arrives as the right character.
    const subscribe = Buffer.from('{"type":"Subscribe","payload":{"channels":["caf\u00e9"]}}');
    const split = subscribe.indexOf(0xa9);
    assert.equal(subscribe[split - 1], 0xc3);
    ws.socket.send(subscribe.subarray(0, split), { binary: false, fin: false });
    ws.socket.send(subscribe.subarray(split), { binary: false, fin: true });
    assert.deepEqual(await ws.nextOfType('subscribed'), { type: 'subscribed', payload: ['café'] });
    assert.equal(ws.socket.readyState, ws.socket.OPEN);
    await ws.close();
    await assertAliveAndEmpty();
  });

  test('an invalid sequence split across two fragments (C3 | 28) is closed with 1007', async () => {
    const ws = await openClient();
    ws.socket.send(Buffer.concat([PING_HEAD, Buffer.from([0xc3])]), { binary: false, fin: false });
    ws.socket.send(Buffer.concat([Buffer.from([0x28]), PING_TAIL]), { binary: false, fin: true });
    assert.equal((await ws.closed).code, 1007);
    await assertAliveAndEmpty();
  });

  test('counts every 1007 close as a protocol_error close, and the node still serves new clients', async () => {
    const res = await node.api('GET', '/metrics');
    const line = res.text.split('\n').find((l) => l.startsWith('ara_ws_connections_closed_total{reason="protocol_error"} '));
    assert.equal(line, 'ara_ws_connections_closed_total{reason="protocol_error"} 6');
    const ws = await openClient();
    assert.deepEqual(await ws.request({ type: 'Ping' }, 'pong'), { type: 'pong' });
    await ws.close();
  });
});
