/**
 * Templates (SPEC §6.2 "Templates" and "Rendering", §6.1 `template_id` +
 * `variables`, §3 isolation; issue 4 acceptance 5).
 *
 * CRUD with its validation edges, then every rendering rule checked on
 * what a WebSocket client really receives: whitespace and dotted
 * placeholders, whole-string placeholders keeping the JSON type, text
 * insertion (objects as compact JSON), one pass only, missing variables
 * (own properties only: `constructor`, `__proto__`, `toString` are not
 * variables), template defaults vs send overrides, a 1 MB variable (413),
 * batch items, and tenant isolation.
 *
 * Runs on every store backend (TEMPLATE_BACKEND memory, postgres, redis).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { sleep, type ApiResponse, type TestNode } from '../helpers/node.ts';
import { BackendScope, STORE_BACKENDS } from '../helpers/store-backends.ts';

const KEY_A = 'tenant-a-key-0123456789abcdef';
const KEY_B = 'tenant-b-key-0123456789abcdef';

function assertError(res: ApiResponse, status: number, code: string, message?: string): void {
  assert.equal(res.status, status, res.text);
  assert.equal(res.json?.error?.code, code, res.text);
  if (message !== undefined) assert.equal(res.json.error.message, message);
}

function template(id: string, payloadTemplate: unknown, extra: Record<string, unknown> = {}) {
  return { id, name: `Template ${id}`, event_type: `tpl.${id}`, payload_template: payloadTemplate, ...extra };
}

for (const backend of STORE_BACKENDS) {
  describe(`templates on ${backend} (SPEC §6.2)`, () => {
    const scope = new BackendScope(backend, 'templates');
    let node: TestNode;
    let alice: TestWs;

    before(async () => {
      node = await scope.start();
      alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
    });
    after(async () => {
      await alice?.close();
      await scope.cleanup();
    });

    /** Creates a template (201 expected). */
    async function create(body: Record<string, unknown>): Promise<any> {
      const res = await node.api('POST', '/api/v1/templates', body);
      assert.equal(res.status, 201, res.text);
      return res.json;
    }

    /** Sends a template to alice and returns the notification she receives. */
    async function render(body: Record<string, unknown>): Promise<any> {
      const res = await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'alice', ...body });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.delivered_to, 1);
      return alice.next((m) => m.id === res.json.notification_id);
    }

    test('POST creates (201, record with created_at/updated_at), a duplicate id is 409 TEMPLATE_EXISTS, GET one returns it', async () => {
      const before = Date.now();
      const created = await create(
        template('crud-1', { zeta: 1, alpha: '{{ a }}', mid: [true, null] }, { description: 'first', default_ttl: 60 }),
      );
      const { created_at: createdAt, updated_at: updatedAt, ...rest } = created;
      assert.deepEqual(rest, {
        id: 'crud-1',
        name: 'Template crud-1',
        event_type: 'tpl.crud-1',
        payload_template: { zeta: 1, alpha: '{{ a }}', mid: [true, null] },
        default_priority: 'Normal',
        default_ttl: 60,
        description: 'first',
      });
      assert.equal(createdAt, updatedAt);
      assert.ok(Date.parse(createdAt) >= before - 1000 && Date.parse(createdAt) <= Date.now() + 1000, createdAt);
      assert.match(createdAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);

      assertError(await node.api('POST', '/api/v1/templates', template('crud-1', {})), 409, 'TEMPLATE_EXISTS', "Template 'crud-1' already exists");

      const got = await node.api('GET', '/api/v1/templates/crud-1');
      assert.equal(got.status, 200);
      assert.deepEqual(got.json, created);
      // Payload key order is kept as written (SPEC §4 "Payload key order is preserved as sent").
      assert.deepEqual(Object.keys(got.json.payload_template), ['zeta', 'alpha', 'mid']);
    });

    test('GET /api/v1/templates lists every template sorted by id, with total', async () => {
      for (const id of ['list-b', 'list-B', 'list-a', 'list-A']) await create(template(id, { id }));
      const res = await node.api('GET', '/api/v1/templates');
      assert.equal(res.status, 200);
      const ids = res.json.templates.map((t: { id: string }) => t.id);
      assert.equal(res.json.total, res.json.templates.length);
      assert.deepEqual(ids.filter((id: string) => id.startsWith('list-')), ['list-A', 'list-B', 'list-a', 'list-b']);
      assert.deepEqual(ids, [...ids].sort());
      for (const record of res.json.templates) assert.equal(typeof record.created_at, 'string');
    });

    test('PUT updates and bumps updated_at, null clears default_ttl and description, aliases apply, id mismatch is 400', async () => {
      const created = await create(
        template('put-1', { v: 1 }, { description: 'to clear', ttl: 30, priority: 'High' }),
      );
      assert.equal(created.default_ttl, 30);
      assert.equal(created.default_priority, 'High');
      assert.equal('ttl' in created || 'priority' in created, false);
      await sleep(15);

      const put = await node.api('PUT', '/api/v1/templates/put-1', { name: 'Renamed', payload_template: { v: 2 } });
      assert.equal(put.status, 200, put.text);
      assert.equal(put.json.name, 'Renamed');
      assert.deepEqual(put.json.payload_template, { v: 2 });
      assert.equal(put.json.created_at, created.created_at);
      assert.ok(Date.parse(put.json.updated_at) > Date.parse(created.updated_at), `${put.json.updated_at} not after ${created.updated_at}`);
      assert.equal(put.json.default_ttl, 30);
      assert.equal(put.json.description, 'to clear');

      const cleared = await node.api('PUT', '/api/v1/templates/put-1', { default_ttl: null, description: null });
      assert.equal(cleared.status, 200, cleared.text);
      assert.equal('default_ttl' in cleared.json, false);
      assert.equal('description' in cleared.json, false);
      const reread = await node.api('GET', '/api/v1/templates/put-1');
      assert.deepEqual(reread.json, cleared.json);

      const aliased = await node.api('PUT', '/api/v1/templates/put-1', { priority: 'Low', ttl: 90 });
      assert.equal(aliased.json.default_priority, 'Low');
      assert.equal(aliased.json.default_ttl, 90);

      assertError(await node.api('PUT', '/api/v1/templates/put-1', { id: 'other' }), 400, 'VALIDATION_ERROR');
      assertError(await node.api('PUT', '/api/v1/templates/no-such', { name: 'x' }), 404, 'TEMPLATE_NOT_FOUND', "Template 'no-such' not found");
      assert.deepEqual((await node.api('GET', '/api/v1/templates/put-1')).json, aliased.json);
    });

    test('DELETE answers 204, then GET and a send naming it are 404 TEMPLATE_NOT_FOUND', async () => {
      await create(template('del-1', { x: 1 }));
      const res = await node.api('DELETE', '/api/v1/templates/del-1');
      assert.equal(res.status, 204);
      assert.equal(res.text, '');
      assertError(await node.api('GET', '/api/v1/templates/del-1'), 404, 'TEMPLATE_NOT_FOUND', "Template 'del-1' not found");
      assertError(await node.api('DELETE', '/api/v1/templates/del-1'), 404, 'TEMPLATE_NOT_FOUND');
      assertError(
        await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'alice', template_id: 'del-1', variables: {} }),
        404,
        'TEMPLATE_NOT_FOUND',
        "Template 'del-1' not found",
      );
    });

    test('validation edges: id 64 ok / 65 / `a:b`, name 256/257, event_type 128/129, missing payload_template', async () => {
      await create(template('i'.repeat(64), {}));
      const tooLong = await node.api('POST', '/api/v1/templates', template('i'.repeat(65), {}));
      assertError(tooLong, 400, 'VALIDATION_ERROR');
      assert.equal(tooLong.json.error.details[0].path, 'id');
      assertError(await node.api('POST', '/api/v1/templates', template('a:b', {})), 400, 'VALIDATION_ERROR');
      assertError(await node.api('POST', '/api/v1/templates', template('', {})), 400, 'VALIDATION_ERROR');

      await create({ ...template('name-256', {}), name: 'n'.repeat(256) });
      const longName = await node.api('POST', '/api/v1/templates', { ...template('name-257', {}), name: 'n'.repeat(257) });
      assertError(longName, 400, 'VALIDATION_ERROR');
      assert.equal(longName.json.error.details[0].path, 'name');

      await create({ ...template('et-128', {}), event_type: 'e'.repeat(128) });
      const longType = await node.api('POST', '/api/v1/templates', { ...template('et-129', {}), event_type: 'e'.repeat(129) });
      assertError(longType, 400, 'VALIDATION_ERROR');
      assert.equal(longType.json.error.details[0].path, 'event_type');

      const noPayload: Record<string, unknown> = template('no-payload', {});
      delete noPayload.payload_template;
      const missing = await node.api('POST', '/api/v1/templates', noPayload);
      assertError(missing, 400, 'VALIDATION_ERROR');
      assert.equal(missing.json.error.details[0].path, 'payload_template');

      // Nothing invalid was stored.
      for (const id of ['name-257', 'et-129', 'no-payload']) {
        assertError(await node.api('GET', `/api/v1/templates/${id}`), 404, 'TEMPLATE_NOT_FOUND');
      }
    });

    test('rendering: whitespace and dotted placeholders, whole-string placeholders keep their JSON type, text insertion, keys untouched', async () => {
      await create(
        template('render-1', {
          greeting: 'Hello {{ user.name }}!',
          tight: '{{user.name}}',
          spaced: '{{   user.name   }}',
          deep: '{{ a.b.c }}',
          count: '{{ count }}',
          object: '{{ obj }}',
          flag: '{{ flag }}',
          nothing: '{{ nothing }}',
          list: ['{{ count }}', 'n={{ count }}', 7],
          text: 'count={{count}} obj={{obj}} flag={{flag}} nothing={{nothing}} list={{arr}}',
          '{{ count }}': 'keys are not rendered',
          literal: 'no placeholders, { braces } and {{ }} stay',
        }),
      );
      const message = await render({
        template_id: 'render-1',
        variables: {
          user: { name: 'Ann' },
          a: { b: { c: 'deep value' } },
          count: 5,
          obj: { k: 1, nested: { z: [1, 'two'] } },
          flag: true,
          nothing: null,
          arr: [1, 2],
        },
      });
      assert.equal(message.event_type, 'tpl.render-1');
      assert.deepEqual(message.payload, {
        greeting: 'Hello Ann!',
        tight: 'Ann',
        spaced: 'Ann',
        deep: 'deep value',
        count: 5,
        object: { k: 1, nested: { z: [1, 'two'] } },
        flag: true,
        nothing: null,
        list: [5, 'n=5', 7],
        text: 'count=5 obj={"k":1,"nested":{"z":[1,"two"]}} flag=true nothing=null list=[1,2]',
        '{{ count }}': 'keys are not rendered',
        literal: 'no placeholders, { braces } and {{ }} stay',
      });
      // Key order of the template is kept in the delivered payload.
      assert.deepEqual(Object.keys(message.payload), [
        'greeting', 'tight', 'spaced', 'deep', 'count', 'object', 'flag', 'nothing', 'list', 'text', '{{ count }}', 'literal',
      ]);
    });

    test('rendering is one pass: a value holding `{{x}}` is delivered literally even when x is a variable', async () => {
      await create(template('one-pass', { whole: '{{ a }}', inside: 'a={{ a }}', x: '{{ x }}' }));
      const message = await render({ template_id: 'one-pass', variables: { a: '{{x}}', x: 'EXPANDED' } });
      assert.deepEqual(message.payload, { whole: '{{x}}', inside: 'a={{x}}', x: 'EXPANDED' });
    });

    test('a missing variable is 400 VALIDATION_ERROR naming it, with details path variables.<name>', async () => {
      await create(template('needs', { a: '{{ present }}', b: 'x {{ user.email }}' }));
      const res = await node.api('POST', '/api/v1/notifications/send', {
        target_user_id: 'alice',
        template_id: 'needs',
        variables: { present: 1, user: { name: 'no email' } },
      });
      assertError(res, 400, 'VALIDATION_ERROR', 'Template variable "user.email" is missing');
      assert.deepEqual(res.json.error.details, [
        { path: 'variables.user.email', message: 'is used by the template but was not given' },
      ]);
      const none = await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'alice', template_id: 'needs' });
      assertError(none, 400, 'VALIDATION_ERROR', 'Template variable "present" is missing');
      assert.deepEqual(await alice.quietFor(100), []);
    });

    test('`{{constructor}}`, `{{__proto__}}`, `{{toString}}` and `{{ v.constructor }}` are not variables unless given as own ones', async () => {
      await create(template('proto', { c: '{{constructor}}' }));
      await create(template('proto2', { p: '{{ __proto__ }}' }));
      await create(template('proto3', { t: 'x{{toString}}' }));
      await create(template('proto4', { d: '{{ v.constructor }}' }));
      const cases: Array<[string, string, Record<string, unknown>]> = [
        ['proto', 'constructor', {}],
        ['proto2', '__proto__', { other: 1 }],
        ['proto3', 'toString', {}],
        ['proto4', 'v.constructor', { v: { a: 1 } }],
        ['proto4', 'v.constructor', { v: 'a string' }],
      ];
      for (const [id, name, variables] of cases) {
        const res = await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'alice', template_id: id, variables });
        assertError(res, 400, 'VALIDATION_ERROR', `Template variable "${name}" is missing`);
        assert.equal(res.json.error.details[0].path, `variables.${name}`);
      }
      // Given as an own variable, `constructor` is an ordinary name.
      const message = await render({ template_id: 'proto', variables: { constructor: 'mine' } });
      assert.deepEqual(message.payload, { c: 'mine' });
      assert.deepEqual(await alice.quietFor(100), []);
    });

    test('template default_priority and default_ttl apply unless the send overrides them', async () => {
      await create(template('defaults', { v: '{{ v }}' }, { default_priority: 'High', default_ttl: 120 }));
      const plain = await render({ template_id: 'defaults', variables: { v: 1 } });
      assert.equal(plain.metadata.priority, 'High');
      assert.equal(plain.metadata.ttl, 120);
      assert.deepEqual(plain.payload, { v: 1 });
      const overridden = await render({ template_id: 'defaults', variables: { v: 2 }, priority: 'Low', ttl: 30 });
      assert.equal(overridden.metadata.priority, 'Low');
      assert.equal(overridden.metadata.ttl, 30);
      const zero = await render({ template_id: 'defaults', variables: { v: 3 }, ttl: 0 });
      assert.equal(zero.metadata.ttl, 0);

      await create(template('no-defaults', { v: 1 }));
      const bare = await render({ template_id: 'no-defaults', correlation_id: 'corr-1' });
      assert.equal(bare.metadata.priority, 'Normal');
      assert.equal('ttl' in bare.metadata, false);
      assert.equal(bare.metadata.correlation_id, 'corr-1');
      assert.equal(bare.metadata.source, 'http-api');
    });

    test('a 1 MB variable is 413 PAYLOAD_TOO_LARGE and the node stays healthy', async () => {
      await create(template('big', { v: '{{ v }}' }));
      const res = await node.api('POST', '/api/v1/notifications/send', {
        target_user_id: 'alice',
        template_id: 'big',
        variables: { v: 'x'.repeat(1024 * 1024) },
      });
      assertError(res, 413, 'PAYLOAD_TOO_LARGE');
      assert.equal((await node.api('GET', '/health')).status, 200);
      const after = await render({ template_id: 'big', variables: { v: 'small' } });
      assert.deepEqual(after.payload, { v: 'small' });
    });

    test('template_id works on batch items, and a bad item fails alone', async () => {
      await create(template('batch-t', { hello: '{{ who }}' }, { default_priority: 'Critical' }));
      const res = await node.api('POST', '/api/v1/notifications/batch', {
        notifications: [
          { target: { type: 'user', value: 'alice' }, template_id: 'batch-t', variables: { who: 'one' } },
          { target: { type: 'user', value: 'alice' }, template_id: 'batch-t', variables: {} },
          { target: { type: 'user', value: 'alice' }, template_id: 'batch-missing', variables: {} },
          { target: { type: 'users', value: ['alice'] }, template_id: 'batch-t', variables: { who: 'two' } },
        ],
      });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(
        res.json.results.map((r: { success: boolean }) => r.success),
        [true, false, false, true],
      );
      assert.match(res.json.results[1].error, /who/);
      assert.match(res.json.results[2].error, /batch-missing/);
      const first = await alice.next((m) => m.id === res.json.results[0].notification_id);
      const fourth = await alice.next((m) => m.id === res.json.results[3].notification_id);
      assert.deepEqual(first.payload, { hello: 'one' });
      assert.deepEqual(fourth.payload, { hello: 'two' });
      assert.equal(first.metadata.source, 'batch');
      assert.equal(first.metadata.priority, 'Critical');
      assert.equal(first.event_type, 'tpl.batch-t');
    });
  });

  describe(`templates are isolated per tenant on ${backend} (SPEC §3)`, () => {
    const scope = new BackendScope(backend, 'templates_tenants');
    let node: TestNode;
    after(() => scope.cleanup());

    before(async () => {
      node = await scope.start({ TENANT_ENABLED: 'true', TENANT_API_KEYS: `t-a:${KEY_A},t-b:${KEY_B}` });
    });

    test("t-a's template is invisible to t-b, and the same id in both tenants holds and renders different content", async () => {
      const asA = { 'x-api-key': KEY_A };
      const asB = { 'x-api-key': KEY_B };
      const created = await node.api('POST', '/api/v1/templates', template('shared', { from: 'a {{ v }}' }), asA);
      assert.equal(created.status, 201, created.text);

      assertError(await node.api('GET', '/api/v1/templates/shared', undefined, asB), 404, 'TEMPLATE_NOT_FOUND');
      assert.deepEqual((await node.api('GET', '/api/v1/templates', undefined, asB)).json, { templates: [], total: 0 });
      assertError(await node.api('PUT', '/api/v1/templates/shared', { name: 'hijack' }, asB), 404, 'TEMPLATE_NOT_FOUND');
      assertError(await node.api('DELETE', '/api/v1/templates/shared', undefined, asB), 404, 'TEMPLATE_NOT_FOUND');
      assertError(
        await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'bea', template_id: 'shared', variables: { v: 1 } }, asB),
        404,
        'TEMPLATE_NOT_FOUND',
      );

      const createdB = await node.api(
        'POST',
        '/api/v1/templates',
        { ...template('shared', { from: 'b {{ v }}', extra: true }), event_type: 'tpl.b' },
        asB,
      );
      assert.equal(createdB.status, 201, createdB.text);
      assert.equal((await node.api('GET', '/api/v1/templates/shared', undefined, asA)).json.payload_template.from, 'a {{ v }}');
      assert.equal((await node.api('GET', '/api/v1/templates/shared', undefined, asB)).json.payload_template.from, 'b {{ v }}');
      // The operator sees each tenant's own through X-Tenant-ID.
      const opA = await node.api('GET', '/api/v1/templates', undefined, { 'x-tenant-id': 't-a' });
      assert.deepEqual(opA.json.templates.map((t: { payload_template: { from: string } }) => t.payload_template.from), ['a {{ v }}']);

      // The same user id in both tenants receives its own tenant's rendering.
      const inA = await TestWs.open(node.wsUrl(`?token=${await node.token('sam', { tenant_id: 't-a' })}`));
      const inB = await TestWs.open(node.wsUrl(`?token=${await node.token('sam', { tenant_id: 't-b' })}`));
      const sendA = await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'sam', template_id: 'shared', variables: { v: 1 } }, asA);
      const sendB = await node.api('POST', '/api/v1/notifications/send', { target_user_id: 'sam', template_id: 'shared', variables: { v: 2 } }, asB);
      assert.equal(sendA.json.delivered_to, 1);
      assert.equal(sendB.json.delivered_to, 1);
      const gotA = await inA.next((m) => m.type === 'notification');
      const gotB = await inB.next((m) => m.type === 'notification');
      assert.deepEqual([gotA.event_type, gotA.payload], ['tpl.shared', { from: 'a 1' }]);
      assert.deepEqual([gotB.event_type, gotB.payload], ['tpl.b', { from: 'b 2', extra: true }]);
      assert.deepEqual(await inA.quietFor(200), []);
      assert.deepEqual(await inB.quietFor(0), []);

      // Deleting in one tenant leaves the other's alone.
      assert.equal((await node.api('DELETE', '/api/v1/templates/shared', undefined, asA)).status, 204);
      assert.equal((await node.api('GET', '/api/v1/templates/shared', undefined, asB)).status, 200);
      await inA.close();
      await inB.close();
    });
  });
}
