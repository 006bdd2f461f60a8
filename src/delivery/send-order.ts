/**
 * The send order of a node's notifications (StoredNotification.order):
 * assigned when a notification is dispatched, so stores whose writes may
 * complete out of order (PostgreSQL) can keep dispatch order.
 *
 * Each value is max(previous + 1, now in ms × 1000): strictly increasing
 * on one node however the clock moves (a step back only slows it to +1),
 * and larger than anything a previous run of the node handed out as long
 * as that run averaged under 1,000 values per millisecond. Values stay
 * safe integers (below 2^53) until the year 2255.
 */
export class SendOrder {
  readonly #clock: () => number;
  #last = 0;

  /** `clock`: epoch milliseconds; Date.now unless a test supplies one. */
  constructor(clock: () => number = Date.now) {
    this.#clock = clock;
  }

  /** The next order, above every one returned before. */
  next(): number {
    const next = Math.max(this.#last + 1, Math.floor(this.#clock()) * 1000);
    this.#last = next;
    return next;
  }
}
