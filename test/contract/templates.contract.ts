/**
 * The TemplateStore contract (src/storage/types.ts, SPEC §6.2 templates),
 * written once and run against every backend. Each test gets a store with
 * nothing in it from the factory and cleans up after itself.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { TemplateRecord, TemplateStore } from '../../src/storage/types.ts';
import { contractTest, type ContractOptions } from './contract-options.ts';

export type TemplateFactory = () => Promise<{ store: TemplateStore; cleanup(): Promise<void> }>;

function template(id: string, extra: Partial<TemplateRecord> = {}): TemplateRecord {
  return {
    id,
    name: `Template ${id}`,
    event_type: 'order.created',
    payload_template: { title: 'Order {{ order.id }}', amount: '{{amount}}' },
    default_priority: 'Normal',
    created_at: '2025-01-02T03:04:05.678Z',
    updated_at: '2025-01-02T03:04:05.678Z',
    ...extra,
  };
}

export function runTemplateContract(backendName: string, factory: TemplateFactory, options: ContractOptions = {}): void {
  const test = contractTest(options);
  async function withTemplates(work: (templates: TemplateStore) => Promise<void>): Promise<void> {
    const { store, cleanup } = await factory();
    try {
      await work(store);
    } finally {
      await cleanup();
    }
  }

  describe(`TemplateStore contract on ${backendName} (SPEC §6.2)`, () => {
    test('create stores a template that get returns as it was given', () =>
      withTemplates(async (templates) => {
        const full = template('welcome', {
          default_priority: 'Critical',
          default_ttl: 3600,
          description: 'Sent once — with ünïcödé and 😀',
          payload_template: { n: 1.5, list: [1, 'two', null, { deep: true }], empty: {}, text: 'x' },
        });
        assert.equal(await templates.create('t1', full), true);
        const stored = await templates.get('t1', 'welcome');
        assert.deepEqual(stored, full);
        assert.equal(JSON.stringify(stored), JSON.stringify(full));
      }));

    test('optional fields left out stay absent', () =>
      withTemplates(async (templates) => {
        await templates.create('t1', template('bare'));
        const stored = await templates.get('t1', 'bare');
        assert.ok(stored);
        assert.equal('description' in stored, false);
        assert.equal('default_ttl' in stored, false);
      }));

    test('keeps payload_template key order exactly as written', () =>
      withTemplates(async (templates) => {
        const ordered = template('ordered', { payload_template: { z: 1, a: 2, m: { y: 'b', b: 'y' } } });
        await templates.create('t1', ordered);
        const stored = await templates.get('t1', 'ordered');
        assert.equal(JSON.stringify(stored?.payload_template), '{"z":1,"a":2,"m":{"y":"b","b":"y"}}');
        const [listed] = await templates.list('t1');
        assert.equal(JSON.stringify(listed?.payload_template), '{"z":1,"a":2,"m":{"y":"b","b":"y"}}');
        await templates.replace('t1', { ...ordered, payload_template: { z: 1, a: 2 } });
        assert.equal(JSON.stringify((await templates.get('t1', 'ordered'))?.payload_template), '{"z":1,"a":2}');
      }));

    test('create of an id that exists returns false and leaves the stored template alone', () =>
      withTemplates(async (templates) => {
        await templates.create('t1', template('dup', { name: 'first' }));
        assert.equal(await templates.create('t1', template('dup', { name: 'second' })), false);
        assert.equal((await templates.get('t1', 'dup'))?.name, 'first');
        assert.equal((await templates.list('t1')).length, 1);
      }));

    test('get of an unknown id is undefined', () =>
      withTemplates(async (templates) => {
        assert.equal(await templates.get('t1', 'missing'), undefined);
      }));

    test('list returns the tenant templates sorted by id', () =>
      withTemplates(async (templates) => {
        for (const id of ['b', 'a', 'B', '_x', '-y', '0', 'a.b', 'aa', 'A']) await templates.create('t1', template(id));
        assert.deepEqual(
          (await templates.list('t1')).map((t) => t.id),
          ['-y', '0', 'A', 'B', '_x', 'a', 'a.b', 'aa', 'b'],
        );
        assert.deepEqual(await templates.list('t2'), []);
      }));

    test('replace swaps the whole record of an existing template', () =>
      withTemplates(async (templates) => {
        await templates.create('t1', template('r', { description: 'old', default_ttl: 60 }));
        const next = template('r', { name: 'renamed', default_priority: 'High', updated_at: '2025-02-03T04:05:06.789Z' });
        assert.equal(await templates.replace('t1', next), true);
        const stored = await templates.get('t1', 'r');
        assert.deepEqual(stored, next);
        assert.equal('description' in stored!, false);
      }));

    test('replace of an unknown id returns false and creates nothing', () =>
      withTemplates(async (templates) => {
        assert.equal(await templates.replace('t1', template('ghost')), false);
        assert.equal(await templates.get('t1', 'ghost'), undefined);
        assert.deepEqual(await templates.list('t1'), []);
      }));

    test('delete removes a template once', () =>
      withTemplates(async (templates) => {
        await templates.create('t1', template('gone'));
        await templates.create('t1', template('stays'));
        assert.equal(await templates.delete('t1', 'gone'), true);
        assert.equal(await templates.get('t1', 'gone'), undefined);
        assert.equal(await templates.delete('t1', 'gone'), false);
        assert.deepEqual((await templates.list('t1')).map((t) => t.id), ['stays']);
        assert.equal(await templates.create('t1', template('gone')), true);
      }));

    test('returns copies: changing a returned record changes nothing stored', () =>
      withTemplates(async (templates) => {
        await templates.create('t1', template('copy'));
        const first = await templates.get('t1', 'copy');
        first!.name = 'mutated';
        (first!.payload_template as Record<string, unknown>).title = 'mutated';
        const again = await templates.get('t1', 'copy');
        assert.deepEqual(again, template('copy'));
      }));

    test('the same id in two tenants holds two independent templates', () =>
      withTemplates(async (templates) => {
        assert.equal(await templates.create('t1', template('shared', { name: 'one' })), true);
        assert.equal(await templates.create('t2', template('shared', { name: 'two' })), true);
        assert.equal(await templates.create('t1:shared', template('x', { name: 'crafted' })), true);
        assert.equal((await templates.get('t1', 'shared'))?.name, 'one');
        assert.equal((await templates.get('t2', 'shared'))?.name, 'two');
        assert.equal(await templates.get('t1', 'x'), undefined);
        assert.equal(await templates.get('t1:shared', 'shared'), undefined);

        assert.equal(await templates.replace('t2', template('shared', { name: 'two-b' })), true);
        assert.equal(await templates.delete('t1', 'shared'), true);
        assert.equal(await templates.get('t1', 'shared'), undefined);
        assert.equal((await templates.get('t2', 'shared'))?.name, 'two-b');
        assert.deepEqual((await templates.list('t2')).map((t) => t.name), ['two-b']);
        assert.deepEqual((await templates.list('t1')).map((t) => t.name), []);
      }));
  });
}
