/**
 * C14 Slow consumer (cases/README.md; SPEC §4 "outbound backlog above
 * WEBSOCKET_MAX_BUFFERED_BYTES → close 4008, counted as a slow-consumer
 * disconnect", SPEC §9 ara_slow_consumer_disconnects_total).
 *
 * alice opens a WebSocket and stops reading (her TCP socket is paused, so
 * the kernel buffers fill and the server's backlog grows). Up to 20,000
 * notifications of 4 KB are sent to her through the HTTP API as fast as it
 * takes them (16 requests in flight) while bob receives one per second.
 * alice must be cut off with 4008 once her backlog passes the cap, bob's
 * latency must stay under a second, and memory must stay bounded.
 */
import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { TEST_API_KEY, sleep, type TestNode } from '../helpers/node.ts';
import { BackendScope, STORE_BACKENDS } from '../helpers/store-backends.ts';

const MAX_BUFFERED_BYTES = 1_048_576;
const FLOOD_COUNT = 20_000;
const IN_FLIGHT = 16;
const RUN_CAP_MS = 30_000;

function rawSocket(ws: TestWs): Socket {
  return (ws.socket as unknown as { _socket: Socket })._socket;
}

/**
 * POSTs a prepared JSON body over a keep-alive agent: much less garbage per
 * request than fetch, so the memory measured is the server's, not the load
 * generator's.
 */
function post(agent: Agent, url: string, body: string): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'x-api-key': TEST_API_KEY,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function metricLine(node: TestNode, prefix: string): Promise<string | undefined> {
  const res = await node.api('GET', '/metrics');
  return res.text.split('\n').find((l) => l.startsWith(`${prefix} `));
}

/**
 * Sends up to FLOOD_COUNT notifications of 4 KB to `userId`, IN_FLIGHT at a
 * time, until the user has no connection left on the node (or RUN_CAP_MS).
 */
async function flood(
  node: TestNode,
  userId: string,
): Promise<{ sent: number; delivered: number; closedAfter: number }> {
  const startedAt = Date.now();
  const agent = new Agent({ keepAlive: true, maxSockets: IN_FLIGHT });
  const url = `${node.httpUrl}/api/v1/notifications/send`;
  const body = JSON.stringify({ target_user_id: userId, event_type: 'flood', payload: { blob: 'x'.repeat(4096) } });
  let stop = false;
  let sent = 0;
  let delivered = 0;
  let closedAfter = -1;
  const worker = async () => {
    try {
      while (!stop && sent < FLOOD_COUNT && Date.now() - startedAt < RUN_CAP_MS) {
        sent++;
        const res = await post(agent, url, body);
        assert.equal(res.status, 200, JSON.stringify(res.json));
        delivered += res.json.delivered_to;
        if (userOf(node, userId) === 0 && closedAfter < 0) {
          closedAfter = sent;
          stop = true;
        }
      }
    } finally {
      stop = true;
    }
  };
  try {
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  } finally {
    agent.destroy();
  }
  return { sent, delivered, closedAfter };
}

for (const backend of STORE_BACKENDS) describe(`C14 slow consumer on ${backend} (SPEC §4, §9)`, () => {
  const scope = new BackendScope(backend, 'c14');
  let node: TestNode;

  before(async () => {
    // With the queue on, every send to alice also writes her history on this backend.
    node = await scope.start({ QUEUE_ENABLED: 'true', WEBSOCKET_MAX_BUFFERED_BYTES: String(MAX_BUFFERED_BYTES) });
  });
  after(() => scope.cleanup());

  test('a reader that stops is closed with 4008 past WEBSOCKET_MAX_BUFFERED_BYTES while others keep sub-second latency', async () => {
    const alice = await TestWs.open(node.wsUrl(`?token=${await node.token('alice')}`), { perMessageDeflate: false });
    const bob = await TestWs.open(node.wsUrl(`?token=${await node.token('bob')}`), { perMessageDeflate: false });
    const bobLatencies: number[] = [];
    bob.socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      if (message.type === 'notification') bobLatencies.push(Date.now() - Date.parse(message.occurred_at));
    });
    assert.equal(userOf(node, 'alice'), 1);

    rawSocket(alice).pause(); // alice stops reading
    const rssBefore = process.memoryUsage().rss;
    const startedAt = Date.now();
    let bobSent = 0;
    let flooding = true;
    const bobTicker = async () => {
      // One per second while the flood runs, and at least three in all.
      while ((flooding || bobSent < 3) && Date.now() - startedAt < RUN_CAP_MS) {
        bobSent++;
        const res = await node.api('POST', '/api/v1/notifications/send', {
          target_user_id: 'bob',
          event_type: 'tick',
          payload: { n: bobSent },
        });
        assert.equal(res.json.delivered_to, 1);
        await sleep(1000);
      }
    };
    const [{ sent, delivered, closedAfter }] = await Promise.all([
      flood(node, 'alice').finally(() => (flooding = false)),
      bobTicker(),
    ]);
    const rssGrowthMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;

    // alice was cut off on the server side, before the flood ran out.
    assert.ok(closedAfter > 0, `alice was still connected after ${sent} notifications`);
    assert.equal(userOf(node, 'alice'), 0);
    assert.ok(delivered < FLOOD_COUNT);
    // She was not cut off early: at least the cap's worth of 4 KB messages was accepted for her.
    assert.ok(delivered * 4096 > MAX_BUFFERED_BYTES, `only ${delivered} notifications were accepted`);

    assert.equal(await metricLine(node, 'ara_slow_consumer_disconnects_total'), 'ara_slow_consumer_disconnects_total 1');
    assert.equal(
      await metricLine(node, 'ara_ws_connections_closed_total{reason="slow_consumer"}'),
      'ara_ws_connections_closed_total{reason="slow_consumer"} 1',
    );

    // bob was served throughout, each notification in well under a second.
    await bob.next((m) => m.type === 'notification' && m.payload.n === bobSent, 3000);
    assert.equal(bobLatencies.length, bobSent);
    assert.ok(Math.max(...bobLatencies) < 1000, `bob's latencies: ${bobLatencies.join(', ')} ms`);
    assert.equal(userOf(node, 'bob'), 1);

    assert.ok(rssGrowthMb < 100, `RSS grew by ${rssGrowthMb.toFixed(1)} MB`);

    // The close frame sits behind the data already buffered: read it all and see 4008.
    rawSocket(alice).resume();
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      alice.closed,
      new Promise<null>((resolve) => (timer = setTimeout(resolve, 15_000, null))),
    ]);
    clearTimeout(timer);
    assert.deepEqual(closed, { code: 4008, reason: 'slow consumer' });
    const received = alice.messages.filter((m) => m.type === 'notification').length;
    assert.ok(received > 0 && received <= delivered, `alice read ${received} of ${delivered}`);

    await bob.close();
  });

  test('an SSE reader that stops is cut off the same way and counted as a slow consumer', async () => {
    const before = await metricLine(node, 'ara_slow_consumer_disconnects_total');
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${await node.token('carol')}`);
    assert.equal(userOf(node, 'carol'), 1);
    sse.response.socket.pause(); // carol stops reading
    const { sent, delivered, closedAfter } = await flood(node, 'carol');
    assert.ok(closedAfter > 0, `carol was still connected after ${sent} notifications`);
    assert.equal(userOf(node, 'carol'), 0);
    assert.ok(delivered * 4096 > MAX_BUFFERED_BYTES, `only ${delivered} notifications were accepted`);
    assert.equal(before, 'ara_slow_consumer_disconnects_total 1');
    assert.equal(await metricLine(node, 'ara_slow_consumer_disconnects_total'), 'ara_slow_consumer_disconnects_total 2');
    sse.response.socket.resume();
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      sse.ended.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(resolve, 15_000, false))),
    ]);
    clearTimeout(timer);
    assert.equal(ended, true);
  });
});

function userOf(node: TestNode, userId: string): number {
  return node.node.hub.space('default')?.users.get(userId)?.size ?? 0;
}
