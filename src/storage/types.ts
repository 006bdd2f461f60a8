/**
 * The four stores of SPEC §7 and §6.2, each a small interface with memory,
 * Redis and PostgreSQL implementations chosen at start. Every method takes
 * the tenant as its own argument; implementations keep it as its own key
 * segment or column, never as a prefix of another name.
 *
 * A stored notification is its wire JSON, shared with live delivery, plus
 * what replay needs to rebuild the outbound message.
 */
import type { StoreBackend } from '../config/types.js';

export interface StoredNotification {
  /** Notification id (UUID). */
  id: string;
  /** The notification message exactly as sent live (SPEC §4). */
  json: string;
  /** Backlog lane of its priority (hub/outbound.ts). */
  lane: number;
  /** Epoch ms after which it must never be delivered. */
  expiresAtMs: number;
  /**
   * Send order assigned by the sending node: strictly increasing on a node,
   * also across restarts (milliseconds since the epoch × 1000 plus a
   * counter, never going backwards on one node). The same notification has
   * the same order in every store it is written to. Stores whose writes
   * may complete in another order than they were issued (PostgreSQL: each
   * call runs on whichever pool connection is free) order by it.
   */
  order: number;
}

/**
 * A stored notification as read back, with its position: `seq` grows with
 * send order. `order` itself is not returned (a store that executes in
 * issue order may not keep it); `seq` is what callers order and remove by.
 */
export interface SequencedNotification extends Omit<StoredNotification, 'order'> {
  seq: number;
}

/**
 * Offline queue (SPEC §7): per (tenant, user), oldest first, capped.
 *
 * Contract:
 * - `enqueue` appends; beyond `maxSize` the oldest entries are dropped and
 *   their number returned. An entry whose expiry has passed is never
 *   returned by `peek`.
 * - `peek` returns the unexpired entries in send order without removing
 *   them; `remove` then deletes entries up to and including `uptoSeq`
 *   (and expired ones). A message thus leaves the queue only after it was
 *   written to a connection: a crash in between delivers it again
 *   (at-least-once), never loses it.
 * - `remove` is atomic: concurrent enqueues after the peek stay queued.
 * - `seq` follows the entries' `order` for entries of one node, whatever
 *   order the enqueues completed in. A backend that executes one node's
 *   writes in the order they were issued (memory, Redis) may use its own
 *   counter; one that may not (PostgreSQL) returns `order` as `seq`.
 */
export interface OfflineQueue {
  readonly backend: StoreBackend;
  enqueue(tenantId: string, userId: string, entry: StoredNotification, maxSize: number): Promise<{ dropped: number }>;
  /** At most `limit` of the oldest unexpired entries, in send order. */
  peek(tenantId: string, userId: string, nowMs: number, limit: number): Promise<SequencedNotification[]>;
  remove(tenantId: string, userId: string, uptoSeq: number): Promise<number>;
  /** Deletes every expired entry; returns how many. */
  purgeExpired(nowMs: number): Promise<number>;
  /** Entries and users with a queue; null = every tenant. */
  stats(tenantId: string | null): Promise<{ messages: number; users: number }>;
  close(): Promise<void>;
}

export type HistoryScope = { kind: 'user'; id: string } | { kind: 'channel'; id: string };

/**
 * Per-user and per-channel history for resume (SPEC §7 "beyond").
 *
 * Contract:
 * - `append` adds one notification to each scope (a notification sent to
 *   several channels is in each), keeping the newest `maxSize` per scope.
 * - `since` merges the given scopes in send order and returns what comes
 *   after `sinceId`, each notification once. `found` is false when
 *   `sinceId` is in none of the scopes (aged out or unknown): then every
 *   unexpired entry is returned, so the client sees all that is left.
 * - "Send order" is `order` for entries of one node, whatever order the
 *   appends completed in (a resume must follow live dispatch order). A
 *   backend that executes one node's writes in the order they were issued
 *   (memory, Redis) may use its own counter instead.
 */
export interface HistoryStore {
  append(
    tenantId: string,
    scopes: readonly HistoryScope[],
    entry: StoredNotification,
    maxSizes: { user: number; channel: number },
  ): Promise<void>;
  since(
    tenantId: string,
    scopes: readonly HistoryScope[],
    sinceId: string,
    nowMs: number,
  ): Promise<{ found: boolean; entries: SequencedNotification[] }>;
  purgeExpired(nowMs: number): Promise<number>;
  close(): Promise<void>;
}

export interface AckStats {
  totalTracked: number;
  totalAcked: number;
  totalExpired: number;
  pendingCount: number;
  /** Sum of ack latencies, for the average. */
  totalLatencyMs: number;
}

/** An ack that timed out; `json` is kept only when redelivery is on. */
export interface ExpiredAck {
  tenantId: string;
  userId: string;
  notificationId: string;
  json: string | null;
  lane: number;
}

/**
 * Acknowledgements per recipient (SPEC §7): one pending record per
 * (tenant, user, notification), whichever of the user's connections got it.
 *
 * Contract:
 * - `track` records a delivery and returns true; tracking the same triple
 *   again does nothing and returns false (several devices, replays), so
 *   callers can count records rather than calls.
 * - `acknowledge` succeeds once, only for that tenant and user, and only
 *   before the deadline; anything else is 'invalid'. Returns the latency.
 * - `expire` removes records past their deadline, counts them expired and
 *   returns them.
 */
export interface AckTracker {
  readonly backend: StoreBackend;
  track(
    tenantId: string,
    userId: string,
    notification: { id: string; json: string | null; lane: number },
    sentAtMs: number,
    deadlineMs: number,
  ): Promise<boolean>;
  acknowledge(tenantId: string, userId: string, notificationId: string, nowMs: number): Promise<{ latencyMs: number } | null>;
  expire(nowMs: number): Promise<ExpiredAck[]>;
  stats(tenantId: string | null): Promise<AckStats>;
  close(): Promise<void>;
}

export interface TemplateRecord {
  id: string;
  name: string;
  event_type: string;
  payload_template: unknown;
  default_priority: 'Low' | 'Normal' | 'High' | 'Critical';
  default_ttl?: number;
  description?: string;
  created_at: string;
  updated_at: string;
}

/**
 * Templates per tenant (SPEC §6.2). Ids are unique within a tenant; two
 * tenants may use the same id for different templates.
 */
export interface TemplateStore {
  readonly backend: StoreBackend;
  /** false when the id exists already. */
  create(tenantId: string, template: TemplateRecord): Promise<boolean>;
  get(tenantId: string, id: string): Promise<TemplateRecord | undefined>;
  list(tenantId: string): Promise<TemplateRecord[]>;
  /** Replaces the stored record; false when it does not exist. */
  replace(tenantId: string, template: TemplateRecord): Promise<boolean>;
  delete(tenantId: string, id: string): Promise<boolean>;
  close(): Promise<void>;
}
