/**
 * One Redis command connection shared by every Redis-backed store (SPEC §1
 * REDIS_URL, §8 "When Redis is down"). It owns an ioredis client and the
 * rules every caller relies on:
 *
 * - `start()` connects once and fails fast, naming the server, when Redis
 *   is unreachable; after that ioredis reconnects forever with backoff.
 * - No call hangs: every command has a timeout, and commands issued while
 *   the connection is down fail at once instead of queueing up (no offline
 *   queue), so callers answer errors rather than wait.
 * - Lua scripts are registered with `defineCommand`: EVALSHA, with EVAL as
 *   the automatic fallback when the server lost its script cache.
 * - Keys are `<prefix>:<store>:<tenant>:<rest>`: the tenant (which never
 *   holds `:`) is its own segment and the arbitrary part (user id, channel)
 *   comes last, so no crafted id can make one key equal another's.
 *
 * Pub/sub, the circuit breaker and cluster features build on this class.
 */
import { Redis, type ChainableCommander } from 'ioredis';
import type { Logger } from 'pino';

export interface RedisConnectionOptions {
  /** `redis://` or `rediss://` URL (SPEC §1 REDIS_URL). */
  url: string;
  /** REDIS_KEY_PREFIX: first segment of every key. */
  keyPrefix: string;
  /** Bound on every command, in ms. */
  commandTimeoutMs?: number;
  /** Bound on establishing the TCP/TLS connection, in ms. */
  connectTimeoutMs?: number;
  /** Reconnect backoff with full jitter (SPEC §1 REDIS_BACKOFF_*). */
  backoff?: { initialDelayMs: number; maxDelayMs: number };
  /** CLIENT SETNAME: lets `CLIENT LIST` tell which node a connection belongs to. */
  connectionName?: string;
  log?: Logger;
}

/** Argument list of a registered script: its keys, then its other arguments. */
export type ScriptArg = string | number;

/** A Lua script registered on the connection, callable directly or in a pipeline. */
export interface RedisScript {
  readonly name: string;
  run(keys: readonly string[], args: readonly ScriptArg[]): Promise<unknown>;
  queue(pipeline: ChainableCommander, keys: readonly string[], args: readonly ScriptArg[]): void;
}

const DEFAULT_COMMAND_TIMEOUT_MS = 5000;
const DEFAULT_CONNECT_TIMEOUT_MS = 5000;

export class RedisConnection {
  readonly client: Redis;
  readonly keyPrefix: string;
  readonly #url: string;
  readonly #connectTimeoutMs: number;
  readonly #log: Logger | undefined;
  readonly #scripts = new Map<string, { numberOfKeys: number | null; lua: string }>();
  #lastError: Error | null = null;
  #wasReady = false;
  #down = false;
  #closed = false;

  constructor(options: RedisConnectionOptions) {
    this.keyPrefix = options.keyPrefix;
    this.#url = options.url;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#log = options.log;
    const backoff = options.backoff ?? { initialDelayMs: 100, maxDelayMs: 30_000 };
    this.client = new Redis(options.url, {
      lazyConnect: true,
      ...(options.connectionName === undefined ? {} : { connectionName: options.connectionName }),
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS,
      connectTimeout: this.#connectTimeoutMs,
      retryStrategy: (attempt) => {
        const ceiling = Math.min(backoff.maxDelayMs, backoff.initialDelayMs * 2 ** Math.min(attempt, 30));
        return Math.max(1, Math.floor(Math.random() * ceiling));
      },
    });
    this.client.on('error', (error: Error) => {
      this.#lastError = error;
      if (this.#wasReady && !this.#down && !this.#closed) {
        this.#down = true;
        this.#log?.warn({ err: error, redis: this.target }, 'redis connection lost; reconnecting');
      }
    });
    this.client.on('ready', () => {
      if (this.#down) this.#log?.info({ redis: this.target }, 'redis connection restored');
      this.#down = false;
      this.#wasReady = true;
    });
  }

  /** host:port of the server, without credentials, for messages and logs. */
  get target(): string {
    try {
      const url = new URL(this.#url);
      return `${url.protocol}//${url.hostname}:${url.port || '6379'}`;
    } catch {
      return 'redis';
    }
  }

  get ready(): boolean {
    return this.client.status === 'ready';
  }

  /** Connects; rejects within the connect timeout when the server cannot be reached. */
  async start(): Promise<void> {
    if (this.client.status === 'ready') return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out')), this.#connectTimeoutMs + 500);
    });
    try {
      await Promise.race([this.client.connect(), timeout]);
      await Promise.race([this.client.ping(), timeout]);
    } catch (error) {
      this.client.disconnect();
      const cause = this.#lastError ?? (error as Error);
      throw new Error(`Redis at ${this.target} is unreachable: ${cause.message}`, { cause });
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.client.status === 'ready') {
      try {
        await this.client.quit();
        return;
      } catch {
        // fall through: drop the socket
      }
    }
    this.client.disconnect();
  }

  /**
   * `<prefix>:<store>:<tenant>:<middle…>:<last>`. The tenant and middle
   * parts go through `keySegment` (never a `:`), the last part through
   * `keyTail` (anything), so distinct argument lists give distinct keys.
   */
  key(store: string, tenantId: string, ...rest: string[]): string {
    const parts = [this.keyPrefix, store, keySegment(tenantId)];
    for (let i = 0; i < rest.length; i++) parts.push(i === rest.length - 1 ? keyTail(rest[i]!) : keySegment(rest[i]!));
    return parts.join(':');
  }

  /** A key outside any tenant: `<prefix>:<store>`. */
  globalKey(store: string): string {
    return `${this.keyPrefix}:${store}`;
  }

  /**
   * Registers `lua` under `name` (unique across the process's scripts).
   * `numberOfKeys` null: the script takes any number of keys.
   */
  defineScript(name: string, numberOfKeys: number | null, lua: string): RedisScript {
    const known = this.#scripts.get(name);
    if (known && known.lua !== lua) throw new Error(`Redis script ${name} is already defined differently`);
    if (!known) {
      this.client.defineCommand(name, numberOfKeys === null ? { lua } : { numberOfKeys, lua });
      this.#scripts.set(name, { numberOfKeys, lua });
    }
    const call = (target: object, keys: readonly string[], args: readonly ScriptArg[]): unknown => {
      const method = (target as Record<string, (...params: ScriptArg[]) => unknown>)[name]!;
      if (numberOfKeys === null) return method.call(target, keys.length, ...keys, ...args);
      if (keys.length !== numberOfKeys) throw new Error(`Redis script ${name} takes ${numberOfKeys} keys`);
      return method.call(target, ...keys, ...args);
    };
    return {
      name,
      run: (keys, args) => call(this.client, keys, args) as Promise<unknown>,
      queue: (pipeline, keys, args) => void call(pipeline, keys, args),
    };
  }

  /**
   * Walks the keys matching `pattern` with SCAN … COUNT (never KEYS),
   * calling `visit` with each batch, from `cursor` until the walk ends or
   * `maxSteps` SCAN calls were made. Returns the cursor to resume from
   * ('0' = walk complete). A full walk costs O(keys in the database).
   */
  async scan(
    pattern: string,
    visit: (keys: string[]) => Promise<void>,
    { cursor = '0', count = 500, maxSteps = Infinity }: { cursor?: string; count?: number; maxSteps?: number } = {},
  ): Promise<string> {
    let steps = 0;
    do {
      const [next, keys] = await this.client.scan(cursor, 'MATCH', pattern, 'COUNT', count);
      cursor = next;
      steps++;
      if (keys.length > 0) await visit(keys);
    } while (cursor !== '0' && steps < maxSteps);
    return cursor;
  }
}

// ---------------------------------------------------------------------------
// Key parts. Redis keys are bytes and ioredis sends text as UTF-8, where a
// lone surrogate turns into U+FFFD: text that is not well-formed, and any
// separator it must not hold, is written as `%XXXX` (one UTF-16 unit) behind
// a `~` marker that plain parts never start with, so the mapping stays
// one-to-one.

const PLAIN_SEGMENT = /^[A-Za-z0-9._-]*$/;
const LONE_SURROGATE = /\p{Cs}/u;

function escapeUnits(value: string, special: RegExp): string {
  return value.replace(special, (unit) => `%${unit.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`);
}

/** A middle key part (tenant id, …): valid tenant ids stay as they are; no result holds `:`. */
export function keySegment(value: string): string {
  return PLAIN_SEGMENT.test(value) ? value : `~${escapeUnits(value, /[^A-Za-z0-9._-]/g)}`;
}

/** The last key part or a hash field (user id, channel, notification id): anything, as-is when well-formed. */
export function keyTail(value: string): string {
  return !LONE_SURROGATE.test(value) && !value.startsWith('~') ? value : `~${escapeUnits(value, /[%]|\p{Cs}/gu)}`;
}

/** The inverse of keyTail. */
export function unescapeTail(tail: string): string {
  return tail.startsWith('~') ? unescapeField(tail.slice(1)) : tail;
}

/** Text that must not hold `|` (fields of stored entries), reversible with `unescapeField`. */
export function escapeField(value: string): string {
  return escapeUnits(value, /[%|]|\p{Cs}/gu);
}

export function unescapeField(value: string): string {
  return value.includes('%') ? value.replace(/%([0-9A-F]{4})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))) : value;
}

/** Escapes glob characters so `value` matches only itself in a SCAN MATCH pattern. */
export function globEscape(value: string): string {
  return value.replace(/[*?[\]\\]/g, '\\$&');
}

/** Results of `pipeline.exec()`, throwing the first command error. */
export function pipelineResults(results: [Error | null, unknown][] | null): unknown[] {
  if (results === null) throw new Error('Redis pipeline was discarded');
  return results.map(([error, value]) => {
    if (error) throw error;
    return value;
  });
}
