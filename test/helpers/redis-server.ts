/**
 * Throwaway `redis-server` processes for tests that kill, freeze, restart or
 * CLIENT KILL Redis, so the shared Redis on 6379 is never touched, and
 * `redis-cli` as a Redis client that is not this project's code.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/** A redis-server on 127.0.0.1:`port`; `dataDir` turns on an fsync-always append-only file there. */
export function spawnRedisServer(port: number, dataDir: string | null = null): ChildProcess {
  const persistence = dataDir === null
    ? ['--appendonly', 'no']
    : ['--appendonly', 'yes', '--appendfsync', 'always', '--dir', dataDir];
  return spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', ...persistence], { stdio: 'ignore' });
}

/**
 * Runs redis-cli and resolves with its trimmed output; rejects when it
 * exits non-zero. `stdin` becomes the last argument (-x), so any size and
 * any bytes pass unchanged.
 */
export function redisCli(port: number, args: string[], stdin?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('redis-cli', ['-p', String(port), ...(stdin === undefined ? [] : ['-x']), ...args], {
      stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`redis-cli ${args.join(' ')}: ${code} ${err}`))));
    if (stdin !== undefined) {
      // A redis-cli that exits early (server gone) must not turn into an uncaught EPIPE.
      child.stdin!.on('error', (error) => reject(error));
      child.stdin!.end(stdin);
    }
  });
}

/** Resolves once the server on `port` answers PING; rejects after `timeoutMs`. */
export async function untilPong(port: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await redisCli(port, ['PING']).catch(() => '')) !== 'PONG') {
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not answer`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export function processExited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}
