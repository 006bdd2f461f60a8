/**
 * The HTTP API's token bucket (SPEC §6): every response of a limited route
 * carries X-RateLimit-Limit / -Remaining / -Reset, and a request over the
 * limit is answered 429 RATE_LIMITED with Retry-After.
 */
import type { FastifyReply } from 'fastify';
import { ApiError } from '../errors.js';
import type { Metrics } from '../ops/metrics.js';
import type { BucketStore } from './redis-token-buckets.js';

export class HttpRateLimiter {
  constructor(
    readonly buckets: BucketStore,
    readonly metrics: Metrics,
  ) {}

  /** Takes a token for `key`; throws the 429 when there is none. */
  async admit(key: string, reply: FastifyReply): Promise<void> {
    const decision = await this.buckets.take(key);
    void reply.headers({
      'X-RateLimit-Limit': String(decision.limit),
      'X-RateLimit-Remaining': String(decision.remaining),
      'X-RateLimit-Reset': String(decision.resetAtSeconds),
    });
    if (decision.allowed) {
      this.metrics.rateLimitAllowed.inc({ type: 'http' });
      return;
    }
    this.metrics.rateLimitDenied.inc({ type: 'http' });
    throw new ApiError('RATE_LIMITED', `Too many requests, retry after ${decision.retryAfterSeconds} seconds`, {
      headers: { 'Retry-After': String(decision.retryAfterSeconds) },
    });
  }
}
