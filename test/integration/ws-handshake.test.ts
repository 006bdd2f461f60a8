/**
 * The bytes of the WebSocket handshake answer (SPEC §4; RFC 6455 §4.2.2),
 * read from a raw TCP socket: the 101 response, then at once the
 * `connected` greeting as the first frame. Without WEBSOCKET_COMPRESSION
 * the server writes the 101 itself (src/transport/ws.ts); with it, `ws`
 * negotiates permessage-deflate. Both must answer alike, and neither
 * selects or even reads a subprotocol (Ara 1.0: none is negotiated).
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { constants, inflateRawSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

/** RFC 6455 §1.3's worked example. */
const SAMPLE_KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const SAMPLE_ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=';

interface HandshakeAnswer {
  statusLine: string;
  headers: Map<string, string>;
  /** The first frame after the response: FIN/RSV1/opcode byte and its payload text (inflated if RSV1). */
  firstFrame: { head: number; text: string };
}

interface RequestOptions {
  /** HTTP version of the request line; 1.1 unless given. */
  version?: string;
  extraHeaders?: string[];
}

function upgradeRequest(target: string, options: RequestOptions = {}): string {
  return [
    `GET ${target} HTTP/${options.version ?? '1.1'}`,
    'Host: 127.0.0.1',
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${SAMPLE_KEY}`,
    'Sec-WebSocket-Version: 13',
    ...(options.extraHeaders ?? []),
    '',
    '',
  ].join('\r\n');
}

/** Sends an upgrade request with `extraHeaders` and reads up to the end of the first frame. */
function handshake(node: TestNode, token: string, extraHeaders: string[] = []): Promise<HandshakeAnswer> {
  return new Promise((resolve, reject) => {
    const socket = connect(node.port, '127.0.0.1');
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no complete answer within 5 s: ${JSON.stringify(received.toString('latin1'))}`));
    }, 5000);
    socket.on('error', reject);
    socket.on('connect', () => socket.write(upgradeRequest(`/ws?token=${token}`, { extraHeaders })));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end < 0 || received.length < end + 6) return;
      const frameStart = end + 4;
      const length = received[frameStart + 1]! & 0x7f;
      const payloadStart = frameStart + (length === 126 ? 4 : 2);
      const payloadLength = length === 126 ? received.readUInt16BE(frameStart + 2) : length;
      if (received.length < payloadStart + payloadLength) return;
      clearTimeout(timer);
      socket.destroy();
      const [statusLine, ...lines] = received.toString('latin1', 0, end).split('\r\n');
      const headers = new Map(lines.map((line) => [line.slice(0, line.indexOf(':')).toLowerCase(), line.slice(line.indexOf(':') + 1).trim()]));
      const payload = received.subarray(payloadStart, payloadStart + payloadLength);
      // RFC 7692 §7.2.2: a compressed message is raw deflate without its final empty block.
      const compressed = (received[frameStart]! & 0x40) !== 0;
      const text = (compressed ? inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: constants.Z_SYNC_FLUSH }) : payload).toString('utf8');
      resolve({ statusLine: statusLine!, headers, firstFrame: { head: received[frameStart]!, text } });
    });
  });
}

/** Sends an upgrade request for `target` and reads everything until the server closes. */
function refusal(node: TestNode, target: string, options: RequestOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(node.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`not closed within 5 s: ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))}`));
    }, 5000);
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(Buffer.concat(chunks).toString('utf8'));
    });
    socket.write(upgradeRequest(target, options));
  });
}

for (const compression of [false, true]) {
  describe(`the WebSocket handshake answer (WEBSOCKET_COMPRESSION=${compression}; SPEC §4)`, () => {
    let node: TestNode;

    before(async () => {
      node = await startTestNode({ WEBSOCKET_COMPRESSION: String(compression) });
    });
    after(() => node.stop());

    test('is 101 with the RFC 6455 accept value, then the connected greeting as the first text frame', async () => {
      const answer = await handshake(node, await node.token('hs-user'));
      assert.equal(answer.statusLine, 'HTTP/1.1 101 Switching Protocols');
      assert.deepEqual([...answer.headers], [
        ['upgrade', 'websocket'],
        ['connection', 'Upgrade'],
        ['sec-websocket-accept', SAMPLE_ACCEPT],
      ]);
      assert.equal(answer.firstFrame.head, 0x81); // FIN, text, not compressed
      const greeting = JSON.parse(answer.firstFrame.text);
      assert.deepEqual(Object.keys(greeting), ['type', 'connection_id', 'user_id', 'tenant_id', 'heartbeat_interval']);
      assert.equal(greeting.type, 'connected');
      assert.equal(greeting.user_id, 'hs-user');
    });

    test('selects no subprotocol when the client offers some (Ara 1.0 negotiates none)', async () => {
      const answer = await handshake(node, await node.token('hs-user'), ['Sec-WebSocket-Protocol: chat, superchat']);
      assert.equal(answer.statusLine, 'HTTP/1.1 101 Switching Protocols');
      assert.equal(answer.headers.has('sec-websocket-protocol'), false);
      assert.equal(JSON.parse(answer.firstFrame.text).type, 'connected');
    });

    test('ignores a malformed Sec-WebSocket-Protocol header: no subprotocol is ever read', async () => {
      const answer = await handshake(node, await node.token('hs-user'), ['Sec-WebSocket-Protocol: a b, ,c']);
      assert.equal(answer.statusLine, 'HTTP/1.1 101 Switching Protocols');
      assert.equal(answer.headers.has('sec-websocket-protocol'), false);
    });

    test('refuses an HTTP/1.0 upgrade with 400 INVALID_HANDSHAKE (RFC 6455 §4.2.1 asks for HTTP/1.1)', async () => {
      const answer = await refusal(node, `/ws?token=${await node.token('hs-user')}`, { version: '1.0' });
      assert.equal(answer.split('\r\n')[0], 'HTTP/1.1 400 Bad Request');
      assert.deepEqual(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)), {
        error: { code: 'INVALID_HANDSHAKE', message: 'A WebSocket upgrade needs HTTP/1.1' },
      });
    });

    test(`${compression ? 'refuses with the JSON envelope' : 'ignores'} a malformed permessage-deflate offer`, async () => {
      const offer = 'Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=99';
      if (compression) {
        const answer = await refusal(node, `/ws?token=${await node.token('hs-user')}`, { extraHeaders: [offer] });
        assert.equal(answer.split('\r\n')[0], 'HTTP/1.1 400 Bad Request');
        assert.deepEqual(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)), {
          error: { code: 'INVALID_HANDSHAKE', message: 'Invalid or unacceptable Sec-WebSocket-Extensions header' },
        });
      } else {
        const answer = await handshake(node, await node.token('hs-user'), [offer]);
        assert.equal(answer.statusLine, 'HTTP/1.1 101 Switching Protocols');
        assert.equal(answer.headers.has('sec-websocket-extensions'), false);
      }
    });

    test(`${compression ? 'accepts' : 'ignores'} an offer of permessage-deflate`, async () => {
      const answer = await handshake(node, await node.token('hs-user'), ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits']);
      assert.equal(answer.statusLine, 'HTTP/1.1 101 Switching Protocols');
      assert.equal(answer.headers.get('sec-websocket-extensions'), compression ? 'permessage-deflate' : undefined);
      // ws applies its 1 KiB threshold only without context takeover, so once
      // negotiated even the greeting is compressed (FIN, RSV1, text).
      assert.equal(answer.firstFrame.head, compression ? 0xc1 : 0x81);
      assert.equal(JSON.parse(answer.firstFrame.text).type, 'connected');
    });
  });
}

describe('upgrade failures on the default settings (SPEC §4 close codes, §6 NOT_FOUND)', () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode();
  });
  after(() => node.stop());

  test('a request target that is not a URL is 404 NOT_FOUND, not an internal error', async () => {
    const answer = await refusal(node, `http://[zz/ws?token=${await node.token('hs-user')}`);
    assert.equal(answer.split('\r\n')[0], 'HTTP/1.1 404 Not Found');
    assert.deepEqual(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)), { error: { code: 'NOT_FOUND', message: 'Route not found' } });
  });

  test('a failure after the upgrade closes the WebSocket with 1011 and unregisters it, instead of writing an HTTP error into the stream', async () => {
    const hub = node.node.hub;
    const subscribe = hub.subscribe.bind(hub);
    hub.subscribe = () => {
      throw new Error('injected failure');
    };
    try {
      const ws = await TestWs.connect(node.wsUrl(`?token=${await node.token('hs-user')}&channels=news`));
      assert.deepEqual(await ws.closed, { code: 1011, reason: 'internal error' });
    } finally {
      hub.subscribe = subscribe;
    }
    assert.equal(hub.connectionCount, 0);
  });
});
