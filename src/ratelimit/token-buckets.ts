/**
 * Token buckets kept in this process, one per key (SPEC §1 RATELIMIT_*).
 * Tokens refill continuously at `refillPerSecond` up to `capacity`; a
 * request takes one. Buckets that have refilled to full carry no state
 * worth keeping and are swept away, and the number of keys is capped, so
 * callers cannot grow this map without bound.
 */

export interface BucketDecision {
  allowed: boolean;
  /** Whole tokens left after this request. */
  remaining: number;
  limit: number;
  /** Epoch seconds at which the bucket is full again. */
  resetAtSeconds: number;
  /** Seconds until one token is available (0 when allowed). */
  retryAfterSeconds: number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

export class TokenBuckets {
  readonly #buckets = new Map<string, Bucket>();
  readonly #capacity: number;
  readonly #refillPerMs: number;
  readonly #maxKeys: number;

  constructor(capacity: number, refillPerSecond: number, maxKeys = 100_000) {
    this.#capacity = capacity;
    this.#refillPerMs = refillPerSecond / 1000;
    this.#maxKeys = maxKeys;
  }

  get size(): number {
    return this.#buckets.size;
  }

  take(key: string, nowMs = Date.now()): BucketDecision {
    const bucket = this.#bucketFor(key, nowMs);
    bucket.tokens = Math.min(this.#capacity, bucket.tokens + (nowMs - bucket.updatedMs) * this.#refillPerMs);
    bucket.updatedMs = nowMs;
    const allowed = bucket.tokens >= 1;
    if (allowed) bucket.tokens -= 1;
    return {
      allowed,
      remaining: Math.floor(bucket.tokens),
      limit: this.#capacity,
      resetAtSeconds: Math.ceil((nowMs + (this.#capacity - bucket.tokens) / this.#refillPerMs) / 1000),
      retryAfterSeconds: allowed ? 0 : Math.max(1, Math.ceil((1 - bucket.tokens) / this.#refillPerMs / 1000)),
    };
  }

  /** Removes buckets that would be full by now; returns how many went. */
  sweep(nowMs = Date.now()): number {
    let removed = 0;
    for (const [key, bucket] of this.#buckets) {
      if (bucket.tokens + (nowMs - bucket.updatedMs) * this.#refillPerMs >= this.#capacity) {
        this.#buckets.delete(key);
        removed++;
      }
    }
    return removed;
  }

  #bucketFor(key: string, nowMs: number): Bucket {
    let bucket = this.#buckets.get(key);
    if (bucket) return bucket;
    if (this.#buckets.size >= this.#maxKeys && this.sweep(nowMs) === 0) {
      // Still full of active keys: forget the oldest one. Its owner merely
      // gets a fresh bucket, which errs on the side of letting traffic in.
      const oldest = this.#buckets.keys().next().value;
      if (oldest !== undefined) this.#buckets.delete(oldest);
    }
    bucket = { tokens: this.#capacity, updatedMs: nowMs };
    this.#buckets.set(key, bucket);
    return bucket;
  }
}
