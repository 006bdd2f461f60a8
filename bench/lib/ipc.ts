/**
 * Messages between the orchestrator (bench/run.ts) and its child processes
 * (bench/clients/*.ts), and the parent-side handle that sends a command and
 * waits for its reply with a time limit.
 */
import { fork, type ChildProcess } from 'node:child_process';
import type { HistogramData } from './histogram.ts';
import type { ServerKind } from './wire.ts';

/** Which connections a WebSocket client process opens. */
export interface ConnectSpec {
  kind: ServerKind;
  /** Connection i goes to ports[i % ports.length]. */
  ports: number[];
  /** Index of this process's first connection; connection i is user `u<i>`. */
  first: number;
  count: number;
  /** Connections with an index below this are subscribed to the bench channel at connect. */
  subscribeBelow: number;
  /** 127.0.0.x source address, so the ephemeral ports of one address do not cap the count. */
  localAddress: string;
  /** Handshakes in flight at once. */
  concurrency: number;
  /** Time limit for the whole connect. */
  timeoutMs: number;
}

export interface ClientCounters {
  /** Notification frames received since the process started (frames carrying a send timestamp). */
  notifications: number;
  /** Other text frames (connected, heartbeat, Socket.IO control packets). */
  otherFrames: number;
  bytes: number;
  open: number;
  /** Connections that closed without being asked to, and their close codes. */
  unexpectedCloses: number;
  closeCodes: Record<string, number>;
  /** CPU time of this process, microseconds. */
  cpuMicros: number;
}

export interface ConnectResult {
  ready: number;
  failed: number;
  errors: string[];
  /** Monotonic microseconds of the first attempt and the last ready connection. */
  startUs: number;
  endUs: number;
}

export interface SenderStartSpec {
  path: string;
  ports: number[];
  users: number;
  /** Requests in flight (one per keep-alive socket), spread over the ports. */
  concurrency: number;
  headers: Record<string, string>;
}

export interface SenderCounters {
  sent: number;
  ok: number;
  non2xx: number;
  errors: number;
  firstProblem: string | null;
  cpuMicros: number;
}

export type ChildReply = { id: number; ok: true; result: any } | { id: number; ok: false; error: string };
export type ChildEvent =
  | { event: 'progress'; notifications: number }
  | { event: 'connecting'; ready: number; failed: number };

export interface HistogramReply {
  histogram: HistogramData;
  counters: ClientCounters;
}

/** A forked bench child that answers `{id, cmd, …}` commands with `{id, ok, result|error}`. */
export class ChildHandle {
  readonly process: ChildProcess;
  readonly #waiting = new Map<number, { resolve(value: any): void; reject(error: Error): void; timer: NodeJS.Timeout }>();
  #nextId = 1;
  #exited = false;
  onEvent: (event: ChildEvent) => void = () => {};

  constructor(script: string, execArgv: string[], readonly label: string) {
    this.process = fork(script, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' });
    this.process.on('message', (message: ChildReply | ChildEvent) => {
      if ('event' in message) {
        this.onEvent(message);
        return;
      }
      const waiter = this.#waiting.get(message.id);
      if (!waiter) return;
      this.#waiting.delete(message.id);
      clearTimeout(waiter.timer);
      if (message.ok) waiter.resolve(message.result);
      else waiter.reject(new Error(`${this.label}: ${message.error}`));
    });
    this.process.on('exit', (code, signal) => {
      this.#exited = true;
      for (const [, waiter] of this.#waiting) {
        clearTimeout(waiter.timer);
        waiter.reject(new Error(`${this.label} exited (${signal ?? code})`));
      }
      this.#waiting.clear();
    });
  }

  get exited(): boolean {
    return this.#exited;
  }

  call<T = any>(cmd: string, args: object = {}, timeoutMs = 10_000): Promise<T> {
    if (this.#exited) return Promise.reject(new Error(`${this.label} has exited`));
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new Error(`${this.label}: '${cmd}' got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(id, { resolve, reject, timer });
      this.process.send({ id, cmd, ...args });
    });
  }

  kill(): void {
    if (!this.#exited) this.process.kill('SIGKILL');
  }
}

/** Child side: answers commands with the handler's result or error. */
export function serveCommands(handler: (message: { id: number; cmd: string; [key: string]: any }) => Promise<unknown>): void {
  process.on('message', (message: { id: number; cmd: string }) => {
    handler(message).then(
      (result) => process.send?.({ id: message.id, ok: true, result }),
      (error: unknown) => process.send?.({ id: message.id, ok: false, error: error instanceof Error ? error.message : String(error) }),
    );
  });
  // The orchestrator went away: nothing left to do here.
  process.on('disconnect', () => process.exit(0));
}
