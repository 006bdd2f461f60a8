/**
 * C05 Timing of API-key checks (cases/README.md; SPEC §2 "HTTP API":
 * X-API-Key "compared in constant time, including the length").
 *
 * Wrong keys of the right length differing in the first vs. the last
 * byte, and keys of other lengths, get an identical 401: same status,
 * same body, same headers (Date aside). The comparison is constant-time
 * over fixed-length digests — checked structurally and by behaviour,
 * never by measuring time.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { ApiKeyAuthority, sha256Hex } from '../../src/auth/api-key.ts';
import { TEST_API_KEY, startTestNode, type ApiResponse, type TestNode } from '../helpers/node.ts';

const SEND = '/api/v1/notifications/send';
const BODY = { target_user_id: 'alice', event_type: 'c05', payload: { n: 1 } };

function flip(key: string, index: number): string {
  const char = key[index] === 'X' ? 'Y' : 'X';
  return `${key.slice(0, index)}${char}${key.slice(index + 1)}`;
}

/** Wrong keys by description; the first two have the right length. */
function wrongKeys(): Array<[string, string]> {
  const keys: Array<[string, string]> = [
    ['right length, first byte differs', flip(TEST_API_KEY, 0)],
    ['right length, last byte differs', flip(TEST_API_KEY, TEST_API_KEY.length - 1)],
    ['1 character', 't'],
    ['15 characters', TEST_API_KEY.slice(0, 15)],
    ['17 characters', TEST_API_KEY.slice(0, 17)],
    ['200 characters', TEST_API_KEY.padEnd(200, 'k')],
    ['the right key plus one byte', `${TEST_API_KEY}9`],
    ['the right key less its last byte', TEST_API_KEY.slice(0, -1)],
    ['2,000 characters', 'k'.repeat(2000)],
  ];
  for (const [, key] of keys.slice(0, 2)) assert.equal(key.length, TEST_API_KEY.length);
  return keys;
}

/** Response headers as sorted [name, value] pairs, without Date. */
function headerSet(res: ApiResponse): Array<[string, string]> {
  return [...res.headers.entries()].filter(([name]) => name !== 'date').sort(([a], [b]) => (a < b ? -1 : 1));
}

describe('C05 every wrong API key gets an identical 401 (SPEC §2, §6)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode();
  });
  after(() => node.stop());

  for (const [method, path, body] of [
    ['POST', SEND, BODY],
    ['GET', '/api/v1/channels', undefined],
    ['GET', '/stats', undefined],
  ] as const) {
    test(`${method} ${path}: status, body and headers do not depend on the wrong key`, async () => {
      const responses: Array<[string, ApiResponse]> = [];
      for (const [what, key] of wrongKeys()) {
        responses.push([what, await node.api(method, path, body, { 'x-api-key': key })]);
      }
      const [, reference] = responses[0]!;
      assert.equal(reference.status, 401);
      assert.equal(reference.text, '{"error":{"code":"UNAUTHORIZED","message":"Invalid API key"}}');
      for (const [what, res] of responses) {
        assert.equal(res.status, 401, what);
        assert.equal(res.text, reference.text, what);
        assert.deepEqual(headerSet(res), headerSet(reference), what);
      }
    });
  }

  test('the right key is accepted (control: the wrong keys failed for being wrong)', async () => {
    const res = await node.api('POST', SEND, BODY);
    assert.equal(res.status, 200);
  });
});

describe('C05 API keys are compared as fixed-length digests in constant time (SPEC §2)', () => {
  test('src/auth/api-key.ts compares SHA-256 digests with timingSafeEqual and never the raw key', async () => {
    const source = await readFile(new URL('../../src/auth/api-key.ts', import.meta.url), 'utf8');
    const code = source.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    assert.match(code, /import \{[^}]*\bhash\b[^}]*\btimingSafeEqual\b[^}]*\} from 'node:crypto'/);
    assert.match(code, /function sha256\(value: string\): Buffer \{\s*return hash\('sha256', value, 'buffer'\)/);
    const identify = /identify\(presented[^)]*\)[^{]*\{([\s\S]*?)\n {2}\}/.exec(code)?.[1];
    assert.ok(identify, 'identify() is found');
    assert.match(identify, /const (\w+) = sha256\(presented\)/);
    const digestName = /const (\w+) = sha256\(presented\)/.exec(identify)![1]!;
    assert.match(identify, new RegExp(`timingSafeEqual\\(${digestName}, this\\.#operatorDigest\\)`));
    const withoutPresenceCheck = identify.replace(/presented === undefined/g, '');
    assert.doesNotMatch(withoutPresenceCheck, /presented\s*[!=]==?|[!=]==?\s*presented/, 'the raw key is never compared');
    assert.doesNotMatch(identify, /timingSafeEqual\([^)]*presented/, 'timingSafeEqual never sees the raw key');
    assert.doesNotMatch(identify, /presented\.(startsWith|endsWith|includes|localeCompare)\(/);
    assert.match(code, /#operatorDigest = operatorKey \? sha256\(operatorKey\)/);
  });

  test('keys of any length are rejected without error, so no length-dependent comparison runs', () => {
    const authority = new ApiKeyAuthority(TEST_API_KEY, new Map([['t-a', [sha256Hex('tenant-a-key-0123456789')]]]));
    for (const [what, key] of wrongKeys()) assert.equal(authority.identify(key), null, what);
    assert.equal(authority.identify(undefined), null);
    assert.equal(authority.identify(''), null);
    assert.deepEqual(authority.identify(TEST_API_KEY), { kind: 'operator' });
    assert.deepEqual(authority.identify('tenant-a-key-0123456789'), { kind: 'tenant', tenantId: 't-a' });
    assert.equal(authority.identify('tenant-a-key-012345678'), null);
  });

  test('tenant keys are held only as digests: the lookup never sees a raw key', async () => {
    const source = await readFile(new URL('../../src/auth/api-key.ts', import.meta.url), 'utf8');
    assert.match(source, /#tenantByDigest\.get\(digest\.toString\('hex'\)\)/);
    assert.doesNotMatch(source, /#tenantByDigest\.get\(presented/);
  });
});
