/**
 * The node's rate limiters when RATELIMIT_ENABLED (SPEC §1, §4, §6): the
 * HTTP API bucket, and new WS/SSE connections per client address per
 * minute. (Inbound WS messages are limited per connection by the realtime
 * service.) One sweep timer evicts idle buckets.
 */
import type { Config } from '../config/types.js';
import type { Metrics } from '../ops/metrics.js';
import type { ConnectGate } from '../transport/handshake.js';
import { HttpRateLimiter } from './http-rate-limiter.js';
import { TokenBuckets } from './token-buckets.js';

const SWEEP_INTERVAL_MS = 60_000;

export class RateLimits {
  readonly http: HttpRateLimiter;
  readonly connectGate: ConnectGate;
  readonly #connects: TokenBuckets;
  #sweepTimer: NodeJS.Timeout | null = null;

  constructor(config: Config, metrics: Metrics) {
    const { httpBurstSize, httpRequestsPerSecond, wsConnectionsPerMinute } = config.rateLimit;
    this.http = new HttpRateLimiter(new TokenBuckets(httpBurstSize, httpRequestsPerSecond), metrics);
    const connects = new TokenBuckets(wsConnectionsPerMinute, wsConnectionsPerMinute / 60);
    this.#connects = connects;
    this.connectGate = {
      check(clientAddress: string): number | null {
        const decision = connects.take(clientAddress);
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

export function createRateLimits(config: Config, metrics: Metrics): RateLimits | null {
  // FIXME(issue 5): RATELIMIT_BACKEND=redis (buckets shared by nodes) is not built; local buckets are used.
  return config.rateLimit.enabled ? new RateLimits(config, metrics) : null;
}
