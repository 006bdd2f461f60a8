/**
 * Production rules of SPEC §1 as seen from outside: internal error messages
 * are masked in responses (but kept in the log), `/health` shows counts only
 * to a caller with an API key (SPEC §6.3), and METRICS_TOKEN guards
 * `/metrics` (SPEC §1, §9).
 *
 * The internal error is provoked honestly: the template store's `get` is
 * replaced by one that throws, and a send names a template, so the failure
 * travels the real route → content resolution → error handler path.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { TEST_API_KEY, startTestNode, type TestNode } from '../helpers/node.ts';

const DETAIL = 'secret internal detail';
const MASKED_BODY = '{"error":{"code":"INTERNAL_ERROR","message":"Internal server error"}}';
const PRODUCTION_SECRET = 'k9Qz2vX7pL4mW8rT1yB6nC3hJ5dF0gSaE7uI2oP9';
const METRICS_TOKEN = 'metrics-bearer-5f3a9c1e7b2d4086';

type TemplateGet = TestNode['node']['stores']['templates']['get'];

/** Makes the template store fail until the returned function is called. */
function breakTemplateStore(node: TestNode): () => void {
  const store = node.node.stores.templates;
  const original: TemplateGet = store.get;
  store.get = async () => {
    throw new Error(DETAIL);
  };
  return () => {
    store.get = original;
  };
}

const TEMPLATE_SEND = { target_user_id: 'alice', template_id: 'welcome', variables: { name: 'Alice' } };
const TEMPLATE_BATCH = {
  notifications: [{ target: { type: 'user', value: 'alice' }, template_id: 'welcome', variables: {} }],
};

/** The lines the node logged at error level that mention `text`. */
function errorLinesWith(node: TestNode, text: string): any[] {
  return node.lines
    .map((line) => JSON.parse(line))
    .filter((entry) => entry.level === 50 && JSON.stringify(entry).includes(text));
}

function assertNoInternals(text: string): void {
  assert.ok(!text.includes(DETAIL), `response leaks the internal message: ${text}`);
  assert.ok(!/\bat .+:\d+:\d+/.test(text), `response carries a stack trace: ${text}`);
  assert.ok(!/\.(ts|js):\d+/.test(text), `response names a source file: ${text}`);
  assert.ok(!/stack/i.test(text), `response mentions a stack: ${text}`);
}

describe('production mode masks internal errors (SPEC §1 production rules, §6)', () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode({
      RUN_MODE: 'production',
      JWT_SECRET: PRODUCTION_SECRET,
      API_KEY: TEST_API_KEY,
      CORS_ORIGINS: 'https://app.example.test',
      METRICS_TOKEN,
    });
    assert.equal(node.config.production, true);
  });
  after(() => node.stop());

  const failingCalls: Array<[string, string, string, unknown]> = [
    ['a send naming a template', 'POST', '/api/v1/notifications/send', TEMPLATE_SEND],
    ['a batch item naming a template', 'POST', '/api/v1/notifications/batch', TEMPLATE_BATCH],
    ['reading a template', 'GET', '/api/v1/templates/welcome', undefined],
  ];

  for (const [what, method, path, body] of failingCalls) {
    test(`${what} that fails internally is answered 500 with exactly the masked INTERNAL_ERROR envelope, and the detail is logged`, async () => {
      const repair = breakTemplateStore(node);
      const linesBefore = errorLinesWith(node, DETAIL).length;
      try {
        const response = await node.api(method, path, body);
        assert.equal(response.status, 500);
        assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
        assert.equal(response.text, MASKED_BODY);
        assertNoInternals(response.text);
        for (const [name, value] of response.headers) assertNoInternals(`${name}: ${value}`);
      } finally {
        repair();
      }
      const logged = errorLinesWith(node, DETAIL);
      assert.equal(logged.length, linesBefore + 1, 'the internal error is logged once');
      assert.equal(logged.at(-1).err.message, DETAIL);
    });
  }

  test('client errors keep their codes and details in production (only internal errors are masked)', async () => {
    const response = await node.api('POST', '/api/v1/notifications/send', { target_user_id: '', event_type: 'x', payload: 1 });
    assert.equal(response.status, 400);
    assert.equal(response.json.error.code, 'VALIDATION_ERROR');
    assert.ok(Array.isArray(response.json.error.details) && response.json.error.details.length > 0);
    assert.equal(response.json.error.details[0].path, 'target_user_id');
  });

  test('the store works again once repaired: the same send answers 404 TEMPLATE_NOT_FOUND', async () => {
    const response = await node.api('POST', '/api/v1/notifications/send', TEMPLATE_SEND);
    assert.equal(response.status, 404);
    assert.equal(response.json.error.code, 'TEMPLATE_NOT_FOUND');
  });

  test('/health without an API key has no connection counts; with the key it has them', async () => {
    const token = await node.token('alice', {}, { secret: PRODUCTION_SECRET });
    const ws = await TestWs.open(node.wsUrl(`?token=${token}`));
    try {
      const anonymous = await node.api('GET', '/health', undefined, { 'x-api-key': '' });
      assert.equal(anonymous.status, 200);
      assert.equal(anonymous.json.status, 'healthy');
      assert.equal('connections' in anonymous.json, false);

      const wrongKey = await node.api('GET', '/health', undefined, { 'x-api-key': 'not-the-operator-key-000' });
      assert.equal(wrongKey.status, 200);
      assert.equal('connections' in wrongKey.json, false);

      const withKey = await node.api('GET', '/health');
      assert.equal(withKey.status, 200);
      assert.deepEqual(withKey.json.connections, { total: 1, unique_users: 1, channels: 0 });
    } finally {
      await ws.close();
    }
  });

  test('METRICS_TOKEN protects /metrics: 401 JSON without or with a wrong bearer token, 200 Prometheus text with it', async () => {
    const missing = await node.api('GET', '/metrics', undefined, { 'x-api-key': '' });
    assert.equal(missing.status, 401);
    assert.match(missing.headers.get('content-type') ?? '', /^application\/json/);
    assert.equal(missing.json.error.code, 'UNAUTHORIZED');
    assert.equal(typeof missing.json.error.message, 'string');
    assert.ok(!missing.text.includes('ara_'), 'a refused /metrics leaks metrics');

    // The operator API key is not the metrics token.
    const apiKeyOnly = await node.api('GET', '/metrics');
    assert.equal(apiKeyOnly.status, 401);
    assert.equal(apiKeyOnly.json.error.code, 'UNAUTHORIZED');

    const wrong = await node.api('GET', '/metrics', undefined, { authorization: `Bearer ${METRICS_TOKEN}x` });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.error.code, 'UNAUTHORIZED');

    const ok = await node.api('GET', '/metrics', undefined, { authorization: `Bearer ${METRICS_TOKEN}` });
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('content-type') ?? '', /^text\/plain/);
    assert.match(ok.text, /^ara_connections_total \d+$/m);
  });
});

describe('development mode names the internal error (SPEC §1: masking is a production rule)', () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode();
    assert.equal(node.config.production, false);
  });
  after(() => node.stop());

  test('a send that fails internally is answered 500 INTERNAL_ERROR whose message includes the detail, without a stack', async () => {
    const repair = breakTemplateStore(node);
    try {
      const response = await node.api('POST', '/api/v1/notifications/send', TEMPLATE_SEND);
      assert.equal(response.status, 500);
      assert.deepEqual(response.json, { error: { code: 'INTERNAL_ERROR', message: `Internal server error: ${DETAIL}` } });
      assert.ok(!/\bat .+:\d+:\d+/.test(response.text), `response carries a stack trace: ${response.text}`);
    } finally {
      repair();
    }
    assert.equal(errorLinesWith(node, DETAIL).length, 1);
  });

  test('/metrics without METRICS_TOKEN is open', async () => {
    const response = await node.api('GET', '/metrics', undefined, { 'x-api-key': '' });
    assert.equal(response.status, 200);
    assert.match(response.text, /^ara_connections_total \d+$/m);
  });
});
