/**
 * C16 Replay (cases/README.md; SPEC §7 "Offline queue", §4 "then replays
 * the offline queue", §5, §9 ara_queue_* metrics, §6.2 /stats `queue`).
 *
 * QUEUE_ENABLED and ACK_ENABLED. alice is offline; n1..n5 are sent. She
 * connects: n1..n5 in that order, once each, right after `connected` and
 * before any live message. n6, sent while she is reconnecting (between
 * the upgrade and the end of a 300-message replay), arrives once, after
 * every queued one. 150 queued with QUEUE_MAX_SIZE_PER_USER=100: the newest
 * 100, in order, and the 50 drops counted. 500 queued with a cap of 1000
 * and a 64 KiB WEBSOCKET_MAX_BUFFERED_BYTES: the replay completes without
 * a hang or a slow-consumer close. The same replay over SSE, and expired
 * entries never delivered (ttl 0 never queued).
 *
 * Runs on every store backend (memory, postgres, redis).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { sleep, type TestNode } from '../helpers/node.ts';
import { BackendScope, STORE_BACKENDS } from '../helpers/store-backends.ts';

const BASE = { QUEUE_ENABLED: 'true', ACK_ENABLED: 'true', WEBSOCKET_HEARTBEAT_INTERVAL: '30' };

async function metric(node: TestNode, name: string): Promise<number> {
  const res = await node.api('GET', '/metrics');
  assert.equal(res.status, 200);
  const line = res.text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `metric ${name} missing`);
  return Number(line.slice(name.length + 1));
}

async function eventually<T>(read: () => Promise<T>, expected: T, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!isDeepEqual(value, expected) && Date.now() < deadline) {
    await sleep(25);
    value = await read();
  }
  assert.deepEqual(value, expected);
}

function isDeepEqual(a: unknown, b: unknown): boolean {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

async function sendTo(node: TestNode, user: string, extra: Record<string, unknown> = {}) {
  const res = await node.api('POST', '/api/v1/notifications/send', {
    target_user_id: user,
    event_type: 'c16.event',
    payload: { n: extra.n ?? null },
    ...extra,
  });
  assert.equal(res.status, 200, res.text);
  return res.json;
}

/** Queues `count` notifications for `user` through batches of 100; returns their ids in send order. */
async function queueMany(node: TestNode, user: string, count: number, payloadBytes = 0): Promise<string[]> {
  const ids: string[] = [];
  const pad = 'x'.repeat(payloadBytes);
  for (let start = 0; start < count; start += 100) {
    const items = [];
    for (let i = start; i < Math.min(count, start + 100); i++) {
      items.push({ target: { type: 'user', value: user }, event_type: 'c16.bulk', payload: { i, pad } });
    }
    const res = await node.api('POST', '/api/v1/notifications/batch', { notifications: items });
    assert.equal(res.status, 200, res.text);
    for (const result of res.json.results) {
      assert.equal(result.queued, 1, JSON.stringify(result));
      assert.equal(result.delivered_to, 0);
      ids.push(result.notification_id);
    }
  }
  return ids;
}

async function queueStats(node: TestNode) {
  const res = await node.api('GET', '/stats');
  assert.equal(res.status, 200);
  return { total_messages: res.json.queue.total_messages, users_with_queue: res.json.queue.users_with_queue };
}

const notificationIds = (ws: TestWs) => ws.messages.filter((m) => m.type === 'notification').map((m) => m.id);

for (const backend of STORE_BACKENDS) {
  describe(`C16 replay of the offline queue on ${backend} (SPEC §7)`, () => {
    const scope = new BackendScope(backend, 'c16');
    after(() => scope.cleanup());

    test('n1..n5 queued while offline arrive in send order, once each, right after `connected` and before live traffic', async () => {
      const node = await scope.start(BASE);
      const sent: string[] = [];
      for (let n = 1; n <= 5; n++) {
        const res = await sendTo(node, 'alice', { n });
        assert.equal(res.success, true);
        assert.equal(res.queued, 1);
        assert.equal(res.delivered_to, 0);
        assert.equal(res.failed, 0);
        sent.push(res.notification_id);
      }
      assert.deepEqual(await queueStats(node), { total_messages: 5, users_with_queue: 1 });

      const alice = await TestWs.connect(node.wsUrl(`?token=${await node.token('alice')}`));
      await alice.next((m) => m.id === sent[4], 5000);
      const live = await sendTo(node, 'alice', { n: 6 });
      assert.equal(live.delivered_to, 1);
      assert.equal(live.queued, 0);
      await alice.next((m) => m.id === live.notification_id);
      assert.deepEqual(await alice.quietFor(300), []);

      const types = alice.messages.map((m) => m.type);
      assert.deepEqual(types, ['connected', 'notification', 'notification', 'notification', 'notification', 'notification', 'notification']);
      assert.deepEqual(notificationIds(alice), [...sent, live.notification_id]);
      // Replayed messages are the notification JSON as sent (SPEC §4), not a rewrapped copy.
      const first = alice.messages[1];
      assert.equal(first.event_type, 'c16.event');
      assert.deepEqual(first.payload, { n: 1 });
      assert.equal(first.metadata.source, 'http-api');
      assert.equal(first.metadata.priority, 'Normal');

      // Removed from the queue once written; replayed messages are tracked for acks (SPEC §7).
      await eventually(() => queueStats(node), { total_messages: 0, users_with_queue: 0 });
      assert.equal(await metric(node, 'ara_queue_replayed_total'), 5);
      await eventually(async () => (await node.api('GET', '/api/v1/stats/acks')).json.total_tracked, 6);
      assert.deepEqual(await alice.request({ type: 'Ack', payload: { notification_id: sent[0] } }, 'acked'), {
        type: 'acked',
        notification_id: sent[0],
      });

      // A second connection does not get the queue again.
      const again = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`));
      assert.deepEqual(await again.quietFor(300), []);
      await alice.close();
      await again.close();
    });

    test('n6 sent while a 300-message replay is running arrives once, after every queued message', async (t) => {
      const node = await scope.start({ ...BASE, QUEUE_MAX_SIZE_PER_USER: '1000' });
      const queued = await queueMany(node, 'alice', 300, 512);

      // Make the replay window observable whatever the backend's speed: the
      // replay's first read of the queue waits until n6 has been dispatched
      // (as a slow store would), so n6 lands between the upgrade and the end
      // of the replay.
      const queue = node.node.stores.queue!;
      const originalPeek = queue.peek.bind(queue);
      let n6Dispatched!: () => void;
      const n6DispatchedPromise = new Promise<void>((resolve) => (n6Dispatched = resolve));
      let peeks = 0;
      queue.peek = async (...args) => {
        if (peeks++ === 0) await Promise.race([n6DispatchedPromise, sleep(5000)]);
        return originalPeek(...args);
      };
      let replayedAtDispatch = -1;
      const delivery = node.node.delivery;
      const originalSend = delivery.send.bind(delivery);
      delivery.send = (tenantId, target, notification) => {
        replayedAtDispatch = notificationIds(alice).length;
        const sending = originalSend(tenantId, target, notification); // dispatches synchronously
        n6Dispatched();
        return sending;
      };

      const alice = await TestWs.connect(node.wsUrl(`?token=${await node.token('alice')}`));
      await alice.nextOfType('connected');
      const n6 = await sendTo(node, 'alice', { n: 6 });
      assert.equal(n6.delivered_to, 1);
      assert.equal(n6.queued, 0);
      assert.ok(peeks >= 1, 'the replay had started when n6 was sent');
      await alice.next((m) => m.id === n6.notification_id, 10_000);
      assert.deepEqual(await alice.quietFor(300), []);
      assert.equal(alice.messages[0].type, 'connected');
      assert.deepEqual(notificationIds(alice), [...queued, n6.notification_id]);
      t.diagnostic(`${backend}: queued notifications received when n6 was dispatched: ${replayedAtDispatch}/300`);
      assert.equal(replayedAtDispatch, 0);
      await eventually(() => queueStats(node), { total_messages: 0, users_with_queue: 0 });
      await alice.close();
    });

    test('n6 sent as soon as `connected` arrives, with 300 queued and no help, arrives once after every queued message', async (t) => {
      const node = await scope.start({ ...BASE, QUEUE_MAX_SIZE_PER_USER: '1000' });
      const queued = await queueMany(node, 'alice', 300, 512);
      const alice = await TestWs.connect(node.wsUrl(`?token=${await node.token('alice')}`));
      await alice.nextOfType('connected');
      const receivedBeforeSend = notificationIds(alice).length;
      const n6 = await sendTo(node, 'alice', { n: 6 });
      assert.equal(n6.delivered_to, 1);
      await alice.next((m) => m.id === n6.notification_id, 10_000);
      assert.deepEqual(await alice.quietFor(300), []);
      assert.deepEqual(notificationIds(alice), [...queued, n6.notification_id]);
      t.diagnostic(`${backend}: queued notifications received before n6 was sent: ${receivedBeforeSend}/300`);
      await alice.close();
    });

    test('150 queued with QUEUE_MAX_SIZE_PER_USER=100: the newest 100 arrive in order, 50 drops are counted, queue stats exact', async () => {
      const node = await scope.start({ ...BASE, QUEUE_MAX_SIZE_PER_USER: '100' });
      const queued = await queueMany(node, 'alice', 150);
      assert.deepEqual(await queueStats(node), { total_messages: 100, users_with_queue: 1 });
      assert.equal(await metric(node, 'ara_queue_dropped_total'), 50);
      assert.equal(await metric(node, 'ara_queue_enqueued_total'), 150);
      assert.equal(await metric(node, 'ara_queue_size_total'), 100);

      const alice = await TestWs.connect(node.wsUrl(`?token=${await node.token('alice')}`));
      await alice.next((m) => m.id === queued[149], 5000);
      assert.deepEqual(await alice.quietFor(300), []);
      assert.deepEqual(notificationIds(alice), queued.slice(50));
      assert.deepEqual(
        alice.messages.filter((m) => m.type === 'notification').map((m) => m.payload.i),
        Array.from({ length: 100 }, (_, k) => k + 50),
      );

      await eventually(() => queueStats(node), { total_messages: 0, users_with_queue: 0 });
      assert.equal(await metric(node, 'ara_queue_size_total'), 0);
      assert.equal(await metric(node, 'ara_queue_replayed_total'), 100);
      assert.equal(await metric(node, 'ara_queue_dropped_total'), 50);
      await alice.close();
    });

    test('500 queued 1 KB messages replay completely through a 64 KiB WEBSOCKET_MAX_BUFFERED_BYTES without a hang or a 4008', async () => {
      const node = await scope.start({
        ...BASE,
        QUEUE_MAX_SIZE_PER_USER: '1000',
        WEBSOCKET_MAX_BUFFERED_BYTES: '65536',
      });
      const queued = await queueMany(node, 'alice', 500, 1024);
      const alice = await TestWs.connect(node.wsUrl(`?token=${await node.token('alice')}`), { perMessageDeflate: false });
      await alice.next((m) => m.id === queued[499], 15_000);
      assert.deepEqual(notificationIds(alice), queued);
      // Still open and answering.
      assert.deepEqual(await alice.request({ type: 'Ping' }, 'pong'), { type: 'pong' });
      assert.equal(await metric(node, 'ara_slow_consumer_disconnects_total'), 0);
      await eventually(() => queueStats(node), { total_messages: 0, users_with_queue: 0 });
      assert.equal(await metric(node, 'ara_queue_replayed_total'), 500);
      assert.deepEqual(await alice.close(), { code: 1000, reason: '' });
    });

    test('over SSE the first connect gets the queue in send order, each notification with its id in the `id:` line (SPEC §5)', async () => {
      const node = await scope.start(BASE);
      const sent: string[] = [];
      for (let n = 1; n <= 5; n++) sent.push((await sendTo(node, 'alice', { n })).notification_id);
      const sse = await TestSse.connect(`${node.httpUrl}/sse?token=${await node.token('alice')}`);
      await sse.next((e) => e.id === sent[4], 5000);
      const live = await sendTo(node, 'alice', { n: 6 });
      assert.equal(live.delivered_to, 1);
      await sse.next((e) => e.id === live.notification_id);
      assert.deepEqual(await sse.quietFor(300), []);
      assert.deepEqual(
        sse.events.map((e) => e.event),
        ['connected', 'notification', 'notification', 'notification', 'notification', 'notification', 'notification'],
      );
      const notifications = sse.events.filter((e) => e.event === 'notification');
      assert.deepEqual(notifications.map((e) => e.id), [...sent, live.notification_id]);
      for (const event of notifications) assert.equal(event.data.id, event.id);
      assert.deepEqual(notifications.map((e) => e.data.payload.n), [1, 2, 3, 4, 5, 6]);
      await eventually(() => queueStats(node), { total_messages: 0, users_with_queue: 0 });
      sse.close();
    });

    test('an entry past its ttl is never delivered and ttl 0 is never queued', async () => {
      const node = await scope.start({ ...BASE, QUEUE_CLEANUP_INTERVAL_SECONDS: '0.5' });
      const never = await sendTo(node, 'alice', { n: 0, ttl: 0 });
      assert.equal(never.queued, 0);
      assert.equal(never.delivered_to, 0);
      assert.equal(never.success, false);
      const expiring = await sendTo(node, 'alice', { n: 1, ttl: 1 });
      assert.equal(expiring.queued, 1);
      const lasting = await sendTo(node, 'alice', { n: 2 });
      assert.equal(lasting.queued, 1);
      assert.deepEqual(await queueStats(node), { total_messages: 2, users_with_queue: 1 });

      await sleep(2000);
      // The cleanup (every 0.5 s) removed the expired entry and counted it.
      assert.deepEqual(await queueStats(node), { total_messages: 1, users_with_queue: 1 });
      assert.equal(await metric(node, 'ara_queue_expired_total'), 1);

      const alice = await TestWs.connect(node.wsUrl(`?token=${await node.token('alice')}`));
      await alice.next((m) => m.id === lasting.notification_id, 5000);
      assert.deepEqual(await alice.quietFor(300), []);
      assert.deepEqual(notificationIds(alice), [lasting.notification_id]);
      await alice.close();
    });

    test('an entry that expires before the cleanup runs is still never delivered', async () => {
      const node = await scope.start(BASE); // cleanup every 300 s: only the read-time expiry check applies
      const expiring = await sendTo(node, 'alice', { n: 1, ttl: 1 });
      assert.equal(expiring.queued, 1);
      const lasting = await sendTo(node, 'alice', { n: 2 });
      await sleep(1200);
      const sse = await TestSse.connect(`${node.httpUrl}/sse?token=${await node.token('alice')}`);
      await sse.next((e) => e.id === lasting.notification_id, 5000);
      assert.deepEqual(await sse.quietFor(300), []);
      assert.deepEqual(sse.events.filter((e) => e.event === 'notification').map((e) => e.id), [lasting.notification_id]);
      sse.close();
    });
  });
}
