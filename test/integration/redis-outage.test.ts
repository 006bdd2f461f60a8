/**
 * A Redis outage under steady traffic (issue 5 acceptance 3; SPEC §8 "When
 * Redis is down", §6.3 /health and /health/ready, §6 503
 * SERVICE_UNAVAILABLE, §7 offline queue).
 *
 * Two in-process nodes (cluster and queue on) share a throwaway
 * `redis-server` this file starts on a free port; the shared Redis is never
 * touched. Clients sit on both nodes (a user on each, a channel subscriber on
 * each) and 20 sends a second go through both nodes — to the local user, the
 * remote user, the channel, and a user never connected (so each accepted
 * send to them is queued) — for the whole run. Redis goes away for 10 s and
 * comes back, in two ways:
 *
 * - SIGKILL, then a new redis-server on the same port. It runs with
 *   `--appendonly yes --appendfsync always` in a temporary directory, so
 *   what was queued before the kill is still there after the restart.
 * - SIGSTOP, then SIGCONT: the TCP connections stay open and Redis simply
 *   stops answering.
 *
 * Each scenario runs once (in `before`) and records every send, every
 * probe and every notification received; the tests then assert on that
 * record. Settings beyond the defaults, so recovery fits in a test:
 * REDIS_CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS=1 (a hung Redis gives no
 * reconnect event, so only the reset timeout lets calls through again) and
 * REDIS_BACKOFF_MAX_DELAY_MS=500 (reconnect attempts at most 0.5 s apart).
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { TestWs } from '../helpers/clients.ts';
import { freePort, tempDir } from '../helpers/cli-process.ts';
import { processExited, redisCli, spawnRedisServer, untilPong } from '../helpers/redis-server.ts';
import { sleep, startTestNode, TEST_API_KEY } from '../helpers/node.ts';

const OUTAGE_MS = 10_000;
const SEND_EVERY_MS = 50;
/**
 * "During the outage" starts this long after Redis went away: a killed Redis
 * closes its sockets at once; a frozen one is noticed by the node's probe
 * (an unanswered PING, src/redis/redis-service.ts) within 1.25 s.
 */
const GRACE_MS = { SIGKILL: 300, SIGSTOP: 1500 } as const;
/** The longest a send may wait before its 503 when Redis froze under it. */
const DETECTION_BOUND_MS = 1500;

interface Call {
  /** ms since the scenario started */
  start: number;
  ms: number;
  status: number;
  json: any;
}

async function call(origin: number, url: string, init: RequestInit = {}): Promise<Call> {
  const start = Date.now() - origin;
  try {
    const response = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
    const text = await response.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { start, ms: Date.now() - origin - start, status: response.status, json };
  } catch (error) {
    return { start, ms: Date.now() - origin - start, status: -1, json: String(error) };
  }
}

/** `offline`: a user with no connection anywhere, so every accepted send to it is queued. */
type SendKind = 'local-user' | 'remote-user' | 'channel' | 'offline';

interface Send extends Call {
  via: 'A' | 'B';
  kind: SendKind;
  /** The user targeted, or the channel. */
  target: string;
}

interface Probe extends Call {
  node: 'A' | 'B';
  path: string;
}

interface Scenario {
  sends: Send[];
  probes: Probe[];
  /** ms since the start when Redis went away and when it was back. */
  downAt: number;
  backAt: number;
  /** Ids each final (post-run) connection of the users got replayed. */
  replayed: Map<string, string[]>;
  clients: Map<string, TestWs>;
  /** What a connect attempt in the middle of the outage got. */
  connectDuringOutage: string;
  openAtEnd: boolean;
  liveAtEnd: number[];
}

async function runScenario(mode: 'SIGKILL' | 'SIGSTOP'): Promise<{ record: Scenario; cleanup: () => Promise<void> }> {
  const port = await freePort();
  const dir = mode === 'SIGKILL' ? tempDir('outage-aof') : null;
  let server = spawnRedisServer(port, dir);
  await untilPong(port);
  const env = {
    CLUSTER_ENABLED: 'true',
    REDIS_URL: `redis://127.0.0.1:${port}`,
    REDIS_KEY_PREFIX: 'outage',
    REDIS_TRIGGER_ENABLED: 'false',
    QUEUE_ENABLED: 'true',
    CLUSTER_SESSION_TTL_SECONDS: '3',
    WEBSOCKET_HEARTBEAT_INTERVAL: '1',
    REDIS_CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS: '1',
    REDIS_BACKOFF_MAX_DELAY_MS: '500',
  };
  const a = await startTestNode({ ...env, CLUSTER_SERVER_ID: 'A' });
  const b = await startTestNode({ ...env, CLUSTER_SERVER_ID: 'B' });
  const nodeOf = { A: a, B: b } as const;
  const clients = new Map<string, TestWs>([
    ['ua', await TestWs.open(a.wsUrl(`?token=${await a.token('ua')}`))],
    ['ub', await TestWs.open(b.wsUrl(`?token=${await b.token('ub')}`))],
    ['fa', await TestWs.open(a.wsUrl(`?token=${await a.token('fa')}&channels=feed`))],
    ['fb', await TestWs.open(b.wsUrl(`?token=${await b.token('fb')}&channels=feed`))],
  ]);
  // Both nodes listen for both users and the channel before traffic starts.
  const deadline = Date.now() + 5000;
  for (;;) {
    const reply = (await redisCli(port, ['PUBSUB', 'NUMSUB', 'outage:bus:default:u:ua', 'outage:bus:default:u:ub', 'outage:bus:default:c:feed'])).split('\n');
    if (reply[1] === '1' && reply[3] === '1' && reply[5] === '2') break;
    if (Date.now() > deadline) throw new Error(`bus subscriptions not ready: ${reply.join(' ')}`);
    await sleep(25);
  }
  await sleep(300);

  const origin = Date.now();
  const sends: Promise<Send>[] = [];
  const probes: Promise<Probe>[] = [];
  const rotation: ['A' | 'B', SendKind, string][] = [
    ['A', 'local-user', 'ua'],
    ['B', 'remote-user', 'ua'],
    ['A', 'channel', 'feed'],
    ['B', 'offline', 'uz'],
    ['B', 'local-user', 'ub'],
    ['A', 'remote-user', 'ub'],
    ['B', 'channel', 'feed'],
    ['A', 'offline', 'uz'],
  ];
  let n = 0;
  // A fixed rate whatever the timer drift: send number n is due at n × SEND_EVERY_MS.
  const sender = setInterval(() => {
    while (n <= (Date.now() - origin) / SEND_EVERY_MS) {
      const [via, kind, target] = rotation[n % rotation.length]!;
      const seq = n++;
      const body = kind === 'channel' ? { channel: target } : { target_user_id: target };
      sends.push(
        call(origin, `${nodeOf[via].httpUrl}/api/v1/notifications/${kind === 'channel' ? 'channel' : 'send'}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-api-key': TEST_API_KEY },
          body: JSON.stringify({ ...body, event_type: 'outage.flow', payload: { seq } }),
        }).then((result) => ({ ...result, via, kind, target })),
      );
    }
  }, 10);
  const prober = setInterval(() => {
    for (const name of ['A', 'B'] as const) {
      for (const path of ['/health', '/health/ready', '/api/v1/cluster/status']) {
        const headers = path.startsWith('/api') ? { 'x-api-key': TEST_API_KEY } : undefined;
        probes.push(call(origin, `${nodeOf[name].httpUrl}${path}`, { headers }).then((result) => ({ ...result, node: name, path })));
      }
    }
  }, 250);

  await sleep(2000);
  const downAt = Date.now() - origin;
  if (mode === 'SIGKILL') {
    server.kill('SIGKILL');
    await processExited(server);
  } else {
    server.kill('SIGSTOP');
  }
  await sleep(OUTAGE_MS / 2);
  let connectDuringOutage: string;
  try {
    const newcomer = await TestWs.connect(a.wsUrl(`?token=${await a.token('newcomer')}`));
    const closed = await Promise.race([newcomer.closed, sleep(1500).then(() => null)]);
    connectDuringOutage = `${JSON.stringify(newcomer.messages.map((m) => m.type))}, then ${closed === null ? 'stayed open' : `closed ${closed.code}`}`;
    newcomer.socket.terminate();
  } catch (error) {
    connectDuringOutage = `refused: ${JSON.stringify((error as { status?: number }).status ?? String(error))}`;
  }
  await sleep(Math.max(0, downAt + OUTAGE_MS - (Date.now() - origin)));
  if (mode === 'SIGKILL') {
    server = spawnRedisServer(port, dir);
  } else {
    server.kill('SIGCONT');
  }
  const backAt = Date.now() - origin;
  await sleep(6000);
  clearInterval(sender);
  clearInterval(prober);
  const allSends = await Promise.all(sends);
  const allProbes = await Promise.all(probes);
  await sleep(1000);

  const openAtEnd = [...clients.values()].every((client) => client.socket.readyState === 1);
  const liveAtEnd = await Promise.all([a, b].map(async (node) => (await fetch(`${node.httpUrl}/health/live`)).status));
  // New connections of the two users replay what was queued for them.
  const replayed = new Map<string, string[]>();
  for (const [user, node] of [['ua', a], ['ub', b], ['uz', a]] as const) {
    const fresh = await TestWs.open(node.wsUrl(`?token=${await node.token(user)}`));
    replayed.set(user, (await fresh.quietFor(800)).filter((m) => m.type === 'notification').map((m) => m.id));
    fresh.socket.terminate();
  }

  const record: Scenario = {
    sends: allSends,
    probes: allProbes,
    downAt,
    backAt,
    replayed,
    clients,
    connectDuringOutage,
    openAtEnd,
    liveAtEnd,
  };
  const cleanup = async () => {
    for (const client of clients.values()) client.socket.terminate();
    await a.stop();
    await b.stop();
    server.kill('SIGKILL');
    await processExited(server);
    if (dir !== null) rmSync(dir, { recursive: true, force: true });
  };
  return { record, cleanup };
}

/** Notification ids a client received, with how often. */
function receivedCounts(client: TestWs): Map<string, number> {
  const counts = new Map<string, number>();
  for (const m of client.messages) if (m.type === 'notification') counts.set(m.id, (counts.get(m.id) ?? 0) + 1);
  return counts;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

for (const mode of ['SIGKILL', 'SIGSTOP'] as const) {
  describe(`Redis ${mode === 'SIGKILL' ? 'killed (SIGKILL) and restarted' : 'frozen (SIGSTOP) and resumed (SIGCONT)'} for 10 s under 20 sends/s (SPEC §8)`, () => {
    let record: Scenario;
    let cleanup: (() => Promise<void>) | undefined;
    /** Calls started while Redis was away (after a short grace) and answered before it was back. */
    const during = <T extends Call>(calls: T[]) =>
      calls.filter((c) => c.start >= record.downAt + GRACE_MS[mode] && c.start + c.ms <= record.backAt);
    /** Calls started while Redis was away, whenever answered. */
    const startedDuring = <T extends Call>(calls: T[]) =>
      calls.filter((c) => c.start >= record.downAt + GRACE_MS[mode] && c.start <= record.backAt - 100);

    before(async () => {
      ({ record, cleanup } = await runScenario(mode));
    });
    after(async () => {
      await cleanup?.();
    });

    test('no node goes down and no client is dropped', (t) => {
      assert.deepEqual(record.liveAtEnd, [200, 200]);
      assert.equal(record.openAtEnd, true);
      assert.equal(record.sends.filter((s) => s.status === -1).length, 0, 'every send got an HTTP answer');
      assert.deepEqual([...new Set(record.sends.map((s) => s.status))].sort(), [200, 503]);
      t.diagnostic(`a WebSocket connect in the middle of the outage: ${record.connectDuringOutage}`);
    });

    test('before the outage every send answers 200 and every probe is healthy', () => {
      const early = record.sends.filter((s) => s.start + s.ms < record.downAt);
      assert.ok(early.length >= 30, `${early.length} sends before the outage`);
      assert.deepEqual([...new Set(early.map((s) => s.status))], [200]);
      const probes = record.probes.filter((p) => p.start + p.ms < record.downAt);
      for (const probe of probes) assert.equal(probe.status, 200, `${probe.node} ${probe.path} at ${probe.start} ms`);
    });

    test('during the outage local delivery continues: local users and local subscribers receive every send, answered 503', () => {
      const local = startedDuring(record.sends).filter((s) => s.kind === 'local-user' || s.kind === 'channel');
      assert.ok(local.length >= 80, `${local.length} local sends during the outage`);
      const answeredDuring = during(local);
      assert.ok(answeredDuring.length >= 20, `${answeredDuring.length} local sends answered during the outage`);
      for (const send of answeredDuring) {
        assert.equal(send.status, 503, `${send.via} ${send.kind} at ${send.start} ms`);
        assert.deepEqual(send.json, { error: { code: 'SERVICE_UNAVAILABLE', message: 'Redis is unavailable; try again later' } });
      }
      // The answer is 503, yet the node's own connections got it: find each by payload seq.
      const bySeq = (client: TestWs) => new Set(client.messages.filter((m) => m.type === 'notification').map((m) => m.payload.seq));
      const seen = { ua: bySeq(record.clients.get('ua')!), ub: bySeq(record.clients.get('ub')!), fa: bySeq(record.clients.get('fa')!), fb: bySeq(record.clients.get('fb')!) };
      const seqOf = (send: Send) => record.sends.indexOf(send);
      for (const send of local) {
        const localClient = send.kind === 'channel' ? (send.via === 'A' ? 'fa' : 'fb') : (send.target as 'ua' | 'ub');
        assert.equal(seen[localClient as keyof typeof seen].has(seqOf(send)), true, `${localClient} got ${send.via} ${send.kind} at ${send.start} ms`);
      }
    });

    test('during the outage every send answers 503 SERVICE_UNAVAILABLE within 1 s (no hang)', (t) => {
      const sends = during(record.sends);
      const ms = sends.map((s) => s.ms);
      t.diagnostic(`sends during the outage: ${sends.length}, answer time p50 ${percentile(ms, 50)} ms, p99 ${percentile(ms, 99)} ms, max ${Math.max(...ms)} ms; statuses ${JSON.stringify(countBy(sends.map((s) => s.status)))}`);
      assert.ok(sends.length >= 100, `${sends.length} sends during the outage`);
      for (const send of sends) {
        assert.equal(send.status, 503, `${send.via} ${send.kind} at ${send.start} ms`);
        assert.ok(send.ms < 1000, `${send.via} ${send.kind} at ${send.start} ms answered after ${send.ms} ms`);
      }
    });

    test('sends caught by the moment Redis went away are answered within the detection bound', (t) => {
      const caught = record.sends.filter((s) => s.start >= record.downAt - 50 && s.start < record.downAt + GRACE_MS[mode]);
      const slowest = Math.max(...caught.map((s) => s.ms));
      t.diagnostic(`${mode}: ${caught.length} sends started around the moment Redis went away; slowest answer ${slowest} ms`);
      assert.ok(caught.length >= 5, `${caught.length} sends`);
      assert.ok(slowest <= DETECTION_BOUND_MS + 500, `slowest answer ${slowest} ms`);
    });

    test('during the outage /health is 503 degraded (redis reconnecting or circuit_open), /health/ready 503 and cluster status 503', (t) => {
      const probes = during(record.probes);
      const health = probes.filter((p) => p.path === '/health');
      t.diagnostic(`/health during the outage: ${JSON.stringify(countBy(health.map((p) => `${p.status} ${p.json?.redis?.status}`)))}`);
      const status = probes.filter((p) => p.path === '/api/v1/cluster/status');
      t.diagnostic(`cluster status during the outage: answer time max ${Math.max(...status.map((p) => p.ms))} ms, ${JSON.stringify(countBy(status.map((p) => p.status)))}`);
      assert.ok(health.length >= 20, `${health.length} /health probes during the outage`);
      for (const probe of probes) {
        assert.equal(probe.status, 503, `${probe.node} ${probe.path} at ${probe.start} ms: ${JSON.stringify(probe.json)}`);
        if (probe.path === '/health') {
          assert.equal(probe.json.status, 'degraded');
          assert.ok(['reconnecting', 'circuit_open'].includes(probe.json.redis.status), probe.json.redis.status);
        }
        if (probe.path === '/health/ready') assert.deepEqual(probe.json, { status: 'not_ready' });
        if (probe.path === '/api/v1/cluster/status') assert.equal(probe.json.error.code, 'SERVICE_UNAVAILABLE');
      }
    });

    test('after Redis is back, /health is 200 on both nodes and cross-node delivery resumes within 5 s, with nothing restarted', (t) => {
      const healthyAgain = (node: 'A' | 'B') =>
        record.probes.filter((p) => p.node === node && p.path === '/health' && p.start >= record.backAt && p.status === 200)
          .map((p) => p.start + p.ms)[0];
      const recovered = Math.max(healthyAgain('A') ?? Infinity, healthyAgain('B') ?? Infinity) - record.backAt;
      const counts = new Map([...record.clients].map(([name, client]) => [name, receivedCounts(client)]));
      const reachedRemote = (s: Send) => {
        const remote = s.kind === 'channel' ? (s.via === 'A' ? 'fb' : 'fa') : s.target;
        return s.status === 200 && (counts.get(remote)!.get(s.json.notification_id) ?? 0) === 1;
      };
      const crossOk = record.sends.filter((s) => s.start >= record.backAt && (s.kind === 'remote-user' || s.kind === 'channel') && reachedRemote(s));
      const firstCross = crossOk.length > 0 ? Math.min(...crossOk.map((s) => s.start + s.ms)) - record.backAt : Infinity;
      t.diagnostic(`${mode}: /health 200 on both nodes ${recovered} ms after Redis was back; first cross-node delivery answered 200 after ${firstCross} ms`);
      assert.ok(recovered <= 5000, `health recovered after ${recovered} ms`);
      assert.ok(firstCross <= 5000, `cross-node delivery resumed after ${firstCross} ms`);
      // From 5 s after the return on, every send answers 200 and reaches every target connection live.
      const settled = record.sends.filter((s) => s.start >= record.backAt + 5000);
      assert.ok(settled.length >= 10, `${settled.length} sends after recovery`);
      for (const send of settled) {
        assert.equal(send.status, 200, `${send.via} ${send.kind} at ${send.start} ms: ${JSON.stringify(send.json)}`);
        if (send.kind === 'offline') {
          assert.equal(send.json.queued, 1, `${send.via} offline at ${send.start} ms queued`);
          continue;
        }
        for (const target of send.kind === 'channel' ? ['fa', 'fb'] : [send.target]) {
          assert.equal(counts.get(target)!.get(send.json.notification_id), 1, `${send.via} ${send.kind} at ${send.start} ms reached ${target}`);
        }
      }
      const probes = record.probes.filter((p) => p.start >= record.backAt + 5000);
      for (const probe of probes) assert.equal(probe.status, 200, `${probe.node} ${probe.path} at ${probe.start} ms`);
    });

    // After an outage longer than 3 × CLUSTER_SESSION_TTL_SECONDS (10 s > 9 s here) a node's
    // janitor may remove the presence another node has just rewritten; that node notices at
    // its next heartbeat (it is no longer listed) and writes it again.
    test('after Redis is back, delivered_to, nodes and cluster status count the other node\'s connections again (SPEC §6.1, §6.2)', () => {
      const settled = record.sends.filter((s) => s.start >= record.backAt + 5000 && s.status === 200);
      for (const send of settled) {
        const expected = send.kind === 'channel'
          ? { delivered_to: 2, queued: 0, nodes: 2 }
          : send.kind === 'offline' ? { delivered_to: 0, queued: 1, nodes: 0 } : { delivered_to: 1, queued: 0, nodes: 1 };
        assert.deepEqual({ delivered_to: send.json.delivered_to, queued: send.json.queued, nodes: send.json.nodes }, expected, `${send.via} ${send.kind} at ${send.start} ms`);
      }
      const status = record.probes.filter((p) => p.start >= record.backAt + 5000 && p.path === '/api/v1/cluster/status');
      for (const probe of status) {
        assert.deepEqual(probe.json.nodes.map((n: any) => [n.server_id, n.connections]), [['A', 2], ['B', 2]], `${probe.node} at ${probe.start} ms`);
      }
    });

    /** For each send answered 200 with these kinds: how its targets got it (live + replayed must be 1). */
    const unaccounted = (kinds: SendKind[]) => {
      const counts = new Map([...record.clients].map(([name, client]) => [name, receivedCounts(client)]));
      const missing: string[] = [];
      for (const send of record.sends.filter((s) => s.status === 200 && kinds.includes(s.kind))) {
        const id = send.json.notification_id as string;
        for (const target of send.kind === 'channel' ? ['fa', 'fb'] : [send.target]) {
          const live = counts.get(target)?.get(id) ?? 0;
          const replays = record.replayed.get(target)?.filter((r) => r === id).length ?? 0;
          if (live + replays !== 1) {
            missing.push(`${send.via} ${send.kind}→${target} at ${send.start} ms (${JSON.stringify(send.json)}): live ${live}, replayed ${replays}`);
          }
        }
      }
      return missing;
    };

    test('every user send answered 200 during the whole run reached its user\'s connection once or is replayed from the durable queue once', (t) => {
      const ok = record.sends.filter((s) => s.status === 200 && s.kind !== 'channel');
      const queued = ok.filter((s) => s.json.queued > 0);
      // The offline user's replay: the queued sends, and possibly sends answered 503 whose
      // enqueue reached Redis although its answer did not (the 503 promises nothing either way).
      const offlineReplay = record.replayed.get('uz')!;
      const accepted = new Set(queued.filter((s) => s.target === 'uz').map((s) => s.json.notification_id as string));
      const refusedButQueued = offlineReplay.filter((id) => !accepted.has(id)).length;
      t.diagnostic(
        `${ok.length} user sends answered 200 (${queued.length} of them queued, ${queued.filter((s) => s.start < record.downAt).length} before the outage) ` +
          `of ${record.sends.filter((s) => s.kind !== 'channel').length}; the offline user's replay held ${offlineReplay.length} ` +
          `(${refusedButQueued} of them from sends answered 503)`,
      );
      assert.ok(queued.filter((s) => s.start < record.downAt).length >= 5, 'queued entries from before the outage are part of the accounting');
      assert.deepEqual(unaccounted(['local-user', 'remote-user', 'offline']), []);
      assert.equal(new Set(offlineReplay).size, offlineReplay.length, 'the replay holds each id once');
      // No connection ever got a notification twice.
      for (const [name, client] of record.clients) {
        const twice = [...receivedCounts(client)].filter(([, count]) => count > 1);
        assert.deepEqual(twice, [], `${name} duplicates`);
      }
    });

    // A channel send taken by the node that reconnected first reaches the other node
    // through the bus log once that node has resubscribed (src/cluster/cluster.ts).
    test('every channel send answered 200 during the whole run reached the subscribers on both nodes once', (t) => {
        const missing = unaccounted(['channel']);
        t.diagnostic(`${mode}: ${record.sends.filter((s) => s.status === 200 && s.kind === 'channel').length} channel sends answered 200; ${missing.length} deliveries missing: ${missing.join('; ')}`);
        assert.deepEqual(missing, []);
    });
  });
}

function countBy<T>(values: T[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[String(value)] = (counts[String(value)] ?? 0) + 1;
  return counts;
}

// A restarted Redis (no persistence here) has lost the node list. Each node lists itself
// again as soon as it reconnects, not at its next heartbeat (a third of the TTL: 20 s
// here), so sends are not answered as if the other node were dead meanwhile.
describe('after a Redis restart that lost everything, nodes are live again at once (SPEC §6.1 delivered_to, §6.2 cluster status)', () => {
  test('cluster status lists both nodes and a send counts the other node\'s connection within 1 s of /health turning 200', async (t) => {
    const port = await freePort();
    let server = spawnRedisServer(port);
    await untilPong(port);
    const env = {
      CLUSTER_ENABLED: 'true',
      REDIS_URL: `redis://127.0.0.1:${port}`,
      REDIS_KEY_PREFIX: 'restart',
      REDIS_TRIGGER_ENABLED: 'false',
      CLUSTER_SESSION_TTL_SECONDS: '60',
      REDIS_BACKOFF_MAX_DELAY_MS: '300',
    };
    const a = await startTestNode({ ...env, CLUSTER_SERVER_ID: 'A' });
    const b = await startTestNode({ ...env, CLUSTER_SERVER_ID: 'B' });
    const onB = await TestWs.open(b.wsUrl(`?token=${await b.token('ub')}`));
    try {
      server.kill('SIGKILL');
      await processExited(server);
      server = spawnRedisServer(port);
      await untilPong(port);
      const deadline = Date.now() + 10_000;
      for (const node of [a, b]) {
        while ((await fetch(`${node.httpUrl}/health`)).status !== 200) {
          assert.ok(Date.now() < deadline, 'both nodes healthy again');
          await sleep(50);
        }
      }
      const healthyAt = Date.now();
      let listed: string[] = [];
      let sent: any;
      for (;;) {
        const status = await a.api('GET', '/api/v1/cluster/status');
        listed = status.json.nodes.map((n: any) => n.server_id);
        sent = (await a.api('POST', '/api/v1/notifications/send', { target_user_id: 'ub', event_type: 'restart', payload: {} })).json;
        if ((listed.length === 2 && sent.delivered_to === 1) || Date.now() - healthyAt > 1000) break;
        await sleep(50);
      }
      t.diagnostic(`nodes listed ${Date.now() - healthyAt} ms after both were healthy: ${listed.join(', ')}`);
      assert.deepEqual(listed, ['A', 'B']);
      assert.deepEqual({ delivered_to: sent.delivered_to, nodes: sent.nodes }, { delivered_to: 1, nodes: 1 });
      await onB.next((m) => m.id === sent.notification_id);
    } finally {
      onB.socket.terminate();
      await a.stop();
      await b.stop();
      server.kill('SIGKILL');
      await processExited(server);
    }
  });
});

// An idle node makes no Redis calls of its own for long stretches (heartbeats every TTL/3,
// 20 s here): its probe's answers are what close the breaker again after a freeze.
describe('an idle node after a frozen Redis resumes (SPEC §6.3 /health)', () => {
  test('/health is degraded during a 3 s freeze and 200 again within 2 s of SIGCONT, with no traffic', async (t) => {
    const port = await freePort();
    const server = spawnRedisServer(port);
    await untilPong(port);
    const idle = await startTestNode({
      CLUSTER_ENABLED: 'true',
      REDIS_URL: `redis://127.0.0.1:${port}`,
      REDIS_KEY_PREFIX: 'idle',
      REDIS_TRIGGER_ENABLED: 'false',
      CLUSTER_SESSION_TTL_SECONDS: '60',
    });
    try {
      server.kill('SIGSTOP');
      await sleep(3000);
      const during = await fetch(`${idle.httpUrl}/health`);
      assert.equal(during.status, 503);
      assert.equal(((await during.json()) as any).redis.status, 'circuit_open');
      server.kill('SIGCONT');
      const resumedAt = Date.now();
      while ((await fetch(`${idle.httpUrl}/health`)).status !== 200) {
        assert.ok(Date.now() - resumedAt < 2000, '/health 200 again within 2 s');
        await sleep(50);
      }
      t.diagnostic(`idle node healthy ${Date.now() - resumedAt} ms after SIGCONT`);
    } finally {
      server.kill('SIGCONT');
      await idle.stop();
      server.kill('SIGKILL');
      await processExited(server);
    }
  });
});
