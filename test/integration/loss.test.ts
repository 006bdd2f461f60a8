/**
 * No loss, no duplicate, no reordering across connection cuts (SPEC §7
 * "each exactly once", "in send order", resume; issue 4 acceptance 3).
 *
 * A client receives a steady stream of user-targeted notifications (200 per
 * second, sent by the test through the HTTP API with a bounded number in
 * flight) while its TCP connection is reset — no close frame, no FIN — at
 * spread moments. Each time it reconnects at once and resumes from the last
 * id it received: WebSocket with `?last_event_id=` in the URL, SSE with
 * `Last-Event-ID`. (A WS `Resume` message cannot do this: it arrives a round
 * trip after the upgrade, when live traffic already flows on the new
 * connection — see test/integration/resume.test.ts.) Every notification must arrive exactly once, in the
 * order the server dispatched them (recorded by wrapping Delivery.send,
 * whose first, synchronous step is the live dispatch).
 *
 * QUEUE_ENABLED=true, QUEUE_MAX_SIZE_PER_USER=5000 (the user history holds
 * the whole stream). memory runs 20 s with 5 cuts per transport; postgres
 * and redis run 5 s with 2 cuts to keep the suite short.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, describe, test } from 'node:test';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { sleep, type TestNode } from '../helpers/node.ts';
import { BackendScope, STORE_BACKENDS, type StoreBackendName } from '../helpers/store-backends.ts';

const RATE_PER_SECOND = 200;
const IN_FLIGHT = 8;

const PLAN: Record<StoreBackendName, { seconds: number; cuts: number }> = {
  memory: { seconds: 20, cuts: 5 },
  postgres: { seconds: 5, cuts: 2 },
  redis: { seconds: 5, cuts: 2 },
};

interface Outcome {
  sent: number;
  received: number;
  duplicates: number;
  gaps: number;
  outOfOrder: number;
  queuedBySends: number;
  resumeGaps: number;
  errors: string[];
  /** Per reconnect: dispatch positions (relative to the last one received before the cut) of the first arrivals. */
  reconnects: string[];
}

/** One client session: the connection now open, and every notification id each connection got, in order. */
interface Client {
  /** Notification ids received, over every connection, in arrival order. */
  ids(): string[];
  /** Notification ids per connection, in arrival order. */
  perConnection(): string[][];
  /** Notices other than notifications that mattered (resume_gap, error). */
  notices(): any[];
  /** Resets the TCP connection (no close) and reconnects at once, resuming from the last id. */
  cutAndResume(): Promise<void>;
  close(): Promise<void>;
}

async function wsClient(node: TestNode, token: string): Promise<Client> {
  const connections: TestWs[] = [];
  const open = async (since: string | null) => {
    const resume = since === null ? '' : `&last_event_id=${since}`;
    const ws = await TestWs.connect(node.wsUrl(`?token=${token}${resume}`), { perMessageDeflate: false });
    ws.socket.on('error', () => {});
    connections.push(ws);
  };
  await open(null);
  await connections[0]!.nextOfType('connected');
  const perConnection = () => connections.map((ws) => ws.messages.filter((m) => m.type === 'notification').map((m) => m.id as string));
  const ids = () => perConnection().flat();
  return {
    ids,
    perConnection,
    notices: () => connections.flatMap((ws) => ws.messages.filter((m) => m.type === 'resume_gap' || m.type === 'error')),
    async cutAndResume() {
      const current = connections[connections.length - 1]!;
      (current.socket as unknown as { _socket: Socket })._socket.resetAndDestroy();
      await current.closed;
      const all = ids();
      await open(all.length > 0 ? all[all.length - 1]! : null);
    },
    async close() {
      await connections[connections.length - 1]!.close();
    },
  };
}

async function sseClient(node: TestNode, token: string): Promise<Client> {
  const connections: TestSse[] = [];
  const url = `${node.httpUrl}/sse?token=${token}`;
  const open = async (since: string | null) => {
    const sse = await TestSse.connect(url, since === null ? {} : { 'last-event-id': since });
    sse.response.on('error', () => {});
    connections.push(sse);
  };
  await open(null);
  await connections[0]!.nextEvent('connected');
  const perConnection = () => connections.map((sse) => sse.events.filter((e) => e.event === 'notification').map((e) => e.id!));
  const ids = () => perConnection().flat();
  return {
    ids,
    perConnection,
    notices: () => connections.flatMap((sse) => sse.events.filter((e) => e.event === 'resume_gap' || e.event === 'error')),
    async cutAndResume() {
      const current = connections[connections.length - 1]!;
      (current.response.socket as Socket).resetAndDestroy();
      await current.ended;
      const all = ids();
      await open(all.length > 0 ? all[all.length - 1]! : null);
    },
    async close() {
      connections[connections.length - 1]!.close();
    },
  };
}

async function runStream(node: TestNode, client: Client, seconds: number, cuts: number): Promise<Outcome> {
  // The server's dispatch order: Delivery.send dispatches live synchronously before anything else.
  const dispatched: string[] = [];
  const delivery = node.node.delivery;
  const originalSend = delivery.send.bind(delivery);
  delivery.send = (tenantId, target, notification) => {
    dispatched.push(notification.id);
    return originalSend(tenantId, target, notification);
  };

  const total = seconds * RATE_PER_SECOND;
  const errors: string[] = [];
  let queuedBySends = 0;
  let inFlight = 0;
  const slotFreed: Array<() => void> = [];
  const sendOne = async (i: number) => {
    try {
      const res = await node.api('POST', '/api/v1/notifications/send', {
        target_user_id: 'alice',
        event_type: 'loss.stream',
        payload: { i },
      });
      if (res.status !== 200) errors.push(`send ${i}: ${res.status} ${res.text}`);
      else queuedBySends += res.json.queued;
    } catch (error) {
      errors.push(`send ${i}: ${String(error)}`);
    } finally {
      inFlight--;
      slotFreed.shift()?.();
    }
  };

  const startedAt = Date.now();
  const cutting = (async () => {
    for (let k = 1; k <= cuts; k++) {
      // Spread over the stream, off the 5 ms send grid.
      const at = startedAt + (k * seconds * 1000) / (cuts + 1) + k * 37;
      await sleep(Math.max(0, at - Date.now()));
      await client.cutAndResume();
    }
  })();

  const pending: Promise<void>[] = [];
  for (let i = 0; i < total; i++) {
    const due = startedAt + (i * 1000) / RATE_PER_SECOND;
    if (due > Date.now()) await sleep(due - Date.now());
    while (inFlight >= IN_FLIGHT) await new Promise<void>((resolve) => slotFreed.push(resolve));
    inFlight++;
    pending.push(sendOne(i));
  }
  await Promise.all(pending);
  await cutting;

  // Everything dispatched must reach the client; give the last ones a moment.
  const deadline = Date.now() + 10_000;
  const want = new Set(dispatched);
  while (Date.now() < deadline && new Set(client.ids().filter((id) => want.has(id))).size < want.size) await sleep(50);
  await sleep(300);

  const received = client.ids();
  const counts = new Map<string, number>();
  for (const id of received) counts.set(id, (counts.get(id) ?? 0) + 1);
  const position = new Map(dispatched.map((id, index) => [id, index]));
  let outOfOrder = 0;
  for (let k = 1; k < received.length; k++) {
    if ((position.get(received[k]!) ?? -1) < (position.get(received[k - 1]!) ?? -1)) outOfOrder++;
  }
  const reconnects: string[] = [];
  const connections = client.perConnection();
  for (let c = 1; c < connections.length; c++) {
    const before = connections.slice(0, c).flat();
    const base = before.length > 0 ? position.get(before[before.length - 1]!)! : -1;
    const firsts = connections[c]!.slice(0, 8).map((id) => {
      const offset = position.get(id)! - base;
      return offset > 0 ? `+${offset}` : String(offset);
    });
    reconnects.push(`#${c}: ${firsts.join(' ')}`);
  }
  return {
    reconnects,
    sent: dispatched.length,
    received: received.length,
    duplicates: [...counts.values()].reduce((sum, n) => sum + (n - 1), 0),
    gaps: dispatched.filter((id) => !counts.has(id)).length,
    outOfOrder,
    queuedBySends,
    resumeGaps: client.notices().filter((n) => n.type === 'resume_gap' || n.event === 'resume_gap').length,
    errors,
  };
}

for (const backend of STORE_BACKENDS) {
  const { seconds, cuts } = PLAN[backend];
  describe(`no loss, duplicate or reordering across ${cuts} TCP resets in ${seconds} s on ${backend} (SPEC §7)`, () => {
    const scope = new BackendScope(backend, 'loss');
    after(() => scope.cleanup());

    for (const transport of ['ws', 'sse'] as const) {
      test(`${transport === 'ws' ? 'WebSocket + ?last_event_id=' : 'SSE + Last-Event-ID'}: every notification arrives once, in dispatch order`, async (t) => {
        const node = await scope.start({
          QUEUE_ENABLED: 'true',
          QUEUE_MAX_SIZE_PER_USER: '5000',
          WEBSOCKET_HEARTBEAT_INTERVAL: '1',
          WEBSOCKET_MAX_CONNECTIONS_PER_USER: '0',
        });
        const token = await node.token('alice', {}, { ttlSeconds: 3600 });
        const client = transport === 'ws' ? await wsClient(node, token) : await sseClient(node, token);
        const outcome = await runStream(node, client, seconds, cuts);
        t.diagnostic(
          `${backend}/${transport}: sent ${outcome.sent}, received ${outcome.received}, duplicates ${outcome.duplicates}, ` +
            `gaps ${outcome.gaps}, out of order ${outcome.outOfOrder}, queued while offline ${outcome.queuedBySends}, ` +
            `resume_gap ${outcome.resumeGaps}, send errors ${outcome.errors.length}`,
        );
        t.diagnostic(`${backend}/${transport}: first arrivals after each reconnect, by dispatch position relative to the last id received before the cut: ${outcome.reconnects.join('; ')}`);
        await client.close();
        assert.deepEqual(outcome.errors, []);
        assert.equal(outcome.sent, seconds * RATE_PER_SECOND);
        assert.equal(outcome.resumeGaps, 0);
        assert.equal(outcome.duplicates, 0);
        assert.equal(outcome.gaps, 0);
        assert.equal(outcome.received, outcome.sent);
        assert.equal(outcome.outOfOrder, 0);
      });
    }
  });
}
