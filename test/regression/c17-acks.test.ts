/**
 * C17 Acks (cases/README.md; SPEC §4 `Ack` row, §7 "ACK").
 *
 * ACK_ENABLED. alice acks an unknown id, an id sent to bob, and her own id
 * twice: INVALID_ACK each time (exact message), and bob's pending ack is
 * untouched — bob can still ack his own afterwards. `acked` has the exact
 * shape `{"type":"acked","notification_id":…}`. With ACK disabled an Ack
 * gets no reply at all, and a non-UUID id is INVALID_MESSAGE either way.
 *
 * Runs on every store backend (memory, postgres, redis).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { sleep, type TestNode } from '../helpers/node.ts';
import { BackendScope, STORE_BACKENDS } from '../helpers/store-backends.ts';

const invalidAck = (id: string) => ({
  type: 'error',
  code: 'INVALID_ACK',
  message: `Unknown or invalid notification: ${id}`,
});

async function ackStats(node: TestNode) {
  const res = await node.api('GET', '/api/v1/stats/acks');
  assert.equal(res.status, 200);
  return res.json;
}

async function pendingBecomes(node: TestNode, expected: number): Promise<void> {
  const deadline = Date.now() + 3000;
  while ((await ackStats(node)).pending_count !== expected && Date.now() < deadline) await sleep(25);
  assert.equal((await ackStats(node)).pending_count, expected);
}

async function sendTo(node: TestNode, user: string): Promise<string> {
  const res = await node.api('POST', '/api/v1/notifications/send', {
    target_user_id: user,
    event_type: 'c17.event',
    payload: { to: user },
  });
  assert.equal(res.status, 200, res.text);
  assert.equal(res.json.delivered_to, 1);
  return res.json.notification_id;
}

const ack = (id: string) => ({ type: 'Ack', payload: { notification_id: id } });

for (const backend of STORE_BACKENDS) {
  describe(`C17 acks on ${backend} (SPEC §4, §7)`, () => {
    const scope = new BackendScope(backend, 'c17');
    after(() => scope.cleanup());

    test('an unknown id, an id sent to bob and a second ack of the same id are each INVALID_ACK, and bob can still ack his own', async () => {
      const node = await scope.start({ ACK_ENABLED: 'true' });
      const alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
      const bob = await TestWs.open(node.wsUrl(`?token=${await node.token('bob')}`));
      const forBob = await sendTo(node, 'bob');
      await bob.next((m) => m.id === forBob);
      const forAlice = await sendTo(node, 'alice');
      await alice.next((m) => m.id === forAlice);
      await pendingBecomes(node, 2);

      const unknown = randomUUID();
      assert.deepEqual(await alice.request(ack(unknown), 'error'), invalidAck(unknown));
      assert.deepEqual(await alice.request(ack(forBob), 'error'), invalidAck(forBob));
      // Bob's record is untouched by alice's attempt.
      let stats = await ackStats(node);
      assert.equal(stats.pending_count, 2);
      assert.equal(stats.total_acked, 0);

      assert.deepEqual(await alice.request(ack(forAlice), 'acked'), { type: 'acked', notification_id: forAlice });
      assert.deepEqual(await alice.request(ack(forAlice), 'error'), invalidAck(forAlice));
      stats = await ackStats(node);
      assert.equal(stats.pending_count, 1);
      assert.equal(stats.total_acked, 1);

      // Exactly one reply per Ack: nothing else arrived in between or after.
      assert.deepEqual(
        alice.messages.filter((m) => m.type !== 'notification' && m.type !== 'connected').map((m) => m.type),
        ['error', 'error', 'acked', 'error'],
      );
      assert.deepEqual(await alice.quietFor(200), []);

      assert.deepEqual(await bob.request(ack(forBob), 'acked'), { type: 'acked', notification_id: forBob });
      assert.deepEqual(await bob.request(ack(forBob), 'error'), invalidAck(forBob));
      stats = await ackStats(node);
      assert.equal(stats.enabled, true);
      assert.equal(stats.total_tracked, 2);
      assert.equal(stats.total_acked, 2);
      assert.equal(stats.total_expired, 0);
      assert.equal(stats.pending_count, 0);
      assert.equal(stats.ack_rate, 1);
      await alice.close();
      await bob.close();
    });

    test('an upper-case UUID acks the notification and the reply names it in canonical lower case', async () => {
      const node = await scope.start({ ACK_ENABLED: 'true' });
      const alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
      const id = await sendTo(node, 'alice');
      await alice.next((m) => m.id === id);
      await pendingBecomes(node, 1);
      assert.deepEqual(await alice.request(ack(id.toUpperCase()), 'acked'), { type: 'acked', notification_id: id });
      await alice.close();
    });

    test('a non-UUID notification_id is INVALID_MESSAGE with ACK enabled', async () => {
      const node = await scope.start({ ACK_ENABLED: 'true' });
      const alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
      assert.deepEqual(await alice.request(ack('not-a-uuid'), 'error'), {
        type: 'error',
        code: 'INVALID_MESSAGE',
        message: 'Ack needs payload.notification_id as a UUID',
      });
      await alice.close();
    });

    test('with ACK disabled an Ack gets no reply at all, and a non-UUID id is INVALID_MESSAGE', async () => {
      const node = await scope.start({ ACK_ENABLED: 'false' });
      const alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
      const id = await sendTo(node, 'alice');
      await alice.next((m) => m.id === id);
      alice.send(ack(id));
      alice.send(ack(randomUUID()));
      assert.deepEqual(await alice.quietFor(400), []);
      assert.deepEqual(await alice.request(ack('12345'), 'error'), {
        type: 'error',
        code: 'INVALID_MESSAGE',
        message: 'Ack needs payload.notification_id as a UUID',
      });
      // The connection is still fine.
      assert.deepEqual(await alice.request({ type: 'Ping' }, 'pong'), { type: 'pong' });
      const stats = await ackStats(node);
      assert.equal(stats.enabled, false);
      assert.equal(stats.total_tracked, 0);
      await alice.close();
    });
  });
}
