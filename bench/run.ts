/**
 * `npm run bench`: the side-by-side benchmark (issue 6). Each scenario runs
 * against three servers started here on loopback, one at a time:
 *
 * - service:  this project, from dist/ (`npm run bench` builds first);
 * - limit:    bench/servers/limit.ts, raw `ws` + Fastify, no auth, pre-serialised messages;
 * - socketio: bench/servers/socketio.ts, Socket.IO 4 rooms and `io.to(room).emit`.
 *
 * Load comes from child processes (bench/clients/*.ts) with their own file
 * descriptor limits, opening connections from 127.0.0.2…127.0.0.9. The
 * figures that matter most on a 2-core machine, where clients and server
 * share the CPU, are the server's own CPU time per delivery (/proc) and
 * latencies at a fixed rate; throughput is reported beside them.
 *
 * Scenarios: fanout (fixed rate, then highest sustained rate), personal
 * (user-targeted sends), http (autocannon), memory and connect (one pass:
 * idle connections opened as fast as possible, then measured), cluster
 * (3 service nodes on Redis). Progress goes to stderr; results to
 * bench/results/latest.{json,md} and latency.svg. Every phase has a time
 * limit; on an error or a signal every child is killed and what was
 * measured is still written, with the failure noted.
 *
 * `node --import tsx bench/run.ts --help` lists the flags.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { Histogram, type HistogramData } from './lib/histogram.ts';
import { fetchJson, HttpClient } from './lib/http-client.ts';
import { collectGarbage, Inspector, summariseProfile, type CpuProfile } from './lib/inspector.ts';
import { ChildHandle, type ConnectResult, type ConnectSpec, type HistogramReply, type SenderCounters, type SenderStartSpec } from './lib/ipc.ts';
import {
  emptyResults,
  median,
  series,
  type ConnectRep,
  type FixedRep,
  type HttpRep,
  type MaxRep,
  type MemoryRep,
  type Results,
  type ServerName,
} from './lib/results.ts';
import { API_KEY, channelBody, JWT_SECRET, nowUs, PAYLOAD_BYTES, SEND_PATHS, userBody } from './lib/wire.ts';
import { cpuMicros, cpuMicrosOf, cpuTimes, machineBusyMicros, machineInfo, rssBytes } from './proc.ts';
import { writeReport } from './report.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const TSX = import.meta.resolve('tsx');
const CHILD_ARGV = ['--import', TSX];
const AUTOCANNON = join(REPO, 'node_modules', 'autocannon', 'autocannon.js');
const ALL_SERVERS: ServerName[] = ['service', 'limit', 'socketio'];
const ALL_SCENARIOS = ['fanout', 'personal', 'http', 'memory', 'connect', 'cluster'] as const;
/** Connections per client process: well under the 20,000 descriptors each process may hold. */
const PER_CLIENT_PROCESS = 5000;

// ------------------------------------------------------------------ flags

const HELP = `Usage: npm run bench -- [flags]

  --quick                 tiny sizes, 1 repetition, no cluster unless --cluster (CI smoke check, < 1 min)
  --scenarios LIST        comma list of ${ALL_SCENARIOS.join(',')} (default: all)
  --servers LIST          comma list of ${ALL_SERVERS.join(',')} (default: all)
  --fanout N              connections on the fan-out channel (10000; quick 500)
  --users N               users targeted by personal messages, one connection each (10000; quick 300)
  --idle N                idle connections for memory and connect rate (15000; quick 1000)
  --rate N                fixed fan-out rate, notifications/s (5; quick 20)
  --duration S            measuring window per phase, seconds (5; quick 1.5)
  --warmup S              warm-up before each window, seconds (1; quick 0.5)
  --reps N                repetitions; judged figures are medians (3; quick 1)
  --window N              fan-out notifications outstanding at the highest rate (max(3, 20000/fanout))
  --concurrency N         HTTP requests in flight for personal sends and autocannon (32)
  --connect-concurrency N handshakes in flight per client process (64)
  --cluster / --no-cluster  force the cluster scenario on / off
  --profile               CPU-profile the service (or each of --servers) in the fan-out, personal, HTTP and connect
                          windows (report in bench/results/profile/)
  --out DIR               where to write the report (bench/results)
  --max-minutes M         hard limit for the whole run (14; quick 2)`;

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    scenarios: { type: 'string' },
    servers: { type: 'string' },
    fanout: { type: 'string' },
    users: { type: 'string' },
    idle: { type: 'string' },
    rate: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    reps: { type: 'string' },
    window: { type: 'string' },
    concurrency: { type: 'string' },
    'connect-concurrency': { type: 'string' },
    cluster: { type: 'boolean' },
    'no-cluster': { type: 'boolean' },
    profile: { type: 'boolean', default: false },
    out: { type: 'string' },
    'max-minutes': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (flags.help) {
  process.stdout.write(`${HELP}\n`);
  process.exit(0);
}

const quick = flags.quick === true;
function num(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0) {
    process.stderr.write(`--${name} must be a non-negative number (got ${value})\n`);
    process.exit(2);
  }
  return parsed;
}
function list<T extends string>(name: string, value: string | undefined, all: readonly T[]): T[] {
  if (value === undefined) return [...all];
  const items = value.split(',').map((s) => s.trim()).filter(Boolean) as T[];
  const unknown = items.filter((item) => !all.includes(item));
  if (unknown.length > 0) {
    process.stderr.write(`--${name}: unknown ${unknown.join(', ')} (known: ${all.join(', ')})\n`);
    process.exit(2);
  }
  return items;
}

const options = {
  quick,
  fanout: Math.round(num('fanout', flags.fanout, quick ? 500 : 10_000)),
  users: Math.round(num('users', flags.users, quick ? 300 : 10_000)),
  idle: Math.round(num('idle', flags.idle, quick ? 1000 : 15_000)),
  rate: num('rate', flags.rate, quick ? 20 : 5),
  duration: num('duration', flags.duration, quick ? 1.5 : 5),
  warmup: num('warmup', flags.warmup, quick ? 0.5 : 1),
  reps: Math.max(1, Math.round(num('reps', flags.reps, quick || flags.profile ? 1 : 3))),
  window: 0, // set below from the fan-out size
  concurrency: Math.max(1, Math.round(num('concurrency', flags.concurrency, 32))),
  connect_concurrency: Math.max(1, Math.round(num('connect-concurrency', flags['connect-concurrency'], 64))),
  max_minutes: num('max-minutes', flags['max-minutes'], quick ? 2 : 14),
  payload_bytes: PAYLOAD_BYTES,
  profile: flags.profile === true,
};
// Enough notifications outstanding that the server always has work while clients report progress (every 10 ms).
options.window = Math.max(1, Math.round(num('window', flags.window, Math.max(3, Math.ceil(20_000 / Math.max(1, options.fanout))))));
let scenarios = list('scenarios', flags.scenarios, ALL_SCENARIOS);
const servers = list('servers', flags.servers, ALL_SERVERS);
if (flags['no-cluster'] || (quick && flags.cluster !== true && flags.scenarios === undefined)) scenarios = scenarios.filter((s) => s !== 'cluster');
if (flags.cluster === true && !scenarios.includes('cluster')) scenarios.push('cluster');
if (options.profile && flags.scenarios === undefined) scenarios = ['fanout', 'personal', 'http', 'connect'];
const outDir = flags.out ?? join(REPO, 'bench', 'results', ...(options.profile ? ['profile'] : []));
const profileServers: ServerName[] = options.profile && flags.servers === undefined ? ['service'] : servers;

// ------------------------------------------------------------------ progress, children, abort

const startedAt = Date.now();
function log(message: string): void {
  const elapsed = ((Date.now() - startedAt) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[${elapsed}s] ${message}\n`);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${(ms / 1000).toFixed(0)} s`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const liveChildren = new Set<{ kill(): void }>();
function killAllChildren(): void {
  for (const child of liveChildren) {
    try {
      child.kill();
    } catch {
      // already gone
    }
  }
  liveChildren.clear();
}

const workDir = mkdtempSync(join(os.tmpdir(), 'ara-bench-'));
const results: Results = emptyResults(`npm run bench --${process.argv.slice(2).length > 0 ? ` ${process.argv.slice(2).join(' ')}` : ''}`, { ...options, scenarios, servers }, machineInfo());
try {
  const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  results.revision = `${head}${dirty ? '+modified src' : ''}`;
} catch {
  // not a git checkout
}
let finished = false;

function finish(code: number): never {
  if (!finished) {
    finished = true;
    killAllChildren();
    results.duration_seconds = Math.round((Date.now() - startedAt) / 1000);
    results.machine.load_average_at_end = os.loadavg().map((x) => +x.toFixed(2));
    results.complete = results.failures.length === 0;
    try {
      const paths = writeReport(results, outDir);
      log(`report written: ${paths.md}, ${paths.json}, ${paths.svg}`);
    } catch (error) {
      process.stderr.write(`could not write the report: ${String(error)}\n`);
    }
    rmSync(workDir, { recursive: true, force: true });
  }
  process.exit(code);
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    log(`${signal}: stopping every child process and writing what was measured`);
    results.failures.push(`interrupted by ${signal}`);
    finish(130);
  });
}
process.on('exit', () => killAllChildren());
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (error: unknown) => {
    results.failures.push(`${event}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    log(`${event}: ${String(error)}`);
    finish(1);
  });
}

const hardLimit = setTimeout(() => {
  log(`hard time limit of ${options.max_minutes} minutes reached`);
  results.failures.push(`run stopped at the hard limit of ${options.max_minutes} minutes`);
  finish(1);
}, options.max_minutes * 60_000);
hardLimit.unref();

function fail(where: string, error: unknown, server?: ServerHandle | ServerHandle[]): void {
  const message = error instanceof Error ? error.message : String(error);
  const handles = server === undefined ? [] : Array.isArray(server) ? server : [server];
  const tails = handles
    .filter((h) => h.exited || h.tail.length > 0)
    .map((h) => `${h.label}${h.exited ? ` exited (${h.exitInfo})` : ''}; last output: ${h.tail.slice(-5).join(' ⏎ ').slice(0, 800) || '(none)'}`);
  const text = `${where}: ${message}${tails.length > 0 ? ` [${tails.join('; ')}]` : ''}`;
  results.failures.push(text);
  log(`FAILED ${text}`);
}

// ------------------------------------------------------------------ servers

interface ServerHandle {
  kind: ServerName;
  label: string;
  port: number;
  pid: number;
  process: ChildProcess;
  tail: string[];
  inspectorUrl: string | null;
  exited: boolean;
  exitInfo: string;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function serviceEnv(port: number): Record<string, string> {
  return {
    RUN_MODE: 'development',
    SERVER_HOST: '127.0.0.1',
    SERVER_PORT: String(port),
    JWT_SECRET,
    API_KEY,
    LOG_LEVEL: 'warn',
    LOG_FORMAT: 'json',
    WEBSOCKET_MAX_CONNECTIONS: '0',
    WEBSOCKET_MAX_CONNECTIONS_PER_USER: '0',
    RATELIMIT_ENABLED: 'false',
    SHUTDOWN_GRACE_SECONDS: '2',
  };
}

interface StartOptions {
  env?: Record<string, string>;
  inspect?: boolean;
  label?: string;
}

async function startServer(kind: ServerName, start: StartOptions = {}): Promise<ServerHandle> {
  const port = await freePort();
  const nodeFlags = start.inspect ? ['--inspect=127.0.0.1:0'] : [];
  const base = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? workDir, NODE_ENV: 'production' };
  const args =
    kind === 'service'
      ? [...nodeFlags, join(REPO, 'dist', 'cli.js'), 'serve']
      : [...nodeFlags, ...CHILD_ARGV, join(REPO, 'bench', 'servers', `${kind}.ts`)];
  const env = kind === 'service' ? { ...base, ...serviceEnv(port), ...start.env } : { ...base, PORT: String(port), ...start.env };
  const child = spawn(process.execPath, args, { cwd: workDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const handle: ServerHandle = {
    kind,
    label: start.label ?? kind,
    port,
    pid: child.pid ?? -1,
    process: child,
    tail: [],
    inspectorUrl: null,
    exited: false,
    exitInfo: '',
  };
  const killer = { kill: () => child.kill('SIGKILL') };
  liveChildren.add(killer);
  const onOutput = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      const inspector = /Debugger listening on (ws:\/\/\S+)/.exec(line);
      if (inspector) handle.inspectorUrl = inspector[1]!;
      else if (!line.startsWith('For help, see')) handle.tail.push(line.slice(0, 400));
      if (handle.tail.length > 30) handle.tail.shift();
    }
  };
  child.stdout!.on('data', onOutput);
  child.stderr!.on('data', onOutput);
  child.on('exit', (code, signal) => {
    handle.exited = true;
    handle.exitInfo = signal ?? `code ${code}`;
    liveChildren.delete(killer);
  });
  const deadline = Date.now() + 20_000;
  while (true) {
    if (handle.exited) throw new Error(`${handle.label} exited during start (${handle.exitInfo}): ${handle.tail.slice(-5).join(' ⏎ ')}`);
    try {
      const health = await fetchJson(port, '/health', {}, 1000);
      if (health.status === 200 && (!start.inspect || handle.inspectorUrl !== null)) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${handle.label} was not healthy within 20 s: ${handle.tail.slice(-5).join(' ⏎ ')}`);
    }
    await sleep(100);
  }
  return handle;
}

async function stopServer(handle: ServerHandle): Promise<void> {
  if (handle.exited) return;
  const exited = new Promise<void>((resolve) => handle.process.once('exit', () => resolve()));
  handle.process.kill('SIGTERM');
  const ok = await Promise.race([exited.then(() => true), sleep(8000).then(() => false)]);
  if (!ok) {
    handle.process.kill('SIGKILL');
    await Promise.race([exited, sleep(2000)]);
  }
}

async function serverConnections(handle: ServerHandle): Promise<number> {
  if (handle.kind === 'service') {
    const stats = await fetchJson(handle.port, '/stats', { 'X-API-Key': API_KEY });
    return Number(stats.json?.connections?.total_connections);
  }
  return Number((await fetchJson(handle.port, '/stats')).json?.connections);
}

async function serverHeapUsed(handle: ServerHandle): Promise<number> {
  if (handle.kind === 'service') {
    const metrics = await fetchJson(handle.port, '/metrics');
    const match = /^nodejs_heap_size_used_bytes(?:\{[^}]*\})? ([0-9.e+]+)/m.exec(metrics.text);
    if (!match) throw new Error('no nodejs_heap_size_used_bytes in /metrics');
    return Number(match[1]);
  }
  return Number((await fetchJson(handle.port, '/stats')).json?.memory?.heapUsed);
}

/** Waits until the servers together hold `expected` connections; returns what they hold at the end. */
async function waitConnections(handles: ServerHandle[], expected: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let count = -1;
  while (Date.now() < deadline) {
    count = 0;
    for (const handle of handles) count += await serverConnections(handle);
    if (count === expected) return count;
    await sleep(100);
  }
  return count;
}

// ------------------------------------------------------------------ client processes

let addressRotation = 0;

class Fleet {
  readonly handles: ChildHandle[];
  readonly #latest: number[];
  /** Subscribed connections per process, for the per-process flow control of the fan-out. */
  #subscribers: number[];
  total = 0;
  onProgress: () => void = () => {};
  #connecting: Array<{ ready: number; failed: number }>;
  #lastConnectLog = 0;
  #connectLabel = '';
  #connectTotal = 0;

  constructor(processes: number, label: string) {
    this.handles = Array.from({ length: processes }, (_, i) => {
      const handle = new ChildHandle(join(REPO, 'bench', 'clients', 'ws-clients.ts'), CHILD_ARGV, `${label} client ${i + 1}`);
      liveChildren.add(handle);
      return handle;
    });
    this.#latest = this.handles.map(() => 0);
    this.#subscribers = this.handles.map(() => 0);
    this.#connecting = this.handles.map(() => ({ ready: 0, failed: 0 }));
    this.handles.forEach((handle, i) => {
      handle.onEvent = (event) => {
        if (event.event === 'progress') {
          this.total += event.notifications - this.#latest[i]!;
          this.#latest[i] = event.notifications;
          this.onProgress();
        } else if (event.event === 'connecting') {
          this.#connecting[i] = { ready: event.ready, failed: event.failed };
          if (Date.now() - this.#lastConnectLog >= 1000) {
            this.#lastConnectLog = Date.now();
            const ready = this.#connecting.reduce((sum, c) => sum + c.ready, 0);
            const failed = this.#connecting.reduce((sum, c) => sum + c.failed, 0);
            log(`${this.#connectLabel}: ${ready.toLocaleString('en-US')}/${this.#connectTotal.toLocaleString('en-US')} connected${failed > 0 ? `, ${failed} failed` : ''}`);
          }
        }
      };
    });
  }

  static forConnections(count: number, label: string): Fleet {
    return new Fleet(Math.max(2, Math.ceil(count / PER_CLIENT_PROCESS)), label);
  }

  get pids(): number[] {
    return this.handles.map((h) => h.process.pid ?? -1);
  }

  /** Opens `count` connections spread over the processes; tokens are minted before the clock starts. */
  async connect(kind: ServerName, ports: number[], count: number, subscribeBelow: number, label: string): Promise<ConnectResult & { seconds: number }> {
    this.#connectLabel = label;
    this.#connectTotal = count;
    this.#connecting = this.handles.map(() => ({ ready: 0, failed: 0 }));
    const processes = this.handles.length;
    const timeoutMs = Math.max(30_000, count * 10);
    let first = 0;
    const specs: ConnectSpec[] = this.handles.map((_, i) => {
      const share = Math.floor(count / processes) + (i < count % processes ? 1 : 0);
      const spec: ConnectSpec = {
        kind,
        ports,
        first,
        count: share,
        subscribeBelow,
        localAddress: `127.0.0.${2 + ((addressRotation + i) % 8)}`,
        concurrency: options.connect_concurrency,
        timeoutMs,
      };
      first += share;
      return spec;
    });
    this.#subscribers = specs.map((spec) => Math.max(0, Math.min(spec.first + spec.count, subscribeBelow) - spec.first));
    addressRotation += processes;
    await Promise.all(this.handles.map((handle, i) => handle.call('prepare', { spec: specs[i] }, 120_000)));
    const replies = await Promise.all(this.handles.map((handle) => handle.call<ConnectResult>('connect', {}, timeoutMs + 10_000)));
    const merged: ConnectResult = { ready: 0, failed: 0, errors: [], startUs: Infinity, endUs: 0 };
    for (const reply of replies) {
      merged.ready += reply.ready;
      merged.failed += reply.failed;
      for (const error of reply.errors) if (merged.errors.length < 5 && !merged.errors.includes(error)) merged.errors.push(error);
      merged.startUs = Math.min(merged.startUs, reply.startUs);
      if (reply.ready > 0) merged.endUs = Math.max(merged.endUs, reply.endUs);
    }
    return { ...merged, seconds: merged.endUs > merged.startUs ? (merged.endUs - merged.startUs) / 1e6 : NaN };
  }

  /** Per-process notification counts now, to measure from. */
  mark(): number[] {
    return [...this.#latest];
  }

  /**
   * Channel notifications every process has fully received since `mark`
   * (the slowest process decides, so no process falls behind unbounded).
   */
  notificationsDone(mark: number[]): number {
    let done = Infinity;
    this.#subscribers.forEach((subscribers, i) => {
      if (subscribers > 0) done = Math.min(done, Math.floor((this.#latest[i]! - mark[i]!) / subscribers));
    });
    return done === Infinity ? 0 : done;
  }

  async progress(on: boolean): Promise<void> {
    await Promise.all(this.handles.map((handle) => handle.call('progress', { on })));
  }

  async reset(): Promise<void> {
    await Promise.all(this.handles.map((handle) => handle.call('reset')));
  }

  async histograms(): Promise<{ histogram: HistogramData[]; unexpectedCloses: number; closeCodes: Record<string, number> }> {
    const replies = await Promise.all(this.handles.map((handle) => handle.call<HistogramReply>('histogram')));
    const closeCodes: Record<string, number> = {};
    for (const reply of replies) for (const [code, n] of Object.entries(reply.counters.closeCodes)) closeCodes[code] = (closeCodes[code] ?? 0) + n;
    return {
      histogram: replies.map((r) => r.histogram),
      unexpectedCloses: replies.reduce((sum, r) => sum + r.counters.unexpectedCloses, 0),
      closeCodes,
    };
  }

  async close(): Promise<void> {
    await Promise.all(this.handles.map((handle) => handle.call('close', {}, 15_000)));
  }

  /** Resolves when `total` reaches `target` (true) or stops moving for `stallMs` / passes `maxMs` (false). */
  waitTotal(target: number, stallMs: number, maxMs: number): Promise<{ reached: boolean; atUs: number }> {
    return new Promise((resolve) => {
      let lastTotal = this.total;
      let lastChange = Date.now();
      const started = Date.now();
      const check = () => {
        if (this.total >= target) {
          done({ reached: true, atUs: nowUs() });
        } else if (this.total !== lastTotal) {
          lastTotal = this.total;
          lastChange = Date.now();
        }
      };
      const timer = setInterval(() => {
        check();
        if (Date.now() - lastChange > stallMs || Date.now() - started > maxMs) done({ reached: false, atUs: nowUs() });
      }, 50);
      const previous = this.onProgress;
      const done = (value: { reached: boolean; atUs: number }) => {
        clearInterval(timer);
        this.onProgress = previous;
        resolve(value);
      };
      this.onProgress = () => {
        previous();
        check();
      };
      check();
    });
  }

  kill(): void {
    for (const handle of this.handles) {
      handle.kill();
      liveChildren.delete(handle);
    }
  }
}

function newSender(): ChildHandle {
  const handle = new ChildHandle(join(REPO, 'bench', 'clients', 'sender.ts'), CHILD_ARGV, 'sender');
  liveChildren.add(handle);
  return handle;
}

function killChild(handle: ChildHandle): void {
  handle.kill();
  liveChildren.delete(handle);
}

// ------------------------------------------------------------------ phases

interface RealtimeContext {
  kind: ServerName;
  handles: ServerHandle[];
  fleet: Fleet;
  /** Fan-out senders, one keep-alive pool per node. */
  http: HttpClient[];
  subscribers: number;
  users: number;
  extraCpuPids: number[];
}

function serverCpu(ctx: RealtimeContext): number {
  return cpuMicrosOf(ctx.handles.map((h) => h.pid));
}

interface CpuSnapshot {
  atUs: number;
  serverUser: number;
  serverSystem: number;
  clients: number;
  sender: number;
  /** Redis, in the cluster scenario. */
  extra: number;
  /** Everything the bench runs (servers, clients, senders, this process, Redis in the cluster). */
  ours: number;
  machine: number;
}

function cpuSnapshot(ctx: RealtimeContext, senderPids: number[]): CpuSnapshot {
  let serverUser = 0;
  let serverSystem = 0;
  for (const handle of ctx.handles) {
    try {
      const times = cpuTimes(handle.pid);
      serverUser += times.user;
      serverSystem += times.system;
    } catch {
      // exited
    }
  }
  const clients = cpuMicrosOf(ctx.fleet.pids);
  const sender = cpuMicrosOf(senderPids);
  const extra = cpuMicrosOf(ctx.extraCpuPids);
  const rest = senderPids.includes(process.pid) ? 0 : cpuMicros(process.pid);
  return { atUs: nowUs(), serverUser, serverSystem, clients, sender, extra, ours: serverUser + serverSystem + clients + sender + extra + rest, machine: machineBusyMicros() };
}

function cpuFigures(a: CpuSnapshot, b: CpuSnapshot, deliveries: number) {
  const seconds = (b.atUs - a.atUs) / 1e6;
  const server = b.serverUser + b.serverSystem - (a.serverUser + a.serverSystem);
  const percent = (micros: number) => (micros / 1e6 / seconds) * 100;
  return {
    server_cpu_us_per_delivery: deliveries > 0 ? server / deliveries : NaN,
    server_cpu_percent: percent(server),
    clients_cpu_percent: percent(b.clients - a.clients),
    sender_cpu_percent: percent(b.sender - a.sender),
    server_kernel_share_percent: server > 0 ? ((b.serverSystem - a.serverSystem) / server) * 100 : NaN,
    extra_cpu_us_per_delivery: deliveries > 0 && b.extra > a.extra ? (b.extra - a.extra) / deliveries : NaN,
    other_cpu_percent: Math.max(0, percent(b.machine - a.machine - (b.ours - a.ours))),
  };
}

function channelPath(kind: ServerName): string {
  return SEND_PATHS[kind].channel;
}

/** A quantile of the client processes' histograms (microseconds), in ms. */
function q(data: HistogramData[], quantile: number): number {
  const merged = new Histogram();
  for (const d of data) merged.add(d);
  return merged.count === 0 ? NaN : merged.quantile(quantile) / 1000;
}

/** Keep-alive sockets per node for fan-out sends: a request per outstanding notification, at most --concurrency. */
function fanoutSockets(): number {
  return Math.max(1, Math.min(options.window, options.concurrency));
}

/** Opens the senders' sockets, then sends one channel notification that every subscriber must receive before measuring starts. */
async function probe(ctx: RealtimeContext): Promise<void> {
  await Promise.all(ctx.http.map((client) => client.openAll()));
  await ctx.fleet.progress(true);
  const base = ctx.fleet.total;
  const response = await ctx.http[0]!.request('POST', channelPath(ctx.kind), channelBody(nowUs()));
  if (response.status !== 200) throw new Error(`probe send answered ${response.status}: ${response.body.toString().slice(0, 300)}`);
  const wait = await ctx.fleet.waitTotal(base + ctx.subscribers, 3000, 15_000);
  await ctx.fleet.progress(false);
  if (!wait.reached) throw new Error(`probe notification reached ${ctx.fleet.total - base} of ${ctx.subscribers} subscribers`);
}

async function fixedRatePhase(ctx: RealtimeContext): Promise<{ rep: FixedRep; histogram: HistogramData[] }> {
  const { fleet } = ctx;
  await fleet.progress(true);
  const base = fleet.total;
  const intervalUs = 1e6 / options.rate;
  const startUs = nowUs();
  const windowStartUs = startUs + options.warmup * 1e6;
  const endUs = windowStartUs + options.duration * 1e6;
  const path = channelPath(ctx.kind);
  const inFlight = new Set<Promise<void>>();
  let sent = 0;
  let sentBeforeWindow = 0;
  let httpErrors = 0;
  let measuring = false;
  let cpuStart = 0;
  let firstProblem: string | null = null;
  while (true) {
    const due = startUs + sent * intervalUs;
    if (due >= endUs) break;
    const now = nowUs();
    if (due > now) {
      await sleep(Math.max(0, (due - now) / 1000 - 0.2));
      continue;
    }
    if (!measuring && due >= windowStartUs) {
      await fleet.reset();
      cpuStart = serverCpu(ctx);
      sentBeforeWindow = sent;
      measuring = true;
    }
    const client = ctx.http[sent % ctx.http.length]!;
    const request = client
      .request('POST', path, channelBody(nowUs()))
      .then(
        (response) => {
          if (response.status !== 200) {
            httpErrors++;
            firstProblem ??= `HTTP ${response.status}`;
          }
        },
        (error: Error) => {
          httpErrors++;
          firstProblem ??= error.message;
        },
      )
      .finally(() => inFlight.delete(request));
    inFlight.add(request);
    sent++;
  }
  const lastSendUs = nowUs();
  const expected = sent * ctx.subscribers;
  const drained = await fleet.waitTotal(base + expected, 3000, 20_000);
  await withTimeout(Promise.all(inFlight), 20_000, 'fixed-rate sends');
  const cpuEnd = serverCpu(ctx);
  const got = await fleet.histograms();
  await fleet.progress(false);
  const received = fleet.total - base;
  const windowDeliveries = got.histogram.reduce((sum, h) => sum + h.count, 0);
  const drainMs = Math.max(0, (drained.atUs - lastSendUs) / 1000);
  const busySeconds = (drained.atUs - (windowStartUs > startUs ? windowStartUs : startUs)) / 1e6;
  const rep: FixedRep = {
    rate_target: options.rate,
    rate_achieved: (sent - sentBeforeWindow) / options.duration,
    sent,
    expected_deliveries: expected,
    received,
    lost: Math.max(0, expected - received),
    drain_ms: +drainMs.toFixed(1),
    sustained: drained.reached && drainMs < 1000 && httpErrors === 0,
    p50_ms: q(got.histogram, 0.5),
    p99_ms: q(got.histogram, 0.99),
    p999_ms: q(got.histogram, 0.999),
    max_ms: q(got.histogram, 1),
    server_cpu_us_per_delivery: windowDeliveries > 0 ? (cpuEnd - cpuStart) / windowDeliveries : NaN,
    server_cpu_percent: busySeconds > 0 ? ((cpuEnd - cpuStart) / 1e6 / busySeconds) * 100 : NaN,
    http_errors: httpErrors,
  };
  if (firstProblem) log(`  first send problem: ${firstProblem}`);
  return { rep, histogram: got.histogram };
}

/** Closed loop: at most `window` notifications not yet received by every subscriber, at most `concurrency` requests in flight. */
async function fanoutMaxPhase(ctx: RealtimeContext, profile: Profiler | null): Promise<{ rep: MaxRep; histogram: HistogramData[] }> {
  const { fleet } = ctx;
  await fleet.progress(true);
  const base = fleet.total;
  const mark = fleet.mark();
  const path = channelPath(ctx.kind);
  let sent = 0;
  let inFlight = 0;
  let running = true;
  let httpErrors = 0;
  let firstProblem: string | null = null;
  let rr = 0;
  const pump = () => {
    while (running && inFlight < fanoutSockets() * ctx.http.length && sent - fleet.notificationsDone(mark) < options.window) {
      inFlight++;
      sent++;
      const client = ctx.http[rr++ % ctx.http.length]!;
      client
        .request('POST', path, channelBody(nowUs()))
        .then(
          (response) => {
            if (response.status !== 200) {
              httpErrors++;
              firstProblem ??= `HTTP ${response.status}: ${response.body.toString().slice(0, 200)}`;
            }
          },
          (error: Error) => {
            httpErrors++;
            firstProblem ??= error.message;
          },
        )
        .finally(() => {
          inFlight--;
          pump();
        });
    }
  };
  fleet.onProgress = pump;
  pump();
  await sleep(options.warmup * 1000);
  await fleet.reset();
  if (profile) await profile('start');
  const cpu0 = cpuSnapshot(ctx, [process.pid]);
  const recv0 = fleet.total;
  const sent0 = sent;
  await sleep(options.duration * 1000);
  const cpu1 = cpuSnapshot(ctx, [process.pid]);
  const recv1 = fleet.total;
  const sent1 = sent;
  if (profile) await profile('stop');
  running = false;
  fleet.onProgress = () => {};
  const drained = await fleet.waitTotal(base + sent * ctx.subscribers, 3000, 20_000);
  const waitHttp = Date.now() + 20_000;
  while (inFlight > 0 && Date.now() < waitHttp) await sleep(20);
  const got = await fleet.histograms();
  await fleet.progress(false);
  const seconds = (cpu1.atUs - cpu0.atUs) / 1e6;
  const deliveries = recv1 - recv0;
  if (firstProblem) log(`  first send problem: ${firstProblem}`);
  const rep: MaxRep = {
    deliveries_per_s: deliveries / seconds,
    sends_per_s: (sent1 - sent0) / seconds,
    ...cpuFigures(cpu0, cpu1, deliveries),
    p50_ms: q(got.histogram, 0.5),
    p99_ms: q(got.histogram, 0.99),
    max_ms: q(got.histogram, 1),
    lost: drained.reached ? 0 : sent * ctx.subscribers - (fleet.total - base),
    http_errors: httpErrors,
    unexpected_closes: got.unexpectedCloses,
  };
  if (Object.keys(got.closeCodes).length > 0) log(`  close codes seen: ${JSON.stringify(got.closeCodes)}`);
  return { rep, histogram: got.histogram };
}

async function personalPhase(ctx: RealtimeContext, sender: ChildHandle, profile: Profiler | null = null): Promise<{ rep: MaxRep; histogram: HistogramData[] }> {
  const { fleet } = ctx;
  await fleet.progress(true);
  const base = fleet.total;
  const spec: SenderStartSpec = {
    path: SEND_PATHS[ctx.kind].user,
    ports: ctx.handles.map((h) => h.port),
    users: ctx.users,
    concurrency: options.concurrency,
    headers: ctx.kind === 'service' ? { 'X-API-Key': API_KEY } : {},
  };
  await sender.call('start', { spec });
  await sleep(options.warmup * 1000);
  await fleet.reset();
  if (profile) await profile('start');
  const senderPids = [sender.process.pid ?? -1];
  const cpu0 = cpuSnapshot(ctx, senderPids);
  const recv0 = fleet.total;
  const s0 = await sender.call<SenderCounters>('counters');
  await sleep(options.duration * 1000);
  const cpu1 = cpuSnapshot(ctx, senderPids);
  const recv1 = fleet.total;
  const s1 = await sender.call<SenderCounters>('counters');
  if (profile) await profile('stop');
  const final = await sender.call<SenderCounters>('stop', {}, 15_000);
  const drained = await fleet.waitTotal(base + final.ok, 2000, 15_000);
  const got = await fleet.histograms();
  await fleet.progress(false);
  if (final.firstProblem) log(`  first send problem: ${final.firstProblem}`);
  const seconds = (cpu1.atUs - cpu0.atUs) / 1e6;
  const deliveries = recv1 - recv0;
  return {
    rep: {
      deliveries_per_s: deliveries / seconds,
      sends_per_s: (s1.ok - s0.ok) / seconds,
      ...cpuFigures(cpu0, cpu1, deliveries),
      p50_ms: q(got.histogram, 0.5),
      p99_ms: q(got.histogram, 0.99),
      max_ms: q(got.histogram, 1),
      lost: drained.reached ? 0 : final.ok - (fleet.total - base),
      http_errors: final.non2xx + final.errors,
      unexpected_closes: got.unexpectedCloses,
    },
    histogram: got.histogram,
  };
}

function fmtRate(value: number): string {
  return Number.isFinite(value) ? Math.round(value).toLocaleString('en-US') : '—';
}

function fmtMs(value: number): string {
  return Number.isFinite(value) ? value.toFixed(value < 10 ? 2 : 1) : '—';
}

// ------------------------------------------------------------------ scenarios

interface RealtimeAccumulator {
  fixed: FixedRep[];
  fixedHist: HistogramData[];
  max: MaxRep[];
  maxHist: HistogramData[];
  personal: MaxRep[];
  personalHist: HistogramData[];
}
const realtimeAcc = new Map<ServerName, RealtimeAccumulator>();

/**
 * One repetition of fan-out and personal messages on one server: a fresh
 * server and one set of connections for both. Repetitions are interleaved
 * across the servers (service, limit, peer, service, …), so a burst of
 * other work on the machine does not land on every repetition of one server.
 */
async function realtimeRep(kind: ServerName, sender: ChildHandle, rep: number): Promise<void> {
  const doFanout = scenarios.includes('fanout') && options.fanout > 0;
  const doPersonal = scenarios.includes('personal') && options.users > 0;
  const connections = Math.max(doFanout ? options.fanout : 0, doPersonal ? options.users : 0);
  const subscribers = doFanout ? options.fanout : 0;
  const tag = `${kind} rep ${rep}/${options.reps}`;
  let acc = realtimeAcc.get(kind);
  if (acc === undefined) realtimeAcc.set(kind, (acc = { fixed: [], fixedHist: [], max: [], maxHist: [], personal: [], personalHist: [] }));
  const a = acc;
  /** Results go into the report as soon as they exist, so an interrupted run still shows them. */
  const save = () => {
    if (a.fixed.length > 0) results.fanout_fixed[kind] = series(a.fixed, a.fixedHist);
    if (a.max.length > 0) results.fanout_max[kind] = series(a.max, a.maxHist);
    if (a.personal.length > 0) results.personal[kind] = series(a.personal, a.personalHist);
  };
  log(`${tag}: starting for fan-out/personal (${connections.toLocaleString('en-US')} connections)`);
  const fleet = Fleet.forConnections(connections, kind); // the client processes load while the server starts
  let server: ServerHandle;
  try {
    server = await startServer(kind, { inspect: options.profile && profileServers.includes(kind) });
  } catch (error) {
    fleet.kill();
    throw error;
  }
  const http = [new HttpClient('127.0.0.1', server.port, { sockets: fanoutSockets(), headers: kind === 'service' ? { 'X-API-Key': API_KEY } : {}, timeoutMs: 30_000 })];
  const ctx: RealtimeContext = { kind, handles: [server], fleet, http, subscribers, users: options.users, extraCpuPids: [] };
  try {
    const connected = await fleet.connect(kind, [server.port], connections, subscribers, `${tag} connect`);
    log(`${tag}: ${connected.ready.toLocaleString('en-US')} connected in ${connected.seconds.toFixed(1)} s${connected.failed > 0 ? `, ${connected.failed} failed (${connected.errors.join('; ')})` : ''}`);
    if (connected.failed > 0) throw new Error(`${connected.failed} of ${connections} connections failed: ${connected.errors.join('; ')}`);
    const held = await waitConnections([server], connections, 10_000);
    if (held !== connections) throw new Error(`server holds ${held} connections, expected ${connections}`);
    if (doFanout) await withTimeout(probe(ctx), 30_000, 'probe');
    const profiling = rep === 1 && options.profile && profileServers.includes(kind);
    if (doFanout && options.rate > 0) {
      log(`${tag}: fan-out at ${options.rate}/s × ${subscribers.toLocaleString('en-US')} for ${options.duration} s`);
      const result = await withTimeout(fixedRatePhase(ctx), (options.warmup + options.duration) * 1000 + 60_000, 'fixed-rate phase');
      a.fixed.push(result.rep);
      a.fixedHist.push(...result.histogram);
      save();
      const r = result.rep;
      log(`${tag}: fixed rate p50 ${fmtMs(r.p50_ms)} ms, p99 ${fmtMs(r.p99_ms)} ms, max ${fmtMs(r.max_ms)} ms, ${r.sustained ? 'sustained' : `NOT sustained (lost ${r.lost}, drain ${r.drain_ms} ms)`}, CPU ${r.server_cpu_us_per_delivery.toFixed(2)} µs/delivery`);
    }
    if (doFanout) {
      log(`${tag}: fan-out at the highest sustained rate for ${options.duration} s`);
      const profiler = profiling
        ? await cpuProfiler(server, 'fanout', `CPU profile of ${kindLabel(kind)} during the fan-out window (${options.fanout.toLocaleString('en-US')} connections, highest sustained rate)`)
        : null;
      const result = await withTimeout(fanoutMaxPhase(ctx, profiler), (options.warmup + options.duration) * 1000 + 60_000, 'fan-out max phase');
      a.max.push(result.rep);
      a.maxHist.push(...result.histogram);
      save();
      const r = result.rep;
      log(`${tag}: fan-out ${fmtRate(r.deliveries_per_s)} deliveries/s (${r.sends_per_s.toFixed(1)} notifications/s), server CPU ${r.server_cpu_percent.toFixed(0)} % (${r.server_kernel_share_percent.toFixed(0)} % kernel) = ${r.server_cpu_us_per_delivery.toFixed(2)} µs/delivery, clients ${r.clients_cpu_percent.toFixed(0)} %, other load ${r.other_cpu_percent.toFixed(0)} %, p99 ${fmtMs(r.p99_ms)} ms`);
    }
    if (doPersonal) {
      log(`${tag}: personal messages to ${options.users.toLocaleString('en-US')} users for ${options.duration} s`);
      const profiler = profiling
        ? await cpuProfiler(server, 'personal', `CPU profile of ${kindLabel(kind)} during the personal-message window (${options.users.toLocaleString('en-US')} users, highest sustained rate)`)
        : null;
      const result = await withTimeout(personalPhase(ctx, sender, profiler), (options.warmup + options.duration) * 1000 + 60_000, 'personal phase');
      a.personal.push(result.rep);
      a.personalHist.push(...result.histogram);
      save();
      const r = result.rep;
      log(`${tag}: personal ${fmtRate(r.deliveries_per_s)} deliveries/s, server CPU ${r.server_cpu_percent.toFixed(0)} % = ${r.server_cpu_us_per_delivery.toFixed(1)} µs/delivery, sender ${r.sender_cpu_percent.toFixed(0)} %, other load ${r.other_cpu_percent.toFixed(0)} %, p99 ${fmtMs(r.p99_ms)} ms${r.http_errors > 0 ? `, ${r.http_errors} HTTP errors` : ''}`);
    }
  } catch (error) {
    fail(`fan-out/personal on ${kind} (rep ${rep})`, error, server);
  } finally {
    for (const client of http) client.close();
    save();
    await closeFleet(fleet, [server], tag);
    await stopServer(server);
  }
}

async function closeFleet(fleet: Fleet, handles: ServerHandle[], label: string): Promise<void> {
  try {
    await fleet.close();
    if (handles.every((h) => !h.exited)) {
      const left = await waitConnections(handles, 0, 15_000);
      if (left !== 0) results.failures.push(`${label}: server still held ${left} connections 15 s after the clients closed`);
    }
  } catch (error) {
    fail(`${label}: closing connections`, error);
  } finally {
    fleet.kill();
  }
}

type Profiler = (phase: 'start' | 'stop') => Promise<void>;

function kindLabel(kind: ServerName): string {
  return kind === 'service' ? 'the service' : `the ${kind} server`;
}

/**
 * Profiles a server's main thread through its inspector between 'start' and
 * 'stop' (`--profile`). The service's reports are profile-<scenario>.md; the
 * others' carry their name, for side-by-side reading.
 */
async function cpuProfiler(server: ServerHandle, name: string, title: string): Promise<Profiler> {
  const file = server.kind === 'service' ? name : `${name}-${server.kind}`;
  const inspector = await Inspector.open(server.inspectorUrl!);
  await inspector.call('Profiler.enable');
  await inspector.call('Profiler.setSamplingInterval', { interval: 200 });
  return async (phase) => {
    if (phase === 'start') {
      await inspector.call('Profiler.start');
      return;
    }
    const { profile } = await inspector.call<{ profile: CpuProfile }>('Profiler.stop', {}, 60_000);
    inspector.close();
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, `${name}-${server.kind}.cpuprofile`), JSON.stringify(profile));
    writeFileSync(join(outDir, `profile-${file}.md`), summariseProfile(profile, title));
    log(`CPU profile written to ${join(outDir, `profile-${file}.md`)}`);
  };
}

const httpAcc = new Map<ServerName, HttpRep[]>();

/** One repetition of the HTTP API scenario on a fresh server: a 1 s autocannon warm-up, then the measured run. */
async function httpRep(kind: 'service' | 'limit', rep: number): Promise<void> {
  const tag = `${kind} rep ${rep}/${options.reps}`;
  const reps = httpAcc.get(kind) ?? [];
  httpAcc.set(kind, reps);
  log(`${tag}: starting for the HTTP API scenario`);
  const profiling = options.profile && profileServers.includes(kind) && rep === 1;
  const server = await startServer(kind, { inspect: profiling });
  try {
    const path = '/api/v1/notifications/send';
    const body = userBody('nobody-connected', nowUs());
    const headers = ['-H', 'content-type=application/json', ...(kind === 'service' ? ['-H', `x-api-key=${API_KEY}`] : [])];
    const probeClient = new HttpClient('127.0.0.1', server.port, { sockets: 1, headers: kind === 'service' ? { 'X-API-Key': API_KEY } : {} });
    const sample = await probeClient.request('POST', path, body);
    probeClient.close();
    if (sample.status !== 200) throw new Error(`POST ${path} answered ${sample.status}: ${sample.body.toString().slice(0, 300)}`);
    const run = async (seconds: number) => {
      const args = [AUTOCANNON, '-m', 'POST', ...headers, '-b', body, '-c', String(options.concurrency), '-d', String(seconds), '-j', '-n', `http://127.0.0.1:${server.port}${path}`];
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      const killer = { kill: () => child.kill('SIGKILL') };
      liveChildren.add(killer);
      let out = '';
      let err = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
      const code = await withTimeout(new Promise<number | null>((resolve) => child.on('exit', resolve)), seconds * 1000 + 30_000, 'autocannon');
      liveChildren.delete(killer);
      if (code !== 0) throw new Error(`autocannon exited ${code}: ${err.slice(0, 300)}`);
      return JSON.parse(out) as any;
    };
    await run(1); // warm-up, not recorded
    const profiler = profiling ? await cpuProfiler(server, 'http', `CPU profile of ${kindLabel(kind)} under autocannon (POST /api/v1/notifications/send, user not connected)`) : null;
    if (profiler) await profiler('start');
    const cpu0 = cpuMicros(server.pid);
    const t0 = nowUs();
    const report = await run(Math.max(1, Math.round(options.duration)));
    const cpu1 = cpuMicros(server.pid);
    if (profiler) await profiler('stop');
    const elapsed = (nowUs() - t0) / 1e6;
    const total = Number(report.requests.total);
    const r: HttpRep = {
      requests_per_s: Number(report.requests.average),
      p50_ms: Number(report.latency.p50),
      p99_ms: Number(report.latency.p99),
      non2xx: Number(report.non2xx ?? 0),
      errors: Number(report.errors ?? 0) + Number(report.timeouts ?? 0),
      server_cpu_us_per_request: total > 0 ? (cpu1 - cpu0) / total : NaN,
      server_cpu_percent: ((cpu1 - cpu0) / 1e6 / elapsed) * 100,
      response_bytes: sample.body.length,
    };
    reps.push(r);
    results.http[kind] = series(reps);
    log(`${tag}: HTTP ${fmtRate(r.requests_per_s)} requests/s, p99 ${r.p99_ms} ms, ${r.server_cpu_us_per_request.toFixed(1)} µs CPU/request${r.non2xx + r.errors > 0 ? `, ${r.non2xx} non-2xx, ${r.errors} errors` : ''}`);
  } catch (error) {
    fail(`HTTP on ${kind} (rep ${rep})`, error, server);
  } finally {
    await stopServer(server);
  }
}

const memoryAcc = new Map<ServerName, { memory: MemoryRep[]; connect: ConnectRep[] }>();

/**
 * Memory and connect rate, one repetition: a fresh server (with its
 * inspector, for a full GC before each reading), idle connections opened as
 * fast as it takes them, then RSS and heap per connection.
 */
async function memoryRep(kind: ServerName, rep: number): Promise<void> {
  const acc = memoryAcc.get(kind) ?? { memory: [], connect: [] };
  memoryAcc.set(kind, acc);
  const save = () => {
    if (acc.memory.length > 0 && scenarios.includes('memory')) results.memory[kind] = series(acc.memory);
    if (acc.connect.length > 0 && scenarios.includes('connect')) results.connect[kind] = series(acc.connect);
  };
  const tag = `${kind} rep ${rep}/${options.reps}`;
  const fleet = Fleet.forConnections(options.idle, `${kind} idle`);
  let server: ServerHandle | null = null;
  try {
    server = await startServer(kind, { inspect: true });
    await sleep(300);
    await collectGarbage(server.inspectorUrl!);
    const rssBefore = rssBytes(server.pid);
    const heapBefore = await serverHeapUsed(server);
    const profiler = options.profile && profileServers.includes(kind) && rep === 1 && scenarios.includes('connect')
      ? await cpuProfiler(server, 'connect', `CPU profile of ${kindLabel(kind)} while ${options.idle.toLocaleString('en-US')} ${kind === 'service' ? 'JWT-verified ' : ''}WebSocket connections open`)
      : null;
    if (profiler) await profiler('start');
    const cpu0 = cpuMicros(server.pid);
    log(`${tag}: opening ${options.idle.toLocaleString('en-US')} idle connections`);
    const connected = await fleet.connect(kind, [server.port], options.idle, 0, `${tag} idle connect`);
    const cpu1 = cpuMicros(server.pid);
    if (profiler) await profiler('stop');
    if (connected.failed > 0) log(`${tag}: ${connected.failed} connects failed (${connected.errors.join('; ')})`);
    acc.connect.push({
      connections: connected.ready,
      failed: connected.failed,
      seconds: +connected.seconds.toFixed(3),
      connects_per_s: connected.ready / connected.seconds,
      server_cpu_us_per_connect: connected.ready > 0 ? (cpu1 - cpu0) / connected.ready : NaN,
    });
    save();
    const held = await waitConnections([server], connected.ready, 10_000);
    if (held !== connected.ready) throw new Error(`server holds ${held} connections, the clients ${connected.ready}`);
    await sleep(quick ? 300 : 500);
    await collectGarbage(server.inspectorUrl!);
    await sleep(200);
    const rssAfter = rssBytes(server.pid);
    const heapAfter = await serverHeapUsed(server);
    const m: MemoryRep = {
      connections: connected.ready,
      rss_before_bytes: rssBefore,
      rss_after_bytes: rssAfter,
      heap_before_bytes: heapBefore,
      heap_after_bytes: heapAfter,
      rss_per_connection_bytes: Math.round((rssAfter - rssBefore) / connected.ready),
      heap_per_connection_bytes: Math.round((heapAfter - heapBefore) / connected.ready),
    };
    acc.memory.push(m);
    save();
    log(`${tag}: ${fmtRate(acc.connect.at(-1)!.connects_per_s)} connects/s; per idle connection ${(m.rss_per_connection_bytes / 1024).toFixed(2)} KiB RSS, ${(m.heap_per_connection_bytes / 1024).toFixed(2)} KiB heap`);
    await closeFleet(fleet, [server], tag);
  } catch (error) {
    fail(`memory/connect on ${kind} (rep ${rep})`, error, server ?? undefined);
  } finally {
    fleet.kill();
    if (server) await stopServer(server);
  }
}

async function clusterScenario(sender: ChildHandle): Promise<void> {
  const redisUrl = 'redis://127.0.0.1:6379';
  const redis = new Redis(redisUrl, { lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 1, retryStrategy: () => null, enableOfflineQueue: false });
  redis.on('error', () => {});
  try {
    await withTimeout(redis.connect().then(() => redis.ping()), 3000, 'Redis ping');
  } catch {
    results.cluster.skipped = `no Redis answering at ${redisUrl}`;
    log(`cluster: skipped (${results.cluster.skipped})`);
    redis.disconnect();
    return;
  }
  let redisPid = -1;
  try {
    redisPid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1] ?? -1);
  } catch {
    // unknown
  }
  const prefix = `arabench${process.pid}${Date.now().toString(36)}`;
  const nodes: ServerHandle[] = [];
  const connections = Math.max(options.fanout, options.users);
  const fleet = Fleet.forConnections(connections, 'cluster');
  const max: MaxRep[] = [];
  const maxHist: HistogramData[] = [];
  const personal: MaxRep[] = [];
  const personalHist: HistogramData[] = [];
  const http: HttpClient[] = [];
  const save = () => {
    if (max.length > 0) results.cluster.fanout_max = series(max, maxHist, ['3 nodes on one 2-core machine with Redis, clients and sender: nodes compete for the same cores']);
    if (personal.length > 0) results.cluster.personal = series(personal, personalHist);
    const redis = median(max.map((rep) => rep.extra_cpu_us_per_delivery));
    if (Number.isFinite(redis)) results.cluster.redis_cpu_us_per_delivery = redis;
  };
  try {
    log(`cluster: starting 3 service nodes (REDIS_KEY_PREFIX=${prefix})`);
    for (let i = 0; i < 3; i++) {
      nodes.push(
        await startServer('service', {
          label: `service node ${i + 1}`,
          env: { CLUSTER_ENABLED: 'true', REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix, CLUSTER_SERVER_ID: `bench-node-${i + 1}`, REDIS_TRIGGER_ENABLED: 'false' },
        }),
      );
    }
    for (const node of nodes) http.push(new HttpClient('127.0.0.1', node.port, { sockets: fanoutSockets(), headers: { 'X-API-Key': API_KEY }, timeoutMs: 30_000 }));
    const ctx: RealtimeContext = { kind: 'service', handles: nodes, fleet, http, subscribers: options.fanout, users: options.users, extraCpuPids: redisPid > 0 ? [redisPid] : [] };
    const connected = await fleet.connect('service', nodes.map((n) => n.port), connections, options.fanout, 'cluster connect');
    log(`cluster: ${connected.ready.toLocaleString('en-US')} connected over 3 nodes in ${connected.seconds.toFixed(1)} s`);
    if (connected.failed > 0) throw new Error(`${connected.failed} connections failed: ${connected.errors.join('; ')}`);
    const held = await waitConnections(nodes, connections, 10_000);
    if (held !== connections) throw new Error(`nodes hold ${held} connections, expected ${connections}`);
    await sleep(500); // let every node's bus subscriptions reach Redis
    if (options.fanout > 0) await withTimeout(probe(ctx), 30_000, 'cluster probe');
    for (let rep = 1; rep <= options.reps; rep++) {
      const tag = `cluster rep ${rep}/${options.reps}`;
      if (options.fanout > 0) {
        log(`${tag}: fan-out over 3 nodes at the highest sustained rate for ${options.duration} s`);
        const result = await withTimeout(fanoutMaxPhase(ctx, null), (options.warmup + options.duration) * 1000 + 60_000, 'cluster fan-out phase');
        max.push(result.rep);
        maxHist.push(...result.histogram);
        const r = result.rep;
        save();
        log(`${tag}: fan-out ${fmtRate(r.deliveries_per_s)} deliveries/s, nodes' CPU ${r.server_cpu_percent.toFixed(0)} % = ${r.server_cpu_us_per_delivery.toFixed(2)} µs/delivery, p99 ${fmtMs(r.p99_ms)} ms`);
      }
      if (options.users > 0) {
        log(`${tag}: personal messages over 3 nodes for ${options.duration} s`);
        const result = await withTimeout(personalPhase(ctx, sender), (options.warmup + options.duration) * 1000 + 60_000, 'cluster personal phase');
        personal.push(result.rep);
        personalHist.push(...result.histogram);
        save();
        const r = result.rep;
        log(`${tag}: personal ${fmtRate(r.deliveries_per_s)} deliveries/s, nodes' CPU ${r.server_cpu_us_per_delivery.toFixed(1)} µs/delivery, p99 ${fmtMs(r.p99_ms)} ms${r.http_errors > 0 ? `, ${r.http_errors} HTTP errors` : ''}`);
      }
    }
  } catch (error) {
    fail('cluster', error, nodes);
  } finally {
    for (const client of http) client.close();
    save();
    await closeFleet(fleet, nodes, 'cluster');
    for (const node of nodes) await stopServer(node);
    try {
      let deleted = 0;
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) deleted += await redis.del(...keys);
      } while (cursor !== '0');
      log(`cluster: ${deleted} Redis keys were left under ${prefix}: (deleted)`);
    } catch (error) {
      fail('cluster: deleting Redis keys', error);
    }
    redis.disconnect();
  }
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const m = results.machine;
  log(`bench: ${scenarios.join(', ')} on ${servers.join(', ')}; ${m.cores} cores, ${m.cpu_model}, Node ${m.node}, load ${m.load_average_at_start.join(' ')}`);
  const sender = newSender();
  try {
    // Repetitions are interleaved across servers: service, limit, peer, service, …
    if (scenarios.includes('fanout') || scenarios.includes('personal')) {
      for (let rep = 1; rep <= options.reps; rep++) {
        for (const kind of options.profile ? profileServers : servers) {
          try {
            await realtimeRep(kind, sender, rep);
          } catch (error) {
            fail(`fan-out/personal on ${kind} (rep ${rep})`, error);
          }
        }
      }
    }
    if (scenarios.includes('http')) {
      for (let rep = 1; rep <= options.reps; rep++) {
        for (const kind of (options.profile ? profileServers : servers).filter((s): s is 'service' | 'limit' => s !== 'socketio')) {
          try {
            await httpRep(kind, rep);
          } catch (error) {
            fail(`HTTP on ${kind} (rep ${rep})`, error);
          }
        }
      }
    }
    if (scenarios.includes('memory') || scenarios.includes('connect')) {
      for (let rep = 1; rep <= options.reps; rep++) {
        for (const kind of servers) {
          try {
            await memoryRep(kind, rep);
          } catch (error) {
            fail(`memory/connect on ${kind} (rep ${rep})`, error);
          }
        }
      }
    }
    if (scenarios.includes('cluster')) {
      if (!servers.includes('service')) results.cluster.skipped = 'service not among --servers';
      else {
        try {
          await clusterScenario(sender);
        } catch (error) {
          fail('cluster', error);
        }
      }
    } else {
      results.cluster.skipped = quick ? 'not run with --quick (add --cluster)' : 'not selected';
    }
  } finally {
    killChild(sender);
  }
}

main().then(
  () => {
    log(`done in ${((Date.now() - startedAt) / 1000).toFixed(0)} s${results.failures.length > 0 ? ` with ${results.failures.length} failure(s)` : ''}`);
    finish(results.failures.length > 0 ? 1 : 0);
  },
  (error: unknown) => {
    fail('bench', error);
    finish(1);
  },
);
