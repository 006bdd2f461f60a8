/**
 * Two figures for the core (issue 2's closing note), measured against a
 * real server process started from dist/:
 *
 * - resident memory of the server with N idle authenticated WebSocket
 *   connections (VmRSS from /proc, before and after connecting);
 * - the time from a broadcast request leaving the client to the last of the
 *   N clients receiving it (median of several rounds).
 *
 * Usage: npm run build && npx tsx bench/core-figures.ts [--clients 1000] [--rounds 5]
 * Clients run in this process; the server runs alone in its own.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import WebSocket from 'ws';

const SECRET = 'bench-secret-0123456789-0123456789-abc';
const API_KEY = 'bench-operator-key-0123456789';

const { values } = parseArgs({
  options: { clients: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '5' } },
});
const clientCount = Number(values.clients);
const rounds = Number(values.rounds);

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

async function token(sub: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(SECRET));
}

async function main(): Promise<void> {
  const port = await freePort();
  const server = spawn(process.execPath, ['dist/cli.js', 'serve'], {
    env: {
      ...process.env,
      SERVER_HOST: '127.0.0.1',
      SERVER_PORT: String(port),
      JWT_SECRET: SECRET,
      API_KEY,
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
      WEBSOCKET_MAX_CONNECTIONS: '0',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  try {
    await waitForHealth(port);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const rssBefore = rssBytes(server.pid!);
    const sockets = await connectAll(port);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const rssAfter = rssBytes(server.pid!);
    const durations: number[] = [];
    for (let round = 0; round < rounds; round++) durations.push(await broadcastRound(port, sockets));
    durations.sort((a, b) => a - b);
    const report = {
      clients: clientCount,
      server_rss_before_mb: +(rssBefore / 1048576).toFixed(1),
      server_rss_with_idle_clients_mb: +(rssAfter / 1048576).toFixed(1),
      rss_per_connection_kb: +((rssAfter - rssBefore) / clientCount / 1024).toFixed(2),
      broadcast_to_all_ms: { median: durations[Math.floor(durations.length / 2)], all: durations },
    };
    console.log(JSON.stringify(report, null, 2));
    for (const socket of sockets) socket.terminate();
  } finally {
    server.kill('SIGTERM');
  }
}

async function waitForHealth(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('server did not start');
}

async function connectAll(port: number): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  for (let i = 0; i < clientCount; i += 100) {
    const batch = Array.from({ length: Math.min(100, clientCount - i) }, async (_, j) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?token=${await token(`user-${i + j}`)}`);
      await new Promise((resolve, reject) => {
        ws.once('message', resolve);
        ws.once('error', reject);
      });
      return ws;
    });
    sockets.push(...(await Promise.all(batch)));
  }
  return sockets;
}

async function broadcastRound(port: number, sockets: WebSocket[]): Promise<number> {
  let remaining = sockets.length;
  const start = performance.now();
  const allReceived = new Promise<number>((resolve) => {
    for (const socket of sockets) {
      socket.once('message', () => {
        if (--remaining === 0) resolve(performance.now() - start);
      });
    }
  });
  const response = await fetch(`http://127.0.0.1:${port}/api/v1/notifications/broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
    body: JSON.stringify({ event_type: 'bench', payload: { text: 'x'.repeat(200) } }),
  });
  const body = (await response.json()) as { delivered_to: number };
  if (body.delivered_to !== sockets.length) throw new Error(`delivered_to ${body.delivered_to}`);
  return +(await allReceived).toFixed(2);
}

await main();
