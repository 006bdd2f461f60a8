/**
 * The node's rate limiters when RATELIMIT_ENABLED (SPEC §1, §4, §6): the
 * HTTP API bucket, and new WS/SSE connections per client address per
 * minute. (Inbound WS messages are limited per connection by the realtime
 * service.) One sweep timer evicts idle buckets.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import type { Metrics } from '../ops/metrics.js';
import type { RedisService } from '../redis/redis-service.js';
import type { ConnectGate } from '../transport/handshake.js';
import { HttpRateLimiter } from './http-rate-limiter.js';
import { RedisTokenBuckets, type BucketStore } from './redis-token-buckets.js';
import { TokenBuckets } from './token-buckets.js';

const SWEEP_INTERVAL_MS = 60_000;

export class RateLimits {
  readonly http: HttpRateLimiter;
  readonly connectGate: ConnectGate;
  readonly #connects: BucketStore;
  #sweepTimer: NodeJS.Timeout | null = null;

  /** `shared`: RATELIMIT_BACKEND=redis, buckets in Redis shared by every node. */
  constructor(config: Config, metrics: Metrics, shared: { redis: RedisService; log: Logger } | null) {
    const { httpBurstSize, httpRequestsPerSecond, wsConnectionsPerMinute } = config.rateLimit;
    const buckets = (name: string, capacity: number, perSecond: number): BucketStore =>
      shared
        ? new RedisTokenBuckets(shared.redis, name, capacity, perSecond, shared.log)
        : new TokenBuckets(capacity, perSecond);
    this.http = new HttpRateLimiter(buckets('http', httpBurstSize, httpRequestsPerSecond), metrics);
    const connects = buckets('connect', wsConnectionsPerMinute, wsConnectionsPerMinute / 60);
    this.#connects = connects;
    this.connectGate = {
      async check(clientAddress: string): Promise<number | null> {
        const decision = await connects.take(clientAddress);
        metrics[decision.allowed ? 'rateLimitAllowed' : 'rateLimitDenied'].inc({ type: 'ws_connect' });
        return decision.allowed ? null : decision.retryAfterSeconds;
      },
    };
  }

  startSweeping(): void {
    this.#sweepTimer = setInterval(() => {
      this.http.buckets.sweep();
      this.#connects.sweep();
    }, SWEEP_INTERVAL_MS);
    this.#sweepTimer.unref();
  }

  stopSweeping(): void {
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    this.#sweepTimer = null;
  }
}

export function createRateLimits(
  config: Config,
  metrics: Metrics,
  redis: RedisService | null,
  log: Logger,
): RateLimits | null {
  if (!config.rateLimit.enabled) return null;
  const shared = config.rateLimit.backend === 'redis' && redis ? { redis, log } : null;
  return new RateLimits(config, metrics, shared);
}
