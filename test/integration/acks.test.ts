/**
 * Acknowledgements end to end (SPEC §7 "ACK", §6.2 /api/v1/stats/acks and
 * the `ack` block of /stats, §9 ara_ack_* metrics; issue 4 acceptance 4).
 *
 * - One user, two devices: either may ack, the ack counts once, and the
 *   other device acking the same id afterwards gets INVALID_ACK.
 * - Two devices both replayed the same 10 notifications: 10 records, and
 *   ara_ack_tracked_total counts records (10), not tracking calls (20).
 * - 1,000 notifications with a planned mix — 600 acked promptly (from
 *   either device), 150 acked after ACK_TIMEOUT_SECONDS (INVALID_ACK, and
 *   counted expired), 250 never acked — give exactly the expected figures
 *   in /api/v1/stats/acks, /stats and /metrics.
 * - ACK_REDELIVER=true with the queue on: a notification not acked in time
 *   is queued again and delivered on the next connect.
 *
 * Runs on every store backend (memory, postgres, redis).
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { sleep, type TestNode } from '../helpers/node.ts';
import { BackendScope, STORE_BACKENDS } from '../helpers/store-backends.ts';

const TOTAL = 1000;
const PROMPT = 600;
const LATE = 150;
const NEVER = TOTAL - PROMPT - LATE;

type Plan = 'prompt' | 'late' | 'never';

/** Interleaved plan: every 20 notifications hold 12 prompt, 3 late, 5 never. */
function planOf(i: number): Plan {
  const k = i % 20;
  return k < 12 ? 'prompt' : k < 15 ? 'late' : 'never';
}

async function metric(node: TestNode, name: string): Promise<number> {
  const res = await node.api('GET', '/metrics');
  const line = res.text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `metric ${name} missing`);
  return Number(line.slice(name.length + 1));
}

async function ackStats(node: TestNode) {
  const res = await node.api('GET', '/api/v1/stats/acks');
  assert.equal(res.status, 200);
  return res.json;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const ack = (id: string) => ({ type: 'Ack', payload: { notification_id: id } });

for (const backend of STORE_BACKENDS) {
  describe(`acks across devices, timeouts and redelivery on ${backend} (SPEC §7)`, () => {
    const scope = new BackendScope(backend, 'acks');
    after(() => scope.cleanup());

    test('an ack from either of two devices counts once and the other device then gets INVALID_ACK', async () => {
      const node = await scope.start({ ACK_ENABLED: 'true' });
      const token = await node.token('alice');
      const phone = await TestWs.open(node.wsUrl(`?token=${token}`));
      const laptop = await TestWs.open(node.wsUrl(`?token=${token}`));
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) {
        const res = await node.api('POST', '/api/v1/notifications/send', {
          target_user_id: 'alice',
          event_type: 'acks.device',
          payload: { i },
        });
        assert.equal(res.json.delivered_to, 2);
        ids.push(res.json.notification_id);
      }
      for (const id of ids) {
        await phone.next((m) => m.id === id);
        await laptop.next((m) => m.id === id);
      }
      await waitFor('2 tracked', async () => (await ackStats(node)).total_tracked === 2);
      // One record per (notification, user), however many devices got it.
      assert.equal((await ackStats(node)).pending_count, 2);

      assert.deepEqual(await laptop.request(ack(ids[0]!), 'acked'), { type: 'acked', notification_id: ids[0] });
      assert.deepEqual(await phone.request(ack(ids[0]!), 'error'), {
        type: 'error',
        code: 'INVALID_ACK',
        message: `Unknown or invalid notification: ${ids[0]}`,
      });
      assert.deepEqual(await phone.request(ack(ids[1]!), 'acked'), { type: 'acked', notification_id: ids[1] });
      assert.equal((await laptop.request(ack(ids[1]!), 'error')).code, 'INVALID_ACK');

      const stats = await ackStats(node);
      assert.equal(stats.total_tracked, 2);
      assert.equal(stats.total_acked, 2);
      assert.equal(stats.pending_count, 0);
      assert.equal(await metric(node, 'ara_ack_received_total'), 2);
      await phone.close();
      await laptop.close();
    });

    test('two devices that both get the same 10 notifications replayed from history count ara_ack_tracked_total 10, not 20', async () => {
      const node = await scope.start({ ACK_ENABLED: 'true', QUEUE_ENABLED: 'true' });
      // Count the tracking calls, to show each notification really is tracked once per device.
      const acks = node.node.stores.acks!;
      const originalTrack = acks.track.bind(acks);
      let trackCalls = 0;
      acks.track = (...args) => {
        trackCalls++;
        return originalTrack(...args);
      };
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) {
        const res = await node.api('POST', '/api/v1/notifications/send', {
          target_user_id: 'alice',
          event_type: 'acks.twice',
          payload: { i },
        });
        assert.equal(res.json.queued, 1);
        ids.push(res.json.notification_id);
      }
      // Each device resumes from an id history does not hold: resume_gap, then all 10 (SPEC §7 resume).
      const token = await node.token('alice');
      const devices: TestWs[] = [];
      for (const name of ['phone', 'laptop']) {
        const device = await TestWs.connect(node.wsUrl(`?token=${token}&last_event_id=never-sent-${name}`));
        await device.next((m) => m.id === ids[9], 5000);
        assert.deepEqual(
          device.messages.filter((m) => m.type === 'notification').map((m) => m.id),
          ids,
        );
        devices.push(device);
      }
      await waitFor('20 tracking calls and 10 records', async () => trackCalls === 20 && (await ackStats(node)).total_tracked === 10);
      // Let the last tracking calls settle before reading the counter.
      await devices[1]!.quietFor(300);
      assert.equal(trackCalls, 20);
      const stats = await ackStats(node);
      assert.equal(stats.total_tracked, 10);
      assert.equal(stats.pending_count, 10);
      assert.equal(await metric(node, 'ara_ack_tracked_total'), 10);
      assert.equal(await metric(node, 'ara_ack_pending'), 10);
      for (const device of devices) await device.close();
    });

    test('1,000 notifications: 600 acked promptly, 150 late, 250 never give exact stats, /stats ack block and metrics', async (t) => {
      const node = await scope.start({
        ACK_ENABLED: 'true',
        ACK_TIMEOUT_SECONDS: '1',
        ACK_CLEANUP_INTERVAL_SECONDS: '0.2',
      });
      const token = await node.token('alice');
      const devices = [await TestWs.open(node.wsUrl(`?token=${token}`)), await TestWs.open(node.wsUrl(`?token=${token}`))];
      const idByIndex = new Map<number, string>();
      let promptAcksSent = 0;
      // Prompt acks go out the moment a notification arrives, alternating devices.
      devices.forEach((device, d) => {
        device.socket.on('message', (data) => {
          const message = JSON.parse(data.toString());
          if (message.type !== 'notification') return;
          const i = message.payload.i as number;
          if (d === 0) idByIndex.set(i, message.id);
          if (planOf(i) === 'prompt' && i % 2 === d) {
            device.send(ack(message.id));
            promptAcksSent++;
          }
        });
      });

      for (let start = 0; start < TOTAL; start += 100) {
        const items = Array.from({ length: 100 }, (_, k) => ({
          target: { type: 'user', value: 'alice' },
          event_type: 'acks.mix',
          payload: { i: start + k, plan: planOf(start + k) },
        }));
        const res = await node.api('POST', '/api/v1/notifications/batch', { notifications: items });
        assert.equal(res.status, 200);
        assert.equal(res.json.summary.succeeded, 100);
        assert.equal(res.json.summary.total_delivered, 200);
      }
      await waitFor('every prompt ack answered', async () =>
        devices.reduce((sum, d) => sum + d.messages.filter((m) => m.type === 'acked' || m.type === 'error').length, 0) === PROMPT,
      10_000);
      const answers = devices.flatMap((d) => d.messages.filter((m) => m.type === 'acked' || m.type === 'error'));
      const refused = answers.filter((m) => m.type !== 'acked');
      t.diagnostic(`${backend}: prompt acks sent ${promptAcksSent}, acked ${answers.length - refused.length}, refused ${refused.length}`);
      assert.deepEqual(refused, []);
      assert.equal(idByIndex.size, TOTAL);

      // Past ACK_TIMEOUT_SECONDS every remaining record has expired.
      await waitFor('400 expired', async () => (await ackStats(node)).total_expired === LATE + NEVER, 5000);
      let lateRefused = 0;
      for (let i = 0; i < TOTAL; i++) {
        if (planOf(i) !== 'late') continue;
        const device = devices[i % 2]!;
        const id = idByIndex.get(i)!;
        const reply = await device.request(ack(id), 'error');
        assert.deepEqual(reply, { type: 'error', code: 'INVALID_ACK', message: `Unknown or invalid notification: ${id}` });
        lateRefused++;
      }
      assert.equal(lateRefused, LATE);

      const stats = await ackStats(node);
      t.diagnostic(`${backend}: /api/v1/stats/acks ${JSON.stringify(stats)}`);
      const { avg_latency_ms: avgLatency, ...exact } = stats;
      assert.deepEqual(exact, {
        enabled: true,
        total_tracked: TOTAL,
        total_acked: PROMPT,
        total_expired: LATE + NEVER,
        pending_count: 0,
        ack_rate: 0.6,
      });
      assert.equal(typeof avgLatency, 'number');
      assert.ok(avgLatency >= 0);
      const overall = await node.api('GET', '/stats');
      assert.deepEqual(overall.json.ack, stats);

      assert.equal(await metric(node, 'ara_ack_tracked_total'), TOTAL);
      assert.equal(await metric(node, 'ara_ack_received_total'), PROMPT);
      assert.equal(await metric(node, 'ara_ack_expired_total'), LATE + NEVER);
      assert.equal(await metric(node, 'ara_ack_pending'), 0);
      assert.equal(await metric(node, 'ara_ack_latency_seconds_count'), PROMPT);
      for (const device of devices) await device.close();
    });

    test('with ACK_REDELIVER a notification not acked in time is queued again and delivered on the next connect', async () => {
      const node = await scope.start({
        ACK_ENABLED: 'true',
        ACK_REDELIVER: 'true',
        QUEUE_ENABLED: 'true',
        ACK_TIMEOUT_SECONDS: '0.5',
        ACK_CLEANUP_INTERVAL_SECONDS: '0.1',
      });
      const token = await node.token('alice');
      const first = await TestWs.open(node.wsUrl(`?token=${token}`));
      const sent = await node.api('POST', '/api/v1/notifications/send', {
        target_user_id: 'alice',
        event_type: 'acks.redeliver',
        payload: { important: true },
      });
      assert.equal(sent.json.delivered_to, 1);
      const id = sent.json.notification_id as string;
      const original = await first.next((m) => m.id === id);
      await first.close();

      await waitFor('the ack to expire', async () => (await ackStats(node)).total_expired === 1, 5000);
      await waitFor('the redelivery to be queued', async () => (await node.api('GET', '/stats')).json.queue.total_messages === 1);
      assert.equal(await metric(node, 'ara_queue_enqueued_total'), 1);

      const second = await TestWs.open(node.wsUrl(`?token=${token}`));
      const again = await second.next((m) => m.type === 'notification', 5000);
      assert.deepEqual(again, original);
      // The redelivered copy is tracked again and can be acked.
      await waitFor('the replay to be tracked', async () => (await ackStats(node)).pending_count === 1);
      assert.deepEqual(await second.request(ack(id), 'acked'), { type: 'acked', notification_id: id });
      assert.deepEqual(await second.quietFor(300), []);
      const stats = await ackStats(node);
      assert.equal(stats.total_tracked, 2);
      assert.equal(stats.total_acked, 1);
      assert.equal(stats.total_expired, 1);
      assert.equal(stats.pending_count, 0);
      assert.equal((await node.api('GET', '/stats')).json.queue.total_messages, 0);
      await second.close();
    });

    test('without ACK_REDELIVER an expired ack is only counted, never queued again', async () => {
      const node = await scope.start({
        ACK_ENABLED: 'true',
        QUEUE_ENABLED: 'true',
        ACK_TIMEOUT_SECONDS: '0.5',
        ACK_CLEANUP_INTERVAL_SECONDS: '0.1',
      });
      const token = await node.token('alice');
      const first = await TestWs.open(node.wsUrl(`?token=${token}`));
      const sent = await node.api('POST', '/api/v1/notifications/send', {
        target_user_id: 'alice',
        event_type: 'acks.noredeliver',
        payload: {},
      });
      await first.next((m) => m.id === sent.json.notification_id);
      await first.close();
      await waitFor('the ack to expire', async () => (await ackStats(node)).total_expired === 1, 5000);
      assert.equal((await node.api('GET', '/stats')).json.queue.total_messages, 0);
      const second = await TestWs.open(node.wsUrl(`?token=${token}`));
      assert.deepEqual(await second.quietFor(300), []);
      await second.close();
    });
  });
}
