/**
 * A client process of the bench: opens many WebSocket connections from one
 * 127.0.0.x source address and counts what arrives. Forked by bench/run.ts
 * and driven over IPC (see bench/lib/ipc.ts).
 *
 * Lean on purpose, because on a 2-core machine its CPU is taken from the
 * server it measures: WebSocket is spoken directly on TCP sockets (no `ws`
 * Receiver, no UTF-8 decoding, no JSON parsing). Per frame the work is the
 * header, a byte search for `"ts":` inside the frame and reading the digits
 * after it (the sender's monotonic microseconds), so latency = receive
 * time of the TCP read − ts. Everything else is only counted.
 *
 * Servers:
 * - service:  GET /ws?token=<HS256 JWT>[&channels=bench]; ready at the `connected` message.
 * - limit:    GET /ws?user=u<i>[&channels=bench]; ready at the 101 response.
 * - socketio: engine.io v4 over WebSocket: on the open packet `0{…}` send `40`; ready at
 *             the `40{…}` connect ack; events arrive as `42[…]`; ping `2` is answered `3`.
 * Server pings (opcode 9) are answered with pongs, so idle timeouts never fire.
 * Connections are closed with a TCP reset (no TIME_WAIT left on the source ports).
 */
import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { SignJWT } from 'jose';
import { Histogram } from '../lib/histogram.ts';
import { serveCommands, type ClientCounters, type ConnectResult, type ConnectSpec } from '../lib/ipc.ts';
import { CHANNEL, JWT_SECRET, nowUs, userId } from '../lib/wire.ts';
import { cpuMicros } from '../proc.ts';

const TS = Buffer.from('"ts":');
const HEADER_END = Buffer.from('\r\n\r\n');
const CONNECTED = Buffer.from('"type":"connected"');
const CONNECT_ATTEMPT_MS = 15_000;

const State = { Handshake: 0, Open: 1, Ready: 2 } as const;
type State = (typeof State)[keyof typeof State];

class Conn {
  state: State = State.Handshake;
  pending: Buffer | null = null;
  closing = false;
  done = false;
  timer: NodeJS.Timeout | null = null;

  constructor(
    readonly index: number,
    readonly socket: Socket,
  ) {}
}

const histogram = new Histogram();
const counters: Omit<ClientCounters, 'cpuMicros' | 'open'> = {
  notifications: 0,
  otherFrames: 0,
  bytes: 0,
  unexpectedCloses: 0,
  closeCodes: {},
};
let spec: ConnectSpec | null = null;
let requests: string[] = [];
const tokens = new Map<number, string>();
const conns = new Set<Conn>();
let progressTimer: NodeJS.Timeout | null = null;
let onSettled: ((conn: Conn, error: string | null) => void) | null = null;

/** A masked client frame; a zero masking key leaves the payload as it is. */
function clientFrame(opcode: number, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
  const header = Buffer.from([0x80 | opcode, 0x80 | body.length, 0, 0, 0, 0]);
  return Buffer.concat([header, body]);
}
const SIO_PONG = clientFrame(1, '3');
const SIO_CONNECT = clientFrame(1, '40');

function settle(conn: Conn, error: string | null): void {
  if (conn.done) return;
  conn.done = true;
  if (conn.timer) clearTimeout(conn.timer);
  conn.timer = null;
  onSettled?.(conn, error);
}

/**
 * Reads land in one buffer shared by every socket of the process (`onread`:
 * no allocation and no stream machinery per read); a partial frame left at
 * the end of a read is copied out before the next read overwrites it.
 */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

function onData(conn: Conn, chunk: Buffer): void {
  const now = nowUs();
  let buffer = conn.pending === null ? chunk : Buffer.concat([conn.pending, chunk]);
  conn.pending = null;
  if (conn.state === State.Handshake) {
    const end = buffer.indexOf(HEADER_END);
    if (end < 0) {
      conn.pending = Buffer.from(buffer);
      return;
    }
    if (buffer.toString('latin1', 0, 12) !== 'HTTP/1.1 101') {
      const text = buffer.toString('utf8', 0, Math.min(buffer.length, 400)).replace(/\r\n/g, ' | ');
      conn.closing = true;
      conn.socket.destroy();
      settle(conn, `handshake refused: ${text}`);
      return;
    }
    conn.state = State.Open;
    if (spec!.kind === 'limit') {
      conn.state = State.Ready;
      settle(conn, null);
    }
    buffer = buffer.subarray(end + 4);
  }
  const length = buffer.length;
  let offset = 0;
  while (length - offset >= 2) {
    const b0 = buffer[offset]!;
    let size = buffer[offset + 1]! & 0x7f;
    let start = offset + 2;
    if (size === 126) {
      if (length - offset < 4) break;
      size = buffer.readUInt16BE(offset + 2);
      start = offset + 4;
    } else if (size === 127) {
      if (length - offset < 10) break;
      size = buffer.readUInt32BE(offset + 6);
      start = offset + 10;
    }
    const end = start + size;
    if (end > length) break;
    const opcode = b0 & 0x0f;
    if (opcode === 1 || opcode === 0 || opcode === 2) onTextFrame(conn, buffer, start, end, now);
    else if (opcode === 9) conn.socket.write(clientFrame(0xa, buffer.subarray(start, end)));
    else if (opcode === 8) {
      const code = size >= 2 ? buffer.readUInt16BE(start) : 1005;
      if (!conn.closing) counters.closeCodes[code] = (counters.closeCodes[code] ?? 0) + 1;
    }
    offset = end;
  }
  if (offset < length) conn.pending = Buffer.from(buffer.subarray(offset));
}

function onTextFrame(conn: Conn, buffer: Buffer, start: number, end: number, now: number): void {
  counters.bytes += end - start;
  if (spec!.kind === 'socketio') {
    const first = buffer[start];
    if (first === 0x34 /* 4 */) {
      const second = buffer[start + 1];
      if (second === 0x30 /* 0: connect ack */) {
        counters.otherFrames++;
        if (conn.state !== State.Ready) {
          conn.state = State.Ready;
          settle(conn, null);
        }
        return;
      }
      // 42[…]: an event; fall through to the timestamp scan
    } else {
      counters.otherFrames++;
      if (first === 0x32 /* 2: ping */) conn.socket.write(SIO_PONG);
      else if (first === 0x30 /* 0: open */) conn.socket.write(SIO_CONNECT);
      return;
    }
  } else if (conn.state !== State.Ready) {
    // the service's `connected` greeting (anything else first is a refusal, e.g. CONNECTION_LIMIT)
    counters.otherFrames++;
    const greeting = buffer.indexOf(CONNECTED, start);
    if (greeting >= 0 && greeting < end) {
      conn.state = State.Ready;
      settle(conn, null);
    } else {
      settle(conn, `first message was not 'connected': ${buffer.toString('utf8', start, Math.min(end, start + 200))}`);
    }
    return;
  }
  const at = buffer.indexOf(TS, start);
  if (at < 0 || at >= end) {
    counters.otherFrames++;
    return;
  }
  let ts = 0;
  for (let i = at + 5; i < end; i++) {
    const digit = buffer[i]! - 48;
    if (digit < 0 || digit > 9) break;
    ts = ts * 10 + digit;
  }
  counters.notifications++;
  histogram.record(now > ts ? now - ts : 0);
}

function openOne(index: number, request: string, port: number): Conn {
  let conn: Conn | null = null;
  const socket = connect({
    host: '127.0.0.1',
    port,
    localAddress: spec!.localAddress,
    noDelay: true,
    onread: {
      buffer: READ_BUFFER,
      callback: (bytes: number, buffer: Buffer) => {
        onData(conn!, buffer.subarray(0, bytes));
        return true;
      },
    },
  });
  conn = new Conn(index, socket);
  conns.add(conn);
  conn.timer = setTimeout(() => {
    conn!.closing = true;
    socket.destroy();
    settle(conn!, `no ready connection within ${CONNECT_ATTEMPT_MS} ms`);
  }, CONNECT_ATTEMPT_MS);
  socket.on('connect', () => socket.write(request));
  const self = conn;
  socket.on('error', (error: NodeJS.ErrnoException) => settle(self, error.code ?? error.message));
  socket.on('close', () => {
    conns.delete(self);
    if (!self.closing) {
      if (self.done) counters.unexpectedCloses++;
      settle(self, 'closed by the server before it was ready');
    }
  });
  return self;
}

async function prepare(next: ConnectSpec): Promise<{ tokensMs: number }> {
  spec = next;
  const started = Date.now();
  const key = new TextEncoder().encode(JWT_SECRET);
  requests = [];
  for (let i = next.first; i < next.first + next.count; i++) {
    const port = next.ports[i % next.ports.length]!;
    const channels = i < next.subscribeBelow ? `&channels=${CHANNEL}` : '';
    let target: string;
    if (next.kind === 'service') {
      let token = tokens.get(i);
      if (token === undefined) {
        token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(userId(i)).setIssuedAt().setExpirationTime('3h').sign(key);
        tokens.set(i, token);
      }
      target = `/ws?token=${token}${channels}`;
    } else if (next.kind === 'limit') {
      target = `/ws?user=${userId(i)}${channels}`;
    } else {
      target = `/socket.io/?EIO=4&transport=websocket&user=${userId(i)}${channels}`;
    }
    requests.push(
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
  }
  return { tokensMs: Date.now() - started };
}

function connectAll(): Promise<ConnectResult> {
  const current = spec!;
  const result: ConnectResult = { ready: 0, failed: 0, errors: [], startUs: nowUs(), endUs: 0 };
  let launched = 0;
  let settled = 0;
  return new Promise((resolve) => {
    const report = setInterval(() => process.send?.({ event: 'connecting', ready: result.ready, failed: result.failed }), 500);
    const finish = () => {
      clearInterval(report);
      clearTimeout(deadline);
      onSettled = null;
      resolve(result);
    };
    const deadline = setTimeout(() => {
      result.errors.push(`connect phase ended after ${current.timeoutMs} ms with ${current.count - settled} attempts unsettled`);
      finish();
    }, current.timeoutMs);
    const launch = () => {
      while (launched < current.count && launched - settled < current.concurrency) {
        const index = current.first + launched;
        openOne(index, requests[launched]!, current.ports[index % current.ports.length]!);
        launched++;
      }
    };
    onSettled = (_conn, error) => {
      settled++;
      if (error === null) {
        result.ready++;
        result.endUs = nowUs();
      } else {
        result.failed++;
        if (result.errors.length < 5 && !result.errors.includes(error)) result.errors.push(error);
      }
      if (settled === current.count) finish();
      else launch();
    };
    if (current.count === 0) finish();
    else launch();
  });
}

async function closeAll(): Promise<{ closed: number }> {
  const closing = [...conns];
  for (const conn of closing) {
    conn.closing = true;
    if (conn.timer) clearTimeout(conn.timer);
    // RST instead of FIN: no TIME_WAIT on our source ports, and the server sees the peer go at once.
    if (conn.socket.readyState === 'open' || conn.socket.readyState === 'writeOnly') conn.socket.resetAndDestroy();
    else conn.socket.destroy();
  }
  const deadline = Date.now() + 5000;
  while (conns.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  conns.clear();
  return { closed: closing.length };
}

function snapshot(): ClientCounters {
  return { ...counters, closeCodes: { ...counters.closeCodes }, open: conns.size, cpuMicros: cpuMicros(process.pid) };
}

serveCommands(async (message) => {
  switch (message.cmd) {
    case 'prepare':
      return prepare(message.spec as ConnectSpec);
    case 'connect':
      return connectAll();
    case 'counters':
      return snapshot();
    case 'reset':
      histogram.reset();
      return snapshot();
    case 'histogram':
      return { histogram: histogram.toData(), counters: snapshot() };
    case 'progress': {
      if (progressTimer) clearInterval(progressTimer);
      progressTimer = null;
      if (message.on) {
        let last = -1;
        progressTimer = setInterval(() => {
          if (counters.notifications !== last) {
            last = counters.notifications;
            process.send?.({ event: 'progress', notifications: last });
          }
        }, 10);
      }
      return snapshot();
    }
    case 'close':
      return closeAll();
    default:
      throw new Error(`unknown command ${message.cmd}`);
  }
});
