/**
 * Real browser clients (SPEC §4, §5, §6.1, §1 CORS in development): Debian's
 * Chromium, driven by playwright-core, opens the browser's own WebSocket and
 * EventSource against a node and sends through `fetch` from another origin.
 *
 * Chromium is never downloaded: it must be at /usr/bin/chromium (CI installs
 * Debian's package). When it is missing this test fails and says so.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { TEST_API_KEY, startTestNode, type TestNode } from '../helpers/node.ts';

const CHROMIUM = '/usr/bin/chromium';

/** The page under test: records everything both transports receive. */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ara browser clients</title></head>
<body><script>
const params = new URLSearchParams(location.search);
const node = params.get('node');
const token = params.get('token');
const apiKey = params.get('key');
window.received = { ws: [], sse: [] };
window.raw = { ws: [], sse: [] };
window.wsClosed = null;
window.sseErrors = 0;

const ws = new WebSocket(node.replace(/^http/, 'ws') + '/ws?token=' + encodeURIComponent(token));
window.ws = ws;
ws.onmessage = (event) => {
  window.raw.ws.push(event.data);
  window.received.ws.push({ at: performance.now(), message: JSON.parse(event.data) });
};
ws.onclose = (event) => { window.wsClosed = { code: event.code, reason: event.reason }; };

const es = new EventSource(node + '/sse?token=' + encodeURIComponent(token));
window.es = es;
for (const name of ['connected', 'notification', 'heartbeat', 'shutdown', 'error']) {
  es.addEventListener(name, (event) => {
    if (typeof event.data !== 'string') { window.sseErrors++; return; }
    window.raw.sse.push(event.data);
    window.received.sse.push({ at: performance.now(), event: name, id: event.lastEventId, data: JSON.parse(event.data) });
  });
}

window.sendViaFetch = async (body) => {
  const sentAt = performance.now();
  const response = await fetch(node + '/api/v1/notifications/send', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': apiKey },
    body: JSON.stringify(body),
  });
  return { sentAt, status: response.status, json: await response.json() };
};
</script></body></html>`;

describe('browser WebSocket, EventSource and fetch against a node (SPEC §4, §5, §6.1)', () => {
  let node: TestNode;
  let pageServer: Server;
  let browser: Browser | undefined;
  let page: Page;

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `Chromium not found at ${CHROMIUM}: install Debian's "chromium" package (apt-get install chromium). ` +
          'This test never downloads a browser.',
      );
    }
    node = await startTestNode({
      WEBSOCKET_HEARTBEAT_INTERVAL: '1',
      WEBSOCKET_CONNECTION_TIMEOUT: '2.5',
      WEBSOCKET_CLEANUP_INTERVAL: '0.5',
    });
    pageServer = createServer((req, res) => {
      if (req.url?.startsWith('/index.html')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(PAGE);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
    const pagePort = (pageServer.address() as AddressInfo).port;

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      timeout: 30_000,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    page = await browser.newPage();
    const token = await node.token('browser-user');
    const query = new URLSearchParams({ node: node.httpUrl, token, key: TEST_API_KEY });
    await page.goto(`http://127.0.0.1:${pagePort}/index.html?${query}`);
    // Both transports announce themselves with `connected`.
    await page.waitForFunction(
      () => {
        const r = (globalThis as any).received;
        return r.ws.some((m: any) => m.message.type === 'connected') && r.sse.some((e: any) => e.event === 'connected');
      },
      undefined,
      { timeout: 10_000 },
    );
  });

  after(async () => {
    await browser?.close();
    if (pageServer) await new Promise((resolve) => pageServer.close(resolve));
    await node?.stop();
  });

  test('a cross-origin fetch send reaches the browser over WebSocket and SSE within one second, with the exact JSON', async () => {
    const payload = { zeta: 1, alpha: { nested: [1, 'two', null] }, mid: 'ünïcode ✓' };
    const body = {
      target_user_id: 'browser-user',
      event_type: 'order.shipped',
      payload,
      priority: 'High',
      ttl: 60,
      correlation_id: 'corr-browser-1',
    };
    const sent = await page.evaluate((b) => (globalThis as any).sendViaFetch(b), body);
    assert.equal(sent.status, 200, JSON.stringify(sent.json));
    assert.equal(sent.json.success, true);
    assert.equal(sent.json.delivered_to, 2);
    assert.equal(sent.json.failed, 0);

    await page.waitForFunction(
      () => {
        const r = (globalThis as any).received;
        return r.ws.some((m: any) => m.message.type === 'notification') && r.sse.some((e: any) => e.event === 'notification');
      },
      undefined,
      { timeout: 3000 },
    );
    const { received, raw } = await page.evaluate(() => ({ received: (globalThis as any).received, raw: (globalThis as any).raw }));
    const wsEntry = received.ws.find((m: any) => m.message.type === 'notification');
    const sseEntry = received.sse.find((e: any) => e.event === 'notification');
    assert.ok(wsEntry.at - sent.sentAt < 1000, `WS delivery took ${wsEntry.at - sent.sentAt} ms`);
    assert.ok(sseEntry.at - sent.sentAt < 1000, `SSE delivery took ${sseEntry.at - sent.sentAt} ms`);

    const message = wsEntry.message;
    assert.match(message.occurred_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
    assert.ok(Math.abs(Date.parse(message.occurred_at) - Date.now()) < 60_000, 'occurred_at is now');
    assert.deepEqual(message, {
      type: 'notification',
      id: sent.json.notification_id,
      occurred_at: message.occurred_at,
      event_type: 'order.shipped',
      payload,
      metadata: { source: 'http-api', priority: 'High', ttl: 60, correlation_id: 'corr-browser-1' },
    });
    assert.equal(sseEntry.id, sent.json.notification_id);
    assert.deepEqual(sseEntry.data, message);

    // Payload key order is preserved as sent (SPEC §4), on both transports.
    for (const text of [raw.ws.find((t: string) => t.includes('"notification"')), raw.sse.find((t: string) => t.includes('"notification"'))]) {
      assert.deepEqual(Object.keys(JSON.parse(text).payload), ['zeta', 'alpha', 'mid']);
    }
    assert.equal(received.ws.filter((m: any) => m.message.type === 'notification').length, 1);
    assert.equal(received.sse.filter((e: any) => e.event === 'notification').length, 1);
  });

  test("the browser's WebSocket stays open across heartbeats: its automatic pongs count as activity (SPEC §4)", async () => {
    // Heartbeat every 1 s, idle timeout 2.5 s, sweep every 0.5 s: without the
    // browser's pongs the server would close the silent socket with 4002.
    const before = await page.evaluate(() => (globalThis as any).received.ws.length);
    await new Promise((resolve) => setTimeout(resolve, 4000));
    const state = await page.evaluate(() => ({
      readyState: (globalThis as any).ws.readyState,
      closed: (globalThis as any).wsClosed,
      ws: (globalThis as any).received.ws.map((m: any) => m.message),
      sse: (globalThis as any).received.sse,
      sseReadyState: (globalThis as any).es.readyState,
    }));
    assert.equal(state.closed, null, `closed: ${JSON.stringify(state.closed)}`);
    assert.equal(state.readyState, 1);
    const heartbeats = state.ws.slice(before).filter((m: any) => m.type === 'heartbeat');
    assert.ok(heartbeats.length >= 2, `heartbeats in 4 s: ${heartbeats.length}`);
    for (const heartbeat of heartbeats) assert.deepEqual(heartbeat, { type: 'heartbeat' });
    // SSE gets its own heartbeat event and stays open too (SPEC §5).
    assert.equal(state.sseReadyState, 1);
    const sseHeartbeat = state.sse.find((e: any) => e.event === 'heartbeat');
    assert.ok(sseHeartbeat, 'an SSE heartbeat event');
    assert.deepEqual(Object.keys(sseHeartbeat.data).sort(), ['timestamp', 'type']);
    assert.equal(sseHeartbeat.data.type, 'heartbeat');
    assert.equal(node.node.hub.connectionCount, 2);
  });
});
