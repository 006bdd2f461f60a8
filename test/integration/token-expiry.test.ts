/**
 * Tokens that expire while a connection is open (SPEC §2 "A connection whose
 * token expires while open…", §4 `Refresh` and close 4001, §5 SSE `error`
 * then end of stream, §9 `ara_ws_connections_closed_total{reason}`).
 *
 * Expiry is checked at every heartbeat tick (WEBSOCKET_HEARTBEAT_INTERVAL),
 * so a connection must be told and closed no earlier than `exp + leeway`
 * and no later than about two intervals after it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SignJWT, type JWTPayload } from 'jose';
import { TestSse, TestWs } from '../helpers/clients.ts';
import { TEST_SECRET, sleep, startTestNode, type TestNode } from '../helpers/node.ts';

const HEARTBEAT_MS = 300;
/** Two heartbeat intervals, plus room for timers firing late on a busy machine. */
const CLOSE_WITHIN_MS = 2 * HEARTBEAT_MS + 250;

/** An HS256 token for `sub` whose `exp` is exactly `expSeconds`. */
function tokenExpiringAt(sub: string, expSeconds: number, claims: JWTPayload = {}, secret = TEST_SECRET): Promise<string> {
  return new SignJWT({ ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(expSeconds)
    .sign(new TextEncoder().encode(secret));
}

/** An `exp` at least `minSeconds` (and less than minSeconds + 1) from now. */
function expIn(minSeconds: number): number {
  return Math.ceil(Date.now() / 1000) + minSeconds;
}

async function closedCount(node: TestNode, reason: string): Promise<number> {
  const response = await node.api('GET', '/metrics');
  assert.equal(response.status, 200);
  const line = response.text
    .split('\n')
    .find((l) => l.startsWith(`ara_ws_connections_closed_total{reason="${reason}"}`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

/** Waits for the close and says when it was observed. */
async function closedAt(ws: TestWs): Promise<{ code: number; atMs: number }> {
  const { code } = await ws.closed;
  return { code, atMs: Date.now() };
}

function assertClosedOnTime(atMs: number, dueMs: number, what: string): void {
  assert.ok(atMs >= dueMs, `${what} ended ${dueMs - atMs} ms before it was due`);
  assert.ok(atMs - dueMs <= CLOSE_WITHIN_MS, `${what} ended ${atMs - dueMs} ms after it was due (bound ${CLOSE_WITHIN_MS} ms)`);
}

describe('token expiry on open connections, no leeway (SPEC §2, §4, §5)', () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode({
      WEBSOCKET_HEARTBEAT_INTERVAL: String(HEARTBEAT_MS / 1000),
      JWT_LEEWAY_SECONDS: '0',
      // Tenancy on, so that a Refresh naming another tenant is a different identity (SPEC §3).
      TENANT_ENABLED: 'true',
    });
  });
  after(() => node.stop());

  // Each case waits for its own clock; they run side by side on one node.
  describe('each connection on its own', { concurrency: true }, () => {
    test('a WebSocket whose token expires gets TOKEN_EXPIRED, then close 4001, within two heartbeat intervals of exp', { timeout: 15_000 }, async () => {
      const exp = expIn(2);
      const ws = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt('alice', exp)}`));
      const closed = await closedAt(ws);
      assert.equal(closed.code, 4001);
      assertClosedOnTime(closed.atMs, exp * 1000, 'the WebSocket');
      const last = ws.messages.at(-1);
      assert.equal(last.type, 'error');
      assert.equal(last.code, 'TOKEN_EXPIRED');
      assert.equal(typeof last.message, 'string');
      assert.equal(ws.messages.filter((m) => m.type === 'error').length, 1);
      // It was alive until then: heartbeats arrived while the token was valid.
      assert.ok(ws.messages.some((m) => m.type === 'heartbeat'), 'no heartbeat before expiry');
    });

    test('Refresh with a fresh token of the same sub answers refreshed with the new expiry and keeps the connection open past the old one', { timeout: 15_000 }, async () => {
      const oldExp = expIn(2);
      const newExp = oldExp + 2;
      const ws = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt('bob', oldExp)}`));
      const refreshed = await ws.request(
        { type: 'Refresh', payload: { token: await tokenExpiringAt('bob', newExp) } },
        'refreshed',
      );
      assert.deepEqual(refreshed, { type: 'refreshed', expires_at: new Date(newExp * 1000).toISOString() });

      // Past the old expiry by more than two intervals: still open and answering.
      await sleep(oldExp * 1000 - Date.now() + CLOSE_WITHIN_MS);
      assert.equal(ws.socket.readyState, ws.socket.OPEN);
      assert.deepEqual(ws.messages.filter((m) => m.type === 'error'), []);
      assert.deepEqual(await ws.request({ type: 'Ping' }, 'pong'), { type: 'pong' });

      // The new expiry is the one that applies now.
      const closed = await closedAt(ws);
      assert.equal(closed.code, 4001);
      assertClosedOnTime(closed.atMs, newExp * 1000, 'the refreshed WebSocket');
      assert.equal(ws.messages.at(-1).code, 'TOKEN_EXPIRED');
    });

    test('a tenant connection refreshed with a token of the same sub and tenant is accepted', { timeout: 15_000 }, async () => {
      const exp = expIn(30);
      const ws = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt('carol', expIn(2), { tenant_id: 'acme' })}`));
      const refreshed = await ws.request(
        { type: 'Refresh', payload: { token: await tokenExpiringAt('carol', exp, { tenant_id: 'acme' }) } },
        'refreshed',
      );
      assert.equal(refreshed.expires_at, new Date(exp * 1000).toISOString());
      await ws.close();
    });

    const refusedRefreshes: Array<[string, (sub: string, oldExp: number) => Promise<string>]> = [
      ['a token of another sub', (_sub, oldExp) => tokenExpiringAt('mallory', oldExp + 60, { tenant_id: 'acme' })],
      ['a token of another tenant', (sub, oldExp) => tokenExpiringAt(sub, oldExp + 60, { tenant_id: 'globex' })],
      ['a token without tenant_id (tenant default)', (sub, oldExp) => tokenExpiringAt(sub, oldExp + 60)],
      ['a token signed with another secret', (sub, oldExp) =>
        tokenExpiringAt(sub, oldExp + 60, { tenant_id: 'acme' }, 'another-secret-0123456789-abcdefghijklmn')],
      ['an already expired token', (sub) => tokenExpiringAt(sub, Math.floor(Date.now() / 1000) - 5, { tenant_id: 'acme' })],
      ['a string that is not a JWT', async () => 'not-a-jwt'],
    ];

    refusedRefreshes.forEach(([what, makeToken], index) => {
      test(`Refresh with ${what} answers INVALID_TOKEN and the old expiry still closes the connection with 4001`, { timeout: 15_000 }, async () => {
        const sub = `dave-${index}`;
        const oldExp = expIn(2);
        const ws = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt(sub, oldExp, { tenant_id: 'acme' })}`));
        const token = await makeToken(sub, oldExp);
        const error = await ws.request({ type: 'Refresh', payload: { token } }, 'error');
        assert.equal(error.code, 'INVALID_TOKEN');
        assert.equal(typeof error.message, 'string');
        assert.ok(!error.message.includes(token), 'the error echoes the token');
        assert.equal(ws.messages.filter((m) => m.type === 'refreshed').length, 0);
        const closed = await closedAt(ws);
        assert.equal(closed.code, 4001);
        assertClosedOnTime(closed.atMs, oldExp * 1000, 'the WebSocket');
        assert.equal(ws.messages.at(-1).code, 'TOKEN_EXPIRED');
      });
    });

    test('an SSE stream whose token expires gets an error event with TOKEN_EXPIRED and then ends', { timeout: 15_000 }, async () => {
      const exp = expIn(2);
      const sse = await TestSse.open(`${node.httpUrl}/sse?token=${await tokenExpiringAt('erin', exp)}`);
      await sse.ended;
      const endedAt = Date.now();
      assertClosedOnTime(endedAt, exp * 1000, 'the SSE stream');
      const last = sse.events.at(-1)!;
      assert.equal(last.event, 'error');
      assert.equal(last.data.type, 'error');
      assert.equal(last.data.code, 'TOKEN_EXPIRED');
      assert.equal(typeof last.data.message, 'string');
      assert.equal(sse.events.filter((e) => e.event === 'error').length, 1);
      assert.ok(sse.events.some((e) => e.event === 'heartbeat'), 'no heartbeat before expiry');
    });
  });

  test('ara_ws_connections_closed_total{reason="token_expired"} counts each expired WebSocket and SSE connection', { timeout: 15_000 }, async () => {
    const before = await closedCount(node, 'token_expired');
    const exp = expIn(2);
    const ws1 = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt('frank', exp)}`));
    const ws2 = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt('grace', exp)}`));
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${await tokenExpiringAt('heidi', exp)}`);
    // One that does not expire must not be counted.
    const lasting = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt('ivan', exp + 60)}`));
    assert.equal((await ws1.closed).code, 4001);
    assert.equal((await ws2.closed).code, 4001);
    await sse.ended;
    assert.equal(await closedCount(node, 'token_expired'), before + 3);
    assert.equal(lasting.socket.readyState, lasting.socket.OPEN);
    await lasting.close();
    assert.equal(await closedCount(node, 'token_expired'), before + 3);
  });
});

describe('token expiry with JWT_LEEWAY_SECONDS=2 (SPEC §1, §2)', { concurrency: true }, () => {
  let node: TestNode;

  before(async () => {
    node = await startTestNode({
      WEBSOCKET_HEARTBEAT_INTERVAL: String(HEARTBEAT_MS / 1000),
      JWT_LEEWAY_SECONDS: '2',
    });
  });
  after(() => node.stop());

  test('the close comes about two seconds after exp, not at exp', { timeout: 15_000 }, async () => {
    const exp = expIn(1);
    const ws = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt('alice', exp)}`));
    const sse = await TestSse.open(`${node.httpUrl}/sse?token=${await tokenExpiringAt('bob', exp)}`);
    const [closed] = await Promise.all([closedAt(ws), sse.ended]);
    assert.equal(closed.code, 4001);
    assertClosedOnTime(closed.atMs, exp * 1000 + 2000, 'the WebSocket');
    assert.equal(ws.messages.at(-1).code, 'TOKEN_EXPIRED');
    assert.equal(sse.events.at(-1)!.data.code, 'TOKEN_EXPIRED');
  });

  test('a token already past exp but within the leeway is accepted at connect and closed when the leeway runs out', { timeout: 15_000 }, async () => {
    await sleep(1000 - (Date.now() % 1000) + 10);
    const exp = Math.floor(Date.now() / 1000) - 1; // about 1 s ago, inside the 2 s leeway
    const ws = await TestWs.open(node.wsUrl(`?token=${await tokenExpiringAt('carol', exp)}`));
    const closed = await closedAt(ws);
    assert.equal(closed.code, 4001);
    assertClosedOnTime(closed.atMs, exp * 1000 + 2000, 'the WebSocket');
  });
});
