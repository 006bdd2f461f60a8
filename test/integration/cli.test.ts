/**
 * `ara-notify token` and `ara-notify serve` as an operator runs them
 * (SPEC §1 configuration errors and the development default, §2 claims).
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { TestWs } from '../helpers/clients.ts';
import { CliProcess, cleanEnv, ensureBuilt, freePort, tempDir } from '../helpers/cli-process.ts';
import { startTestNode, type TestNode } from '../helpers/node.ts';

const SECRET = 'cli-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
const VALID_KEY = 'cli-test-operator-key-0123456789';

const dirs: string[] = [];
const processes: CliProcess[] = [];

/** A fresh working directory with no `.env` in it. */
function emptyCwd(): string {
  const dir = tempDir('cli');
  dirs.push(dir);
  return dir;
}

function run(proc: CliProcess): CliProcess {
  processes.push(proc);
  return proc;
}

after(async () => {
  for (const proc of processes) await proc.kill();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('ara-notify token (SPEC §2 claims)', () => {
  let node: TestNode | undefined;
  after(async () => {
    await node?.stop();
  });

  test('prints one JWT with exactly sub, tenant_id, roles, channels, iat and exp, which a node with that secret accepts', async () => {
    const proc = run(CliProcess.source(
      ['token', '--sub', 'alice', '--tenant', 't-a', '--ttl', '120', '--roles', 'a,b', '--channels', 'x,y'],
      { cwd: emptyCwd(), env: cleanEnv({ JWT_SECRET: SECRET }) },
    ));
    const exit = await proc.waitForExit(20_000);
    assert.equal(exit.code, 0, proc.output());
    assert.equal(proc.stderr, '');
    const lines = proc.stdout.split('\n');
    assert.equal(lines.length, 2, `one line of output: ${JSON.stringify(proc.stdout)}`);
    assert.equal(lines[1], '');
    const token = lines[0]!;

    assert.deepEqual(decodeProtectedHeader(token), { alg: 'HS256', typ: 'JWT' });
    const claims = decodeJwt(token);
    assert.deepEqual(Object.keys(claims).sort(), ['channels', 'exp', 'iat', 'roles', 'sub', 'tenant_id']);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.tenant_id, 't-a');
    assert.deepEqual(claims.roles, ['a', 'b']);
    assert.deepEqual(claims.channels, ['x', 'y']);
    assert.equal(typeof claims.iat, 'number');
    assert.equal(claims.exp, claims.iat! + 120);
    assert.ok(Math.abs(claims.iat! - Date.now() / 1000) < 60, `iat ${claims.iat} is now`);
    await jwtVerify(token, new TextEncoder().encode(SECRET), { algorithms: ['HS256'] });

    node = await startTestNode({ JWT_SECRET: SECRET, TENANT_ENABLED: 'true' });
    const ws = await TestWs.connect(node.wsUrl(`?token=${token}`));
    const connected = await ws.nextOfType('connected');
    assert.equal(connected.user_id, 'alice');
    assert.equal(connected.tenant_id, 't-a');
    await ws.close();
  });

  test('exits 1 with a clear message when JWT_SECRET is not set', async () => {
    const proc = run(CliProcess.source(['token', '--sub', 'alice'], { cwd: emptyCwd(), env: cleanEnv() }));
    const exit = await proc.waitForExit(20_000);
    assert.equal(exit.code, 1, proc.output());
    assert.equal(proc.stdout, '');
    assert.match(proc.stderr, /^JWT_SECRET is not set\b/);
  });

  test('exits 2 with the usage when --sub is missing', async () => {
    const proc = run(CliProcess.source(['token', '--tenant', 't-a'], {
      cwd: emptyCwd(),
      env: cleanEnv({ JWT_SECRET: SECRET }),
    }));
    const exit = await proc.waitForExit(20_000);
    assert.equal(exit.code, 2, proc.output());
    assert.equal(proc.stdout, '');
    assert.match(proc.stderr, /^--sub is required\n/);
    assert.match(proc.stderr, /ara-notify token --sub <user>/);
  });
});

describe('ara-notify serve with an invalid configuration (SPEC §1)', () => {
  before(async () => {
    await ensureBuilt();
  });

  test('exits 1 and reports all three problems together, one line each', async () => {
    const proc = run(CliProcess.dist(['serve'], {
      cwd: emptyCwd(),
      env: cleanEnv({
        JWT_SECRET: SECRET,
        API_KEY: VALID_KEY,
        SERVER_HOST: '127.0.0.1',
        SERVER_PORT: '99999',
        LOG_LEVEL: 'loud',
        WEBSOCKET_MAX_CONNECTIONS: '-1',
      }),
    }));
    const exit = await proc.waitForExit(10_000);
    assert.equal(exit.code, 1, proc.output());
    const lines = proc.stderr.split('\n');
    assert.equal(lines[0], 'Configuration is invalid:');
    assert.equal(lines.at(-1), '');
    const problems = lines.slice(1, -1);
    assert.equal(problems.length, 3, proc.stderr);
    for (const problem of problems) assert.match(problem, /^ {2}- /);
    const named = (name: string, value: string) =>
      problems.filter((problem) => problem.includes(name) && problem.includes(value)).length;
    assert.equal(named('SERVER_PORT', '99999'), 1, proc.stderr);
    assert.equal(named('LOG_LEVEL', 'loud'), 1, proc.stderr);
    assert.equal(named('WEBSOCKET_MAX_CONNECTIONS', '-1'), 1, proc.stderr);
  });
});

describe('ara-notify serve with nothing configured in development (SPEC §1 embedded default)', () => {
  let port: number;
  let proc: CliProcess;
  let block: Record<string, string>;
  let blockText: string;

  before(async () => {
    await ensureBuilt();
    port = await freePort();
    // Only where to listen is given: loopback and a free port (tests run side by side).
    proc = run(CliProcess.dist(['serve'], {
      cwd: emptyCwd(),
      env: cleanEnv({ SERVER_HOST: '127.0.0.1', SERVER_PORT: String(port) }),
    }));
    assert.equal(await proc.waitForHealth(port), 200, proc.output());
    // The block is written right after listening; give the output a moment.
    const deadline = Date.now() + 5000;
    while (!/\n {2}curl: [^\n]*\n/.test(proc.stdout) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const match = /\nDevelopment credentials generated for this run[^\n]*\n((?: {2}\w+: [^\n]*\n)+)/.exec(proc.stdout);
    assert.ok(match, `credentials block printed:\n${proc.output()}`);
    blockText = match[0];
    block = {};
    for (const line of match[1]!.trimEnd().split('\n')) {
      const [, name, value] = /^ {2}(\w+): (.*)$/.exec(line)!;
      block[name!] = value!;
    }
  });

  after(async () => {
    await proc?.kill();
  });

  test('prints the generated credentials block exactly once', async () => {
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(proc.stdout.split('Development credentials generated for this run').length - 1, 1, proc.output());
    assert.deepEqual(Object.keys(block), ['jwtSecret', 'exampleToken', 'websocket', 'apiKey', 'curl']);
    assert.ok(Buffer.byteLength(block.jwtSecret!) >= 32, 'generated JWT secret has at least 32 bytes');
    assert.ok(block.apiKey!.length >= 16, 'generated API key has at least 16 characters');
    assert.equal(block.websocket, `ws://localhost:${port}/ws?token=${block.exampleToken}`);
    // Outside the block, neither generated secret is ever printed (logs never carry them, SPEC §9).
    const rest = (proc.stdout.replace(blockText, '') + proc.stderr);
    assert.equal(rest.includes(block.apiKey!), false, 'API key printed outside the block');
    assert.equal(rest.includes(block.jwtSecret!), false, 'JWT secret printed outside the block');
  });

  test('the example token verifies with the printed secret and opens a WebSocket', async () => {
    const { payload } = await jwtVerify(block.exampleToken!, new TextEncoder().encode(block.jwtSecret!), {
      algorithms: ['HS256'],
    });
    assert.equal(payload.sub, 'demo-user');
    const ws = await TestWs.connect(`ws://127.0.0.1:${port}/ws?token=${block.exampleToken}`);
    const connected = await ws.nextOfType('connected');
    assert.equal(connected.user_id, 'demo-user');
    await ws.close();
  });

  test("the curl line's API key works against /api/v1/stats and its send reaches the example token's user", async () => {
    const curl = block.curl!;
    const key = /-H 'X-API-Key: ([^']+)'/.exec(curl)?.[1];
    assert.equal(key, block.apiKey);
    assert.ok(curl.startsWith(`curl -s -X POST http://localhost:${port}/api/v1/notifications/send `), curl);
    const stats = await fetch(`http://127.0.0.1:${port}/api/v1/stats`, { headers: { 'x-api-key': key! } });
    const statsBody: any = await stats.json();
    assert.equal(stats.status, 200, JSON.stringify(statsBody));
    assert.equal(typeof statsBody.connections.total_connections, 'number');

    const body = /-d '([^']+)'$/.exec(curl)?.[1];
    assert.ok(body, curl);
    const ws = await TestWs.open(`ws://127.0.0.1:${port}/ws?token=${block.exampleToken}`);
    const sent = await fetch(`http://127.0.0.1:${port}/api/v1/notifications/send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key! },
      body,
    });
    const sentBody: any = await sent.json();
    assert.equal(sent.status, 200, JSON.stringify(sentBody));
    assert.match(sentBody.notification_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(sentBody.delivered_to, 1);
    const notification = await ws.nextOfType('notification');
    assert.equal(notification.id, sentBody.notification_id);
    assert.equal(notification.event_type, 'demo');
    assert.deepEqual(notification.payload, { hello: 'world' });
    await ws.close();
  });

  test('the API is never open: no key or a wrong key gets 401', async () => {
    for (const headers of [{}, { 'x-api-key': 'not-the-generated-key-0000' }] as Record<string, string>[]) {
      const response = await fetch(`http://127.0.0.1:${port}/api/v1/stats`, { headers });
      const body: any = await response.json();
      assert.equal(response.status, 401);
      assert.equal(body.error.code, 'UNAUTHORIZED');
    }
  });
});
