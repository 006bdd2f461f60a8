/**
 * Which bus log entries this node has had, so that a catch-up after a
 * pub/sub gap delivers each missed one exactly once (docs/scaling.md "How
 * a send travels").
 *
 * Every bus message arrives behind its log entry id, and Redis hands one
 * subscriber connection its messages in the order the entries were made.
 * So while the link is up, "the last entry received" says exactly what
 * this node has covered: anything earlier that concerned it arrived then.
 * From the moment the link is lost until a catch-up completes, what is
 * delivered (live on the new link, or by the catch-up itself) is also
 * remembered by key, so a catch-up — or a second one after it was cut
 * short — never delivers it again. No window of recent ids to overflow.
 *
 * Keys: the entry id for channel and broadcast messages (one delivery
 * covers every bus channel it was published on); entry id and user bus
 * channel for user messages (one per user).
 */
import { compareEntryIds } from '../storage/redis/bus-log.js';

export class BusGap {
  /** The last entry received on the current pub/sub connection. */
  #lastLive: string | null = null;
  /** Every entry up to this one that concerned this node was delivered (outside a gap). */
  #coveredUpTo: string;
  /** While in a gap: keys delivered since it began. */
  #gapKeys: Set<string> | null = null;

  constructor(coveredUpTo: string) {
    this.#coveredUpTo = coveredUpTo;
  }

  get coveredUpTo(): string {
    return this.#coveredUpTo;
  }

  get inGap(): boolean {
    return this.#gapKeys !== null;
  }

  /** The pub/sub link went away. */
  lost(): void {
    this.#lastLive = null;
    this.#gapKeys ??= new Set();
  }

  /**
   * A live message; `userChannel` for user messages. False for a copy of
   * an entry already handled here: a channel message published on several
   * bus channels this node listens on arrives once per channel.
   */
  acceptLive(entryId: string, userChannel: string | null): boolean {
    const last = this.#lastLive;
    if (last !== null) {
      const order = compareEntryIds(entryId, last);
      if (order < 0 || (order === 0 && userChannel === null)) return false;
    }
    this.#lastLive = entryId;
    if (this.#gapKeys !== null) this.#gapKeys.add(keyOf(entryId, userChannel));
    else this.#coveredUpTo = entryId;
    return true;
  }

  /** During a catch-up: true (and remembered) if this entry was not delivered since the gap began. */
  claim(entryId: string, userChannel: string | null): boolean {
    const keys = this.#gapKeys;
    if (keys === null) return false;
    const key = keyOf(entryId, userChannel);
    if (keys.has(key)) return false;
    keys.add(key);
    return true;
  }

  /** The catch-up read the log up to `lastEntry`: the gap is closed. */
  closed(lastEntry: string | null): void {
    let covered = lastEntry ?? this.#coveredUpTo;
    if (this.#lastLive !== null && compareEntryIds(this.#lastLive, covered) > 0) covered = this.#lastLive;
    this.#coveredUpTo = covered;
    this.#gapKeys = null;
  }
}

function keyOf(entryId: string, userChannel: string | null): string {
  return userChannel === null ? entryId : `${entryId}|${userChannel}`;
}
