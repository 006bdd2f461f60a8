/**
 * The OfflineQueue contract (src/storage/types.ts, SPEC §7 offline queue),
 * written once and run against every backend. Each test gets a store with
 * nothing in it from the factory and cleans up after itself.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe } from 'node:test';
import type { OfflineQueue, SequencedNotification, StoredNotification } from '../../src/storage/types.ts';
import { contractTest, type ContractOptions } from './contract-options.ts';

export type QueueFactory = () => Promise<{ store: OfflineQueue; cleanup(): Promise<void> }>;

const HOUR = 3_600_000;

let lastOrder = 0;

/** The next send order: increasing in call order, like a node's SendOrder. */
export function nextOrder(): number {
  return ++lastOrder;
}

/**
 * A stored notification whose JSON names it, so a mix-up shows in the diff.
 * Its `order` is above every earlier note's unless one is given.
 */
export function storedNote(label: string, expiresAtMs = Date.now() + HOUR, lane = 2, order = nextOrder()): StoredNotification {
  const id = randomUUID();
  return { id, json: JSON.stringify({ type: 'notification', id, payload: { label } }), lane, expiresAtMs, order };
}

/** What a store gives back of a stored notification (`order` is not returned, see SequencedNotification). */
export function content(entry: StoredNotification | SequencedNotification) {
  return { id: entry.id, json: entry.json, lane: entry.lane, expiresAtMs: entry.expiresAtMs };
}

function labels(entries: SequencedNotification[]): string[] {
  return entries.map((entry) => (JSON.parse(entry.json) as { payload: { label: string } }).payload.label);
}

function assertIncreasingSeq(entries: SequencedNotification[]): void {
  for (let i = 1; i < entries.length; i++) {
    assert.ok(entries[i]!.seq > entries[i - 1]!.seq, `seq ${entries[i]!.seq} after ${entries[i - 1]!.seq}`);
  }
}

export function runQueueContract(backendName: string, factory: QueueFactory, options: ContractOptions = {}): void {
  const test = contractTest(options);
  async function withQueue(work: (queue: OfflineQueue) => Promise<void>): Promise<void> {
    const { store, cleanup } = await factory();
    try {
      await work(store);
    } finally {
      await cleanup();
    }
  }

  describe(`OfflineQueue contract on ${backendName} (SPEC §7)`, () => {
    describe('enqueue and peek', () => {
      test('peek returns every entry in send order with its fields unchanged', () =>
        withQueue(async (queue) => {
          const now = Date.now();
          const sent: StoredNotification[] = [
            { ...storedNote('one'), lane: 0, expiresAtMs: now + 60_000 },
            { ...storedNote('two'), lane: 3, expiresAtMs: now + 1_234 },
            // JSON escapes, astral characters and quotes travel as they are.
            {
              id: randomUUID(),
              json: '{"type":"notification","payload":{"label":"three","t":"\\u0000 😀 \\"q\\""}}',
              lane: 1,
              expiresAtMs: now + 999_999,
              order: nextOrder(),
            },
          ];
          for (const entry of sent) assert.deepEqual(await queue.enqueue('t1', 'alice', entry, 100), { dropped: 0 });

          const peeked = await queue.peek('t1', 'alice', now, 100);
          assert.deepEqual(peeked.map(content), sent.map(content));
          assertIncreasingSeq(peeked);
          for (const entry of peeked) assert.ok(Number.isSafeInteger(entry.seq), `seq ${entry.seq} is an integer`);
        }));

      test('peek does not remove anything', () =>
        withQueue(async (queue) => {
          await queue.enqueue('t1', 'alice', storedNote('a'), 100);
          await queue.enqueue('t1', 'alice', storedNote('b'), 100);
          const first = await queue.peek('t1', 'alice', Date.now(), 100);
          const second = await queue.peek('t1', 'alice', Date.now(), 100);
          assert.deepEqual(labels(first), ['a', 'b']);
          assert.deepEqual(second, first);
          assert.deepEqual(await queue.stats('t1'), { messages: 2, users: 1 });
        }));

      test('peek returns at most limit entries, the oldest first', () =>
        withQueue(async (queue) => {
          for (const label of ['a', 'b', 'c', 'd', 'e']) await queue.enqueue('t1', 'alice', storedNote(label), 100);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 2)), ['a', 'b']);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 5)), ['a', 'b', 'c', 'd', 'e']);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 500)), ['a', 'b', 'c', 'd', 'e']);
        }));

      test('peek of a user with no queue is empty', () =>
        withQueue(async (queue) => {
          assert.deepEqual(await queue.peek('t1', 'nobody', Date.now(), 10), []);
        }));
    });

    describe('send order (StoredNotification.order)', () => {
      // The dispatcher numbers notifications as it sends them and issues the
      // writes in that order; a store whose writes run on several pool
      // connections completes them in whatever order the connections finish.
      test('entries come back in `order`, whatever order the writes completed in', () =>
        withQueue(async (queue) => {
          const notes = Array.from({ length: 40 }, (_, i) => storedNote(`o${i + 1}`, Date.now() + HOUR, 2, i + 1));
          const results = await Promise.all(notes.map((note) => queue.enqueue('t1', 'alice', note, 100)));
          assert.deepEqual(results, notes.map(() => ({ dropped: 0 })));
          const peeked = await queue.peek('t1', 'alice', Date.now(), 100);
          assert.deepEqual(labels(peeked), notes.map((_, i) => `o${i + 1}`));
          assertIncreasingSeq(peeked);

          // remove(uptoSeq) takes exactly the first 20 in that order.
          const firstPage = await queue.peek('t1', 'alice', Date.now(), 20);
          assert.equal(await queue.remove('t1', 'alice', firstPage[19]!.seq), 20);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 100)), notes.slice(20).map((_, i) => `o${i + 21}`));
        }));

      test('the cap drops the entries first in `order` when concurrent writes overflow it', () =>
        withQueue(async (queue) => {
          const notes = Array.from({ length: 40 }, (_, i) => storedNote(`o${i + 1}`, Date.now() + HOUR, 2, i + 1));
          const results = await Promise.all(notes.map((note) => queue.enqueue('t1', 'alice', note, 10)));
          assert.equal(results.reduce((sum, result) => sum + result.dropped, 0), 30);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 100)), notes.slice(30).map((_, i) => `o${i + 31}`));
        }));
    });

    describe('cap (QUEUE_MAX_SIZE_PER_USER)', () => {
      test('drops the oldest entries beyond maxSize and returns how many', () =>
        withQueue(async (queue) => {
          const dropped: number[] = [];
          for (const label of ['a', 'b', 'c', 'd', 'e']) {
            dropped.push((await queue.enqueue('t1', 'alice', storedNote(label), 3)).dropped);
          }
          assert.deepEqual(dropped, [0, 0, 0, 1, 1]);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 100)), ['c', 'd', 'e']);
          assert.deepEqual(await queue.stats('t1'), { messages: 3, users: 1 });
        }));

      test('a smaller cap on a later enqueue drops every entry over it at once', () =>
        withQueue(async (queue) => {
          for (const label of ['a', 'b', 'c', 'd', 'e']) await queue.enqueue('t1', 'alice', storedNote(label), 10);
          assert.deepEqual(await queue.enqueue('t1', 'alice', storedNote('f'), 2), { dropped: 4 });
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 100)), ['e', 'f']);
        }));

      test('the cap counts per user and per tenant', () =>
        withQueue(async (queue) => {
          await queue.enqueue('t1', 'alice', storedNote('a1'), 2);
          await queue.enqueue('t1', 'alice', storedNote('a2'), 2);
          await queue.enqueue('t1', 'bob', storedNote('b1'), 2);
          await queue.enqueue('t2', 'alice', storedNote('x1'), 2);
          assert.deepEqual(await queue.enqueue('t1', 'alice', storedNote('a3'), 2), { dropped: 1 });
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 10)), ['a2', 'a3']);
          assert.deepEqual(labels(await queue.peek('t1', 'bob', Date.now(), 10)), ['b1']);
          assert.deepEqual(labels(await queue.peek('t2', 'alice', Date.now(), 10)), ['x1']);
        }));

      test('concurrent enqueues to one user never leave more than maxSize', () =>
        withQueue(async (queue) => {
          const results = await Promise.all(
            Array.from({ length: 20 }, (_, i) => queue.enqueue('t1', 'alice', storedNote(`n${i}`), 5)),
          );
          const dropped = results.reduce((sum, result) => sum + result.dropped, 0);
          assert.equal(dropped, 15);
          const left = await queue.peek('t1', 'alice', Date.now(), 100);
          assert.equal(left.length, 5);
          assertIncreasingSeq(left);
        }));
    });

    describe('expiry', () => {
      test('an entry is never returned by peek once its expiry has passed', () =>
        withQueue(async (queue) => {
          const now = Date.now();
          await queue.enqueue('t1', 'alice', storedNote('fresh-1', now + HOUR), 100);
          await queue.enqueue('t1', 'alice', storedNote('stale', now - 1), 100);
          await queue.enqueue('t1', 'alice', storedNote('fresh-2', now + HOUR), 100);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', now, 100)), ['fresh-1', 'fresh-2']);
        }));

      test('an entry expiring at exactly nowMs is already expired', () =>
        withQueue(async (queue) => {
          const expiresAt = Date.now() + 5_000;
          await queue.enqueue('t1', 'alice', storedNote('edge', expiresAt), 100);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', expiresAt - 1, 100)), ['edge']);
          assert.deepEqual(await queue.peek('t1', 'alice', expiresAt, 100), []);
        }));

      test('the peek limit counts unexpired entries only', () =>
        withQueue(async (queue) => {
          const now = Date.now();
          await queue.enqueue('t1', 'alice', storedNote('stale-1', now - 10), 100);
          await queue.enqueue('t1', 'alice', storedNote('a'), 100);
          await queue.enqueue('t1', 'alice', storedNote('stale-2', now - 10), 100);
          await queue.enqueue('t1', 'alice', storedNote('b'), 100);
          await queue.enqueue('t1', 'alice', storedNote('c'), 100);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', now, 2)), ['a', 'b']);
        }));

      test('purgeExpired deletes every expired entry of every tenant and returns how many', () =>
        withQueue(async (queue) => {
          const now = Date.now();
          await queue.enqueue('t1', 'alice', storedNote('stale-a', now - 100), 100);
          await queue.enqueue('t1', 'alice', storedNote('keep-a', now + HOUR), 100);
          await queue.enqueue('t1', 'bob', storedNote('stale-b', now - 100), 100);
          await queue.enqueue('t2', 'carol', storedNote('stale-c', now - 100), 100);
          await queue.enqueue('t2', 'carol', storedNote('stale-c2', now), 100);
          assert.equal(await queue.purgeExpired(now), 4);
          assert.equal(await queue.purgeExpired(now), 0);
          // Looking from the past shows what is still stored, expired or not.
          assert.deepEqual(labels(await queue.peek('t1', 'alice', 0, 100)), ['keep-a']);
          assert.deepEqual(await queue.peek('t1', 'bob', 0, 100), []);
          assert.deepEqual(await queue.peek('t2', 'carol', 0, 100), []);
          assert.deepEqual(await queue.stats(null), { messages: 1, users: 1 });
        }));
    });

    describe('remove', () => {
      test('deletes the entries up to and including uptoSeq and returns how many', () =>
        withQueue(async (queue) => {
          for (const label of ['a', 'b', 'c', 'd']) await queue.enqueue('t1', 'alice', storedNote(label), 100);
          const peeked = await queue.peek('t1', 'alice', Date.now(), 2);
          assert.equal(await queue.remove('t1', 'alice', peeked[1]!.seq), 2);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 100)), ['c', 'd']);
          assert.deepEqual(await queue.stats('t1'), { messages: 2, users: 1 });
        }));

      test('also deletes the expired entries of that queue, whatever their seq', () =>
        withQueue(async (queue) => {
          const now = Date.now();
          await queue.enqueue('t1', 'alice', storedNote('a'), 100);
          await queue.enqueue('t1', 'alice', storedNote('stale', now - 1_000), 100);
          await queue.enqueue('t1', 'alice', storedNote('c'), 100);
          await queue.enqueue('t1', 'bob', storedNote('stale-bob', now - 1_000), 100);
          const [first] = await queue.peek('t1', 'alice', now, 1);
          assert.equal(await queue.remove('t1', 'alice', first!.seq), 2);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', 0, 100)), ['c']);
          // Another user's expired entry is left for purgeExpired.
          assert.deepEqual(labels(await queue.peek('t1', 'bob', 0, 100)), ['stale-bob']);
        }));

      test('keeps what was enqueued after the peek (remove is atomic)', () =>
        withQueue(async (queue) => {
          await queue.enqueue('t1', 'alice', storedNote('a'), 100);
          await queue.enqueue('t1', 'alice', storedNote('b'), 100);
          const peeked = await queue.peek('t1', 'alice', Date.now(), 500);
          await queue.enqueue('t1', 'alice', storedNote('late'), 100);
          assert.equal(await queue.remove('t1', 'alice', peeked[peeked.length - 1]!.seq), 2);
          const left = await queue.peek('t1', 'alice', Date.now(), 500);
          assert.deepEqual(labels(left), ['late']);
          assert.ok(left[0]!.seq > peeked[1]!.seq);
        }));

      test('enqueues racing with a peek-and-remove drain are all kept or delivered, none twice', () =>
        withQueue(async (queue) => {
          for (let i = 0; i < 30; i++) await queue.enqueue('t1', 'alice', storedNote(`early-${i}`), 1_000);
          const delivered: string[] = [];
          const drain = (async () => {
            for (let round = 0; round < 10; round++) {
              const page = await queue.peek('t1', 'alice', Date.now(), 7);
              if (page.length === 0) continue;
              delivered.push(...labels(page));
              await queue.remove('t1', 'alice', page[page.length - 1]!.seq);
            }
          })();
          const racing = Promise.all(
            Array.from({ length: 30 }, (_, i) => queue.enqueue('t1', 'alice', storedNote(`late-${i}`), 1_000)),
          );
          await Promise.all([drain, racing]);
          const rest = labels(await queue.peek('t1', 'alice', Date.now(), 1_000));
          const all = [...delivered, ...rest];
          assert.equal(new Set(all).size, all.length, 'no entry delivered twice');
          assert.equal(all.length, 60, 'no entry lost');
        }));

      test('of a user with no queue removes nothing', () =>
        withQueue(async (queue) => {
          await queue.enqueue('t1', 'alice', storedNote('a'), 100);
          const [entry] = await queue.peek('t1', 'alice', Date.now(), 1);
          assert.equal(await queue.remove('t1', 'nobody', entry!.seq), 0);
          assert.equal(await queue.remove('t2', 'alice', entry!.seq), 0);
          assert.deepEqual(labels(await queue.peek('t1', 'alice', Date.now(), 10)), ['a']);
        }));
    });

    describe('stats', () => {
      test('counts entries and users with a queue per tenant, and for every tenant with null', () =>
        withQueue(async (queue) => {
          await queue.enqueue('t1', 'alice', storedNote('a1'), 100);
          await queue.enqueue('t1', 'alice', storedNote('a2'), 100);
          await queue.enqueue('t1', 'bob', storedNote('b1'), 100);
          await queue.enqueue('t2', 'alice', storedNote('x1'), 100);
          assert.deepEqual(await queue.stats('t1'), { messages: 3, users: 2 });
          assert.deepEqual(await queue.stats('t2'), { messages: 1, users: 1 });
          assert.deepEqual(await queue.stats('t3'), { messages: 0, users: 0 });
          assert.deepEqual(await queue.stats(null), { messages: 4, users: 3 });

          const [bobs] = await queue.peek('t1', 'bob', Date.now(), 1);
          await queue.remove('t1', 'bob', bobs!.seq);
          assert.deepEqual(await queue.stats('t1'), { messages: 2, users: 1 });
          assert.deepEqual(await queue.stats(null), { messages: 3, users: 2 });
        }));

      test('is empty for an empty store', () =>
        withQueue(async (queue) => {
          assert.deepEqual(await queue.stats(null), { messages: 0, users: 0 });
        }));
    });

    describe('tenant and user isolation (SPEC §3)', () => {
      // Pairs that a store joining tenant and user into one string, or a
      // text column that cannot hold NUL or lone surrogates, would confuse.
      const KEYS: Array<[tenant: string, user: string]> = [
        ['x', 'y:z'],
        ['x:y', 'z'],
        ['x', 'y'],
        ['x', 'y\u0000z'],
        ['x\u0000y', 'z'],
        ['x', 'y\u0000'],
        ['x', '\u0000'],
        ['x', '\\0'],
        ['x', '\\\\0'],
        ['x', '\uD800'],
        ['x', '\uDC00'],
        ['x', '\uFFFD'],
        ['x', '\uD83D\uDE00'],
        ['x', '\\uD800'],
        ['y', 'y'],
        ['X', 'y'],
      ];

      test('the same user id in two tenants, and crafted look-alike ids, never share a queue', () =>
        withQueue(async (queue) => {
          for (const [i, [tenant, user]] of KEYS.entries()) {
            await queue.enqueue(tenant, user, storedNote(`k${i}`), 100);
          }
          for (const [i, [tenant, user]] of KEYS.entries()) {
            assert.deepEqual(
              labels(await queue.peek(tenant, user, Date.now(), 100)),
              [`k${i}`],
              `queue of tenant ${JSON.stringify(tenant)} user ${JSON.stringify(user)}`,
            );
          }
          assert.deepEqual(await queue.stats('x'), { messages: 12, users: 12 });
          assert.deepEqual(await queue.stats(null), { messages: 16, users: 16 });
        }));

      test('remove and the cap of one queue leave look-alike queues untouched', () =>
        withQueue(async (queue) => {
          await queue.enqueue('x', 'y\u0000z', storedNote('nul-1'), 1);
          await queue.enqueue('x', 'y', storedNote('plain-1'), 1);
          await queue.enqueue('x', '\uD800', storedNote('lone-1'), 1);
          await queue.enqueue('x', '\uFFFD', storedNote('fffd-1'), 1);
          assert.deepEqual(await queue.enqueue('x', 'y\u0000z', storedNote('nul-2'), 1), { dropped: 1 });
          assert.deepEqual(await queue.enqueue('x', '\uD800', storedNote('lone-2'), 1), { dropped: 1 });
          const [lone] = await queue.peek('x', '\uD800', Date.now(), 1);
          assert.equal(await queue.remove('x', '\uD800', lone!.seq), 1);
          assert.deepEqual(labels(await queue.peek('x', 'y\u0000z', Date.now(), 10)), ['nul-2']);
          assert.deepEqual(labels(await queue.peek('x', 'y', Date.now(), 10)), ['plain-1']);
          assert.deepEqual(await queue.peek('x', '\uD800', Date.now(), 10), []);
          assert.deepEqual(labels(await queue.peek('x', '\uFFFD', Date.now(), 10)), ['fffd-1']);
        }));
    });
  });
}
