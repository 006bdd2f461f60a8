/**
 * C02 Unsigned tokens (cases/README.md; SPEC §1 JWT_SECRET, §2 "Only the
 * configured algorithm is accepted; alg none … rejected").
 *
 * `alg` none/None/NONE, two-segment tokens, an empty signature and an
 * HS256 token signed with the empty string are all refused with 401 on
 * /ws and /sse, with no upgrade. The service refuses to start in
 * production with no JWT secret or key, and with a secret under 32 bytes.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../src/config/config.ts';
import { runCliOnce } from '../helpers/cli-process.ts';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { TEST_SECRET, startTestNode, type TestNode } from '../helpers/node.ts';

const INVALID_TOKEN = { error: { code: 'UNAUTHORIZED', message: 'Invalid token' } };

const b64url = (value: string | Buffer) => Buffer.from(value).toString('base64url');
const segment = (value: object) => b64url(JSON.stringify(value));
const hmac = (input: string, secret: string) => createHmac('sha256', secret).update(input).digest('base64url');

function claims(sub = 'alice'): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { sub, iat: now, exp: now + 600 };
}

/** Every unsigned or wrongly signed token of the case, by name. */
function craftedTokens(): Array<[string, string]> {
  const payload = segment(claims());
  const hs256Header = segment({ alg: 'HS256', typ: 'JWT' });
  const signedInput = `${hs256Header}.${payload}`;
  const tokens: Array<[string, string]> = [];
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    const header = segment({ alg, typ: 'JWT' });
    tokens.push([`alg ${alg}, empty signature`, `${header}.${payload}.`]);
    tokens.push([`alg ${alg}, two segments`, `${header}.${payload}`]);
    tokens.push([`alg ${alg}, carrying a valid HS256 signature`, `${header}.${payload}.${hmac(`${header}.${payload}`, TEST_SECRET)}`]);
  }
  tokens.push(['alg none without typ', `${segment({ alg: 'none' })}.${payload}.`]);
  tokens.push(['HS256 header, empty signature', `${signedInput}.`]);
  tokens.push(['HS256 header, two segments', signedInput]);
  tokens.push(['HS256 signed with the empty string', `${signedInput}.${hmac(signedInput, '')}`]);
  tokens.push(['header without alg', `${segment({ typ: 'JWT' })}.${payload}.${hmac(`${segment({ typ: 'JWT' })}.${payload}`, TEST_SECRET)}`]);
  tokens.push(['one segment', payload]);
  tokens.push(['four segments', `${signedInput}.${hmac(signedInput, TEST_SECRET)}.extra`]);
  return tokens;
}

async function wsRefusal(url: string, headers: Record<string, string> = {}): Promise<HandshakeRefusal> {
  try {
    const ws = await TestWs.connect(url, { headers });
    await ws.close();
  } catch (error) {
    return error as HandshakeRefusal;
  }
  throw new Error('the WebSocket upgrade succeeded (101)');
}

async function sseRefusal(url: string, headers: Record<string, string> = {}): Promise<HandshakeRefusal> {
  try {
    const sse = await TestSse.connect(url, headers);
    sse.close();
  } catch (error) {
    return error as HandshakeRefusal;
  }
  throw new Error('the SSE stream was opened (200)');
}

function assertInvalidToken(refusal: HandshakeRefusal, what: string): void {
  assert.equal(refusal.status, 401, `${what}: status`);
  assert.match(String(refusal.headers['content-type']), /^application\/json/, `${what}: content type`);
  assert.deepEqual(refusal.json, INVALID_TOKEN, `${what}: body`);
}

/** `ara-notify serve` in an empty temp dir with exactly `env`. */
const runCliServe = (env: Record<string, string>) => runCliOnce(['serve'], env);

describe('C02 unsigned tokens are refused on /ws and /sse (SPEC §2)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode();
  });
  after(() => node.stop());

  test('a correctly signed HS256 token is accepted (control)', async () => {
    const token = await node.token('alice');
    const ws = await TestWs.open(node.wsUrl(`?token=${token}`));
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${token}`);
    assert.equal(node.node.hub.connectionCount, 2);
    await ws.close();
    sse.close();
  });

  test('every unsigned, empty-signed or two-segment token gets 401 "Invalid token" on /ws, no upgrade', async () => {
    const opened = node.node.metrics.wsOpened;
    const before = (await opened.get()).values[0]?.value ?? 0;
    for (const [what, token] of craftedTokens()) {
      assertInvalidToken(await wsRefusal(node.wsUrl(`?token=${encodeURIComponent(token)}`)), `/ws?token= ${what}`);
      assertInvalidToken(await wsRefusal(node.wsUrl(), { authorization: `Bearer ${token}` }), `/ws Bearer ${what}`);
    }
    assert.equal((await opened.get()).values[0]?.value ?? 0, before, 'no connection was registered');
  });

  test('every unsigned, empty-signed or two-segment token gets 401 "Invalid token" on /sse', async () => {
    for (const [what, token] of craftedTokens()) {
      assertInvalidToken(await sseRefusal(`${node.httpUrl}/sse?token=${encodeURIComponent(token)}`), `/sse?token= ${what}`);
      assertInvalidToken(await sseRefusal(`${node.httpUrl}/sse`, { authorization: `Bearer ${token}` }), `/sse Bearer ${what}`);
    }
  });

  test('an empty token is refused as invalid and a missing one as missing', async () => {
    assertInvalidToken(await wsRefusal(node.wsUrl('?token=')), '/ws empty token');
    assertInvalidToken(await sseRefusal(`${node.httpUrl}/sse?token=`), '/sse empty token');
    const missing = { error: { code: 'UNAUTHORIZED', message: 'Missing authentication token' } };
    const ws = await wsRefusal(node.wsUrl());
    assert.equal(ws.status, 401);
    assert.deepEqual(ws.json, missing);
    const sse = await sseRefusal(`${node.httpUrl}/sse`);
    assert.equal(sse.status, 401);
    assert.deepEqual(sse.json, missing);
    assert.equal(node.node.hub.connectionCount, 0);
  });
});

describe('C02 production refuses to start without a usable JWT key (SPEC §1)', () => {
  const PRODUCTION = {
    RUN_MODE: 'production',
    API_KEY: 'a-production-key-0123456789',
    CORS_ORIGINS: 'https://app.example.com',
    SERVER_HOST: '127.0.0.1',
    SERVER_PORT: '0',
  };
  const NO_SECRET =
    'JWT_SECRET is required in production with JWT_ALGORITHM=HS256 (at least 32 bytes), ' +
    'or use RS*/ES*/EdDSA with JWT_PUBLIC_KEY or JWT_JWKS_URL';

  test('parseConfig refuses production with no JWT secret (unset or empty) or public key', () => {
    for (const env of [PRODUCTION, { ...PRODUCTION, JWT_SECRET: '' }]) {
      const result = parseConfig(env);
      assert.equal(result.ok, false);
      assert.deepEqual(!result.ok && result.problems, [NO_SECRET]);
    }
    const rs = parseConfig({ ...PRODUCTION, JWT_ALGORITHM: 'RS256' });
    assert.equal(rs.ok, false);
    assert.deepEqual(!rs.ok && rs.problems, ['JWT_PUBLIC_KEY or JWT_JWKS_URL is required with JWT_ALGORITHM=RS256']);
  });

  test('parseConfig refuses a secret shorter than 32 bytes, counted in UTF-8 bytes, in every mode', () => {
    for (const mode of ['production', 'development']) {
      for (const secret of ['x'.repeat(31), `${'é'.repeat(15)}a`]) {
        const result = parseConfig({ ...PRODUCTION, RUN_MODE: mode, JWT_SECRET: secret });
        assert.equal(result.ok, false, `${mode}: ${secret}`);
        assert.deepEqual(!result.ok && result.problems, ['JWT_SECRET must be at least 32 bytes (it has 31)']);
      }
    }
    for (const secret of ['x'.repeat(32), 'é'.repeat(16)]) {
      const result = parseConfig({ ...PRODUCTION, JWT_SECRET: secret });
      assert.equal(result.ok, true, secret);
    }
  });

  test('`ara-notify serve` exits 1 naming the problem when production has no JWT secret', async () => {
    const run = await runCliServe(PRODUCTION);
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stderr, `Configuration is invalid:\n  - ${NO_SECRET}\n`);
    assert.doesNotMatch(run.stdout, /listening/);
  });

  test('`ara-notify serve` exits 1 naming the problem when the secret is shorter than 32 bytes', async () => {
    const secret = 'short-secret-31-bytes-long-abcd';
    assert.equal(Buffer.byteLength(secret), 31);
    const run = await runCliServe({ ...PRODUCTION, JWT_SECRET: secret });
    assert.equal(run.code, 1, run.stderr);
    assert.equal(run.stderr, 'Configuration is invalid:\n  - JWT_SECRET must be at least 32 bytes (it has 31)\n');
    assert.ok(!run.stderr.includes(secret) && !run.stdout.includes(secret), 'the secret is never repeated');
  });
});
