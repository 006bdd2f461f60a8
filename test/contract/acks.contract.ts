/**
 * The AckTracker contract (src/storage/types.ts, SPEC §7 ACK), written
 * once and run against every backend. Each test gets a tracker with
 * nothing in it from the factory and cleans up after itself.
 *
 * Every record of a tracker gets the same timeout in the service, so
 * records are tracked here in deadline order too (the memory tracker
 * relies on it).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe } from 'node:test';
import type { AckStats, AckTracker } from '../../src/storage/types.ts';
import { contractTest, type ContractOptions } from './contract-options.ts';

export type AckFactory = () => Promise<{ store: AckTracker; cleanup(): Promise<void> }>;

const TIMEOUT = 30_000;

function note(label: string, lane = 2, withJson = true) {
  const id = randomUUID();
  return { id, json: withJson ? JSON.stringify({ type: 'notification', id, payload: { label } }) : null, lane };
}

function stats(partial: Partial<AckStats>): AckStats {
  return { totalTracked: 0, totalAcked: 0, totalExpired: 0, pendingCount: 0, totalLatencyMs: 0, ...partial };
}

export function runAckContract(backendName: string, factory: AckFactory, options: ContractOptions = {}): void {
  const test = contractTest(options);
  async function withAcks(work: (acks: AckTracker) => Promise<void>): Promise<void> {
    const { store, cleanup } = await factory();
    try {
      await work(store);
    } finally {
      await cleanup();
    }
  }

  describe(`AckTracker contract on ${backendName} (SPEC §7 ACK)`, () => {
    describe('acknowledge', () => {
      test('succeeds for the tracked tenant and user before the deadline, with the latency', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          await acks.track('t1', 'alice', n, sent, sent + TIMEOUT);
          assert.deepEqual(await acks.acknowledge('t1', 'alice', n.id, sent + 250), { latencyMs: 250 });
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 1, totalAcked: 1, totalLatencyMs: 250 }));
        }));

      test('succeeds only once', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          await acks.track('t1', 'alice', n, sent, sent + TIMEOUT);
          assert.deepEqual(await acks.acknowledge('t1', 'alice', n.id, sent + 10), { latencyMs: 10 });
          assert.equal(await acks.acknowledge('t1', 'alice', n.id, sent + 20), null);
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 1, totalAcked: 1, totalLatencyMs: 10 }));
        }));

      test('two acknowledges at the same moment: exactly one succeeds', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          await acks.track('t1', 'alice', n, sent, sent + TIMEOUT);
          const results = await Promise.all(
            Array.from({ length: 6 }, () => acks.acknowledge('t1', 'alice', n.id, sent + 5)),
          );
          assert.deepEqual(results.filter((result) => result !== null), [{ latencyMs: 5 }]);
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 1, totalAcked: 1, totalLatencyMs: 5 }));
        }));

      test('refuses a foreign user, and the recipient can still ack afterwards', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          await acks.track('t1', 'alice', n, sent, sent + TIMEOUT);
          assert.equal(await acks.acknowledge('t1', 'mallory', n.id, sent + 1), null);
          assert.deepEqual(await acks.acknowledge('t1', 'alice', n.id, sent + 2), { latencyMs: 2 });
        }));

      test('refuses the same user id in another tenant', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          await acks.track('t1', 'alice', n, sent, sent + TIMEOUT);
          assert.equal(await acks.acknowledge('t2', 'alice', n.id, sent + 1), null);
          assert.deepEqual(await acks.stats('t2'), stats({}));
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 1, pendingCount: 1 }));
        }));

      test('refuses an unknown id, whatever its form', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          await acks.track('t1', 'alice', note('a'), sent, sent + TIMEOUT);
          for (const id of [randomUUID(), 'not-a-uuid', '', '\u0000', "'; DROP TABLE x; --"]) {
            assert.equal(await acks.acknowledge('t1', 'alice', id, sent + 1), null, `id ${JSON.stringify(id)}`);
          }
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 1, pendingCount: 1 }));
        }));

      test('refuses an ack after the deadline', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const late = note('late');
          const inTime = note('in-time');
          await acks.track('t1', 'alice', late, sent, sent + 1_000);
          await acks.track('t1', 'alice', inTime, sent, sent + 1_000);
          assert.equal(await acks.acknowledge('t1', 'alice', late.id, sent + 1_001), null);
          assert.deepEqual(await acks.acknowledge('t1', 'alice', inTime.id, sent + 999), { latencyMs: 999 });
          assert.deepEqual(
            await acks.stats('t1'),
            stats({ totalTracked: 2, totalAcked: 1, pendingCount: 1, totalLatencyMs: 999 }),
          );
        }));

      test('keeps crafted look-alike user ids apart', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          await acks.track('x', 'y\u0000z', n, sent, sent + TIMEOUT);
          await acks.track('x', '\uD800', n, sent, sent + TIMEOUT);
          for (const [tenant, userId] of [
            ['x', 'y'],
            ['x:y', 'z'],
            ['x', 'y:z'],
            ['x', 'y\\0z'],
            ['x', '\uFFFD'],
            ['x', '\uDC00'],
          ] as const) {
            assert.equal(await acks.acknowledge(tenant, userId, n.id, sent + 1), null, JSON.stringify([tenant, userId]));
          }
          assert.deepEqual(await acks.acknowledge('x', 'y\u0000z', n.id, sent + 3), { latencyMs: 3 });
          assert.deepEqual(await acks.acknowledge('x', '\uD800', n.id, sent + 4), { latencyMs: 4 });
        }));
    });

    describe('track', () => {
      test('tracking the same triple again does nothing and returns false; the first track returns true', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          assert.equal(await acks.track('t1', 'alice', n, sent, sent + TIMEOUT), true);
          assert.equal(await acks.track('t1', 'alice', n, sent + 100, sent + 100 + TIMEOUT), false);
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 1, pendingCount: 1 }));
          // The first record stands: latency from the first send.
          assert.deepEqual(await acks.acknowledge('t1', 'alice', n.id, sent + 150), { latencyMs: 150 });
          assert.equal(await acks.acknowledge('t1', 'alice', n.id, sent + 160), null);
        }));

      test('keeps one record per recipient of the same notification, each track returning true', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          assert.equal(await acks.track('t1', 'alice', n, sent, sent + TIMEOUT), true);
          assert.equal(await acks.track('t1', 'bob', n, sent, sent + TIMEOUT), true);
          assert.equal(await acks.track('t2', 'alice', n, sent, sent + TIMEOUT), true);
          assert.deepEqual(await acks.acknowledge('t1', 'alice', n.id, sent + 1), { latencyMs: 1 });
          assert.deepEqual(await acks.acknowledge('t1', 'bob', n.id, sent + 2), { latencyMs: 2 });
          assert.deepEqual(await acks.acknowledge('t2', 'alice', n.id, sent + 3), { latencyMs: 3 });
          assert.deepEqual(await acks.stats(null), stats({ totalTracked: 3, totalAcked: 3, totalLatencyMs: 6 }));
        }));

      test('concurrent tracks of one triple: exactly one returns true', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          const created = await Promise.all(
            Array.from({ length: 6 }, () => acks.track('t1', 'alice', n, sent, sent + TIMEOUT)),
          );
          assert.deepEqual([...created].sort(), [false, false, false, false, false, true]);
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 1, pendingCount: 1 }));
        }));

      test('tracking a triple again after its record expired creates a new record and returns true', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          assert.equal(await acks.track('t1', 'alice', n, sent, sent + 100), true);
          assert.equal((await acks.expire(sent + 200)).length, 1);
          assert.equal(await acks.track('t1', 'alice', n, sent + 300, sent + 300 + TIMEOUT), true);
          assert.equal(await acks.track('t1', 'alice', n, sent + 400, sent + 400 + TIMEOUT), false);
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 2, totalExpired: 1, pendingCount: 1 }));
        }));
    });

    describe('expire', () => {
      test('removes the records past their deadline, returns them in deadline order and counts them', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const a = note('a', 0);
          const b = note('b', 3, false);
          const c = note('c', 1);
          const d = note('d');
          await acks.track('t1', 'alice', a, sent, sent + 100);
          await acks.track('t2', 'bob', b, sent, sent + 200);
          await acks.track('t1', 'carol', c, sent, sent + 300);
          await acks.track('t1', 'alice', d, sent, sent + 400);

          assert.deepEqual(await acks.expire(sent + 301), [
            { tenantId: 't1', userId: 'alice', notificationId: a.id, json: a.json, lane: 0 },
            { tenantId: 't2', userId: 'bob', notificationId: b.id, json: null, lane: 3 },
            { tenantId: 't1', userId: 'carol', notificationId: c.id, json: c.json, lane: 1 },
          ]);
          assert.deepEqual(await acks.expire(sent + 301), []);
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 3, totalExpired: 2, pendingCount: 1 }));
          assert.deepEqual(await acks.stats('t2'), stats({ totalTracked: 1, totalExpired: 1 }));
          assert.deepEqual(await acks.stats(null), stats({ totalTracked: 4, totalExpired: 3, pendingCount: 1 }));
        }));

      test('records with the same deadline expire in the order they were tracked', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const notes = Array.from({ length: 8 }, (_, i) => note(`n${i}`));
          for (const n of notes) await acks.track('t1', 'alice', n, sent, sent + 100);
          const expired = await acks.expire(sent + 101);
          assert.deepEqual(
            expired.map((ack) => ack.notificationId),
            notes.map((n) => n.id),
          );
        }));

      test('an expired record can no longer be acknowledged, one not yet due still can', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const early = note('early');
          const later = note('later');
          await acks.track('t1', 'alice', early, sent, sent + 100);
          await acks.track('t1', 'alice', later, sent, sent + 10_000);
          assert.equal((await acks.expire(sent + 200)).length, 1);
          // Even with a clock that says it is still in time.
          assert.equal(await acks.acknowledge('t1', 'alice', early.id, sent + 50), null);
          assert.deepEqual(await acks.acknowledge('t1', 'alice', later.id, sent + 300), { latencyMs: 300 });
          assert.deepEqual(
            await acks.stats('t1'),
            stats({ totalTracked: 2, totalAcked: 1, totalExpired: 1, totalLatencyMs: 300 }),
          );
        }));

      test('an acknowledged record is not expired later', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          await acks.track('t1', 'alice', n, sent, sent + 100);
          assert.deepEqual(await acks.acknowledge('t1', 'alice', n.id, sent + 40), { latencyMs: 40 });
          assert.deepEqual(await acks.expire(sent + 1_000), []);
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 1, totalAcked: 1, totalLatencyMs: 40 }));
        }));

      test('expires crafted ids exactly as tracked', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const n = note('a');
          await acks.track('x', 'y\u0000z', n, sent, sent + 10);
          await acks.track('x', '\uD800\\0', n, sent, sent + 20);
          const expired = await acks.expire(sent + 100);
          assert.deepEqual(
            expired.map((ack) => [ack.tenantId, ack.userId, ack.notificationId]),
            [
              ['x', 'y\u0000z', n.id],
              ['x', '\uD800\\0', n.id],
            ],
          );
        }));

      test('concurrent expiries count each record once', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          for (let i = 0; i < 40; i++) await acks.track('t1', `user-${i}`, note(`n${i}`), sent, sent + 10 + i);
          const runs = await Promise.all([acks.expire(sent + 1_000), acks.expire(sent + 1_000), acks.expire(sent + 1_000)]);
          const ids = runs.flat().map((ack) => ack.userId);
          assert.equal(ids.length, 40);
          assert.equal(new Set(ids).size, 40);
          assert.deepEqual(await acks.stats('t1'), stats({ totalTracked: 40, totalExpired: 40 }));
        }));
    });

    describe('stats', () => {
      test('are per tenant, summed over every tenant with null, zero for an unknown tenant', () =>
        withAcks(async (acks) => {
          const sent = Date.now();
          const [a, b, c, d] = [note('a'), note('b'), note('c'), note('d')];
          await acks.track('t1', 'alice', a, sent, sent + 100);
          await acks.track('t1', 'alice', b, sent, sent + TIMEOUT);
          await acks.track('t1', 'bob', b, sent, sent + TIMEOUT);
          await acks.track('t2', 'alice', c, sent, sent + TIMEOUT);
          await acks.track('t2', 'alice', d, sent, sent + TIMEOUT);
          await acks.acknowledge('t1', 'alice', b.id, sent + 100);
          await acks.acknowledge('t2', 'alice', c.id, sent + 30);
          await acks.acknowledge('t2', 'alice', d.id, sent + 70);
          await acks.expire(sent + 101);

          assert.deepEqual(
            await acks.stats('t1'),
            stats({ totalTracked: 3, totalAcked: 1, totalExpired: 1, pendingCount: 1, totalLatencyMs: 100 }),
          );
          assert.deepEqual(await acks.stats('t2'), stats({ totalTracked: 2, totalAcked: 2, totalLatencyMs: 100 }));
          assert.deepEqual(
            await acks.stats(null),
            stats({ totalTracked: 5, totalAcked: 3, totalExpired: 1, pendingCount: 1, totalLatencyMs: 200 }),
          );
          assert.deepEqual(await acks.stats('t3'), stats({}));
        }));
    });
  });
}
