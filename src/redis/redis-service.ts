/**
 * The node's link to Redis (SPEC §1 REDIS_*, §8): one command connection
 * shared by the stores, the cluster and the rate limiter, one pub/sub
 * connection, and the circuit breaker that makes an outage cost nothing
 * but fast failures. It also answers what /health and /stats report.
 *
 * A Redis that stops answering but keeps its TCP connection (frozen,
 * SIGSTOP, a stuck host, a network that drops packets without a reset)
 * gives no error: every call would wait for the command timeout. A probe
 * (PING every 250 ms, one at a time) notices within about a second: the
 * breaker opens, calls in flight fail at once instead of waiting, and new
 * calls fail until a probe is answered again. Calls failed this way may
 * still run when Redis wakes up: their commands were already sent.
 * Answered probes also count as successes of a half-open breaker, so an
 * idle node recovers within about a second, not at its next real call.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import type { Metrics } from '../ops/metrics.js';
import { RedisConnection } from '../storage/redis/redis-connection.js';
import { CircuitBreaker, CircuitOpenError, type BreakerState } from './circuit-breaker.js';
import { RedisSubscriber } from './subscriber.js';

export type RedisHealth = 'healthy' | 'reconnecting' | 'circuit_open';

const BREAKER_GAUGE: Record<BreakerState, number> = { closed: 0, open: 1, half_open: 2 };

const PROBE_EVERY_MS = 250;
/** A probe unanswered this long means Redis stopped answering. */
const UNRESPONSIVE_AFTER_MS = 1000;

export class RedisService {
  readonly connection: RedisConnection;
  readonly subscriber: RedisSubscriber;
  readonly breaker: CircuitBreaker;
  readonly #log: Logger;
  #reconnections = 0;
  #everReady = false;
  #probe: NodeJS.Timeout | null = null;
  /** When the PING in flight was sent; null when none is. */
  #probeSentAtMs: number | null = null;
  #unresponsive = false;
  /** Rejecters of the guarded calls in flight: failed at once when Redis stops answering. */
  readonly #inflight = new Set<(error: Error) => void>();

  constructor(config: Config, log: Logger, metrics: Metrics) {
    this.#log = log.child({ component: 'redis' });
    this.connection = new RedisConnection({
      url: config.redis.url ?? '',
      keyPrefix: config.redis.keyPrefix,
      backoff: config.redis.backoff,
      connectionName: `ara:${config.cluster.serverId}:commands`,
      log: this.#log,
    });
    this.breaker = new CircuitBreaker({
      ...config.redis.breaker,
      onChange: (state) => {
        const level = state === 'open' ? 'warn' : 'info';
        this.#log[level]({ state }, 'redis circuit breaker changed state');
      },
    });
    const client = this.connection.client;
    client.on('ready', () => {
      if (this.#everReady) {
        this.#reconnections++;
        metrics.redisReconnections.inc();
      }
      this.#everReady = true;
      this.breaker.allowTrial();
      this.breaker.recordSuccess();
    });
    client.on('error', () => this.breaker.recordFailure());
    const pubsub = client.duplicate({
      enableOfflineQueue: true,
      autoResubscribe: false,
      lazyConnect: true,
      connectionName: `ara:${config.cluster.serverId}:pubsub`,
    });
    this.subscriber = new RedisSubscriber(pubsub, this.#log);
    metrics.observeRedis({
      connected: () => (this.connection.ready ? 1 : 0),
      breakerState: () => BREAKER_GAUGE[this.breaker.state],
    });
  }

  get status(): RedisHealth {
    // Half-open is still unproven: degraded until the trial calls succeed.
    if (this.#unresponsive || this.breaker.state !== 'closed') return 'circuit_open';
    return this.connection.ready ? 'healthy' : 'reconnecting';
  }

  /** The `redis` block of /stats (SPEC §6.2). */
  details(): object {
    return {
      status: this.status,
      connected: this.connection.ready,
      circuit_breaker_state: this.breaker.state,
      circuit_breaker_failures: this.breaker.failures,
      total_reconnections: this.#reconnections,
      pubsub_connected: this.subscriber.ready,
      subscriptions: this.subscriber.subscriptionCount,
    };
  }

  /**
   * Runs a Redis call through the breaker: fails at once while it is open
   * or Redis is unresponsive, and as soon as Redis is found unresponsive.
   */
  guarded<T>(call: () => Promise<T>): Promise<T> {
    if (this.#unresponsive) return Promise.reject(new CircuitOpenError());
    return this.breaker.run(() => this.#failableOnStall(call()));
  }

  #failableOnStall<T>(pending: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#inflight.add(reject);
      pending.then(
        (value) => {
          this.#inflight.delete(reject);
          resolve(value);
        },
        (error: unknown) => {
          this.#inflight.delete(reject);
          reject(error);
        },
      );
    });
  }

  async start(): Promise<void> {
    await this.connection.start();
    await this.subscriber.start();
    this.#probe = setInterval(() => this.#checkResponsive(), PROBE_EVERY_MS);
    this.#probe.unref();
  }

  #checkResponsive(): void {
    const client = this.connection.client;
    if (!this.connection.ready) {
      // Disconnected: ioredis reports it, and commands fail at once without a probe.
      this.#probeSentAtMs = null;
      return;
    }
    if (this.#probeSentAtMs === null) {
      const sentAt = (this.#probeSentAtMs = Date.now());
      client.ping().then(
        () => {
          if (this.#probeSentAtMs === sentAt) this.#probeSentAtMs = null;
          if (this.#unresponsive) this.#answeredAgain();
          // An answered probe is a successful call: a half-open breaker on an idle node
          // closes within a few probes instead of waiting for traffic.
          else if (this.breaker.state === 'half_open') this.breaker.recordSuccess();
        },
        () => {
          if (this.#probeSentAtMs === sentAt) this.#probeSentAtMs = null;
        },
      );
      return;
    }
    if (this.#unresponsive || Date.now() - this.#probeSentAtMs < UNRESPONSIVE_AFTER_MS) return;
    // This process may itself have been too busy to read the answer: look again after
    // the poll phase has read what the socket holds.
    setImmediate(() => {
      if (this.#unresponsive || this.#probeSentAtMs === null || Date.now() - this.#probeSentAtMs < UNRESPONSIVE_AFTER_MS) return;
      this.#unresponsive = true;
      this.#log.warn({ redis: this.connection.target, waitedMs: Date.now() - this.#probeSentAtMs }, 'redis stopped answering; failing calls until it does');
      this.breaker.trip();
      const waiting = [...this.#inflight];
      this.#inflight.clear();
      for (const reject of waiting) reject(new CircuitOpenError());
    });
  }

  #answeredAgain(): void {
    this.#unresponsive = false;
    this.#log.info({ redis: this.connection.target }, 'redis answers again');
    this.breaker.allowTrial();
    this.breaker.recordSuccess();
  }

  async close(): Promise<void> {
    if (this.#probe) clearInterval(this.#probe);
    this.#probe = null;
    await this.subscriber.close();
    await this.connection.close();
  }
}
