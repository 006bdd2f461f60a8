/**
 * Graceful shutdown of the real process (SPEC §10, §4 and §5 `shutdown`):
 * SIGTERM → stop accepting, `shutdown` to every client, close 1001 / end of
 * stream, let in-flight HTTP requests finish, exit 0 — all within
 * SHUTDOWN_GRACE_SECONDS, whatever clients do.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { CliProcess, cleanEnv, ensureBuilt, freePort, tempDir, type Exit } from '../helpers/cli-process.ts';
import { signToken, sleep } from '../helpers/node.ts';

const SECRET = 'shutdown-test-secret-0123456789-abcdefghijklmn';
const API_KEY = 'shutdown-test-operator-key-0123';
const GRACE_SECONDS = 2;
/** SPEC §10: exit within the grace period; one second of slack for process start-up noise. */
const EXIT_BOUND_MS = (GRACE_SECONDS + 1) * 1000;

const dirs: string[] = [];
const processes: CliProcess[] = [];
const rawSockets: Socket[] = [];

after(async () => {
  for (const socket of rawSockets) socket.destroy();
  for (const proc of processes) await proc.kill();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

before(async () => {
  await ensureBuilt();
});

const token = (sub: string) => signToken(sub, {}, { secret: SECRET });

async function startServe(extraEnv: Record<string, string> = {}): Promise<{ proc: CliProcess; port: number }> {
  const port = await freePort();
  const cwd = tempDir('shutdown');
  dirs.push(cwd);
  const proc = CliProcess.dist(['serve'], {
    cwd,
    env: cleanEnv({
      RUN_MODE: 'development',
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: String(port),
      JWT_SECRET: SECRET,
      API_KEY,
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'info',
      SHUTDOWN_GRACE_SECONDS: String(GRACE_SECONDS),
      ...extraEnv,
    }),
  });
  processes.push(proc);
  assert.equal(await proc.waitForHealth(port), 200, proc.output());
  return { proc, port };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function assertShutdownMessage(message: any): void {
  assert.deepEqual(message, {
    type: 'shutdown',
    reason: 'Server shutting down',
    reconnect_after_seconds: message?.reconnect_after_seconds,
  });
  assert.ok(
    Number.isInteger(message.reconnect_after_seconds) && message.reconnect_after_seconds >= 1,
    `reconnect_after_seconds is an integer >= 1 (got ${message.reconnect_after_seconds})`,
  );
}

async function send(port: number, userId: string, payload: unknown): Promise<any> {
  const response = await fetch(`http://127.0.0.1:${port}/api/v1/notifications/send`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
    body: JSON.stringify({ target_user_id: userId, event_type: 'filler', payload }),
  });
  const body: any = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body;
}

/** Opens a TCP connection, writes `head`, and resolves once the response status line has arrived. */
function rawRequest(port: number, head: string): Promise<{ socket: Socket; firstChunk: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    rawSockets.push(socket);
    let received = '';
    const onData = (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes('\r\n\r\n')) {
        socket.off('data', onData);
        // Never read again: the kernel buffers fill and then the server's writes back up.
        socket.pause();
        resolve({ socket, firstChunk: received });
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(head);
  });
}

/** What a connection attempt during shutdown got: 'accepted', an HTTP status, or 'refused' (no TCP connection). */
type Probe = 'accepted' | 'refused' | number;

async function probeWs(port: number, userToken: string): Promise<Probe> {
  try {
    const ws = await within(TestWs.connect(`ws://127.0.0.1:${port}/ws?token=${userToken}`), 3000, 'WS probe');
    ws.socket.terminate();
    return 'accepted';
  } catch (error) {
    const status = (error as { status?: unknown }).status;
    return typeof status === 'number' ? status : 'refused';
  }
}

async function probeSse(port: number, userToken: string): Promise<Probe> {
  try {
    const sse = await within(TestSse.connect(`http://127.0.0.1:${port}/sse?token=${userToken}`), 3000, 'SSE probe');
    sse.close();
    return 'accepted';
  } catch (error) {
    const status = (error as { status?: unknown }).status;
    return typeof status === 'number' ? status : 'refused';
  }
}

async function probeHttp(port: number): Promise<Probe> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/stats`, {
      headers: { 'x-api-key': API_KEY },
      signal: AbortSignal.timeout(3000),
    });
    await response.arrayBuffer();
    return response.status === 200 ? 'accepted' : response.status;
  } catch (error) {
    if ((error as Error).name === 'TimeoutError') throw new Error('HTTP probe hung during shutdown');
    return 'refused';
  }
}

describe('SIGTERM with well-behaved clients (SPEC §10)', () => {
  let proc: CliProcess;
  let port: number;
  const wsClients: TestWs[] = [];
  const sseClients: TestSse[] = [];
  let sigtermAtMs: number;
  let exit: Promise<Exit>;
  let inFlight: Promise<string>;
  let racing: Promise<number | 'refused'>;

  before(async () => {
    ({ proc, port } = await startServe());
    for (const user of ['ws-1', 'ws-2', 'ws-3']) {
      wsClients.push(await TestWs.open(`ws://127.0.0.1:${port}/ws?token=${await token(user)}`));
    }
    for (const user of ['sse-1', 'sse-2']) {
      sseClients.push(await TestSse.open(`http://127.0.0.1:${port}/sse?token=${await token(user)}`));
    }

    // A request whose headers are in but whose body is not when SIGTERM arrives.
    const body = JSON.stringify({ target_user_id: 'offline-user', event_type: 'late', payload: { n: 1 } });
    const half = Math.floor(body.length / 2);
    const socket = connect(port, '127.0.0.1');
    rawSockets.push(socket);
    let response = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (response += chunk));
    inFlight = new Promise((resolve, reject) => {
      socket.on('close', () => resolve(response));
      socket.on('error', reject);
    });
    socket.write(
      'POST /api/v1/notifications/send HTTP/1.1\r\n' +
        `Host: 127.0.0.1:${port}\r\n` +
        'Content-Type: application/json\r\n' +
        `X-API-Key: ${API_KEY}\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        'Connection: close\r\n\r\n' +
        body.slice(0, half),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));

    // A request issued right before SIGTERM: answered or refused, never left hanging.
    racing = fetch(`http://127.0.0.1:${port}/api/v1/notifications/send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
      body: JSON.stringify({ target_user_id: 'ws-1', event_type: 'racing', payload: {} }),
    }).then(
      async (res) => {
        await res.arrayBuffer();
        return res.status;
      },
      () => 'refused' as const,
    );

    sigtermAtMs = Date.now();
    proc.signal('SIGTERM');
    exit = proc.exited;

    // Once the server has started shutting down, the in-flight body completes.
    await within(wsClients[0]!.nextOfType('shutdown', EXIT_BOUND_MS), EXIT_BOUND_MS, 'shutdown message');
    socket.write(body.slice(half));
  });

  test('every WebSocket client gets the shutdown message, then close code 1001', async () => {
    for (const ws of wsClients) {
      const closed = await within(ws.closed, EXIT_BOUND_MS, 'WS close');
      assert.equal(closed.code, 1001);
      const shutdowns = ws.messages.filter((m) => m.type === 'shutdown');
      assert.equal(shutdowns.length, 1);
      assertShutdownMessage(ws.messages.at(-1));
    }
  });

  test('every SSE client gets a shutdown event, then the stream ends', async () => {
    for (const sse of sseClients) {
      await within(sse.ended, EXIT_BOUND_MS, 'SSE end of stream');
      const last = sse.events.at(-1)!;
      assert.equal(last.event, 'shutdown');
      assertShutdownMessage(last.data);
      assert.equal(sse.events.filter((e) => e.event === 'shutdown').length, 1);
    }
  });

  test('an HTTP request in flight when SIGTERM arrives is still answered 200', async () => {
    const response = await within(inFlight, EXIT_BOUND_MS + 1000, 'in-flight request');
    assert.match(response, /^HTTP\/1\.1 200 /, `response: ${JSON.stringify(response)}`);
    const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4));
    assert.equal(body.delivered_to, 0);
    assert.equal(body.success, false);
  });

  test('a send issued right before SIGTERM is answered or refused, never left hanging', async () => {
    const outcome = await within(racing, EXIT_BOUND_MS + 1000, 'racing request');
    assert.ok(outcome === 200 || outcome === 503 || outcome === 'refused', `outcome ${outcome}`);
  });

  test('the process exits with code 0 within SHUTDOWN_GRACE_SECONDS', async () => {
    const result = await within(exit, EXIT_BOUND_MS + 2000, 'process exit');
    assert.deepEqual({ code: result.code, signal: result.signal }, { code: 0, signal: null }, proc.output());
    assert.ok(result.atMs - sigtermAtMs <= EXIT_BOUND_MS, `exited ${result.atMs - sigtermAtMs} ms after SIGTERM`);
  });
});

describe('SIGTERM with clients that ignore the close (SPEC §10 "whatever clients do")', () => {
  let proc: CliProcess;
  let port: number;
  let polite: TestWs;

  before(async () => {
    // A large allowance so the stuck clients are still registered when SIGTERM arrives.
    ({ proc, port } = await startServe({ WEBSOCKET_MAX_BUFFERED_BYTES: String(64 * 1024 * 1024) }));
    polite = await TestWs.open(`ws://127.0.0.1:${port}/ws?token=${await token('polite')}`);

    const wsStuck = await rawRequest(port,
      `GET /ws?token=${await token('stuck-ws')} HTTP/1.1\r\n` +
        `Host: 127.0.0.1:${port}\r\n` +
        'Upgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    assert.match(wsStuck.firstChunk, /^HTTP\/1\.1 101 /);
    const sseStuck = await rawRequest(port,
      `GET /sse?token=${await token('stuck-sse')} HTTP/1.1\r\n` +
        `Host: 127.0.0.1:${port}\r\nAccept: text/event-stream\r\n\r\n`);
    assert.match(sseStuck.firstChunk, /^HTTP\/1\.1 200 /);

    // Fill both stuck clients' receive paths so the server's writes back up.
    const filler = 'x'.repeat(60_000);
    for (let i = 0; i < 60; i++) {
      await send(port, 'stuck-ws', { i, filler });
      await send(port, 'stuck-sse', { i, filler });
    }
    const stats = await fetch(`http://127.0.0.1:${port}/api/v1/stats`, { headers: { 'x-api-key': API_KEY } });
    assert.equal(((await stats.json()) as any).connections.total_connections, 3);
  });

  test('new connections and requests are refused while shutting down, and the process still exits 0 in time', async () => {
    const probeToken = await token('late-comer');
    const sigtermAtMs = Date.now();
    proc.signal('SIGTERM');

    assertShutdownMessage(await within(polite.nextOfType('shutdown', EXIT_BOUND_MS), EXIT_BOUND_MS, 'shutdown message'));
    assert.equal((await within(polite.closed, EXIT_BOUND_MS, 'WS close')).code, 1001);

    // The stuck clients keep the process in its grace period; nothing new gets in.
    assert.equal(proc.running, true, 'still in the grace period');
    const refusedOrUnavailable = (probe: Probe) => probe === 'refused' || probe === 503;
    const ws = await probeWs(port, probeToken);
    assert.ok(refusedOrUnavailable(ws), `new WebSocket during shutdown: ${ws}`);
    const sse = await probeSse(port, probeToken);
    assert.ok(refusedOrUnavailable(sse), `new SSE stream during shutdown: ${sse}`);
    const http = await probeHttp(port);
    assert.ok(refusedOrUnavailable(http), `new HTTP request during shutdown: ${http}`);

    const exit = await within(proc.exited, EXIT_BOUND_MS + 2000, 'process exit');
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, proc.output());
    assert.ok(exit.atMs - sigtermAtMs <= EXIT_BOUND_MS, `exited ${exit.atMs - sigtermAtMs} ms after SIGTERM`);
  });
});

describe('shutdown when the reader of the log has gone (SPEC §10)', () => {
  /**
   * Starts a node, optionally connects a client, closes our ends of its
   * stdout and stderr, then SIGTERM. Without clients the node logs its last
   * lines and exits at once: the case where those lines are still pending
   * when the process exits.
   */
  async function sigtermWithLogReaderGone(
    extraEnv: Record<string, string>,
    withClient: boolean,
  ): Promise<{ exit: Exit; afterMs: number }> {
    const { proc, port } = await startServe(extraEnv);
    const client = withClient ? await TestWs.open(`ws://127.0.0.1:${port}/ws?token=${await token('log-reader-gone')}`) : null;
    proc.child.stdout!.destroy();
    proc.child.stderr!.destroy();
    await sleep(200);
    const sigtermAtMs = Date.now();
    proc.signal('SIGTERM');
    const exit = await within(proc.exited, EXIT_BOUND_MS + 5000, 'process exit');
    await client?.closed;
    return { exit, afterMs: exit.atMs - sigtermAtMs };
  }

  test('with LOG_FORMAT=json the process still exits 0 within the grace period', async () => {
    const { exit, afterMs } = await sigtermWithLogReaderGone({}, false);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
    assert.ok(afterMs <= EXIT_BOUND_MS, `exited ${afterMs} ms after SIGTERM`);
  });

  test('with LOG_FORMAT=pretty, whose log thread can block the exit, the process ends at most one second after the grace period', async () => {
    const { exit, afterMs } = await sigtermWithLogReaderGone({ LOG_FORMAT: 'pretty' }, true);
    // Either it exits by itself or the exit watchdog (src/ops/exit-watchdog.ts) kills it.
    assert.ok(exit.code === 0 || exit.signal === 'SIGKILL', `exit ${JSON.stringify(exit)}`);
    assert.ok(afterMs <= EXIT_BOUND_MS + 1000, `ended ${afterMs} ms after SIGTERM`);
  });
});
