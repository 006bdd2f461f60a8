/**
 * A few Chrome DevTools Protocol calls to a server started with
 * `--inspect=127.0.0.1:0`, the same way for all three servers:
 *
 * - a full garbage collection before reading memory, so "heap per
 *   connection" is live objects, not whatever garbage happened to be around;
 * - a CPU profile of exactly a measuring window (`--profile`).
 */
import WebSocket from 'ws';

export class Inspector {
  readonly #ws: WebSocket;
  readonly #waiting = new Map<number, { resolve(value: any): void; reject(error: Error): void }>();
  #nextId = 1;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.on('message', (data) => {
      const message = JSON.parse(data.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      if (message.id === undefined) return;
      const waiter = this.#waiting.get(message.id);
      if (!waiter) return;
      this.#waiting.delete(message.id);
      if (message.error) waiter.reject(new Error(message.error.message));
      else waiter.resolve(message.result);
    });
    ws.on('close', () => {
      for (const [, waiter] of this.#waiting) waiter.reject(new Error('inspector connection closed'));
      this.#waiting.clear();
    });
  }

  static open(url: string, timeoutMs = 5000): Promise<Inspector> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 512 * 1024 * 1024 });
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`inspector ${url} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      ws.once('open', () => {
        clearTimeout(timer);
        resolve(new Inspector(ws));
      });
      ws.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  call<T = any>(method: string, params: object = {}, timeoutMs = 30_000): Promise<T> {
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`inspector ${method} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(id, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  close(): void {
    this.#ws.close();
  }
}

/** Two full collections (the second catches what finalisers of the first released). */
export async function collectGarbage(url: string): Promise<void> {
  const inspector = await Inspector.open(url);
  try {
    await inspector.call('HeapProfiler.collectGarbage');
    await inspector.call('HeapProfiler.collectGarbage');
  } finally {
    inspector.close();
  }
}

export interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }>;
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Top functions by self time, and self time by file, as markdown. */
export function summariseProfile(profile: CpuProfile, title: string, top = 30): string {
  const byNode = new Map<number, number>();
  profile.samples.forEach((id, i) => byNode.set(id, (byNode.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const node of profile.nodes) {
    const self = byNode.get(node.id) ?? 0;
    if (self === 0) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idle += self;
      continue;
    }
    total += self;
    const file = shortUrl(url) || functionName;
    const key = `${functionName || '(anonymous)'} — ${file}${url ? `:${lineNumber + 1}` : ''}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + self);
    byFile.set(file, (byFile.get(file) ?? 0) + self);
  }
  const rows = (map: Map<string, number>, n: number) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, micros]) => `| ${name.replace(/\|/g, '\\|')} | ${(micros / 1000).toFixed(1)} | ${((micros / total) * 100).toFixed(1)} |`)
      .join('\n');
  const wall = (profile.endTime - profile.startTime) / 1000;
  return [
    `# ${title}`,
    '',
    `Profile of ${wall.toFixed(0)} ms wall time: ${(total / 1000).toFixed(0)} ms busy on the main thread, ${(idle / 1000).toFixed(0)} ms idle.`,
    '',
    `## Top ${top} functions by self time`,
    '',
    '| Function — file:line | self ms | % of busy |',
    '|---|--:|--:|',
    rows(byFunction, top),
    '',
    '## Self time by file',
    '',
    '| File | self ms | % of busy |',
    '|---|--:|--:|',
    rows(byFile, 25),
    '',
  ].join('\n');
}

function shortUrl(url: string): string {
  if (!url) return '';
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm);
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return url.slice(dist + 1);
  return url.replace(/^file:\/\//, '');
}
