/**
 * C03 Leeway and time claims (cases/README.md; SPEC §1 JWT_LEEWAY_SECONDS,
 * §2 claims table: exp required and numeric, nbf honoured).
 *
 * With JWT_LEEWAY_SECONDS=30: exp 10 s ago accepted; 31 s and 1 h ago
 * refused; nbf 60 s ahead refused; exp missing refused; exp as the string
 * "9999999999" refused — on /ws and /sse. JWT_LEEWAY_SECONDS of abc, -5
 * and 1e12 stops the start with a clear message.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../src/config/config.ts';
import { runCliOnce } from '../helpers/cli-process.ts';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { BASE_ENV, TEST_SECRET, startTestNode, type TestNode } from '../helpers/node.ts';

const INVALID_TOKEN = { error: { code: 'UNAUTHORIZED', message: 'Invalid token' } };

/** An HS256 token with exactly these claims (no defaults added). */
function sign(payload: Record<string, unknown>, secret = TEST_SECRET): string {
  const input = `${Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url')}.${Buffer.from(
    JSON.stringify(payload),
  ).toString('base64url')}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);

async function refusalOf(open: () => Promise<TestWs | TestSse>): Promise<HandshakeRefusal> {
  try {
    const client = await open();
    if (client instanceof TestWs) await client.close();
    else client.close();
  } catch (error) {
    return error as HandshakeRefusal;
  }
  throw new Error('the connection was accepted');
}

/** `ara-notify serve` in an empty temp dir with exactly `env`. */
const runCliServe = (env: Record<string, string>) => runCliOnce(['serve'], env);

describe('C03 time claims with JWT_LEEWAY_SECONDS=30 on /ws and /sse (SPEC §2)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({ JWT_LEEWAY_SECONDS: '30' });
  });
  after(() => node.stop());

  const ws = (token: string) => TestWs.open(node.wsUrl(`?token=${encodeURIComponent(token)}`));
  const sse = (token: string) => TestSse.open(`${node.httpUrl}/sse?token=${encodeURIComponent(token)}`);

  async function assertAccepted(token: string, what: string): Promise<void> {
    const socket = await ws(token);
    assert.equal(socket.messages[0].type, 'connected', what);
    assert.equal(socket.messages[0].user_id, 'alice', what);
    const stream = await sse(token);
    assert.equal(stream.events[0]!.data.user_id, 'alice', what);
    await socket.close();
    stream.close();
  }

  async function assertRefused(token: string, what: string): Promise<void> {
    for (const [transport, open] of [['/ws', ws], ['/sse', sse]] as const) {
      const refusal = await refusalOf(() => open(token));
      assert.equal(refusal.status, 401, `${what} on ${transport}`);
      assert.deepEqual(refusal.json, INVALID_TOKEN, `${what} on ${transport}`);
    }
  }

  test('the configured leeway is 30 seconds', () => {
    assert.equal(node.config.jwt.leewaySeconds, 30);
  });

  test('a token whose exp passed 10 s ago is accepted (within the leeway)', async () => {
    await assertAccepted(sign({ sub: 'alice', iat: now() - 100, exp: now() - 10 }), 'exp -10 s');
  });

  test('a token whose exp passed 31 s ago is refused with 401', async () => {
    await assertRefused(sign({ sub: 'alice', iat: now() - 100, exp: now() - 31 }), 'exp -31 s');
  });

  test('a token whose exp passed 1 h ago is refused with 401', async () => {
    await assertRefused(sign({ sub: 'alice', iat: now() - 7200, exp: now() - 3600 }), 'exp -1 h');
  });

  test('a token with nbf 60 s ahead is refused; nbf 20 s ahead is within the leeway', async () => {
    await assertRefused(sign({ sub: 'alice', nbf: now() + 60, exp: now() + 600 }), 'nbf +60 s');
    await assertAccepted(sign({ sub: 'alice', nbf: now() + 20, exp: now() + 600 }), 'nbf +20 s');
  });

  test('a token without exp is refused with 401', async () => {
    await assertRefused(sign({ sub: 'alice', iat: now() }), 'no exp');
  });

  test('a token with exp as the string "9999999999" is refused with 401', async () => {
    await assertRefused(sign({ sub: 'alice', iat: now(), exp: '9999999999' }), 'exp string');
  });

  test('a token with exp that is not a finite number is refused with 401', async () => {
    await assertRefused(sign({ sub: 'alice', exp: null }), 'exp null');
    await assertRefused(sign({ sub: 'alice', exp: [now() + 600] }), 'exp array');
    await assertRefused(sign({ sub: 'alice', exp: true }), 'exp true');
  });

  test('a token with nbf as a string is refused with 401', async () => {
    await assertRefused(sign({ sub: 'alice', nbf: String(now() - 10), exp: now() + 600 }), 'nbf string');
  });
});

describe('C03 invalid JWT_LEEWAY_SECONDS stops the start (SPEC §1)', () => {
  const BAD_VALUES = ['abc', '-5', '1e12'];
  const message = (value: string) =>
    `JWT_LEEWAY_SECONDS must be a whole number of seconds from 0 to 86400 (got ${JSON.stringify(value)})`;

  test('parseConfig reports abc, -5 and 1e12 with one clear line each', () => {
    for (const value of BAD_VALUES) {
      const result = parseConfig({ ...BASE_ENV, JWT_LEEWAY_SECONDS: value });
      assert.equal(result.ok, false, value);
      assert.deepEqual(!result.ok && result.problems, [message(value)]);
    }
  });

  test('parseConfig accepts 0, 30 and 86400 and defaults to 60', () => {
    for (const [value, expected] of [['0', 0], ['30', 30], ['86400', 86_400]] as const) {
      const result = parseConfig({ ...BASE_ENV, JWT_LEEWAY_SECONDS: value });
      assert.equal(result.ok && result.config.jwt.leewaySeconds, expected);
    }
    const fallback = parseConfig(BASE_ENV);
    assert.equal(fallback.ok && fallback.config.jwt.leewaySeconds, 60);
  });

  test('`ara-notify serve` exits 1 with the message for abc, -5 and 1e12', async () => {
    const runs = await Promise.all(BAD_VALUES.map((value) => runCliServe({ ...BASE_ENV, JWT_LEEWAY_SECONDS: value })));
    runs.forEach((run, index) => {
      const value = BAD_VALUES[index]!;
      assert.equal(run.code, 1, `${value}: ${run.stderr}`);
      assert.equal(run.stderr, `Configuration is invalid:\n  - ${message(value)}\n`);
      assert.doesNotMatch(run.stdout, /listening/);
    });
  });
});
