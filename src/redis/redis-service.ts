/**
 * The node's link to Redis (SPEC §1 REDIS_*, §8): one command connection
 * shared by the stores, the cluster and the rate limiter, one pub/sub
 * connection, and the circuit breaker that makes an outage cost nothing
 * but fast failures. It also answers what /health and /stats report.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import type { Metrics } from '../ops/metrics.js';
import { RedisConnection } from '../storage/redis/redis-connection.js';
import { CircuitBreaker, type BreakerState } from './circuit-breaker.js';
import { RedisSubscriber } from './subscriber.js';

export type RedisHealth = 'healthy' | 'reconnecting' | 'circuit_open';

const BREAKER_GAUGE: Record<BreakerState, number> = { closed: 0, open: 1, half_open: 2 };

export class RedisService {
  readonly connection: RedisConnection;
  readonly subscriber: RedisSubscriber;
  readonly breaker: CircuitBreaker;
  readonly #log: Logger;
  #reconnections = 0;
  #everReady = false;

  constructor(config: Config, log: Logger, metrics: Metrics) {
    this.#log = log.child({ component: 'redis' });
    this.connection = new RedisConnection({
      url: config.redis.url ?? '',
      keyPrefix: config.redis.keyPrefix,
      backoff: config.redis.backoff,
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
    const pubsub = client.duplicate({ enableOfflineQueue: true, autoResubscribe: false, lazyConnect: true });
    this.subscriber = new RedisSubscriber(pubsub, this.#log);
    metrics.observeRedis({
      connected: () => (this.connection.ready ? 1 : 0),
      breakerState: () => BREAKER_GAUGE[this.breaker.state],
    });
  }

  get status(): RedisHealth {
    // Half-open is still unproven: degraded until the trial calls succeed.
    if (this.breaker.state !== 'closed') return 'circuit_open';
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

  /** Runs a Redis call through the breaker: fails at once while it is open. */
  guarded<T>(call: () => Promise<T>): Promise<T> {
    return this.breaker.run(call);
  }

  async start(): Promise<void> {
    await this.connection.start();
    await this.subscriber.start();
  }

  async close(): Promise<void> {
    await this.subscriber.close();
    await this.connection.close();
  }
}
