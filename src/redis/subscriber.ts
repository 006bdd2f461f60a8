/**
 * The node's one Redis pub/sub connection, shared by the cluster bus and
 * the trigger (SPEC §8). It keeps the set of channels and patterns the node
 * wants and makes Redis match it: changes made in the same tick go out as
 * one SUBSCRIBE / UNSUBSCRIBE, and after a reconnect everything wanted is
 * subscribed again, so a dropped connection (or `CLIENT KILL TYPE pubsub`)
 * loses nothing but the messages published while it was down.
 */
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

export type MessageHandler = (channel: string, message: string) => void;

/**
 * Called once every wanted channel is subscribed again after a reconnect;
 * `lostAtMs` is when the previous connection went away (local clock), so
 * the caller can look for what was published while nobody listened.
 */
export type ResubscribedHandler = (lostAtMs: number) => void;

/** Channels per SUBSCRIBE command when many are (re)subscribed at once. */
const SUBSCRIBE_CHUNK = 1000;

interface Waiter {
  resolve(): void;
  reject(error: Error): void;
}

export class RedisSubscriber {
  readonly #client: Redis;
  readonly #log: Logger;
  readonly #wantedChannels = new Set<string>();
  readonly #wantedPatterns = new Set<string>();
  /** What Redis has confirmed on the current connection. */
  readonly #confirmed = new Set<string>();
  readonly #confirmedPatterns = new Set<string>();
  readonly #waiters = new Map<string, Waiter[]>();
  #handler: MessageHandler = () => {};
  #resubscribed: ResubscribedHandler = () => {};
  #lost: () => void = () => {};
  /** When the link was lost; null while connected or before the first connect. */
  #lostAtMs: number | null = null;
  #flushScheduled = false;
  #closed = false;

  constructor(client: Redis, log: Logger) {
    this.#client = client;
    this.#log = log;
    client.on('message', (channel: string, message: string) => this.#handler(channel, message));
    client.on('pmessage', (_pattern: string, channel: string, message: string) => this.#handler(channel, message));
    client.on('ready', () => this.#resubscribeAll());
    client.on('close', () => {
      // Reconnect attempts close again: the first loss is where the gap starts.
      if (this.#lostAtMs === null) {
        this.#lostAtMs = Date.now();
        this.#lost();
      }
      this.#confirmed.clear();
      this.#confirmedPatterns.clear();
    });
    client.on('error', () => {
      // The command connection reports outages; 'close' and 'ready' do the work here.
    });
  }

  onMessage(handler: MessageHandler): void {
    this.#handler = handler;
  }

  onResubscribed(handler: ResubscribedHandler): void {
    this.#resubscribed = handler;
  }

  /** Called when the link goes away (once per outage, however many reconnect attempts fail). */
  onLost(handler: () => void): void {
    this.#lost = handler;
  }

  /** True while the node wants `channel`, whether or not Redis has confirmed it yet. */
  wants(channel: string): boolean {
    return this.#wantedChannels.has(channel);
  }

  get ready(): boolean {
    return this.#client.status === 'ready';
  }

  get subscriptionCount(): number {
    return this.#confirmed.size + this.#confirmedPatterns.size;
  }

  /** Resolves once Redis confirmed it; rejects if Redis is down (it is still wanted). */
  subscribe(channel: string): Promise<void> {
    this.#wantedChannels.add(channel);
    if (this.#confirmed.has(channel)) return Promise.resolve();
    const promise = new Promise<void>((resolve, reject) => {
      const waiters = this.#waiters.get(channel) ?? [];
      waiters.push({ resolve, reject });
      this.#waiters.set(channel, waiters);
    });
    this.#scheduleFlush();
    return promise;
  }

  unsubscribe(channel: string): void {
    if (!this.#wantedChannels.delete(channel)) return;
    this.#settle(channel, new Error('unsubscribed before Redis confirmed the subscription'));
    this.#scheduleFlush();
  }

  /** Patterns (trigger channels with `*?[`) are subscribed for the node's lifetime. */
  async psubscribe(pattern: string): Promise<void> {
    this.#wantedPatterns.add(pattern);
    if (!this.ready) return;
    await this.#client.psubscribe(pattern);
    this.#confirmedPatterns.add(pattern);
  }

  async start(): Promise<void> {
    if (this.#client.status === 'wait') await this.#client.connect();
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const channel of [...this.#waiters.keys()]) this.#settle(channel, new Error('subscriber closed'));
    this.#client.disconnect();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      void this.#flush();
    });
  }

  /** Makes Redis hold exactly the wanted channels. */
  async #flush(): Promise<void> {
    if (this.#closed) return;
    const toSubscribe = [...this.#wantedChannels].filter((channel) => !this.#confirmed.has(channel));
    const toUnsubscribe = [...this.#confirmed].filter((channel) => !this.#wantedChannels.has(channel));
    if (!this.ready) {
      for (const channel of toSubscribe) this.#settle(channel, new Error('Redis pub/sub connection is down'));
      return;
    }
    for (const chunk of chunks(toUnsubscribe)) {
      for (const channel of chunk) this.#confirmed.delete(channel);
      this.#client.unsubscribe(...chunk).catch((error: Error) => this.#log.debug({ err: error }, 'unsubscribe failed'));
    }
    await Promise.all(chunks(toSubscribe).map((chunk) => this.#subscribeChunk(chunk)));
  }

  async #subscribeChunk(chunk: string[]): Promise<void> {
    try {
      await this.#client.subscribe(...chunk);
      for (const channel of chunk) {
        if (!this.#wantedChannels.has(channel)) continue;
        this.#confirmed.add(channel);
        this.#settle(channel, null);
      }
      // Unsubscribed while the SUBSCRIBE was in flight: undo it.
      if (chunk.some((channel) => !this.#wantedChannels.has(channel))) this.#scheduleFlush();
    } catch (error) {
      for (const channel of chunk) this.#settle(channel, error as Error);
    }
  }

  #resubscribeAll(): void {
    if (this.#closed) return;
    const lostAtMs = this.#lostAtMs;
    this.#lostAtMs = null;
    this.#confirmed.clear();
    this.#confirmedPatterns.clear();
    this.#log.info(
      { channels: this.#wantedChannels.size, patterns: this.#wantedPatterns.size },
      'redis pub/sub connected: subscribing',
    );
    for (const pattern of this.#wantedPatterns) {
      this.#client.psubscribe(pattern).then(
        () => this.#confirmedPatterns.add(pattern),
        (error: Error) => this.#log.warn({ err: error }, 'psubscribe failed'),
      );
    }
    void this.#flush().then(() => {
      if (lostAtMs === null || this.#closed || !this.ready) return;
      const missing = [...this.#wantedChannels].filter((channel) => !this.#confirmed.has(channel)).length;
      if (missing > 0) {
        // Only a failed SUBSCRIBE on a live link gets here; the next reconnect retries it.
        this.#log.warn({ missing }, 'redis pub/sub resubscribe incomplete');
        this.#lostAtMs = lostAtMs;
        return;
      }
      this.#resubscribed(lostAtMs);
    });
  }

  #settle(channel: string, error: Error | null): void {
    const waiters = this.#waiters.get(channel);
    if (!waiters) return;
    this.#waiters.delete(channel);
    for (const waiter of waiters) {
      if (error === null) waiter.resolve();
      else waiter.reject(error);
    }
  }
}

function chunks(items: string[]): string[][] {
  const out: string[][] = [];
  for (let i = 0; i < items.length; i += SUBSCRIBE_CHUNK) out.push(items.slice(i, i + SUBSCRIBE_CHUNK));
  return out;
}
