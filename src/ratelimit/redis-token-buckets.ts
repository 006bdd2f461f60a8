/**
 * Token buckets in Redis, shared by every node (SPEC §1
 * RATELIMIT_BACKEND=redis): one Lua script refills and takes atomically,
 * on Redis's clock, so nodes never disagree about a bucket. While Redis is
 * unreachable the node falls back to its own buckets: rate limiting then
 * holds per node instead of cluster-wide, and requests never wait on Redis.
 */
import type { Logger } from 'pino';
import type { RedisService } from '../redis/redis-service.js';
import type { RedisScript } from '../storage/redis/redis-connection.js';
import { keyTail } from '../storage/redis/redis-connection.js';
import { TokenBuckets, type BucketDecision } from './token-buckets.js';

// KEYS[1] bucket. ARGV: capacity, refill per ms. Returns {allowed, tokens left (text), now ms}.
const TAKE = `
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(bucket[1]) or capacity
local at = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1000)
return {allowed, tostring(tokens), now}
`;

/** Either kind of bucket store, as the limiters use it. */
export interface BucketStore {
  take(key: string): BucketDecision | Promise<BucketDecision>;
  /** Evicts idle local state; shared buckets expire in Redis by themselves. */
  sweep(): void;
}

export class RedisTokenBuckets implements BucketStore {
  readonly #redis: RedisService;
  readonly #script: RedisScript;
  readonly #name: string;
  readonly #capacity: number;
  readonly #refillPerMs: number;
  readonly #fallback: TokenBuckets;
  readonly #log: Logger;

  /** `name` keeps limiters apart in Redis (`http`, `connect`). */
  constructor(redis: RedisService, name: string, capacity: number, refillPerSecond: number, log: Logger) {
    this.#redis = redis;
    this.#script = redis.connection.defineScript('araRateLimitTake', 1, TAKE);
    this.#name = name;
    this.#capacity = capacity;
    this.#refillPerMs = refillPerSecond / 1000;
    this.#fallback = new TokenBuckets(capacity, refillPerSecond);
    this.#log = log;
  }

  async take(key: string): Promise<BucketDecision> {
    const redisKey = `${this.#redis.connection.keyPrefix}:ratelimit:${this.#name}:${keyTail(key)}`;
    try {
      const [allowed, left, now] = (await this.#redis.guarded(() =>
        this.#script.run([redisKey], [this.#capacity, this.#refillPerMs]),
      )) as [number, string, number];
      return this.#decision(allowed === 1, Number(left), Number(now));
    } catch (error) {
      this.#log.debug({ err: error }, 'shared rate limit unavailable; using this node\'s buckets');
      return this.#fallback.take(key);
    }
  }

  sweep(): void {
    this.#fallback.sweep();
  }

  #decision(allowed: boolean, tokens: number, nowMs: number): BucketDecision {
    return {
      allowed,
      remaining: Math.floor(tokens),
      limit: this.#capacity,
      resetAtSeconds: Math.ceil((nowMs + (this.#capacity - tokens) / this.#refillPerMs) / 1000),
      retryAfterSeconds: allowed ? 0 : Math.max(1, Math.ceil((1 - tokens) / this.#refillPerMs / 1000)),
    };
  }
}
