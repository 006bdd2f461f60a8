/**
 * C13 Broken handshakes (cases/README.md; SPEC §4, §6 JSON error envelope).
 *
 * Raw HTTP requests to /ws, written byte by byte on a TCP socket, so nothing
 * in a client library tidies them up. None may crash the process, `/health`
 * answers 200 after each, and where the service answers it answers with
 * the JSON error envelope and a fitting status.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { sleep, startTestNode, type TestNode } from '../helpers/node.ts';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/**
 * Writes `head` (request line and headers, without the blank line) and
 * reads one response: its head, then Content-Length bytes of body (or up to
 * the end of the connection). A 101 resolves as soon as its head arrived.
 */
function rawRequest(port: number, head: string, body = ''): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let data = Buffer.alloc(0);
    let parsed: { status: number; headers: Map<string, string>; bodyStart: number } | null = null;
    let settled = false;
    const finish = () => {
      if (settled || parsed === null) return;
      settled = true;
      socket.destroy();
      resolve({
        status: parsed.status,
        headers: parsed.headers,
        body: data.subarray(parsed.bodyStart).toString('utf8'),
      });
    };
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk]);
      if (parsed === null) {
        const end = data.indexOf('\r\n\r\n');
        if (end < 0) return;
        const lines = data.subarray(0, end).toString('latin1').split('\r\n');
        const headers = new Map<string, string>();
        for (const line of lines.slice(1)) {
          const colon = line.indexOf(':');
          headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
        }
        parsed = { status: Number(lines[0]!.split(' ')[1]), headers, bodyStart: end + 4 };
        if (parsed.status === 101) return finish();
      }
      const length = parsed.headers.get('content-length');
      if (length !== undefined && data.length - parsed.bodyStart >= Number(length)) finish();
    });
    socket.on('end', finish);
    socket.on('close', () => {
      finish();
      if (!settled) reject(new Error('connection closed without a response'));
    });
    socket.on('error', (error) => {
      if (parsed !== null) finish();
      else if (!settled) reject(error);
    });
    socket.write(`${head}\r\n\r\n${body}`);
  });
}

function wsKey(): string {
  return randomBytes(16).toString('base64');
}

describe('C13 broken WebSocket handshakes (SPEC §4, §6)', () => {
  let node: TestNode;
  let token: string;
  let host: string;

  before(async () => {
    node = await startTestNode();
    token = await node.token('alice');
    host = `Host: 127.0.0.1:${node.port}`;
  });
  after(() => node.stop());

  async function assertHealthy(): Promise<void> {
    const health = await node.api('GET', '/health');
    assert.equal(health.status, 200);
    assert.equal(health.json.status, 'healthy');
  }

  function assertJsonError(response: RawResponse, status: number, code: string, message: string): void {
    assert.equal(response.status, status);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(JSON.parse(response.body), { error: { code, message } });
  }

  test('Connection: Upgrade without an Upgrade header is 426 naming websocket and version 13', async () => {
    const response = await rawRequest(
      node.port,
      [`GET /ws?token=${token} HTTP/1.1`, host, 'Connection: Upgrade', `Sec-WebSocket-Key: ${wsKey()}`, 'Sec-WebSocket-Version: 13'].join('\r\n'),
    );
    assertJsonError(response, 426, 'UPGRADE_REQUIRED', 'This endpoint needs a WebSocket upgrade');
    assert.equal(response.headers.get('upgrade'), 'websocket');
    assert.equal(response.headers.get('sec-websocket-version'), '13');
    assert.equal(node.node.hub.connectionCount, 0);
    await assertHealthy();
  });

  test('Upgrade: websocket without Connection: Upgrade is 426 as well', async () => {
    const response = await rawRequest(
      node.port,
      [`GET /ws?token=${token} HTTP/1.1`, host, 'Upgrade: websocket', `Sec-WebSocket-Key: ${wsKey()}`, 'Sec-WebSocket-Version: 13'].join('\r\n'),
    );
    assertJsonError(response, 426, 'UPGRADE_REQUIRED', 'This endpoint needs a WebSocket upgrade');
    assert.equal(response.headers.get('sec-websocket-version'), '13');
    await assertHealthy();
  });

  test('an Upgrade to another protocol (h2c) is 426 "Upgrade: websocket is required"', async () => {
    const response = await rawRequest(
      node.port,
      [`GET /ws?token=${token} HTTP/1.1`, host, 'Connection: Upgrade', 'Upgrade: h2c'].join('\r\n'),
    );
    assertJsonError(response, 426, 'UPGRADE_REQUIRED', 'Upgrade: websocket is required');
    assert.equal(response.headers.get('upgrade'), 'websocket');
    await assertHealthy();
  });

  const hugeHead = () =>
    [
      `GET /ws?token=${token} HTTP/1.1`,
      host,
      'Connection: Upgrade',
      'Upgrade: websocket',
      `Sec-WebSocket-Key: ${wsKey()}`,
      'Sec-WebSocket-Version: 13',
      ...Array.from({ length: 2000 }, (_, i) => `X-Extra-${i}: value-${i}`),
    ].join('\r\n');

  test('2,000 extra headers are refused with 431 HEADERS_TOO_LARGE in the JSON envelope; nothing is upgraded', async () => {
    // Node's parser stops at 16 KiB of headers (HPE_HEADER_OVERFLOW) before any route runs.
    const response = await rawRequest(node.port, hugeHead());
    assertJsonError(response, 431, 'HEADERS_TOO_LARGE', 'Request headers are too large');
    assert.equal(node.node.hub.connectionCount, 0);
    await assertHealthy();
  });

  test('a malformed header line is refused with 400 BAD_REQUEST in the JSON envelope', async () => {
    const response = await rawRequest(
      node.port,
      [`GET /ws?token=${token} HTTP/1.1`, host, 'Connection: Upgrade', 'Upgrade: websocket', 'this line has no colon'].join('\r\n'),
    );
    assertJsonError(response, 400, 'BAD_REQUEST', 'Malformed HTTP request');
    assert.equal(node.node.hub.connectionCount, 0);
    await assertHealthy();
  });

  test('Sec-WebSocket-Version: 8 is 426 with Sec-WebSocket-Version: 13 and a JSON body', async () => {
    const response = await rawRequest(
      node.port,
      [
        `GET /ws?token=${token} HTTP/1.1`,
        host,
        'Connection: Upgrade',
        'Upgrade: websocket',
        `Sec-WebSocket-Key: ${wsKey()}`,
        'Sec-WebSocket-Version: 8',
      ].join('\r\n'),
    );
    assertJsonError(response, 426, 'UPGRADE_REQUIRED', 'Unsupported WebSocket version; this server speaks version 13');
    assert.equal(response.headers.get('sec-websocket-version'), '13');
    assert.equal(node.node.hub.connectionCount, 0);
    await assertHealthy();
  });

  for (const [what, keyHeader] of [
    ['a key that is not 16 bytes of base64', 'Sec-WebSocket-Key: not-a-valid-key'],
    ['a key of 15 bytes', `Sec-WebSocket-Key: ${randomBytes(15).toString('base64')}`],
    ['no key at all', null],
  ] as const) {
    test(`a bad Sec-WebSocket-Key (${what}) is 400 INVALID_HANDSHAKE with a JSON body`, async () => {
      const lines = [`GET /ws?token=${token} HTTP/1.1`, host, 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13'];
      if (keyHeader !== null) lines.push(keyHeader);
      const response = await rawRequest(node.port, lines.join('\r\n'));
      assertJsonError(response, 400, 'INVALID_HANDSHAKE', 'Missing or invalid Sec-WebSocket-Key');
      assert.equal(node.node.hub.connectionCount, 0);
      await assertHealthy();
    });
  }

  test('POST /ws with upgrade headers is 405 with Allow: GET and a JSON body', async () => {
    const response = await rawRequest(
      node.port,
      [
        `POST /ws?token=${token} HTTP/1.1`,
        host,
        'Connection: Upgrade',
        'Upgrade: websocket',
        `Sec-WebSocket-Key: ${wsKey()}`,
        'Sec-WebSocket-Version: 13',
        'Content-Length: 0',
      ].join('\r\n'),
    );
    assertJsonError(response, 405, 'METHOD_NOT_ALLOWED', 'Method not allowed');
    assert.equal(response.headers.get('allow'), 'GET');
    assert.equal(node.node.hub.connectionCount, 0);
    await assertHealthy();
  });

  test('POST /ws without upgrade headers is 405 with Allow and a JSON body', async () => {
    const response = await rawRequest(
      node.port,
      [`POST /ws?token=${token} HTTP/1.1`, host, 'Content-Type: application/json', 'Content-Length: 2'].join('\r\n'),
      '{}',
    );
    assertJsonError(response, 405, 'METHOD_NOT_ALLOWED', 'Method POST is not allowed here');
    assert.equal(response.headers.get('allow'), 'GET, HEAD');
    await assertHealthy();
  });

  test('a mixed-case "Upgrade: WebSocket" (and "Connection: keep-alive, Upgrade") is upgraded with 101', async () => {
    const key = wsKey();
    const response = await rawRequest(
      node.port,
      [
        `GET /ws?token=${token} HTTP/1.1`,
        host,
        'Connection: keep-alive, Upgrade',
        'Upgrade: WebSocket',
        `Sec-WebSocket-Key: ${key}`,
        'Sec-WebSocket-Version: 13',
      ].join('\r\n'),
    );
    assert.equal(response.status, 101);
    assert.equal(response.headers.get('upgrade')?.toLowerCase(), 'websocket');
    assert.equal(
      response.headers.get('sec-websocket-accept'),
      createHash('sha1').update(key + WS_GUID).digest('base64'),
    );
    // The raw socket was dropped right after the 101: the connection must come and go cleanly.
    const deadline = Date.now() + 2000;
    while (node.node.hub.connectionCount !== 0 && Date.now() < deadline) await sleep(20);
    assert.equal(node.node.hub.connectionCount, 0);
    await assertHealthy();
  });

  test('a refused upgrade without a token is 401 with the JSON envelope, before any upgrade', async () => {
    const response = await rawRequest(
      node.port,
      [`GET /ws HTTP/1.1`, host, 'Connection: Upgrade', 'Upgrade: websocket', `Sec-WebSocket-Key: ${wsKey()}`, 'Sec-WebSocket-Version: 13'].join('\r\n'),
    );
    assertJsonError(response, 401, 'UNAUTHORIZED', 'Missing authentication token');
    await assertHealthy();
  });
});
