/**
 * The HistoryStore contract (src/storage/types.ts, SPEC §7 "beyond —
 * resume"), written once and run against every backend. Each test gets a
 * store with nothing in it from the factory and cleans up after itself.
 */
import assert from 'node:assert/strict';
import { describe } from 'node:test';
import type { HistoryScope, HistoryStore, SequencedNotification, StoredNotification } from '../../src/storage/types.ts';
import { contractTest, type ContractOptions } from './contract-options.ts';
import { content, storedNote } from './queue.contract.ts';

export type HistoryFactory = () => Promise<{ store: HistoryStore; cleanup(): Promise<void> }>;

const SIZES = { user: 100, channel: 100 };
const user = (id: string): HistoryScope => ({ kind: 'user', id });
const channel = (id: string): HistoryScope => ({ kind: 'channel', id });

function labels(entries: SequencedNotification[]): string[] {
  return entries.map((entry) => (JSON.parse(entry.json) as { payload: { label: string } }).payload.label);
}

export function runHistoryContract(backendName: string, factory: HistoryFactory, options: ContractOptions = {}): void {
  const test = contractTest(options);
  async function withHistory(work: (history: HistoryStore) => Promise<void>): Promise<void> {
    const { store, cleanup } = await factory();
    try {
      await work(store);
    } finally {
      await cleanup();
    }
  }

  /** Appends notes labelled as given to the scopes, in this order; returns them by label. */
  async function appendAll(
    history: HistoryStore,
    tenant: string,
    sends: Array<[label: string, scopes: HistoryScope[]]>,
    sizes = SIZES,
  ): Promise<Map<string, StoredNotification>> {
    const notes = new Map<string, StoredNotification>();
    for (const [label, scopes] of sends) {
      const note = storedNote(label);
      notes.set(label, note);
      await history.append(tenant, scopes, note, sizes);
    }
    return notes;
  }

  describe(`HistoryStore contract on ${backendName} (SPEC §7 resume)`, () => {
    describe('since', () => {
      test('returns what came after sinceId in one scope, in send order, with found true', () =>
        withHistory(async (history) => {
          const notes = await appendAll(history, 't1', [
            ['n1', [user('alice')]],
            ['n2', [user('alice')]],
            ['n3', [user('alice')]],
            ['n4', [user('alice')]],
          ]);
          const result = await history.since('t1', [user('alice')], notes.get('n2')!.id, Date.now());
          assert.equal(result.found, true);
          assert.deepEqual(labels(result.entries), ['n3', 'n4']);
          assert.deepEqual(result.entries.map(content), [notes.get('n3')!, notes.get('n4')!].map(content));
          assert.ok(result.entries[1]!.seq > result.entries[0]!.seq);
        }));

      test('returns nothing after the newest id, with found true', () =>
        withHistory(async (history) => {
          const notes = await appendAll(history, 't1', [
            ['n1', [user('alice')]],
            ['n2', [user('alice')]],
          ]);
          assert.deepEqual(await history.since('t1', [user('alice')], notes.get('n2')!.id, Date.now()), {
            found: true,
            entries: [],
          });
        }));

      test('merges the user scope and channel scopes in send order', () =>
        withHistory(async (history) => {
          const notes = await appendAll(history, 't1', [
            ['n1', [user('alice')]],
            ['n2', [channel('news')]],
            ['n3', [user('alice')]],
            ['n4', [channel('sport')]],
            ['n5', [channel('news')]],
            ['n6', [user('bob')]],
            ['n7', [user('alice')]],
          ]);
          const scopes = [user('alice'), channel('news'), channel('sport')];
          const all = await history.since('t1', scopes, notes.get('n1')!.id, Date.now());
          assert.equal(all.found, true);
          assert.deepEqual(labels(all.entries), ['n2', 'n3', 'n4', 'n5', 'n7']);

          const some = await history.since('t1', [channel('news'), user('alice')], notes.get('n2')!.id, Date.now());
          assert.equal(some.found, true);
          assert.deepEqual(labels(some.entries), ['n3', 'n5', 'n7']);
        }));

      test('finds sinceId in a channel scope and continues from it across scopes', () =>
        withHistory(async (history) => {
          const notes = await appendAll(history, 't1', [
            ['n1', [user('alice')]],
            ['n2', [channel('news')]],
            ['n3', [user('alice')]],
          ]);
          const result = await history.since('t1', [user('alice'), channel('news')], notes.get('n2')!.id, Date.now());
          assert.equal(result.found, true);
          assert.deepEqual(labels(result.entries), ['n3']);
        }));

      test('returns a notification kept in two of the scopes once', () =>
        withHistory(async (history) => {
          const notes = await appendAll(history, 't1', [
            ['n1', [user('alice')]],
            ['both', [channel('news'), channel('sport')]],
            ['n3', [channel('sport')]],
          ]);
          const scopes = [user('alice'), channel('news'), channel('sport')];
          const result = await history.since('t1', scopes, notes.get('n1')!.id, Date.now());
          assert.deepEqual(labels(result.entries), ['both', 'n3']);
          const fromGap = await history.since('t1', [channel('news'), channel('sport')], 'unknown', Date.now());
          assert.deepEqual(labels(fromGap.entries), ['both', 'n3']);
        }));

      test('with an unknown sinceId returns found false and every unexpired entry', () =>
        withHistory(async (history) => {
          const now = Date.now();
          await history.append('t1', [user('alice')], storedNote('n1'), SIZES);
          await history.append('t1', [user('alice')], storedNote('stale', now - 1), SIZES);
          await history.append('t1', [channel('news')], storedNote('n3'), SIZES);
          await history.append('t1', [channel('other')], storedNote('elsewhere'), SIZES);
          const result = await history.since('t1', [user('alice'), channel('news')], 'not-an-id', now);
          assert.equal(result.found, false);
          assert.deepEqual(labels(result.entries), ['n1', 'n3']);
        }));

      test('with an id kept only in a scope not asked for returns found false', () =>
        withHistory(async (history) => {
          const notes = await appendAll(history, 't1', [
            ['n1', [user('alice')]],
            ['other', [channel('other')]],
            ['n3', [user('alice')]],
          ]);
          const result = await history.since('t1', [user('alice')], notes.get('other')!.id, Date.now());
          assert.equal(result.found, false);
          assert.deepEqual(labels(result.entries), ['n1', 'n3']);
        }));

      test('never returns an expired entry after the mark', () =>
        withHistory(async (history) => {
          const now = Date.now();
          const first = storedNote('n1');
          await history.append('t1', [user('alice')], first, SIZES);
          await history.append('t1', [user('alice')], storedNote('stale', now - 1), SIZES);
          await history.append('t1', [user('alice')], storedNote('edge', now), SIZES);
          await history.append('t1', [user('alice')], storedNote('n4', now + 1), SIZES);
          const result = await history.since('t1', [user('alice')], first.id, now);
          assert.equal(result.found, true);
          assert.deepEqual(labels(result.entries), ['n4']);
        }));

      test('of scopes with no history returns found false and nothing', () =>
        withHistory(async (history) => {
          assert.deepEqual(await history.since('t1', [user('nobody'), channel('none')], 'x', Date.now()), {
            found: false,
            entries: [],
          });
        }));
    });

    describe('send order (StoredNotification.order)', () => {
      // Sends numbered 1..40 as dispatched, appended concurrently: a store
      // whose writes run on several pool connections completes them in
      // whatever order the connections finish. A resume must follow dispatch.
      test('entries come back in `order`, whatever order the writes completed in', () =>
        withHistory(async (history) => {
          const scopesOf = (i: number): HistoryScope[] =>
            i % 3 === 0 ? [user('alice')] : i % 3 === 1 ? [channel('news')] : [user('alice'), channel('news')];
          const notes = Array.from({ length: 40 }, (_, i) => storedNote(`o${i + 1}`, Date.now() + 3_600_000, 2, i + 1));
          await Promise.all(notes.map((note, i) => history.append('t1', scopesOf(i), note, SIZES)));
          const scopes = [user('alice'), channel('news')];
          const all = notes.map((_, i) => `o${i + 1}`);

          const fromGap = await history.since('t1', scopes, 'unknown', Date.now());
          assert.equal(fromGap.found, false);
          assert.deepEqual(labels(fromGap.entries), all);
          for (let i = 1; i < fromGap.entries.length; i++) assert.ok(fromGap.entries[i]!.seq > fromGap.entries[i - 1]!.seq);

          const resumed = await history.since('t1', scopes, notes[19]!.id, Date.now());
          assert.equal(resumed.found, true);
          assert.deepEqual(labels(resumed.entries), all.slice(20));

          // One scope alone: the user's share, in order.
          const alice = await history.since('t1', [user('alice')], 'unknown', Date.now());
          assert.deepEqual(labels(alice.entries), all.filter((_, i) => i % 3 !== 1));
        }));

      // Appends that run at the same moment may each trim without seeing the
      // others' rows (PostgreSQL appends take no lock), so right after a burst
      // a scope may briefly hold more than its cap; the next append trims it.
      test('the cap keeps the entries last in `order` after concurrent writes overflowed it', () =>
        withHistory(async (history) => {
          const sizes = { user: 100, channel: 10 };
          const notes = Array.from({ length: 41 }, (_, i) => storedNote(`o${i + 1}`, Date.now() + 3_600_000, 2, i + 1));
          await Promise.all(notes.slice(0, 40).map((note) => history.append('t1', [channel('news')], note, sizes)));
          await history.append('t1', [channel('news')], notes[40]!, sizes);
          const kept = await history.since('t1', [channel('news')], 'unknown', Date.now());
          assert.deepEqual(labels(kept.entries), notes.slice(31).map((_, i) => `o${i + 32}`));
        }));
    });

    describe('caps (QUEUE_MAX_SIZE_PER_USER, HISTORY_CHANNEL_MAX_SIZE)', () => {
      test('keeps the newest maxSizes.user entries of a user and maxSizes.channel of a channel', () =>
        withHistory(async (history) => {
          const sizes = { user: 3, channel: 2 };
          const sends: Array<[string, HistoryScope[]]> = [];
          for (let i = 1; i <= 5; i++) sends.push([`u${i}`, [user('alice')]], [`c${i}`, [channel('news')]]);
          const notes = await appendAll(history, 't1', sends, sizes);

          const users = await history.since('t1', [user('alice')], 'unknown', Date.now());
          assert.deepEqual(labels(users.entries), ['u3', 'u4', 'u5']);
          const channels = await history.since('t1', [channel('news')], 'unknown', Date.now());
          assert.deepEqual(labels(channels.entries), ['c4', 'c5']);

          // An id that aged out is no longer found: everything left follows.
          const aged = await history.since('t1', [user('alice'), channel('news')], notes.get('u1')!.id, Date.now());
          assert.equal(aged.found, false);
          assert.deepEqual(labels(aged.entries), ['u3', 'u4', 'c4', 'u5', 'c5']);
          const kept = await history.since('t1', [user('alice'), channel('news')], notes.get('u3')!.id, Date.now());
          assert.equal(kept.found, true);
          assert.deepEqual(labels(kept.entries), ['u4', 'c4', 'u5', 'c5']);
        }));

      test('applies the cap per scope: a notification trimmed from one channel stays in another', () =>
        withHistory(async (history) => {
          const sizes = { user: 10, channel: 2 };
          await appendAll(
            history,
            't1',
            [
              ['shared', [channel('busy'), channel('quiet')]],
              ['b2', [channel('busy')]],
              ['b3', [channel('busy')]],
            ],
            sizes,
          );
          assert.deepEqual(labels((await history.since('t1', [channel('busy')], 'x', Date.now())).entries), ['b2', 'b3']);
          assert.deepEqual(labels((await history.since('t1', [channel('quiet')], 'x', Date.now())).entries), ['shared']);
          assert.deepEqual(
            labels((await history.since('t1', [channel('busy'), channel('quiet')], 'x', Date.now())).entries),
            ['shared', 'b2', 'b3'],
          );
        }));
    });

    describe('isolation (SPEC §3)', () => {
      test('tenants, user scopes and channel scopes of the same name never mix', () =>
        withHistory(async (history) => {
          await appendAll(history, 't1', [
            ['t1-user-x', [user('x')]],
            ['t1-channel-x', [channel('x')]],
          ]);
          await appendAll(history, 't2', [
            ['t2-user-x', [user('x')]],
            ['t2-channel-x', [channel('x')]],
          ]);
          const read = async (tenant: string, scope: HistoryScope) =>
            labels((await history.since(tenant, [scope], 'unknown', Date.now())).entries);
          assert.deepEqual(await read('t1', user('x')), ['t1-user-x']);
          assert.deepEqual(await read('t1', channel('x')), ['t1-channel-x']);
          assert.deepEqual(await read('t2', user('x')), ['t2-user-x']);
          assert.deepEqual(await read('t2', channel('x')), ['t2-channel-x']);
          assert.deepEqual(await read('t3', user('x')), []);
        }));

      test('crafted look-alike ids never share a history', () =>
        withHistory(async (history) => {
          const keys: Array<[string, HistoryScope]> = [
            ['x', user('y:z')],
            ['x:y', user('z')],
            ['x', user('c:y')],
            ['x', channel('y')],
            ['x', user('y\u0000z')],
            ['x', user('y')],
            ['x', user('\uD800')],
            ['x', user('\uFFFD')],
            ['x', user('\\0')],
            ['x', user('\u0000')],
          ];
          for (const [i, [tenant, scope]] of keys.entries()) {
            await history.append(tenant, [scope], storedNote(`k${i}`), SIZES);
          }
          for (const [i, [tenant, scope]] of keys.entries()) {
            const { entries } = await history.since(tenant, [scope], 'unknown', Date.now());
            assert.deepEqual(labels(entries), [`k${i}`], `history of ${JSON.stringify([tenant, scope])}`);
          }
        }));

      test('an id from another tenant is not found', () =>
        withHistory(async (history) => {
          const theirs = storedNote('theirs');
          await history.append('t2', [user('alice')], theirs, SIZES);
          await history.append('t1', [user('alice')], storedNote('ours'), SIZES);
          const result = await history.since('t1', [user('alice')], theirs.id, Date.now());
          assert.equal(result.found, false);
          assert.deepEqual(labels(result.entries), ['ours']);
        }));
    });

    describe('purgeExpired', () => {
      test('deletes expired entries of every tenant and scope and returns how many', () =>
        withHistory(async (history) => {
          const now = Date.now();
          await history.append('t1', [user('alice')], storedNote('stale-1', now - 5), SIZES);
          await history.append('t1', [user('alice')], storedNote('keep-1'), SIZES);
          await history.append('t1', [channel('news')], storedNote('stale-2', now), SIZES);
          await history.append('t2', [user('alice')], storedNote('stale-3', now - 5), SIZES);
          await history.append('t2', [channel('news')], storedNote('keep-2'), SIZES);
          assert.equal(await history.purgeExpired(now), 3);
          assert.equal(await history.purgeExpired(now), 0);
          // Read as of the past: what is still stored, expired or not.
          const stored = async (tenant: string) =>
            labels((await history.since(tenant, [user('alice'), channel('news')], 'x', 0)).entries);
          assert.deepEqual(await stored('t1'), ['keep-1']);
          assert.deepEqual(await stored('t2'), ['keep-2']);
        }));
    });
  });
}
