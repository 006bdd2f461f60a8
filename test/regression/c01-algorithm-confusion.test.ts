/**
 * Case C01: algorithm confusion. A service that verifies with a public key
 * must never accept an HMAC token whose "secret" is that public key in any
 * encoding, and an HMAC service must never accept an asymmetric token:
 * only the configured algorithm is accepted (SPEC §2 "Realtime").
 * Every refusal is a 401 before any upgrade, on /ws and on /sse.
 */
import assert from 'node:assert/strict';
import {
  constants,
  createHmac,
  generateKeyPairSync,
  sign,
  type KeyObject,
} from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { startTestNode, TEST_SECRET, type TestNode } from '../helpers/node.ts';

const ISSUER = 'https://issuer.example';
const AUDIENCE = 'notify';
const INVALID_TOKEN = { error: { code: 'UNAUTHORIZED', message: 'Invalid token' } };

type Signer = (input: Buffer) => Buffer;

/** Claims that pass every check but the signature: only the key can refuse them. */
function claims(sub = 'alice'): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { sub, iat: now, exp: now + 600, iss: ISSUER, aud: AUDIENCE };
}

/** A JWT built by hand, so any header and any signing method can be forged. */
function forge(header: Record<string, unknown>, sign: Signer, body = claims()): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${encode(header)}.${encode(body)}`;
  return `${input}.${sign(Buffer.from(input)).toString('base64url')}`;
}

const hmac = (secret: string | Buffer, hash = 'sha256'): Signer => (input) =>
  createHmac(hash, secret).update(input).digest();
const rsa = (key: KeyObject, hash = 'sha256'): Signer => (input) => sign(hash, input, key);
const rsaPss = (key: KeyObject): Signer => (input) =>
  sign('sha256', input, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
const ecdsa = (key: KeyObject): Signer => (input) => sign('sha256', input, { key, dsaEncoding: 'ieee-p1363' });
const ed25519 = (key: KeyObject): Signer => (input) => sign(null, input, key);

type Outcome = { upgraded: true; connected: any } | { upgraded: false; status: number; json: any };

async function wsOutcome(node: TestNode, token: string): Promise<Outcome> {
  try {
    const ws = await TestWs.open(node.wsUrl(`?token=${token}`));
    const connected = ws.messages[0];
    await ws.close();
    return { upgraded: true, connected };
  } catch (error) {
    const refusal = error as HandshakeRefusal;
    return { upgraded: false, status: refusal.status, json: refusal.json };
  }
}

async function sseOutcome(node: TestNode, token: string): Promise<Outcome> {
  try {
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${token}`);
    const connected = sse.events[0]!.data;
    sse.close();
    return { upgraded: true, connected };
  } catch (error) {
    const refusal = error as HandshakeRefusal;
    return { upgraded: false, status: refusal.status, json: refusal.json };
  }
}

const REFUSED: Outcome = { upgraded: false, status: 401, json: INVALID_TOKEN };

async function assertRefusedEverywhere(node: TestNode, token: string, label: string): Promise<void> {
  assert.deepEqual(await wsOutcome(node, token), REFUSED, `/ws: ${label}`);
  assert.deepEqual(await sseOutcome(node, token), REFUSED, `/sse: ${label}`);
}

async function assertAcceptedEverywhere(node: TestNode, token: string, sub = 'alice'): Promise<void> {
  const ws = await wsOutcome(node, token);
  assert.equal(ws.upgraded, true, `/ws refused a valid token: ${JSON.stringify(ws)}`);
  assert.equal((ws as { connected: any }).connected.user_id, sub);
  const sse = await sseOutcome(node, token);
  assert.equal(sse.upgraded, true, `/sse refused a valid token: ${JSON.stringify(sse)}`);
  assert.equal((sse as { connected: any }).connected.user_id, sub);
}

function pemOf(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'pem' }).toString();
}

const ASYMMETRIC_ENV = { JWT_SECRET: '', JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE };

describe('C01 on an RS256 node: HS256 tokens keyed with the public key are refused (SPEC §2)', () => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = pemOf(publicKey);
  const jwk = publicKey.export({ format: 'jwk' });
  /** Every encoding of the public key an attacker might guess the verifier uses as an HMAC secret. */
  const secrets: [string, string | Buffer][] = [
    ['(a) the SPKI PEM text', pem],
    ['(b) the PEM text without its final newline', pem.replace(/\n$/, '')],
    ['(c) the DER bytes', publicKey.export({ type: 'spki', format: 'der' })],
    ['(d) the JWK as JSON text', JSON.stringify(jwk)],
    ['(d) the JWK as JSON text with alg, use and kid', JSON.stringify({ ...jwk, alg: 'RS256', use: 'sig', kid: 'k1' })],
    ['the PKCS#1 "RSA PUBLIC KEY" PEM text', publicKey.export({ type: 'pkcs1', format: 'pem' }).toString()],
    ['the PEM text with CRLF line ends', pem.replace(/\n/g, '\r\n')],
    ['the PEM as one env line with literal \\n', pem.replace(/\n/g, '\\n')],
    ['the base64 body of the PEM', pem.split('\n').filter((l) => l && !l.startsWith('-----')).join('')],
  ];
  let node: TestNode;

  before(async () => {
    node = await startTestNode({ ...ASYMMETRIC_ENV, JWT_ALGORITHM: 'RS256', JWT_PUBLIC_KEY: pem });
  });
  after(() => node.stop());

  test('accepts a correctly RS256-signed token on /ws and /sse (control)', async () => {
    await assertAcceptedEverywhere(node, forge({ alg: 'RS256', typ: 'JWT' }, rsa(privateKey)));
  });

  for (const [label, secret] of secrets) {
    test(`refuses HS256 signed with ${label}: 401 Invalid token, no upgrade`, async () => {
      await assertRefusedEverywhere(node, forge({ alg: 'HS256', typ: 'JWT' }, hmac(secret)), label);
    });
  }

  test('refuses HS384 and HS512 signed with the PEM text too', async () => {
    await assertRefusedEverywhere(node, forge({ alg: 'HS384', typ: 'JWT' }, hmac(pem, 'sha384')), 'HS384');
    await assertRefusedEverywhere(node, forge({ alg: 'HS512', typ: 'JWT' }, hmac(pem, 'sha512')), 'HS512');
  });

  test('refuses RS512 and PS256 made with the right private key: the algorithm is fixed, not the key type', async () => {
    await assertRefusedEverywhere(node, forge({ alg: 'RS512', typ: 'JWT' }, rsa(privateKey, 'sha512')), 'RS512');
    await assertRefusedEverywhere(node, forge({ alg: 'PS256', typ: 'JWT' }, rsaPss(privateKey)), 'PS256');
  });

  test('refuses an RS256 token signed by another key that embeds its own public key in a jwk header', async () => {
    const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const attackerJwk = attacker.publicKey.export({ format: 'jwk' });
    await assertRefusedEverywhere(
      node,
      forge({ alg: 'RS256', typ: 'JWT', jwk: attackerJwk }, rsa(attacker.privateKey)),
      'embedded jwk',
    );
  });
});

describe('C01 on an HS256 node: asymmetric tokens are refused (SPEC §2)', () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  let node: TestNode;

  before(async () => {
    node = await startTestNode({ JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE });
  });
  after(() => node.stop());

  test('accepts an HS256 token signed with JWT_SECRET (control)', async () => {
    await assertAcceptedEverywhere(node, forge({ alg: 'HS256', typ: 'JWT' }, hmac(TEST_SECRET)));
  });

  test('refuses a token with alg RS256 signed by an RSA key: 401, no upgrade', async () => {
    await assertRefusedEverywhere(node, forge({ alg: 'RS256', typ: 'JWT' }, rsa(privateKey)), 'RS256');
  });

  test('refuses alg RS256 whose signature is an HMAC with the right secret', async () => {
    await assertRefusedEverywhere(node, forge({ alg: 'RS256', typ: 'JWT' }, hmac(TEST_SECRET)), 'RS256/HMAC');
  });

  test('refuses HS384 and HS512 even with the right secret: only the configured algorithm', async () => {
    await assertRefusedEverywhere(node, forge({ alg: 'HS384', typ: 'JWT' }, hmac(TEST_SECRET, 'sha384')), 'HS384');
    await assertRefusedEverywhere(node, forge({ alg: 'HS512', typ: 'JWT' }, hmac(TEST_SECRET, 'sha512')), 'HS512');
  });
});

describe('C01 on ES256 and EdDSA nodes (SPEC §1 JWT_ALGORITHM)', () => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ed = generateKeyPairSync('ed25519');
  let esNode: TestNode;
  let edNode: TestNode;

  before(async () => {
    esNode = await startTestNode({ ...ASYMMETRIC_ENV, JWT_ALGORITHM: 'ES256', JWT_PUBLIC_KEY: pemOf(ec.publicKey) });
    edNode = await startTestNode({ ...ASYMMETRIC_ENV, JWT_ALGORITHM: 'EdDSA', JWT_PUBLIC_KEY: pemOf(ed.publicKey) });
  });
  after(async () => {
    await esNode.stop();
    await edNode.stop();
  });

  test('the ES256 node accepts its own correctly signed token', async () => {
    await assertAcceptedEverywhere(esNode, forge({ alg: 'ES256', typ: 'JWT' }, ecdsa(ec.privateKey)));
  });

  test('the ES256 node refuses HS256 signed with its public key text, DER or JWK', async () => {
    const secrets: [string, string | Buffer][] = [
      ['PEM', pemOf(ec.publicKey)],
      ['PEM without final newline', pemOf(ec.publicKey).replace(/\n$/, '')],
      ['DER', ec.publicKey.export({ type: 'spki', format: 'der' })],
      ['JWK', JSON.stringify(ec.publicKey.export({ format: 'jwk' }))],
    ];
    for (const [label, secret] of secrets) {
      await assertRefusedEverywhere(esNode, forge({ alg: 'HS256', typ: 'JWT' }, hmac(secret)), label);
    }
  });

  test('the EdDSA node accepts its own correctly signed token', async () => {
    await assertAcceptedEverywhere(edNode, forge({ alg: 'EdDSA', typ: 'JWT' }, ed25519(ed.privateKey)));
  });

  test('the EdDSA node refuses HS256 signed with its public key text, DER or JWK', async () => {
    const secrets: [string, string | Buffer][] = [
      ['PEM', pemOf(ed.publicKey)],
      ['PEM without final newline', pemOf(ed.publicKey).replace(/\n$/, '')],
      ['DER', ed.publicKey.export({ type: 'spki', format: 'der' })],
      ['JWK', JSON.stringify(ed.publicKey.export({ format: 'jwk' }))],
    ];
    for (const [label, secret] of secrets) {
      await assertRefusedEverywhere(edNode, forge({ alg: 'HS256', typ: 'JWT' }, hmac(secret)), label);
    }
  });

  test('neither node accepts the other curve family: ES256 token on EdDSA, EdDSA token on ES256', async () => {
    await assertRefusedEverywhere(edNode, forge({ alg: 'ES256', typ: 'JWT' }, ecdsa(ec.privateKey)), 'ES256→EdDSA');
    await assertRefusedEverywhere(esNode, forge({ alg: 'EdDSA', typ: 'JWT' }, ed25519(ed.privateKey)), 'EdDSA→ES256');
  });
});
