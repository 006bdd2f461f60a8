/**
 * Noisy neighbour (issue 3, acceptance item 4; SPEC §1 RATELIMIT_* and
 * TENANT_*, §3 "limits of one tenant are unreachable from another", §4, §6).
 *
 * Tenant t-a misbehaves: it floods the HTTP API with its tenant key, fills
 * its connection cap and keeps trying to connect. Tenant t-b carries on
 * normally at the same time. t-a is answered 429 and CONNECTION_LIMIT; t-b
 * must not notice: every send answers 200 and is received, in order and
 * promptly, and its new connections keep succeeding.
 *
 * The two tenants connect from different loopback addresses (t-a from
 * 127.0.0.2, t-b from 127.0.0.3), as two customers' servers would, so the
 * per-address connect limiter (RATELIMIT_WS_CONNECTIONS_PER_MINUTE) is
 * exhausted by t-a alone and shown not to touch t-b.
 */
import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { TestWs, type HandshakeRefusal } from '../helpers/clients.ts';
import { sleep, startTestNode, type TestNode } from '../helpers/node.ts';

const KEY_A = 'tenant-a-key-5b0e1c9d7a3f4e28';
const KEY_B = 'tenant-b-key-92c4d1e8f06b7a35';
const ADDRESS_A = '127.0.0.2';
const ADDRESS_B = '127.0.0.3';
const TENANT_CAP = 20;
const CONNECTS_PER_MINUTE = 24;
const FLOOD_REQUESTS = 3000;
const FLOOD_IN_FLIGHT = 32;
const B_SEND_EVERY_MS = 100;
const B_MIN_SENDS = 30;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  json: any;
}

/** One HTTP call from a given local address, over a keep-alive agent. */
function call(node: TestNode, agent: Agent, localAddress: string, method: string, path: string, key: string, body?: unknown): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = { 'x-api-key': key };
    if (payload !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    const req = httpRequest(
      { host: '127.0.0.1', port: node.port, method, path, headers, agent, localAddress },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

type ConnectOutcome =
  | { kind: 'open'; client: TestWs }
  | { kind: 'refused-after-upgrade'; error: any; code: number }
  | { kind: 'http'; status: number; code: string | undefined; retryAfter: string | undefined };

/** Connects from `localAddress` and says how the server answered. */
async function connectFrom(url: string, localAddress: string): Promise<ConnectOutcome> {
  let client: TestWs;
  try {
    client = await TestWs.connect(url, { localAddress });
  } catch (error) {
    const refusal = error as HandshakeRefusal;
    if (typeof refusal.status !== 'number') throw error;
    const retryAfter = refusal.headers['retry-after'];
    return { kind: 'http', status: refusal.status, code: refusal.json?.error?.code, retryAfter: retryAfter as string | undefined };
  }
  const first = await client.next(() => true, 3000);
  if (first.type === 'connected') return { kind: 'open', client };
  const { code } = await client.closed;
  return { kind: 'refused-after-upgrade', error: first, code };
}

describe('a noisy tenant does not hurt its neighbour (SPEC §3 limits, §6 rate limit)', () => {
  let node: TestNode;
  const agentA = new Agent({ keepAlive: true, maxSockets: FLOOD_IN_FLIGHT });
  const agentB = new Agent({ keepAlive: true, maxSockets: 4 });

  before(async () => {
    node = await startTestNode({
      TENANT_ENABLED: 'true',
      TENANT_API_KEYS: `t-a:${KEY_A},t-b:${KEY_B}`,
      TENANT_DEFAULT_MAX_CONNECTIONS: String(TENANT_CAP),
      RATELIMIT_ENABLED: 'true',
      RATELIMIT_HTTP_REQUESTS_PER_SECOND: '50',
      RATELIMIT_HTTP_BURST_SIZE: '100',
      RATELIMIT_WS_CONNECTIONS_PER_MINUTE: String(CONNECTS_PER_MINUTE),
    });
  });
  after(async () => {
    agentA.destroy();
    agentB.destroy();
    await node.stop();
  });

  test('while t-a floods the API and its connection cap, every t-b send answers 200 and reaches its user once, in order, within 1 s, and t-b connects keep succeeding', { timeout: 60_000 }, async (t) => {
    const tokenFor = (tenant: string, sub: string) => node.token(sub, { tenant_id: tenant });

    // t-b's user, connected from t-b's address; arrival times noted per seq.
    const bUser = await TestWs.open(node.wsUrl(`?token=${await tokenFor('t-b', 'b-user')}`), { localAddress: ADDRESS_B });
    assert.equal((bUser.socket as any)._socket.localAddress, ADDRESS_B);
    const arrivals: Array<{ seq: number; atMs: number }> = [];
    bUser.socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      if (message.type === 'notification' && message.event_type === 'b.tick') {
        arrivals.push({ seq: message.payload.seq, atMs: Date.now() });
      }
    });

    let aDone = false;

    // --- t-b: one send every 100 ms, and a fresh connection every 5th tick.
    const bSends: Array<{ seq: number; sentAtMs: number; status: number; deliveredTo: number }> = [];
    const bConnects: ConnectOutcome[] = [];
    const tenantB = (async () => {
      for (let seq = 0; !aDone || seq < B_MIN_SENDS; seq++) {
        const tickStart = Date.now();
        const sentAtMs = Date.now();
        const answer = await call(node, agentB, ADDRESS_B, 'POST', '/api/v1/notifications/send', KEY_B, {
          target_user_id: 'b-user',
          event_type: 'b.tick',
          payload: { seq },
        });
        bSends.push({ seq, sentAtMs, status: answer.status, deliveredTo: answer.json?.delivered_to });
        if (seq % 5 === 0) {
          const outcome = await connectFrom(node.wsUrl(`?token=${await tokenFor('t-b', `b-extra-${seq}`)}`), ADDRESS_B);
          bConnects.push(outcome);
          if (outcome.kind === 'open') await outcome.client.close();
        }
        await sleep(Math.max(0, B_SEND_EVERY_MS - (Date.now() - tickStart)));
      }
    })();

    // --- t-a: fill the tenant cap, one more, the flood, then keep trying to connect.
    const aClients: TestWs[] = [];
    const aRefusals: ConnectOutcome[] = [];
    const aStatuses = new Map<number, number>();
    let aRetryAfter: string | undefined;
    let floodStartMs = 0;
    let floodEndMs = 0;
    const tenantA = (async () => {
      try {
        for (let i = 0; i < TENANT_CAP; i++) {
          const outcome = await connectFrom(node.wsUrl(`?token=${await tokenFor('t-a', `a-${i}`)}`), ADDRESS_A);
          assert.equal(outcome.kind, 'open', `t-a connection ${i + 1} of ${TENANT_CAP} was refused: ${JSON.stringify(outcome)}`);
          aClients.push((outcome as { client: TestWs }).client);
        }
        aRefusals.push(await connectFrom(node.wsUrl(`?token=${await tokenFor('t-a', 'a-over-cap')}`), ADDRESS_A));

        let next = 0;
        const worker = async () => {
          while (next < FLOOD_REQUESTS) {
            const index = next++;
            const answer =
              index % 3 === 2
                ? await call(node, agentA, ADDRESS_A, 'GET', '/api/v1/channels', KEY_A)
                : await call(node, agentA, ADDRESS_A, 'POST', '/api/v1/notifications/send', KEY_A, {
                    target_user_id: `a-${index % TENANT_CAP}`,
                    event_type: 'a.flood',
                    payload: { index },
                  });
            aStatuses.set(answer.status, (aStatuses.get(answer.status) ?? 0) + 1);
            if (answer.status === 429) aRetryAfter ??= answer.headers['retry-after'] as string | undefined;
          }
        };
        floodStartMs = Date.now();
        await Promise.all(Array.from({ length: FLOOD_IN_FLIGHT }, worker));
        floodEndMs = Date.now();

        // More connects than the per-address allowance: t-a's address runs dry.
        for (let i = 0; i < 8; i++) {
          aRefusals.push(await connectFrom(node.wsUrl(`?token=${await tokenFor('t-a', `a-more-${i}`)}`), ADDRESS_A));
        }
      } finally {
        aDone = true;
      }
    })();

    await Promise.all([tenantA, tenantB]);
    const lastSeq = bSends.length - 1;
    const deadline = Date.now() + 2000;
    while (arrivals.length < bSends.length && Date.now() < deadline) await sleep(20);

    const duringFlood = bSends.filter((s) => s.sentAtMs >= floodStartMs && s.sentAtMs <= floodEndMs).length;
    t.diagnostic(
      `t-a statuses ${JSON.stringify(Object.fromEntries(aStatuses))} over ${floodEndMs - floodStartMs} ms; ` +
        `t-b sends ${bSends.length}, ${duringFlood} of them during the flood`,
    );
    // The scenario really overlapped: t-b was sending while t-a flooded.
    assert.ok(duringFlood >= 5, `only ${duringFlood} t-b sends happened during the flood`);

    // t-a was limited.
    assert.ok((aStatuses.get(429) ?? 0) > 0, 't-a was never answered 429');
    assert.ok((aStatuses.get(200) ?? 0) > 0, 't-a never got through at all');
    assert.deepEqual([...aStatuses.keys()].filter((status) => status !== 200 && status !== 429), []);
    assert.equal([...aStatuses.values()].reduce((a, b) => a + b, 0), FLOOD_REQUESTS);
    assert.match(aRetryAfter ?? '', /^[1-9]\d*$/);

    // t-a's 21st connection hit the tenant cap: CONNECTION_LIMIT, then 1008.
    const overCap = aRefusals[0]!;
    assert.equal(overCap.kind, 'refused-after-upgrade');
    if (overCap.kind === 'refused-after-upgrade') {
      assert.equal(overCap.error.type, 'error');
      assert.equal(overCap.error.code, 'CONNECTION_LIMIT');
      assert.equal(overCap.error.message, `Tenant connection limit reached (${TENANT_CAP}/${TENANT_CAP})`);
      assert.equal(overCap.code, 1008);
    }
    // Later attempts are refused by the cap or, once the address's allowance is spent, by the connect limiter.
    for (const refusal of aRefusals) {
      assert.ok(
        refusal.kind === 'refused-after-upgrade'
          ? refusal.error.code === 'CONNECTION_LIMIT' && refusal.code === 1008
          : refusal.kind === 'http' && refusal.status === 429 && refusal.code === 'RATE_LIMITED',
        `unexpected outcome for t-a: ${JSON.stringify(refusal)}`,
      );
    }
    assert.ok(aRefusals.some((r) => r.kind === 'http'), 't-a address never hit the connect limiter');
    assert.equal(node.node.hub.space('t-a')?.connections.size, TENANT_CAP);

    // t-b did not notice.
    assert.ok(bSends.length >= B_MIN_SENDS);
    assert.deepEqual(bSends.filter((s) => s.status !== 200), [], 't-b got a non-200 answer');
    assert.deepEqual(bSends.filter((s) => s.deliveredTo !== 1), [], 't-b send not delivered to its user');
    assert.deepEqual(
      arrivals.map((a) => a.seq),
      Array.from({ length: lastSeq + 1 }, (_, i) => i),
      't-b user did not receive every notification exactly once, in order',
    );
    const latencies = arrivals.map((a) => a.atMs - bSends[a.seq]!.sentAtMs);
    const maxLatency = Math.max(...latencies);
    t.diagnostic(`t-b max latency ${maxLatency} ms`);
    assert.ok(maxLatency < 1000, `t-b max latency ${maxLatency} ms`);
    assert.ok(bConnects.length >= 5);
    assert.deepEqual(
      bConnects.filter((c) => c.kind !== 'open'),
      [],
      't-b connect refused while t-a was being limited',
    );

    for (const client of aClients) await client.close();
    await bUser.close();
  });
});
