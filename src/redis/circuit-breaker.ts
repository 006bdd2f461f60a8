/**
 * A circuit breaker for calls to Redis (SPEC §1 REDIS_CIRCUIT_BREAKER_*):
 * after `failureThreshold` failures in a row it opens and calls fail at
 * once; after `resetTimeoutMs` one trial is let through (half-open); after
 * `successThreshold` successes it closes again. Any failure while half-open
 * opens it again.
 */

export type BreakerState = 'closed' | 'open' | 'half_open';

export interface BreakerOptions {
  failureThreshold: number;
  successThreshold: number;
  resetTimeoutMs: number;
  /** Called on every state change (metrics, health, logs). */
  onChange?: (state: BreakerState) => void;
}

export class CircuitOpenError extends Error {
  constructor() {
    super('Redis circuit breaker is open');
    this.name = 'CircuitOpenError';
  }
}

export class CircuitBreaker {
  #state: BreakerState = 'closed';
  #failures = 0;
  #successes = 0;
  #openedAtMs = 0;
  /** The half-open trial call in flight, if any (a fresh half-open forgets an older one). */
  #trial: object | null = null;
  readonly #options: BreakerOptions;

  constructor(options: BreakerOptions) {
    this.#options = options;
  }

  get state(): BreakerState {
    this.#maybeHalfOpen(Date.now());
    return this.#state;
  }

  get failures(): number {
    return this.#failures;
  }

  /**
   * Throws CircuitOpenError instead of calling while open, and while
   * half-open with a trial call still in flight: one trial at a time.
   */
  async run<T>(call: () => Promise<T>): Promise<T> {
    const state = this.state;
    if (state === 'open' || (state === 'half_open' && this.#trial !== null)) throw new CircuitOpenError();
    const trial = state === 'half_open' ? (this.#trial = {}) : null;
    try {
      const result = await call();
      this.recordSuccess();
      return result;
    } catch (error) {
      this.recordFailure();
      throw error;
    } finally {
      if (trial !== null && this.#trial === trial) this.#trial = null;
    }
  }

  /** Opens at once, whatever the count: Redis is known to be unusable (it stopped answering). */
  trip(): void {
    if (this.#state !== 'open') this.#moveTo('open');
  }

  /** Evidence of recovery (a reconnect): try calls again now instead of after the timeout. */
  allowTrial(): void {
    if (this.#state === 'open') this.#moveTo('half_open');
  }

  recordSuccess(): void {
    if (this.#state === 'half_open') {
      if (++this.#successes >= this.#options.successThreshold) this.#moveTo('closed');
    } else if (this.#state === 'closed') {
      this.#failures = 0;
    }
  }

  recordFailure(): void {
    this.#failures++;
    if (this.#state === 'half_open' || (this.#state === 'closed' && this.#failures >= this.#options.failureThreshold)) {
      this.#moveTo('open');
    }
  }

  #maybeHalfOpen(nowMs: number): void {
    if (this.#state === 'open' && nowMs - this.#openedAtMs >= this.#options.resetTimeoutMs) this.#moveTo('half_open');
  }

  #moveTo(state: BreakerState): void {
    this.#state = state;
    this.#successes = 0;
    this.#trial = null;
    if (state === 'open') this.#openedAtMs = Date.now();
    if (state === 'closed') this.#failures = 0;
    this.#options.onChange?.(state);
  }
}

/**
 * Reconnect delays with full jitter (SPEC §1 REDIS_BACKOFF_*): attempt n
 * waits a random time up to min(max, initial × 2^n).
 */
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, random = Math.random): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
