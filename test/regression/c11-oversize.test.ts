/**
 * C11 Oversize (cases/README.md; SPEC §4 "frame larger than
 * WEBSOCKET_MAX_MESSAGE_BYTES → close 1009", SPEC §6 413 PAYLOAD_TOO_LARGE).
 *
 * (a) a frame header announcing 2^63−1 bytes and nothing after it,
 * (b) 2,000 continuation fragments of 1 KB, (c) one 10 MB text frame: each
 * closed with 1009, quickly, memory flat, process up. The exact edge at
 * 65,536 / 65,537 bytes. (d) an HTTP send announcing 50 MB and trickling:
 * 413 before the body is read.
 *
 * Frames are crafted by hand on a raw TCP socket after a real handshake.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { TEST_API_KEY, sleep, startTestNode, type TestNode } from '../helpers/node.ts';

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_CLOSE = 0x8;

interface ServerFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

/** Header of a masked client frame; `length` may be any 64-bit value. */
function frameHeader(opcode: number, length: bigint, fin: boolean, mask: Buffer): Buffer {
  const first = (fin ? 0x80 : 0) | opcode;
  let header: Buffer;
  if (length < 126n) {
    header = Buffer.from([first, 0x80 | Number(length)]);
  } else if (length < 65536n) {
    header = Buffer.alloc(4);
    header[0] = first;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(Number(length), 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = first;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(length, 2);
  }
  return Buffer.concat([header, mask]);
}

/** A complete masked client frame (RFC 6455 §5.3). */
function clientFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = randomBytes(4);
  const masked = Buffer.alloc(payload.length);
  for (let i = 0; i < payload.length; i++) masked[i] = payload[i]! ^ mask[i & 3]!;
  return Buffer.concat([frameHeader(opcode, BigInt(payload.length), fin, mask), masked]);
}

/** A WebSocket client speaking raw bytes over TCP, after a genuine upgrade. */
class RawWs {
  readonly frames: ServerFrame[] = [];
  readonly ended: Promise<void>;
  #buffer = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  #gone = false;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.#take(chunk));
    socket.on('error', () => {});
    this.ended = new Promise((resolve) => socket.once('close', () => resolve()));
    void this.ended.then(() => {
      this.#gone = true;
      this.#wake();
    });
  }

  static open(port: number, token: string): Promise<RawWs> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        const status = head.subarray(0, end).toString('latin1').split('\r\n')[0]!;
        if (!status.startsWith('HTTP/1.1 101')) {
          socket.destroy();
          reject(new Error(`upgrade refused: ${status}`));
          return;
        }
        const client = new RawWs(socket);
        if (head.length > end + 4) client.#take(head.subarray(end + 4));
        resolve(client);
      };
      socket.on('data', onData);
      socket.once('error', reject);
      socket.write(
        `GET /ws?token=${token} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
          + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
  }

  /** Writes and waits for the kernel to take it; false once the peer is gone. */
  async write(data: Buffer): Promise<boolean> {
    if (this.#gone || this.socket.destroyed) return false;
    if (this.socket.write(data)) return true;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
    return !this.#gone && !this.socket.destroyed;
  }

  get closeFrame(): ServerFrame | undefined {
    return this.frames.find((f) => f.opcode === OP_CLOSE);
  }

  /** Resolves with the server's close code and reason once its close frame arrived. */
  async nextClose(timeoutMs: number): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + timeoutMs;
    while (this.closeFrame === undefined) {
      if (this.#gone) throw new Error('socket closed without a close frame');
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error('timed out waiting for a close frame');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const payload = this.closeFrame!.payload;
    return { code: payload.readUInt16BE(0), reason: payload.subarray(2).toString('utf8') };
  }

  /** Completes the closing handshake and drops the TCP connection. */
  async finish(): Promise<void> {
    if (!this.#gone && !this.socket.destroyed) {
      const body = Buffer.alloc(2);
      body.writeUInt16BE(1000);
      this.socket.end(clientFrame(OP_CLOSE, body));
    }
    const timer = setTimeout(() => this.socket.destroy(), 1000);
    await this.ended;
    clearTimeout(timer);
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  #take(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      const b = this.#buffer;
      if (b.length < 2) break;
      let length = b[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (b.length < 4) break;
        length = b.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (b.length < 10) break;
        length = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      if (b.length < offset + length) break;
      this.frames.push({ fin: (b[0]! & 0x80) !== 0, opcode: b[0]! & 0x0f, payload: b.subarray(offset, offset + length) });
      this.#buffer = b.subarray(offset + length);
    }
    this.#wake();
  }
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function protocolErrorCloses(node: TestNode): Promise<number> {
  const res = await node.api('GET', '/metrics');
  const line = res.text.split('\n').find((l) => l.startsWith('ara_ws_connections_closed_total{reason="protocol_error"} '));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

describe('C11 oversize frames and bodies (SPEC §4, §6)', () => {
  let node: TestNode;
  let token: string;

  before(async () => {
    node = await startTestNode({ WEBSOCKET_MAX_MESSAGE_BYTES: '65536' });
    token = await node.token('alice');
  });
  after(() => node.stop());

  /** Opens a raw client and waits for its `connected` greeting to be registered. */
  async function openRaw(): Promise<RawWs> {
    const raw = await RawWs.open(node.port, token);
    await waitFor(() => raw.frames.some((f) => f.opcode === OP_TEXT), 2000, 'the connected message');
    assert.equal(JSON.parse(raw.frames[0]!.payload.toString()).type, 'connected');
    return raw;
  }

  async function assertHealthyAndEmpty(): Promise<void> {
    await waitFor(() => node.node.hub.connectionCount === 0, 2000, 'the closed connection to be unregistered');
    const health = await node.api('GET', '/health');
    assert.equal(health.status, 200);
    assert.equal(health.json.status, 'healthy');
    assert.equal(await protocolErrorCloses(node), ++expectedProtocolCloses);
  }

  let expectedProtocolCloses = 0;

  test('(a) a frame header announcing 2^63−1 bytes, and nothing after it, is closed with 1009', async () => {
    const raw = await openRaw();
    const startedAt = Date.now();
    assert.equal(await raw.write(frameHeader(OP_TEXT, 2n ** 63n - 1n, true, randomBytes(4))), true);
    const close = await raw.nextClose(2000);
    assert.equal(close.code, 1009);
    assert.ok(Date.now() - startedAt < 2000);
    await raw.finish();
    await assertHealthyAndEmpty();
  });

  test('(b) 2,000 continuation fragments of 1 KB are closed with 1009 once the message passes the limit', async () => {
    const raw = await openRaw();
    const fragment = Buffer.alloc(1024, 0x61);
    let written = 0;
    assert.equal(await raw.write(clientFrame(OP_TEXT, fragment, false)), true);
    for (let i = 0; i < 2000 && raw.closeFrame === undefined; i++) {
      if (!(await raw.write(clientFrame(OP_CONTINUATION, fragment, i === 1999)))) break;
      written++;
    }
    const close = await raw.nextClose(2000);
    assert.equal(close.code, 1009);
    // No message was ever handled: nothing but the greeting and the close came back.
    assert.deepEqual(
      raw.frames.map((f) => f.opcode),
      [OP_TEXT, OP_CLOSE],
    );
    assert.ok(written >= 64, `wrote ${written} fragments`);
    await raw.finish();
    await assertHealthyAndEmpty();
  });

  test('(c) one 10 MB text frame is closed with 1009 and memory stays flat (< 50 MB RSS growth)', async () => {
    const rssBefore = process.memoryUsage().rss;
    const raw = await openRaw();
    const total = 10 * 1024 * 1024;
    // An all-zero mask leaves the payload as is, so one chunk can be written over and over.
    assert.equal(await raw.write(frameHeader(OP_TEXT, BigInt(total), true, Buffer.alloc(4))), true);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    for (let sent = 0; sent < total; sent += chunk.length) {
      if (!(await raw.write(chunk))) break;
    }
    const close = await raw.nextClose(3000);
    assert.equal(close.code, 1009);
    // The server refuses on the header and drops the connection: it never buffers the 10 MB.
    await raw.finish();
    await assertHealthyAndEmpty();
    const growthMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;
    assert.ok(growthMb < 50, `RSS grew by ${growthMb.toFixed(1)} MB`);
  });

  test('a text message of exactly 65,536 bytes is accepted (a padded Ping gets pong); 65,537 bytes closes with 1009', async () => {
    const padded = (bytes: number) => {
      const empty = '{"type":"Ping","pad":""}';
      const text = `{"type":"Ping","pad":"${'x'.repeat(bytes - empty.length)}"}`;
      assert.equal(Buffer.byteLength(text), bytes);
      return text;
    };
    const ws = await TestWs.open(node.wsUrl(`?token=${token}`), { perMessageDeflate: false });
    ws.send(padded(65_536));
    assert.deepEqual(await ws.nextOfType('pong'), { type: 'pong' });
    assert.equal(ws.socket.readyState, ws.socket.OPEN);
    ws.send(padded(65_537));
    assert.equal((await ws.closed).code, 1009);
    await assertHealthyAndEmpty();
  });

  test('with WEBSOCKET_COMPRESSION=true, a small compressed frame inflating past the limit is closed with 1009', async () => {
    const deflating = await startTestNode({ WEBSOCKET_MAX_MESSAGE_BYTES: '65536', WEBSOCKET_COMPRESSION: 'true' });
    try {
      const ws = await TestWs.open(deflating.wsUrl(`?token=${await deflating.token('alice')}`), {
        perMessageDeflate: { threshold: 0 },
      });
      assert.match(String(ws.socket.extensions), /permessage-deflate/);
      // Compressed, the edge case still fits: 65,536 inflated bytes are accepted.
      const empty = '{"type":"Ping","pad":""}';
      ws.send(`{"type":"Ping","pad":"${'x'.repeat(65_536 - empty.length)}"}`);
      assert.deepEqual(await ws.nextOfType('pong'), { type: 'pong' });
      // 4 MB of one letter deflates to a few KB on the wire.
      ws.send(`{"type":"Ping","pad":"${'x'.repeat(4 * 1024 * 1024)}"}`);
      assert.equal((await ws.closed).code, 1009);
      await waitFor(() => deflating.node.hub.connectionCount === 0, 2000, 'the closed connection to be unregistered');
      assert.equal((await deflating.api('GET', '/health')).status, 200);
    } finally {
      await deflating.stop();
    }
  });

  /**
   * POSTs a send whose body trickles in `chunkBytes` every `everyMs` (after
   * the given headers), stopping at 1 MB; resolves when the answer arrives.
   */
  function tricklingSend(
    headers: Record<string, string>,
    chunkBytes: number,
    everyMs: number,
  ): Promise<{ status: number; body: string; sentBytes: number }> {
    return new Promise((resolve, reject) => {
      let sentBytes = 0;
      const req = httpRequest(
        `${node.httpUrl}/api/v1/notifications/send`,
        { method: 'POST', headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY, ...headers } },
        (res) => {
          const sentWhenAnswered = sentBytes;
          clearInterval(timer);
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (body += chunk));
          res.on('end', () => {
            req.destroy();
            resolve({ status: res.statusCode ?? 0, body, sentBytes: sentWhenAnswered });
          });
        },
      );
      req.on('error', (error) => {
        clearInterval(timer);
        reject(error);
      });
      const chunk = Buffer.alloc(chunkBytes, 0x20);
      req.write('{"target_user_id":"alice","event_type":"x","payload":"');
      const timer = setInterval(() => {
        if (sentBytes >= 1024 * 1024) {
          clearInterval(timer);
          req.destroy(new Error('sent 1 MB without an answer'));
          return;
        }
        sentBytes += chunk.length;
        req.write(chunk);
      }, everyMs);
    });
  }

  test('(d) a send announcing Content-Length 50,000,000 with a trickling body is answered 413 before 1 MB was sent', async () => {
    const outcome = await tricklingSend({ 'content-length': '50000000' }, 1024, 100);
    assert.equal(outcome.status, 413);
    assert.deepEqual(JSON.parse(outcome.body), {
      error: { code: 'PAYLOAD_TOO_LARGE', message: 'Request body is too large' },
    });
    assert.ok(outcome.sentBytes < 1024 * 1024, `sent ${outcome.sentBytes} bytes before the answer`);
    assert.equal((await node.api('GET', '/health')).status, 200);
  });

  test('(d) a chunked send body with no Content-Length is answered 413 once it passes 64 KiB, long before 1 MB', async () => {
    const outcome = await tricklingSend({}, 8 * 1024, 20);
    assert.equal(outcome.status, 413);
    assert.deepEqual(JSON.parse(outcome.body), {
      error: { code: 'PAYLOAD_TOO_LARGE', message: 'Request body is too large' },
    });
    assert.ok(outcome.sentBytes < 1024 * 1024, `sent ${outcome.sentBytes} bytes before the answer`);
    assert.equal((await node.api('GET', '/health')).status, 200);
  });
});
