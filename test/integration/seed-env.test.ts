/**
 * The user's deployment (seeds/single-node-commercial-deployment.md): its
 * `.env` template must work with its names exactly as written once the
 * placeholder secrets are replaced, and production must refuse to start
 * with the placeholders left in, naming each one (SPEC preamble, §1, §2, §3).
 *
 * The block is kept verbatim in test/fixtures/seed.env so this test does not
 * need ../shared; when the document is there, the two must be identical.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT, type JWTPayload } from 'jose';
import { TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { CliProcess, REPO_ROOT, cleanEnv, ensureBuilt, freePort, tempDir } from '../helpers/cli-process.ts';

const SEED_DOC = join(REPO_ROOT, '..', 'shared', 'seeds', 'single-node-commercial-deployment.md');
const SEED_FIXTURE = join(REPO_ROOT, 'test', 'fixtures', 'seed.env');
const APP_ORIGIN = 'https://app.example.com';

/** The first ```bash block of the document, with its final newline. */
function envBlockOf(markdown: string): string {
  const match = /^```bash\n([\s\S]*?)^```$/m.exec(markdown);
  assert.ok(match, 'the seed document has a ```bash block');
  return match[1]!;
}

/** Replaces `NAME=…` lines; each name must occur exactly once, so a changed template is noticed. */
function substitute(envText: string, values: Record<string, string>): string {
  let text = envText;
  for (const [name, value] of Object.entries(values)) {
    const line = new RegExp(`^${name}=.*$`, 'gm');
    assert.equal(text.match(line)?.length, 1, `${name}= appears exactly once in the seed .env`);
    text = text.replace(line, `${name}=${value}`);
  }
  return text;
}

function sign(secret: string, sub: string, claims: JWTPayload): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + 600)
    .sign(new TextEncoder().encode(secret));
}

async function refusalOf(attempt: Promise<TestWs>): Promise<HandshakeRefusal> {
  try {
    const ws = await attempt;
    await ws.close();
  } catch (error) {
    return error as HandshakeRefusal;
  }
  assert.fail('the handshake was accepted');
}

const seedEnv = readFileSync(SEED_FIXTURE, 'utf8');
const dirs: string[] = [];
const processes: CliProcess[] = [];

before(async () => {
  await ensureBuilt();
});

after(async () => {
  for (const proc of processes) await proc.kill();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('the seed deployment document (SPEC preamble)', () => {
  test('its .env block is the one kept in test/fixtures/seed.env', { skip: !existsSync(SEED_DOC) && 'no ../shared beside the repository' }, () => {
    assert.equal(envBlockOf(readFileSync(SEED_DOC, 'utf8')), seedEnv);
  });
});

describe('the seed .env with real secrets (SPEC §1, §2, §3)', () => {
  const jwtSecret = randomBytes(48).toString('base64url');
  const apiKey = `k${randomBytes(24).toString('base64url')}`;
  let port: number;
  let proc: CliProcess;
  let client: TestWs | undefined;

  before(async () => {
    port = await freePort();
    const dir = tempDir('seed');
    dirs.push(dir);
    writeFileSync(join(dir, '.env'), substitute(seedEnv, {
      JWT_SECRET: jwtSecret,
      API_KEY: apiKey,
      REDIS_URL: 'redis://127.0.0.1:6379',
      // Only loopback in tests; the names and everything else stay as written.
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: String(port),
    }));
    // None of the seed's variables are in the real environment: .env must supply them.
    proc = CliProcess.dist(['serve'], { cwd: dir, env: cleanEnv() });
    processes.push(proc);
    const health = await proc.waitForHealth(port);
    assert.equal(health, 200, proc.output());
  });

  after(async () => {
    client?.socket.terminate();
    await proc?.kill();
  });

  test('starts in production from ./.env and delivers a tenant send to an allowed-origin WebSocket client', async () => {
    const token = await sign(jwtSecret, 'user-123', {
      tenant_id: 'acme-corp',
      iss: 'your-company',
      aud: 'your-product',
    });
    client = await TestWs.connect(`ws://127.0.0.1:${port}/ws?token=${token}`, { headers: { Origin: APP_ORIGIN } });
    const connected = await client.nextOfType('connected');
    assert.equal(connected.user_id, 'user-123');
    assert.equal(connected.tenant_id, 'acme-corp');
    assert.equal(connected.heartbeat_interval, 30);

    const response = await fetch(`http://127.0.0.1:${port}/api/v1/notifications/send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': apiKey, 'x-tenant-id': 'acme-corp' },
      body: JSON.stringify({ target_user_id: 'user-123', event_type: 'invoice.paid', payload: { invoice: 'INV-7', amount: 120 } }),
    });
    const sent: any = await response.json();
    assert.equal(response.status, 200, JSON.stringify(sent));
    assert.equal(sent.success, true);
    assert.equal(sent.delivered_to, 1);
    assert.equal(sent.failed, 0);
    assert.equal(sent.queued, 0);

    const notification = await client.nextOfType('notification');
    assert.equal(notification.id, sent.notification_id);
    assert.equal(notification.event_type, 'invoice.paid');
    assert.deepEqual(notification.payload, { invoice: 'INV-7', amount: 120 });
    assert.deepEqual(notification.metadata, { source: 'http-api', priority: 'Normal' });
  });

  test('refuses a token without the configured iss and aud with 401', async () => {
    const token = await sign(jwtSecret, 'user-123', { tenant_id: 'acme-corp' });
    const refusal = await refusalOf(
      TestWs.connect(`ws://127.0.0.1:${port}/ws?token=${token}`, { headers: { Origin: APP_ORIGIN } }),
    );
    assert.equal(refusal.status, 401);
    assert.deepEqual(refusal.json, { error: { code: 'UNAUTHORIZED', message: 'Invalid token' } });
  });

  test('refuses an Origin outside CORS_ORIGINS with 403 before the upgrade', async () => {
    const token = await sign(jwtSecret, 'user-123', {
      tenant_id: 'acme-corp',
      iss: 'your-company',
      aud: 'your-product',
    });
    const refusal = await refusalOf(
      TestWs.connect(`ws://127.0.0.1:${port}/ws?token=${token}`, { headers: { Origin: 'https://evil.example' } }),
    );
    assert.equal(refusal.status, 403);
    assert.equal(refusal.json?.error?.code, 'ORIGIN_NOT_ALLOWED');
  });

  test('stops on SIGTERM with exit code 0', async () => {
    await client?.close();
    proc.signal('SIGTERM');
    const exit = await proc.waitForExit(12_000);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, proc.output());
  });
});

describe('the seed .env with its placeholders left in (SPEC §1 production rules)', () => {
  test('refuses to start with exit code 1, naming JWT_SECRET and API_KEY each on its own line', async () => {
    const dir = tempDir('seed-placeholders');
    dirs.push(dir);
    const port = await freePort();
    // Placeholders untouched. Host, port and Redis point at loopback so that
    // even a wrongly accepted start would stay on this machine.
    writeFileSync(join(dir, '.env'), substitute(seedEnv, {
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: String(port),
      REDIS_URL: 'redis://127.0.0.1:6379',
    }));
    const proc = CliProcess.dist(['serve'], { cwd: dir, env: cleanEnv() });
    processes.push(proc);
    const exit = await proc.waitForExit(10_000);
    assert.equal(exit.code, 1, proc.output());
    assert.deepEqual(proc.stderr.split('\n'), [
      'Configuration is invalid:',
      '  - JWT_SECRET is a placeholder value; set a real secret',
      '  - API_KEY is a placeholder value; set a real key',
      '',
    ]);
    assert.equal(proc.stdout, '');
  });
});
