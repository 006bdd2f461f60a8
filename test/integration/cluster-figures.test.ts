/**
 * Cluster figures (issue 5 acceptance 6): measured and printed with
 * t.diagnostic, never asserted as speeds. Only correctness under the load
 * is asserted: every accepted send reached its user once.
 *
 * Three node processes (`node --import tsx src/cli.ts serve`, LOG_LEVEL=warn)
 * share a throwaway `redis-server` this file starts on a free port, so the
 * load touches neither the shared Redis nor other test files' nodes. The
 * clients (raw `ws` sockets) and the HTTP senders run in this test process,
 * on the same machine: the figures are those of the whole arrangement, and
 * on a 2-core machine the test process competes with the three nodes and
 * Redis for the CPUs.
 *
 * 1. Cross-node latency: sends through node A at a fixed 200/s for 10 s to
 *    users connected on node C; latency = receipt in this process minus the
 *    notification's `occurred_at` (set by node A when it built it).
 * 2. Throughput: each node sends as fast as it can for 5 s (8 requests in
 *    flight per node) to users on the other two nodes, first one
 *    notification per request, then batches of 100; deliveries counted per
 *    second as the clients receive them.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { CliProcess, cleanEnv, freePort, tempDir } from '../helpers/cli-process.ts';
import { spawnRedisServer } from '../helpers/redis-server.ts';
import { signToken } from '../helpers/node.ts';

const SECRET = 'cluster-figures-secret-0123456789-abcdef';
const API_KEY = 'cluster-figures-operator-key-01';
const USERS_PER_NODE = 20;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Receipt {
  id: string;
  user: string;
  atMs: number;
  occurredAtMs: number;
}

const receipts: Receipt[] = [];
const sockets: WebSocket[] = [];
const ports: number[] = [];
const procs: CliProcess[] = [];
let redis: ChildProcess;

const token = (sub: string) => signToken(sub, {}, { secret: SECRET });

const userOf = (node: number, i: number) => `fig-${node}-${i}`;

async function post(node: number, path: string, body: unknown): Promise<{ status: number; json: any }> {
  const response = await fetch(`http://127.0.0.1:${ports[node]}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json() };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function waitForReceipts(ids: Set<string>, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = receipts.filter((r) => ids.has(r.id)).length;
    if (got >= ids.size || Date.now() > deadline) return got;
    await sleep(50);
  }
}

before(async () => {
  const redisPort = await freePort();
  redis = spawnRedisServer(redisPort);
  for (let i = 0; i < 3; i++) ports.push(await freePort());
  for (const [i, port] of ports.entries()) {
    procs.push(
      CliProcess.source(['serve'], {
        cwd: tempDir('cluster-figures'),
        env: cleanEnv({
          RUN_MODE: 'development',
          SERVER_HOST: '127.0.0.1',
          SERVER_PORT: String(port),
          JWT_SECRET: SECRET,
          API_KEY,
          LOG_LEVEL: 'warn',
          LOG_FORMAT: 'json',
          CLUSTER_ENABLED: 'true',
          CLUSTER_SERVER_ID: `fig-${i}`,
          REDIS_URL: `redis://127.0.0.1:${redisPort}`,
          REDIS_KEY_PREFIX: 'figures',
          REDIS_TRIGGER_ENABLED: 'false',
          CLUSTER_SESSION_TTL_SECONDS: '5',
          WEBSOCKET_HEARTBEAT_INTERVAL: '2',
        }),
      }),
    );
  }
  for (const [i, proc] of procs.entries()) assert.equal(await proc.waitForHealth(ports[i]!, 30_000), 200, proc.output());
  for (let node = 0; node < 3; node++) {
    for (let i = 0; i < USERS_PER_NODE; i++) {
      const user = userOf(node, i);
      const socket = new WebSocket(`ws://127.0.0.1:${ports[node]}/ws?token=${await token(user)}`);
      socket.on('message', (data) => {
        const message = JSON.parse(data.toString()) as { type: string; id: string; occurred_at: string };
        if (message.type !== 'notification') return;
        receipts.push({ id: message.id, user, atMs: Date.now(), occurredAtMs: Date.parse(message.occurred_at) });
      });
      await new Promise((resolve, reject) => {
        socket.once('open', resolve);
        socket.once('error', reject);
      });
      sockets.push(socket);
    }
  }
  // Every node must see every user before measuring.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const response = await fetch(`http://127.0.0.1:${ports[0]}/api/v1/cluster/status`, { headers: { 'x-api-key': API_KEY } });
    const status = (await response.json()) as { nodes: { connections: number }[] };
    if (status.nodes.map((n) => n.connections).join() === `${USERS_PER_NODE},${USERS_PER_NODE},${USERS_PER_NODE}`) break;
    if (Date.now() > deadline) throw new Error(`presence not settled: ${JSON.stringify(status)}`);
    await sleep(100);
  }
  await sleep(300);
});

after(async () => {
  for (const socket of sockets) socket.terminate();
  for (const proc of procs) await proc.kill();
  redis?.kill('SIGKILL');
});

describe('three-node cluster figures (issue 5 acceptance 6; measured, not asserted)', () => {
  test('cross-node latency at 200 sends/s through node A to users on node C', async (t) => {
    const rate = 200;
    const seconds = 10;
    const pending: Promise<{ status: number; json: any }>[] = [];
    let n = 0;
    const started = Date.now();
    await new Promise<void>((resolve) => {
      // Every 10 ms, catch up with the schedule: n sends by n / rate seconds.
      const timer = setInterval(() => {
        const due = Math.min(rate * seconds, Math.floor(((Date.now() - started) * rate) / 1000));
        while (n < due) {
          const user = userOf(2, n++ % USERS_PER_NODE);
          pending.push(post(0, '/api/v1/notifications/send', { target_user_id: user, event_type: 'latency', payload: { n } }));
        }
        if (n >= rate * seconds) {
          clearInterval(timer);
          resolve();
        }
      }, 10);
    });
    const answers = await Promise.all(pending);
    const ok = answers.filter((a) => a.status === 200 && a.json.delivered_to === 1 && a.json.nodes === 1);
    assert.equal(ok.length, answers.length, 'every send answered 200, delivered to one connection on one node');
    const ids = new Set(ok.map((a) => a.json.notification_id as string));
    const got = await waitForReceipts(ids, 10_000);
    assert.equal(got, ids.size, 'every notification received');
    const latencies = receipts.filter((r) => ids.has(r.id)).map((r) => r.atMs - r.occurredAtMs).sort((a, b) => a - b);
    assert.equal(latencies.length, ids.size, 'each once');
    const elapsed = (Date.now() - started) / 1000;
    t.diagnostic(
      `cross-node latency (A → C, ${ids.size} sends at ${rate}/s over ${seconds} s, occurred_at → receipt): ` +
        `p50 ${percentile(latencies, 50)} ms, p90 ${percentile(latencies, 90)} ms, p99 ${percentile(latencies, 99)} ms, max ${latencies.at(-1)} ms (run ${elapsed.toFixed(1)} s)`,
    );
  });

  for (const batch of [1, 100]) {
    test(`throughput: all three nodes sending ${batch === 1 ? 'single notifications' : `batches of ${batch}`} as fast as they can to users on the other nodes`, async (t) => {
      const windowMs = 5000;
      const inFlight = 8;
      const accepted = new Set<string>();
      let requests = 0;
      let refused = 0;
      const started = Date.now();
      const firstReceipt = receipts.length;
      const worker = async (node: number, lane: number) => {
        let k = lane;
        while (Date.now() - started < windowMs) {
          const targets = Array.from({ length: batch }, () => {
            const other = (node + 1 + (k % 2)) % 3;
            return userOf(other, Math.floor(k++ / 2) % USERS_PER_NODE);
          });
          requests++;
          if (batch === 1) {
            const answer = await post(node, '/api/v1/notifications/send', { target_user_id: targets[0], event_type: 'throughput', payload: { node } });
            if (answer.status === 200 && answer.json.delivered_to === 1) accepted.add(answer.json.notification_id);
            else refused++;
          } else {
            const answer = await post(node, '/api/v1/notifications/batch', {
              notifications: targets.map((user) => ({ target: { type: 'user', value: user }, event_type: 'throughput', payload: { node } })),
            });
            if (answer.status !== 200) refused += batch;
            else {
              for (const result of answer.json.results) {
                if (result.success && result.delivered_to === 1) accepted.add(result.notification_id);
                else refused++;
              }
            }
          }
        }
      };
      await Promise.all([0, 1, 2].flatMap((node) => Array.from({ length: inFlight }, (_, lane) => worker(node, lane))));
      const sendSeconds = (Date.now() - started) / 1000;
      const got = await waitForReceipts(accepted, 20_000);
      const mine = receipts.slice(firstReceipt).filter((r) => accepted.has(r.id));
      const inWindow = mine.filter((r) => r.atMs - started <= windowMs).length;
      const lastAt = Math.max(...mine.map((r) => r.atMs));
      const perSecond = new Map<number, number>();
      for (const r of mine) {
        const second = Math.floor((r.atMs - started) / 1000);
        perSecond.set(second, (perSecond.get(second) ?? 0) + 1);
      }
      t.diagnostic(
        `throughput (${batch === 1 ? '1 notification per request' : `${batch} per batch request`}, 3 nodes × ${inFlight} requests in flight, ${sendSeconds.toFixed(1)} s): ` +
          `${accepted.size} accepted in ${requests} requests (${Math.round(accepted.size / sendSeconds)}/s), ` +
          `${inWindow} delivered within the 5 s window (${Math.round(inWindow / (windowMs / 1000))}/s), ` +
          `all ${got} delivered after ${((lastAt - started) / 1000).toFixed(1)} s (${Math.round(got / ((lastAt - started) / 1000))}/s); ` +
          `per second: ${[...perSecond].sort((a, b) => a[0] - b[0]).map(([, count]) => count).join(', ')}`,
      );
      assert.equal(refused, 0, 'every send accepted and routed to one connection');
      assert.equal(got, accepted.size, 'every accepted notification received');
      assert.equal(mine.length, accepted.size, 'each once');
    });
  }
});
