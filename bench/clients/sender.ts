/**
 * The sender process of the personal-message scenario: a closed loop of
 * user-targeted sends, `concurrency` requests in flight on keep-alive
 * sockets (spread over the given ports), each to the next user in turn,
 * each carrying its send timestamp in the payload. Runs until told to stop.
 * Forked by bench/run.ts and driven over IPC.
 */
import { HttpClient } from '../lib/http-client.ts';
import { serveCommands, type SenderCounters, type SenderStartSpec } from '../lib/ipc.ts';
import { nowUs, userBody, userId } from '../lib/wire.ts';
import { cpuMicros } from '../proc.ts';

const counters: Omit<SenderCounters, 'cpuMicros'> = { sent: 0, ok: 0, non2xx: 0, errors: 0, firstProblem: null };
let running = false;
let loops: Promise<void>[] = [];
let clients: HttpClient[] = [];

async function loop(client: HttpClient, spec: SenderStartSpec, offset: number): Promise<void> {
  let next = offset;
  while (running) {
    const user = userId(next % spec.users);
    next += spec.concurrency;
    counters.sent++;
    try {
      const response = await client.request('POST', spec.path, userBody(user, nowUs()));
      if (response.status === 200) counters.ok++;
      else {
        counters.non2xx++;
        counters.firstProblem ??= `HTTP ${response.status}: ${response.body.toString('utf8', 0, 300)}`;
      }
    } catch (error) {
      counters.errors++;
      counters.firstProblem ??= error instanceof Error ? error.message : String(error);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

function snapshot(): SenderCounters {
  return { ...counters, cpuMicros: cpuMicros(process.pid) };
}

serveCommands(async (message) => {
  switch (message.cmd) {
    case 'start': {
      const spec = message.spec as SenderStartSpec;
      Object.assign(counters, { sent: 0, ok: 0, non2xx: 0, errors: 0, firstProblem: null });
      running = true;
      const perPort = Math.max(1, Math.ceil(spec.concurrency / spec.ports.length));
      clients = spec.ports.map((port) => new HttpClient('127.0.0.1', port, { sockets: perPort, headers: spec.headers, timeoutMs: 20_000 }));
      await Promise.all(clients.map((client) => client.openAll()));
      loops = Array.from({ length: spec.concurrency }, (_, i) => loop(clients[i % clients.length]!, spec, i));
      return snapshot();
    }
    case 'counters':
      return snapshot();
    case 'stop': {
      running = false;
      await Promise.race([Promise.all(loops), new Promise((resolve) => setTimeout(resolve, 5000))]);
      for (const client of clients) client.close();
      return snapshot();
    }
    default:
      throw new Error(`unknown command ${message.cmd}`);
  }
});
