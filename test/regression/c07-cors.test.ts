/**
 * C07 CORS (cases/README.md; SPEC §1 CORS_ORIGINS, §2, §6).
 *
 * Preflight `OPTIONS /api/v1/notifications/send` from https://evil.example:
 * no Access-Control-Allow-Origin. From the allowed origin: that exact
 * origin echoed with `Vary: Origin`, methods include PUT and DELETE,
 * allowed headers include x-api-key and x-tenant-id. Never `*` together
 * with `Access-Control-Allow-Credentials: true`.
 */
import assert from 'node:assert/strict';
import { request, type IncomingHttpHeaders } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { TEST_API_KEY, startTestNode, type TestNode } from '../helpers/node.ts';

const ALLOWED = 'https://app.example.com';
const SEND = '/api/v1/notifications/send';

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** Every response seen in this file, for the `*` + credentials check. */
const seen: Array<[string, RawResponse]> = [];

/** A raw HTTP request, so Origin and the preflight headers go out exactly as given. */
function raw(node: TestNode, method: string, path: string, headers: Record<string, string>, body?: string): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(`${node.httpUrl}${path}`, { method, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        const response = { status: res.statusCode ?? 0, headers: res.headers, body: text };
        seen.push([`${method} ${path} ${headers.origin ?? '(no origin)'}`, response]);
        resolve(response);
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

function preflight(node: TestNode, origin: string, path = SEND, method = 'POST'): Promise<RawResponse> {
  return raw(node, 'OPTIONS', path, {
    origin,
    'access-control-request-method': method,
    'access-control-request-headers': 'content-type,x-api-key,x-tenant-id',
  });
}

const listOf = (value: string | string[] | undefined) =>
  String(value ?? '')
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter(Boolean);

function assertNoCorsGrant(res: RawResponse, what: string): void {
  assert.equal(res.headers['access-control-allow-origin'], undefined, what);
  assert.equal(res.headers['access-control-allow-credentials'], undefined, what);
}

function assertEchoed(res: RawResponse, what: string): void {
  assert.equal(res.headers['access-control-allow-origin'], ALLOWED, what);
  assert.ok(listOf(res.headers.vary).includes('origin'), `${what}: Vary: Origin (got ${res.headers.vary})`);
}

describe('C07 CORS with CORS_ORIGINS=https://app.example.com (SPEC §1, §6)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode({ CORS_ORIGINS: ALLOWED });
  });
  after(() => node.stop());

  test('a preflight from https://evil.example gets no Access-Control-Allow-Origin', async () => {
    const res = await preflight(node, 'https://evil.example');
    assertNoCorsGrant(res, 'evil preflight');
    assert.equal(res.headers['access-control-allow-methods'], undefined);
    assert.equal(res.headers['access-control-allow-headers'], undefined);
  });

  test('preflights from look-alike origins get no Access-Control-Allow-Origin', async () => {
    for (const origin of [
      'null',
      'https://app.example.com.evil.example',
      'https://evilapp.example.com',
      'http://app.example.com',
      'https://app.example.com:8443',
    ]) {
      assertNoCorsGrant(await preflight(node, origin), origin);
    }
  });

  test('a preflight from the allowed origin echoes it with Vary: Origin, PUT/DELETE and the API headers', async () => {
    const res = await preflight(node, ALLOWED);
    assert.equal(res.status, 204);
    assertEchoed(res, 'allowed preflight');
    const methods = listOf(res.headers['access-control-allow-methods']);
    for (const method of ['get', 'post', 'put', 'delete']) assert.ok(methods.includes(method), `methods include ${method}`);
    const headers = listOf(res.headers['access-control-allow-headers']);
    for (const header of ['x-api-key', 'x-tenant-id', 'content-type']) {
      assert.ok(headers.includes(header), `allowed headers include ${header} (got ${headers})`);
    }
    assert.notEqual(res.headers['access-control-allow-credentials'], 'true');
  });

  test('preflights for the template routes (PUT, DELETE) from the allowed origin are granted', async () => {
    for (const method of ['PUT', 'DELETE']) {
      const res = await preflight(node, ALLOWED, '/api/v1/templates/welcome', method);
      assertEchoed(res, `${method} preflight`);
      assert.ok(listOf(res.headers['access-control-allow-methods']).includes(method.toLowerCase()));
    }
  });

  test('an actual request from the allowed origin is echoed with Vary: Origin, even when it fails', async () => {
    const body = JSON.stringify({ target_user_id: 'alice', event_type: 'c07', payload: 1 });
    const ok = await raw(node, 'POST', SEND, { origin: ALLOWED, 'content-type': 'application/json', 'x-api-key': TEST_API_KEY }, body);
    assert.equal(ok.status, 200);
    assertEchoed(ok, 'allowed POST');
    const unauthorized = await raw(node, 'POST', SEND, { origin: ALLOWED, 'content-type': 'application/json', 'x-api-key': 'wrong' }, body);
    assert.equal(unauthorized.status, 401);
    assertEchoed(unauthorized, 'allowed POST with a wrong key');
  });

  test('an actual request from a foreign origin carries no Access-Control-Allow-Origin', async () => {
    const body = JSON.stringify({ target_user_id: 'alice', event_type: 'c07', payload: 1 });
    const res = await raw(node, 'POST', SEND, { origin: 'https://evil.example', 'content-type': 'application/json', 'x-api-key': TEST_API_KEY }, body);
    assertNoCorsGrant(res, 'evil POST');
    const get = await raw(node, 'GET', '/api/v1/channels', { origin: 'https://evil.example', 'x-api-key': TEST_API_KEY });
    assertNoCorsGrant(get, 'evil GET');
  });
});

describe('C07 CORS without CORS_ORIGINS in development (SPEC §1: any origin)', () => {
  let node: TestNode;
  before(async () => {
    node = await startTestNode();
  });
  after(() => node.stop());

  test('any origin is allowed with `*` and never with credentials', async () => {
    const res = await preflight(node, 'https://evil.example');
    assert.equal(res.headers['access-control-allow-origin'], '*');
    assert.equal(res.headers['access-control-allow-credentials'], undefined);
    const headers = listOf(res.headers['access-control-allow-headers']);
    assert.ok(headers.includes('x-api-key') && headers.includes('x-tenant-id'));
    const get = await raw(node, 'GET', '/api/v1/channels', { origin: 'https://evil.example', 'x-api-key': TEST_API_KEY });
    assert.equal(get.status, 200);
    assert.equal(get.headers['access-control-allow-origin'], '*');
    assert.equal(get.headers['access-control-allow-credentials'], undefined);
  });
});

describe('C07 no response ever pairs `*` with credentials', () => {
  test('every response of this file: Access-Control-Allow-Origin `*` never comes with Allow-Credentials true', () => {
    assert.ok(seen.length >= 15, `responses checked: ${seen.length}`);
    for (const [what, res] of seen) {
      const wildcard = res.headers['access-control-allow-origin'] === '*';
      const credentials = res.headers['access-control-allow-credentials'] === 'true';
      assert.equal(wildcard && credentials, false, what);
    }
  });
});
