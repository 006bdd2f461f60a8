import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { checkRegisteredClaims, verifyHmacJwt } from '../../src/auth/hmac-jwt.ts';

const secret = new TextEncoder().encode('unit-secret-0123456789-0123456789-xyz');
const sign = (claims: object, alg = 'HS256') =>
  new SignJWT({ ...claims }).setProtectedHeader({ alg }).sign(secret);
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

describe('verifyHmacJwt', () => {
  test('returns the payload of a token signed with the secret and the expected algorithm', async () => {
    assert.deepEqual(verifyHmacJwt(await sign({ sub: 'a', exp: 5 }), 'HS256', secret), { sub: 'a', exp: 5 });
    assert.deepEqual(verifyHmacJwt(await sign({ sub: 'b' }, 'HS512'), 'HS512', secret), { sub: 'b' });
  });

  test('refuses another algorithm, none, crit, a bad signature and non-canonical forms', async () => {
    const good = await sign({ sub: 'a' });
    const [header, payload, signature] = good.split('.') as [string, string, string];
    const hmac = (h: string, p: string) => createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url');
    const none = b64({ alg: 'none' });
    const crit = b64({ alg: 'HS256', crit: ['b64'], b64: false });
    const cases: Array<[string, RegExp]> = [
      [await sign({ sub: 'a' }, 'HS384'), /ALG_NOT_ALLOWED/],
      [`${none}.${payload}.`, /not a compact JWS/],
      [`${none}.${payload}.${hmac(none, payload)}`, /ALG_NOT_ALLOWED/],
      [`${crit}.${payload}.${hmac(crit, payload)}`, /crit/],
      [`${header}.${payload}.${signature.slice(0, -2)}AA`, /SIGNATURE/],
      [`${header}.${payload}`, /not a compact JWS/],
      [`${header}.${payload}.${signature}=`, /not a compact JWS/],
      [`${header}.${payload}.${signature}.x`, /not a compact JWS/],
      [`${b64('x')}.${payload}.${hmac(b64('x'), payload)}`, /header must be a JSON object/],
    ];
    for (const [token, problem] of cases) assert.throws(() => verifyHmacJwt(token, 'HS256', secret), problem, token);
  });
});

describe('checkRegisteredClaims (the rules jose applies)', () => {
  const options = { leewaySeconds: 30, issuer: 'https://issuer.example', audience: 'notify' };
  const base = { sub: 'a', exp: 1000, iss: 'https://issuer.example', aud: 'notify' };
  test('accepts within the leeway and refuses at or past it', () => {
    assert.doesNotThrow(() => checkRegisteredClaims(base, options, 1010));
    assert.throws(() => checkRegisteredClaims(base, options, 1030), /EXPIRED/);
  });
  test('nbf, iat, iss, aud, exp and sub', () => {
    assert.throws(() => checkRegisteredClaims({ ...base, nbf: 1100 }, options, 1000), /nbf/);
    assert.doesNotThrow(() => checkRegisteredClaims({ ...base, nbf: 1020 }, options, 1000));
    assert.throws(() => checkRegisteredClaims({ ...base, iat: '1' } as never, options, 900), /iat/);
    assert.throws(() => checkRegisteredClaims({ ...base, iss: 'other' }, options, 900), /iss/);
    assert.throws(() => checkRegisteredClaims({ ...base, iss: undefined }, options, 900), /iss/);
    assert.throws(() => checkRegisteredClaims({ ...base, aud: undefined }, options, 900), /aud/);
    assert.doesNotThrow(() => checkRegisteredClaims({ ...base, aud: ['x', 'notify'] }, options, 900));
    assert.throws(() => checkRegisteredClaims({ ...base, exp: '9999999999' } as never, options, 900), /exp/);
    assert.throws(() => checkRegisteredClaims({ ...base, sub: undefined }, options, 900), /sub/);
  });
});
