/**
 * C04 Token in logs (cases/README.md; SPEC §9 "tokens, API keys and
 * Authorization are never logged (a ?token= in a URL is redacted)").
 *
 * At LOG_LEVEL=trace, connect to /ws?token=T and /sse?token=T with valid,
 * tampered and expired tokens (and the same in `Authorization: Bearer`,
 * in a WS Refresh, and on routes that answer errors). Neither a token nor
 * its signature segment may appear in the log, in /metrics, or in any
 * HTTP error body — checked for an in-process node (its captured log
 * lines) and for a real `ara-notify serve` process (stdout and stderr).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { TEST_API_KEY, TEST_SECRET, sleep, startTestNode, type TestNode } from '../helpers/node.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Tokens {
  valid: string;
  tampered: string;
  expired: string;
}

function sign(payload: Record<string, unknown>): string {
  const header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
  const input = `${header}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  return `${input}.${createHmac('sha256', TEST_SECRET).update(input).digest('base64url')}`;
}

function makeTokens(): Tokens {
  const now = Math.floor(Date.now() / 1000);
  const valid = sign({ sub: 'alice', iat: now, exp: now + 600 });
  const [header, , signature] = valid.split('.');
  const forged = Buffer.from(JSON.stringify({ sub: 'mallory', iat: now, exp: now + 600 })).toString('base64url');
  return {
    valid,
    tampered: `${header}.${forged}.${signature}`,
    expired: sign({ sub: 'alice', iat: now - 7200, exp: now - 3600 }),
  };
}

/** Each token and its signature segment: none may leak anywhere. */
function secretsOf(tokens: Tokens): Array<[string, string]> {
  const secrets: Array<[string, string]> = [];
  for (const [name, token] of Object.entries(tokens)) {
    secrets.push([`${name} token`, token]);
    secrets.push([`${name} signature`, token.split('.')[2]!]);
  }
  return secrets;
}

function assertNoSecrets(where: string, text: string, tokens: Tokens): void {
  for (const [what, secret] of secretsOf(tokens)) {
    assert.equal(text.includes(secret), false, `the ${what} appears in ${where}`);
  }
  assert.equal(text.includes(TEST_API_KEY), false, `the API key appears in ${where}`);
}

async function refusal(open: () => Promise<TestWs | TestSse>): Promise<HandshakeRefusal> {
  try {
    const client = await open();
    if (client instanceof TestWs) await client.close();
    else client.close();
  } catch (error) {
    return error as HandshakeRefusal;
  }
  throw new Error('the connection was accepted');
}

/**
 * Every way the case sends tokens to a node at `base`; returns every HTTP
 * and realtime error body received, for the leak check.
 */
async function exercise(base: string, tokens: Tokens): Promise<string[]> {
  const bodies: string[] = [];
  const wsBase = `${base.replace(/^http/, 'ws')}/ws`;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  const ws = await TestWs.open(`${wsBase}?token=${tokens.valid}`);
  const wsBearer = await TestWs.open(wsBase, { headers: bearer(tokens.valid) });
  const sse = await TestSse.open(`${base}/sse?token=${tokens.valid}`);
  const sseBearer = await TestSse.open(`${base}/sse`, bearer(tokens.valid));
  for (const bad of [tokens.tampered, tokens.expired]) {
    const error = await ws.request({ type: 'Refresh', payload: { token: bad } }, 'error');
    assert.equal(error.code, 'INVALID_TOKEN');
    bodies.push(JSON.stringify(error));
  }
  const sent = await fetch(`${base}/api/v1/notifications/send`, {
    method: 'POST',
    headers: { 'x-api-key': TEST_API_KEY, 'content-type': 'application/json' },
    body: JSON.stringify({ target_user_id: 'alice', event_type: 'c04', payload: { n: 1 } }),
  });
  assert.equal(((await sent.json()) as { delivered_to: number }).delivered_to, 4);
  await ws.nextOfType('notification');
  await sse.nextEvent('notification');
  await Promise.all([ws.close(), wsBearer.close()]);
  sse.close();
  sseBearer.close();

  for (const bad of [tokens.tampered, tokens.expired]) {
    const refusals = [
      await refusal(() => TestWs.open(`${wsBase}?token=${bad}`)),
      await refusal(() => TestWs.open(wsBase, { headers: bearer(bad) })),
      await refusal(() => TestSse.open(`${base}/sse?token=${bad}`)),
      await refusal(() => TestSse.open(`${base}/sse`, bearer(bad))),
    ];
    for (const refused of refusals) {
      assert.equal(refused.status, 401);
      assert.deepEqual(refused.json, { error: { code: 'UNAUTHORIZED', message: 'Invalid token' } });
      bodies.push(refused.body);
    }
  }

  for (const token of Object.values(tokens)) {
    const calls: Array<[string, string, RequestInit, number]> = [
      ['GET', `/ws?token=${token}`, {}, 426],
      ['GET', `/nowhere?token=${token}`, {}, 404],
      ['DELETE', `/sse?token=${token}`, {}, 405],
      ['GET', `/sse?channels=a:b&token=${token}`, {}, token === tokens.valid ? 400 : 401],
      ['GET', `/api/v1/channels?token=${token}`, { headers: { 'x-api-key': 'wrong-key' } }, 401],
      ['GET', '/api/v1/channels', { headers: { 'x-api-key': token } }, 401],
      ['GET', `/metrics?token=${token}`, { headers: bearer(token) }, 200],
    ];
    for (const [method, path, init, status] of calls) {
      const res = await fetch(`${base}${path}`, { method, ...init });
      assert.equal(res.status, status, `${method} ${path.split('?')[0]}`);
      bodies.push(await res.text());
    }
  }
  return bodies;
}

describe('C04 tokens never reach logs, metrics or error bodies — in-process node at trace (SPEC §9)', () => {
  let node: TestNode;
  let tokens: Tokens;
  let bodies: string[];
  before(async () => {
    node = await startTestNode({ LOG_LEVEL: 'trace' });
    tokens = makeTokens();
    bodies = await exercise(node.httpUrl, tokens);
    await sleep(100);
  });
  after(() => node.stop());

  test('the node logged the traffic at trace level, with the token redacted from URLs', () => {
    const log = node.logText();
    assert.ok(node.lines.some((line) => JSON.parse(line).level === 10), 'trace lines were written');
    assert.match(log, /websocket upgrade request/);
    assert.match(log, /\/ws\?token=\[REDACTED\]/);
    assert.match(log, /realtime connection refused: invalid token/);
    assert.match(log, /refresh refused: invalid token/);
  });

  test('no token or signature segment appears in any log line', () => {
    assertNoSecrets('the log', node.logText(), tokens);
  });

  test('no token or signature segment appears in /metrics', async () => {
    const metrics = await node.api('GET', '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.text, /^ara_http_requests_total/m);
    assertNoSecrets('/metrics', metrics.text, tokens);
  });

  test('no token or signature segment appears in any error body received', () => {
    assert.ok(bodies.length >= 30);
    bodies.forEach((body, index) => assertNoSecrets(`error body #${index}: ${body.slice(0, 120)}`, body, tokens));
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

describe('C04 tokens never reach stdout or stderr of `ara-notify serve` at LOG_LEVEL=trace (SPEC §9)', () => {
  let child: ChildProcess;
  let cwd: string;
  let stdout = '';
  let stderr = '';
  let exitCode: number | null = null;
  let tokens: Tokens;
  let bodies: string[];
  let metricsText = '';

  before(async () => {
    const port = await freePort();
    cwd = await mkdtemp(join(tmpdir(), 'ara-c04-'));
    child = spawn(
      process.execPath,
      ['--import', pathToFileURL(join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href, join(ROOT, 'src/cli.ts'), 'serve'],
      {
        cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          PATH: process.env.PATH ?? '',
          RUN_MODE: 'development',
          SERVER_HOST: '127.0.0.1',
          SERVER_PORT: String(port),
          JWT_SECRET: TEST_SECRET,
          API_KEY: TEST_API_KEY,
          LOG_LEVEL: 'trace',
          SHUTDOWN_GRACE_SECONDS: '2',
        },
      },
    );
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<void>((resolve) => child.on('close', (code) => ((exitCode = code), resolve())));
    const base = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (exitCode !== null) throw new Error(`serve exited early (${exitCode}): ${stderr}`);
      const ready = await fetch(`${base}/health/ready`).then((r) => r.ok, () => false);
      if (ready && stdout.includes('listening')) break;
      if (Date.now() > deadline) throw new Error(`serve did not start: ${stdout}\n${stderr}`);
      await sleep(100);
    }
    tokens = makeTokens();
    bodies = await exercise(base, tokens);
    metricsText = await fetch(`${base}/metrics`).then((r) => r.text());
    await sleep(200);
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  });
  after(async () => {
    if (exitCode === null) child?.kill('SIGKILL');
    if (cwd) await rm(cwd, { recursive: true, force: true });
  });

  test('the process logged at trace level and stopped cleanly on SIGTERM', () => {
    assert.equal(exitCode, 0, stderr);
    assert.match(stdout, /ara node listening/);
    assert.match(stdout, /websocket upgrade request/);
    assert.match(stdout, /realtime connection refused: invalid token/);
  });

  test('no token or signature segment appears in stdout or stderr', () => {
    assertNoSecrets('stdout', stdout, tokens);
    assertNoSecrets('stderr', stderr, tokens);
  });

  test('no token or signature segment appears in /metrics or any error body', () => {
    assert.match(metricsText, /^ara_http_requests_total/m);
    assertNoSecrets('/metrics', metricsText, tokens);
    bodies.forEach((body, index) => assertNoSecrets(`error body #${index}`, body, tokens));
  });
});
