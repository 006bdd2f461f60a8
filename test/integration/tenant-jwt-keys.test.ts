/**
 * Per-tenant JWT keys and JWKS (SPEC §1 TENANTS_FILE `jwt`, JWT_JWKS_URL;
 * §2; §3). A tenant with its own key accepts only tokens verified by it;
 * the global key never opens it and its key opens no other tenant, the
 * unverified `tenant_id` only choosing which key to try. JWKS endpoints
 * are the configured URLs only (never a token's `jku`/`x5u`/`jwk`), cached,
 * and refetched for an unknown `kid` at most once per cooldown.
 */
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { startTestNode, TEST_SECRET, type TestNode } from '../helpers/node.ts';

const T_A_SECRET = 'tenant-a-own-hmac-secret-0123456789abcdef';
/** jose's cooldown between JWKS fetches triggered by unknown kids (src/auth/jwt.ts). */
const JWKS_COOLDOWN_MS = 30_000;

/** A JWKS endpoint on loopback that counts how often it is fetched. */
class JwksServer {
  hits = 0;
  keys: object[] = [];
  readonly #server: Server;

  constructor() {
    this.#server = createServer((req, res) => {
      this.hits++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: this.keys }));
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/jwks.json`;
  }

  stop(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

function rsaKey(kid: string): { privateKey: KeyObject; jwk: object } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' } };
}

function claims(sub: string, tenantId?: string): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return tenantId === undefined ? { sub, iat: now, exp: now + 600 } : { sub, tenant_id: tenantId, iat: now, exp: now + 600 };
}

/** A JWT built by hand so that any header can be forged. */
function forge(header: Record<string, unknown>, body: Record<string, unknown>, signer: (input: Buffer) => Buffer): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode(header)}.${encode(body)}`;
  return `${input}.${signer(Buffer.from(input)).toString('base64url')}`;
}

const hs256 = (secret: string) => (input: Buffer) => createHmac('sha256', secret).update(input).digest();
const rs256 = (key: KeyObject) => (input: Buffer) => sign('sha256', input, key);

function hsToken(secret: string, body: Record<string, unknown>): string {
  return forge({ alg: 'HS256', typ: 'JWT' }, body, hs256(secret));
}

function rsToken(key: KeyObject, header: Record<string, unknown>, body: Record<string, unknown>): string {
  return forge({ alg: 'RS256', typ: 'JWT', ...header }, body, rs256(key));
}

/** `accepted <tenant>/<user>` or `refused <status> <code>`: one line that says what happened. */
async function outcome(node: TestNode, token: string): Promise<string> {
  try {
    const ws = await TestWs.open(node.wsUrl(`?token=${token}`));
    const connected = ws.messages[0];
    await ws.close();
    return `accepted ${connected.tenant_id}/${connected.user_id}`;
  } catch (error) {
    const refusal = error as HandshakeRefusal;
    return `refused ${refusal.status} ${refusal.json?.error?.code} ${refusal.json?.error?.message}`;
  }
}

const REFUSED = 'refused 401 UNAUTHORIZED Invalid token';

describe('TENANTS_FILE jwt keys: HS256 tenant, JWKS tenant, global-key tenant (SPEC §1, §3)', () => {
  const bKey = rsaKey('b-1');
  const stranger = rsaKey('nope');
  const attacker = rsaKey('evil-1');
  let jwks: JwksServer;
  let evil: JwksServer;
  let dir: string;
  let node: TestNode;

  before(async () => {
    jwks = await new JwksServer().start();
    jwks.keys = [bKey.jwk];
    evil = await new JwksServer().start();
    evil.keys = [attacker.jwk, { ...attacker.jwk, kid: 'b-1' }];
    dir = mkdtempSync(join(tmpdir(), 'ara-tenant-jwt-'));
    const file = join(dir, 'tenants.json');
    writeFileSync(file, JSON.stringify({
      tenants: [
        { id: 't-a', jwt: { algorithm: 'HS256', secret: T_A_SECRET } },
        { id: 't-b', jwt: { jwks_url: jwks.url } },
        { id: 't-c' },
      ],
    }));
    node = await startTestNode({ TENANT_ENABLED: 'true', TENANTS_FILE: file });
  });
  after(async () => {
    await node.stop();
    await jwks.stop();
    await evil.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("a t-a token signed with the global secret is refused: the global key does not open t-a", async () => {
    assert.equal(await outcome(node, hsToken(TEST_SECRET, claims('alice', 't-a'))), REFUSED);
  });

  test("a t-a token signed with t-a's own secret is accepted into t-a", async () => {
    assert.equal(await outcome(node, hsToken(T_A_SECRET, claims('alice', 't-a'))), 'accepted t-a/alice');
  });

  test("t-a's secret opens no other tenant: tokens claiming t-c, t-b, default or no tenant are refused", async () => {
    for (const tenant of ['t-c', 't-b', 'default', undefined]) {
      assert.equal(await outcome(node, hsToken(T_A_SECRET, claims('alice', tenant))), REFUSED, String(tenant));
    }
  });

  test('a malformed tenant_id cannot steer the key choice: refused with either key', async () => {
    for (const tenant of [['t-a'], 't-a ', ' t-a', 't-a\u0000', '', 42, { id: 't-a' }]) {
      const body = { ...claims('alice'), tenant_id: tenant };
      assert.equal(await outcome(node, hsToken(T_A_SECRET, body)), REFUSED, JSON.stringify(tenant));
      assert.equal(await outcome(node, hsToken(TEST_SECRET, body)), REFUSED, JSON.stringify(tenant));
    }
  });

  test('tenant ids are case-sensitive: T-A is another tenant, opened by the global key and never as t-a', async () => {
    assert.equal(await outcome(node, hsToken(T_A_SECRET, claims('alice', 'T-A'))), REFUSED);
    assert.equal(await outcome(node, hsToken(TEST_SECRET, claims('alice', 'T-A'))), 'accepted T-A/alice');
  });

  test('t-c (no jwt of its own) and default accept tokens of the global secret', async () => {
    assert.equal(await outcome(node, hsToken(TEST_SECRET, claims('carl', 't-c'))), 'accepted t-c/carl');
    assert.equal(await outcome(node, hsToken(TEST_SECRET, claims('dave'))), 'accepted default/dave');
  });

  test('t-b tokens signed with its JWKS key are accepted; the JWKS is fetched once and cached', async () => {
    assert.equal(jwks.hits, 0, 'nothing is fetched before a t-b token arrives');
    assert.equal(await outcome(node, rsToken(bKey.privateKey, { kid: 'b-1' }, claims('carol', 't-b'))), 'accepted t-b/carol');
    assert.equal(await outcome(node, rsToken(bKey.privateKey, { kid: 'b-1' }, claims('cleo', 't-b'))), 'accepted t-b/cleo');
    assert.equal(jwks.hits, 1);
  });

  test("t-b's JWKS key opens no other tenant: the same signature claiming t-a, t-c or default is refused", async () => {
    for (const tenant of ['t-a', 't-c', 'default', undefined]) {
      const token = rsToken(bKey.privateKey, { kid: 'b-1' }, claims('carol', tenant));
      assert.equal(await outcome(node, token), REFUSED, String(tenant));
    }
  });

  test('HS256 tokens for t-b are refused, whether keyed with the global secret or with the JWK text', async () => {
    assert.equal(await outcome(node, hsToken(TEST_SECRET, claims('carol', 't-b'))), REFUSED);
    const withKid = forge({ alg: 'HS256', kid: 'b-1' }, claims('carol', 't-b'), hs256(JSON.stringify(bKey.jwk)));
    assert.equal(await outcome(node, withKid), REFUSED);
  });

  test('an unknown kid is refused, and a burst of 20 causes at most one refetch (≤ 2 fetches in all)', async () => {
    const hitsBefore = jwks.hits;
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        outcome(node, rsToken(stranger.privateKey, { kid: `nope-${i}` }, claims('carol', 't-b')))),
    );
    assert.deepEqual(new Set(results), new Set([REFUSED]));
    assert.ok(jwks.hits - hitsBefore <= 1, `refetched ${jwks.hits - hitsBefore} times`);
    assert.ok(jwks.hits <= 2, `fetched ${jwks.hits} times`);
    assert.equal(await outcome(node, rsToken(stranger.privateKey, { kid: 'b-1' }, claims('carol', 't-b'))), REFUSED,
      'a known kid with the wrong key is refused too');
  });

  test('jku, x5u and jwk headers are ignored: refused, and the server they name is never contacted', async () => {
    const forged = [
      { kid: 'evil-1', jku: evil.url },
      { kid: 'b-1', jku: evil.url },
      { jku: evil.url },
      { kid: 'evil-1', x5u: evil.url.replace('jwks.json', 'cert.pem') },
      { kid: 'evil-1', jwk: attacker.jwk },
      { jwk: attacker.jwk },
    ];
    for (const header of forged) {
      const token = rsToken(attacker.privateKey, header, claims('carol', 't-b'));
      assert.equal(await outcome(node, token), REFUSED, JSON.stringify(Object.keys(header)));
    }
    assert.equal(evil.hits, 0);
  });
});

describe('global JWT_JWKS_URL: key rotation (SPEC §1)', () => {
  const k1 = rsaKey('k1');
  const k2 = rsaKey('k2');
  let jwks: JwksServer;
  let node: TestNode;
  let restoreClock: (() => void) | null = null;

  before(async () => {
    jwks = await new JwksServer().start();
    jwks.keys = [k1.jwk];
    node = await startTestNode({ JWT_SECRET: '', JWT_ALGORITHM: 'RS256', JWT_JWKS_URL: jwks.url });
  });
  after(async () => {
    restoreClock?.();
    await node.stop();
    await jwks.stop();
  });

  test('accepts a token of the served key and refuses an HS256 token keyed with its JWK', async () => {
    assert.equal(await outcome(node, rsToken(k1.privateKey, { kid: 'k1' }, claims('alice'))), 'accepted default/alice');
    assert.equal(await outcome(node, forge({ alg: 'HS256', kid: 'k1' }, claims('alice'), hs256(JSON.stringify(k1.jwk)))), REFUSED);
    assert.equal(jwks.hits, 1);
  });

  test('right after a fetch, a token with a new kid is refused without a refetch (cooldown)', async () => {
    jwks.keys = [k2.jwk];
    assert.equal(await outcome(node, rsToken(k2.privateKey, { kid: 'k2' }, claims('alice'))), REFUSED);
    assert.equal(jwks.hits, 1);
  });

  test('once the cooldown has passed, the new kid triggers one refetch and is accepted; the retired key is refused', async () => {
    // Moves the clock jose reads past the cooldown instead of waiting 30 s.
    const realNow = Date.now;
    Date.now = () => realNow() + JWKS_COOLDOWN_MS + 1000;
    restoreClock = () => {
      Date.now = realNow;
    };
    try {
      assert.equal(await outcome(node, rsToken(k2.privateKey, { kid: 'k2' }, claims('alice'))), 'accepted default/alice');
      assert.equal(jwks.hits, 2);
      assert.equal(await outcome(node, rsToken(k2.privateKey, { kid: 'k2' }, claims('bob'))), 'accepted default/bob');
      assert.equal(await outcome(node, rsToken(k1.privateKey, { kid: 'k1' }, claims('alice'))), REFUSED);
      assert.equal(jwks.hits, 2, 'the retired kid does not refetch within the new cooldown');
    } finally {
      restoreClock();
      restoreClock = null;
    }
  });
});
