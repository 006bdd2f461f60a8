/**
 * Everything a send means beyond live fan-out (SPEC §7): queueing for
 * offline users, history for resume, acknowledgement tracking, and the
 * replay a connection gets when it arrives. Stores are optional: each is
 * absent when its feature is off.
 *
 * A send resolves only after what it queued is stored, so a 200 from the
 * API means the notification was delivered live or is in the queue.
 */
import type { Logger } from 'pino';
import type { Cluster, RemoteDelivery } from '../cluster/cluster.js';
import { BackendUnavailableError } from '../storage/guard.js';
import type { RedisQueue } from '../storage/queue/redis-queue.js';
import { TRIGGER_ID_WINDOW_MS, triggerKey, triggerNotificationId } from '../triggers/trigger-id.js';
import type { TriggerRequest } from '../triggers/trigger-message.js';
import type { Connection } from '../hub/connection.js';
import { OutboundMessage } from '../hub/outbound.js';
import type { Metrics } from '../ops/metrics.js';
import type { NotificationCounters, NotificationStats } from '../tenancy/tenant-stats.js';
import type { AckTracker, HistoryScope, HistoryStore, OfflineQueue, SequencedNotification, StoredNotification } from '../storage/types.js';
import { ALL_TENANTS, type Dispatcher, type LiveResult, type Target, type TargetType } from './dispatcher.js';
import { buildNotification, type Notification } from './notification.js';
import { SendOrder } from './send-order.js';

export interface DispatchResult {
  /** Connections that accepted the message. */
  delivered: number;
  /** Connections that could not take it, plus users that could not be queued. */
  failed: number;
  /** Users it was queued for. */
  queued: number;
  /** Cluster mode: the nodes it was routed to, this one included. */
  nodes?: number;
}

export interface DeliveryStores {
  queue: OfflineQueue | null;
  history: HistoryStore | null;
  acks: AckTracker | null;
}

export interface DeliveryOptions {
  maxQueuePerUser: number;
  queueTtlMs: number;
  historyChannelMaxSize: number;
  ackTimeoutMs: number;
  /** Keep the message with its ack record, to queue it again when the ack times out. */
  ackRedeliver: boolean;
}

/** Queue entries read and written per round trip during a replay. */
const REPLAY_PAGE = 500;

export class Delivery {
  readonly #dispatcher: Dispatcher;
  readonly #stores: DeliveryStores;
  readonly #options: DeliveryOptions;
  readonly #metrics: Metrics;
  readonly #stats: NotificationStats;
  readonly #log: Logger;
  /** Enqueues still in flight, per tenant and user: a replay waits for them. */
  readonly #inflight = new Map<string, Map<string, Promise<unknown>>>();
  /**
   * History appends still in flight, per tenant. Live delivery happens
   * before the append, so a client may resume from an id whose append has
   * not landed yet: a resume waits for the appends already begun.
   */
  readonly #historyInflight = new Map<string, Set<Promise<unknown>>>();
  #cluster: Cluster | null = null;

  constructor(
    dispatcher: Dispatcher,
    stores: DeliveryStores,
    options: DeliveryOptions,
    metrics: Metrics,
    stats: NotificationStats,
    log: Logger,
  ) {
    this.#dispatcher = dispatcher;
    this.#stores = stores;
    this.#options = options;
    this.#metrics = metrics;
    this.#stats = stats;
    this.#log = log;
  }

  get historyEnabled(): boolean {
    return this.#stores.history !== null;
  }

  /** Cluster mode (SPEC §8): sends are routed to the other nodes too. */
  setCluster(cluster: Cluster): void {
    this.#cluster = cluster;
  }

  send(tenantId: string, target: Target, notification: Notification): Promise<DispatchResult> {
    const live = this.#dispatcher.dispatch(tenantId, target, notification, this.#stores.acks !== null);
    if (live.reachedUsers) this.#trackReached(live.reachedUsers, notification);
    if (this.#cluster === null && !this.#queues(tenantId, live.offlineUsers, notification) && !this.#keepsHistory(tenantId, target, notification)) {
      // Nothing to queue, store or route: the result is known now, without
      // the awaits below (the common send to a user who is not connected).
      const result: DispatchResult = { delivered: live.delivered, failed: live.failed, queued: 0 };
      this.#record(tenantId, target.type, notification, result);
      return Promise.resolve(result);
    }
    return this.#storeAndRoute(tenantId, target, notification, live);
  }

  async #storeAndRoute(tenantId: string, target: Target, notification: Notification, live: LiveResult): Promise<DispatchResult> {
    const cluster = this.#cluster;
    const [queuing, routed] = await Promise.all([
      cluster ? { queued: 0 } : this.#queueOffline(tenantId, live.offlineUsers, notification),
      cluster ? this.#route(cluster, tenantId, target, notification, live) : null,
      this.#recordHistory(tenantId, target, notification),
    ]);
    const result: DispatchResult = {
      delivered: live.delivered,
      failed: live.failed,
      queued: routed?.queued ?? queuing.queued,
    };
    this.#record(tenantId, target.type, notification, result);
    if (routed === null) return result;
    const nodes = (live.delivered > 0 ? 1 : 0) + routed.remoteNodes;
    return { ...result, delivered: result.delivered + routed.remoteConnections, nodes };
  }

  /**
   * In cluster mode local delivery has happened before Redis is asked
   * anything. If Redis cannot route or queue, the send answers 503: it was
   * not delivered everywhere and may not be queued (SPEC §8).
   */
  async #route(cluster: Cluster, tenantId: string, target: Target, notification: Notification, live: LiveResult) {
    const queue = this.#stores.queue as RedisQueue | null;
    const offline = new Set(live.offlineUsers);
    const targeted = target.type === 'user' ? [target.userId] : target.type === 'users' ? target.userIds : [];
    const localUsers = new Set(targeted.filter((userId) => !offline.has(userId)));
    const queueing =
      queue === null || tenantId === ALL_TENANTS
        ? null
        : { store: queue, entry: this.#stored(notification, this.#options.queueTtlMs), maxSize: this.#options.maxQueuePerUser };
    try {
      const routed = await cluster.route(tenantId, target, notification, localUsers, queueing);
      if (routed.queued > 0) this.#metrics.queueEnqueued.inc(routed.queued);
      return routed;
    } catch (error) {
      this.#log.warn({ err: error, tenantId }, 'cluster routing failed; delivered on this node only');
      throw error instanceof BackendUnavailableError ? error : new BackendUnavailableError('redis', error);
    }
  }

  /** A notification another node routed here: delivered to this node's connections (how many it reached). */
  deliverRemote(remote: RemoteDelivery): number {
    const { tenantId, target, notification } = remote;
    const live = this.#dispatcher.dispatch(tenantId, target, notification, this.#stores.acks !== null);
    if (live.reachedUsers) this.#trackReached(live.reachedUsers, notification);
    this.#countDelivered(tenantId, live.delivered, live.failed);
    return live.delivered;
  }

  /**
   * A Redis trigger message (SPEC §8). On one node it is a send like any
   * other. In a cluster every node receives it: each delivers to its own
   * connections; users no node holds are queued once (the Redis queue's
   * enqueueIfOffline), and history and the sent count are written by
   * whichever node claims the message first.
   */
  async deliverTrigger(request: TriggerRequest, channel: string, message: string): Promise<void> {
    const cluster = this.#cluster;
    const id = cluster ? triggerNotificationId(channel, message, Date.now()) : undefined;
    const notification = buildNotification(request.content, `redis:${channel}`, id);
    if (cluster === null) {
      await this.send(request.tenantId, request.target, notification);
      return;
    }
    const { tenantId, target } = request;
    const live = this.#dispatcher.dispatch(tenantId, target, notification, this.#stores.acks !== null);
    if (live.reachedUsers) this.#trackReached(live.reachedUsers, notification);
    const onceKey = triggerKey(channel, message);
    const queued = await this.#queueTriggerOffline(cluster, tenantId, live.offlineUsers, notification, onceKey);
    const first = await cluster.claimOnce(`trigger:${onceKey}`, TRIGGER_ID_WINDOW_MS * 2);
    if (first) {
      await this.#recordHistory(tenantId, target, notification);
      this.#record(tenantId, target.type, notification, { delivered: live.delivered, failed: live.failed, queued });
    } else {
      this.#countDelivered(tenantId, live.delivered, live.failed);
      this.#stats.node.totalQueued += queued;
    }
  }

  async #queueTriggerOffline(
    cluster: Cluster,
    tenantId: string,
    userIds: string[],
    notification: Notification,
    onceKey: string,
  ) {
    const queue = this.#stores.queue as RedisQueue | null;
    if (queue === null || userIds.length === 0 || notification.content.ttl === 0 || tenantId === ALL_TENANTS) return 0;
    const entry = this.#stored(notification, this.#options.queueTtlMs);
    const outcomes = await Promise.all(
      userIds.map((userId) =>
        queue.enqueueIfOffline(tenantId, userId, entry, this.#options.maxQueuePerUser, cluster.userBusChannel(tenantId, userId), {
          name: onceKey,
          ttlMs: TRIGGER_ID_WINDOW_MS * 2,
        }),
      ),
    );
    const queued = outcomes.filter((outcome) => outcome.queued).length;
    if (queued > 0) this.#metrics.queueEnqueued.inc(queued);
    return queued;
  }

  #countDelivered(tenantId: string, delivered: number, failed: number): void {
    for (const counters of tenantId === ALL_TENANTS ? [this.#stats.node] : [this.#stats.node, this.#stats.forTenant(tenantId)]) {
      counters.totalDelivered += delivered;
      counters.totalFailed += failed;
    }
    if (delivered > 0) this.#metrics.messagesDelivered.inc(delivered);
    if (failed > 0) this.#metrics.messagesFailed.inc(failed);
  }

  // ---------------------------------------------------------------------------
  // Offline queue and history

  /**
   * Queues for users with no connection here. A store that cannot take
   * the message fails the send with 503 (BackendUnavailableError): a 200
   * means delivered or durably queued (SPEC §6, §8).
   */
  async #queueOffline(tenantId: string, userIds: string[], notification: Notification) {
    const queue = this.#stores.queue;
    if (queue === null || !this.#queues(tenantId, userIds, notification)) return { queued: 0 };
    const entry = this.#stored(notification, this.#options.queueTtlMs);
    const outcomes = await Promise.allSettled(userIds.map((userId) => this.#enqueueOne(queue, tenantId, userId, entry)));
    const failure = outcomes.find((outcome) => outcome.status === 'rejected');
    if (failure) {
      this.#log.warn({ err: failure.reason, tenantId }, 'offline queue write failed');
      throw failure.reason;
    }
    return { queued: outcomes.length };
  }

  /** Whether a send queues anything for its offline users (SPEC §7: not ttl 0, not every-tenant broadcasts). */
  #queues(tenantId: string, offlineUsers: string[], notification: Notification): boolean {
    return this.#stores.queue !== null && offlineUsers.length > 0 && notification.content.ttl !== 0 && tenantId !== ALL_TENANTS;
  }

  /** Whether a send is kept in history (SPEC §7: user and channel targets, not broadcasts, not ttl 0). */
  #keepsHistory(tenantId: string, target: Target, notification: Notification): boolean {
    return (
      this.#stores.history !== null && target.type !== 'broadcast' && notification.content.ttl !== 0 && tenantId !== ALL_TENANTS
    );
  }

  async #enqueueOne(queue: OfflineQueue, tenantId: string, userId: string, entry: StoredNotification): Promise<void> {
    const pending = queue.enqueue(tenantId, userId, entry, this.#options.maxQueuePerUser);
    this.#noteInflight(tenantId, userId, pending);
    const { dropped } = await pending;
    this.#metrics.queueEnqueued.inc();
    if (dropped > 0) this.#metrics.queueDropped.inc(dropped);
  }

  async #recordHistory(tenantId: string, target: Target, notification: Notification): Promise<void> {
    const history = this.#stores.history;
    if (history === null || !this.#keepsHistory(tenantId, target, notification)) return;
    const scopes = historyScopes(target);
    if (scopes.length === 0) return;
    const maxSizes = { user: this.#options.maxQueuePerUser, channel: this.#options.historyChannelMaxSize };
    const appending = history.append(tenantId, scopes, this.#stored(notification, this.#options.queueTtlMs), maxSizes);
    this.#noteHistoryInflight(tenantId, appending);
    try {
      await appending;
    } catch (error) {
      this.#log.warn({ err: error, tenantId }, 'history write failed');
    }
  }

  /** Send order of this node's stored notifications (StoredNotification.order). */
  readonly #sendOrder = new SendOrder();
  /** The order each notification got when first stored: the same in every store and queue entry. */
  readonly #orders = new WeakMap<Notification, number>();

  /**
   * Expiry is the sooner of the event's own ttl and the store's TTL (SPEC §7).
   * The order is taken on the first call for a notification, which send()
   * makes synchronously right after the live dispatch, so it follows dispatch order.
   */
  #stored(notification: Notification, storeTtlMs: number): StoredNotification {
    const ttl = notification.content.ttl;
    const ttlMs = ttl === undefined ? storeTtlMs : Math.min(ttl * 1000, storeTtlMs);
    const { json, lane } = notification.message;
    let order = this.#orders.get(notification);
    if (order === undefined) this.#orders.set(notification, (order = this.#sendOrder.next()));
    return { id: notification.id, json, lane, expiresAtMs: occurredAtMs(notification) + ttlMs, order };
  }

  #noteInflight(tenantId: string, userId: string, pending: Promise<unknown>): void {
    let users = this.#inflight.get(tenantId);
    if (!users) this.#inflight.set(tenantId, (users = new Map()));
    const chained = Promise.allSettled([users.get(userId), pending]);
    users.set(userId, chained);
    void chained.then(() => {
      if (users!.get(userId) === chained) users!.delete(userId);
      if (users!.size === 0 && this.#inflight.get(tenantId) === users) this.#inflight.delete(tenantId);
    });
  }

  #noteHistoryInflight(tenantId: string, pending: Promise<unknown>): void {
    let appends = this.#historyInflight.get(tenantId);
    if (!appends) this.#historyInflight.set(tenantId, (appends = new Set()));
    appends.add(pending);
    const settled = () => {
      appends!.delete(pending);
      if (appends!.size === 0 && this.#historyInflight.get(tenantId) === appends) this.#historyInflight.delete(tenantId);
    };
    pending.then(settled, settled);
  }

  // ---------------------------------------------------------------------------
  // Replay and resume

  /**
   * Runs once per new connection, before live traffic (held meanwhile):
   * a resume from `lastEventId` when given and history is on, otherwise
   * the plain queue replay (SPEC §7).
   */
  async replayOnConnect(connection: Connection, lastEventId: string | null): Promise<void> {
    if (this.#stores.queue === null) return;
    connection.holdForReplay();
    const replayed = new Set<string>();
    try {
      await this.#inflight.get(connection.tenantId)?.get(connection.userId);
      // In a cluster, listen on the user's bus channel before reading the
      // queue: whatever another node sends from then on is heard live.
      await this.#cluster?.userListening(connection.tenantId, connection.userId).catch(() => {});
      const written = new Set<string>();
      if (lastEventId !== null && this.#stores.history !== null) {
        await this.#resumeFromHistory(connection, lastEventId, [...connection.channels], written, replayed);
      }
      await this.#replayQueue(connection, written, replayed);
    } finally {
      connection.endReplay(replayed);
    }
  }

  /**
   * WebSocket `Resume` (SPEC §7): subscribes nothing itself (the caller
   * did), sends what history holds after `since` that this connection has
   * not been sent yet, then lets live traffic continue.
   */
  async resume(connection: Connection, since: string, channels: string[]): Promise<void> {
    const alreadySent = connection.takeResumeWindow();
    connection.holdForReplay();
    const replayed = new Set<string>();
    try {
      await this.#resumeFromHistory(connection, since, channels, alreadySent ?? new Set(), replayed);
    } finally {
      connection.endReplay(replayed);
    }
  }

  async #resumeFromHistory(
    connection: Connection,
    since: string,
    channels: string[],
    written: Set<string>,
    replayed: Set<string>,
  ) {
    const scopes: HistoryScope[] = [{ kind: 'user', id: connection.userId }];
    for (const channel of channels) scopes.push({ kind: 'channel', id: channel });
    // `since` may be a notification the client got live whose append has not landed yet.
    const appending = this.#historyInflight.get(connection.tenantId);
    if (appending) await Promise.allSettled([...appending]);
    const { found, entries } = await this.#stores.history!.since(connection.tenantId, scopes, since, Date.now());
    if (!found) connection.writeReplayed(OutboundMessage.control({ type: 'resume_gap', since }));
    await this.#writeEntries(connection, entries, written, replayed);
  }

  async #replayQueue(connection: Connection, written: Set<string>, replayed: Set<string>): Promise<void> {
    const queue = this.#stores.queue!;
    const { tenantId, userId } = connection;
    for (;;) {
      // Every page: an enqueue of this node that began earlier must land
      // before the peek, or `remove` could pass over it (PostgreSQL orders
      // by send order, not by commit).
      await this.#inflight.get(tenantId)?.get(userId);
      const entries = await queue.peek(tenantId, userId, Date.now(), REPLAY_PAGE);
      if (entries.length === 0) return;
      // Entries stay queued unless every one was handed to the socket.
      if (!(await this.#writeEntries(connection, entries, written, replayed))) return;
      await queue.remove(tenantId, userId, entries[entries.length - 1]!.seq);
      this.#metrics.queueReplayed.inc(entries.length);
      if (entries.length < REPLAY_PAGE) return;
    }
  }

  /**
   * Writes in order, skipping what `written` holds, waiting for the socket
   * to drain; records each write in `written` and `replayed`. False if the
   * connection ended.
   */
  async #writeEntries(
    connection: Connection,
    entries: SequencedNotification[],
    written: Set<string>,
    replayed: Set<string>,
  ) {
    for (const entry of entries) {
      if (written.has(entry.id)) continue;
      while (connection.backpressured && !connection.ended) await connection.drained();
      if (!connection.writeReplayed(new OutboundMessage(entry.json, 'notification', entry.lane, entry.id))) {
        return false;
      }
      written.add(entry.id);
      replayed.add(entry.id);
      this.#trackOne(connection.tenantId, connection.userId, entry);
    }
    return !connection.ended;
  }

  // ---------------------------------------------------------------------------
  // Acknowledgements

  async acknowledge(connection: Connection, notificationId: string): Promise<boolean> {
    const acks = this.#stores.acks;
    if (acks === null) return false;
    const result = await acks.acknowledge(connection.tenantId, connection.userId, notificationId, Date.now());
    if (result === null) return false;
    this.#metrics.ackReceived.inc();
    this.#metrics.ackLatency.observe(result.latencyMs / 1000);
    return true;
  }

  #trackReached(reached: Map<string, Set<string>>, notification: Notification): void {
    const entry = { id: notification.id, json: notification.message.json, lane: notification.message.lane };
    for (const [tenantId, users] of reached) for (const userId of users) this.#trackOne(tenantId, userId, entry);
  }

  #trackOne(tenantId: string, userId: string, entry: { id: string; json: string; lane: number }): void {
    const acks = this.#stores.acks;
    if (acks === null) return;
    const now = Date.now();
    const json = this.#options.ackRedeliver ? entry.json : null;
    acks.track(tenantId, userId, { id: entry.id, json, lane: entry.lane }, now, now + this.#options.ackTimeoutMs).then(
      (created) => {
        // Only new records count: another device or a replay of the same notification tracks nothing new.
        if (created) this.#metrics.ackTracked.inc();
      },
      (error: unknown) => this.#log.warn({ err: error, tenantId }, 'ack tracking failed'),
    );
  }

  /** The cleanup tasks' work: expired queue and history entries, timed-out acks. */
  async purgeExpired(): Promise<void> {
    const now = Date.now();
    const expired = (await this.#stores.queue?.purgeExpired(now)) ?? 0;
    if (expired > 0) this.#metrics.queueExpired.inc(expired);
    await this.#stores.history?.purgeExpired(now);
  }

  async expireAcks(): Promise<void> {
    const acks = this.#stores.acks;
    if (acks === null) return;
    const expired = await acks.expire(Date.now());
    if (expired.length === 0) return;
    this.#metrics.ackExpired.inc(expired.length);
    const queue = this.#stores.queue;
    if (!this.#options.ackRedeliver || queue === null) return;
    for (const ack of expired) {
      if (ack.json === null) continue;
      // A new queue entry: it takes its place in send order now.
      const entry = {
        id: ack.notificationId,
        json: ack.json,
        lane: ack.lane,
        expiresAtMs: Date.now() + this.#options.queueTtlMs,
        order: this.#sendOrder.next(),
      };
      await this.#enqueueOne(queue, ack.tenantId, ack.userId, entry);
    }
  }

  // ---------------------------------------------------------------------------
  // Counting

  #record(tenantId: string, targetType: TargetType, notification: Notification, result: DispatchResult): void {
    count(this.#stats.node, targetType, result);
    if (tenantId !== ALL_TENANTS) count(this.#stats.forTenant(tenantId), targetType, result);
    this.#metrics.messagesSentTo[targetType].inc();
    if (result.delivered > 0) this.#metrics.messagesDelivered.inc(result.delivered);
    if (result.failed > 0) this.#metrics.messagesFailed.inc(result.failed);
    this.#metrics.deliveryLatency.observe((Date.now() - occurredAtMs(notification)) / 1000);
  }
}

function occurredAtMs(notification: Notification): number {
  return notification.occurredAtMs ?? Date.parse(notification.occurredAt);
}

function historyScopes(target: Target): HistoryScope[] {
  switch (target.type) {
    case 'user':
      return [{ kind: 'user', id: target.userId }];
    case 'users':
      return [...new Set(target.userIds)].map((id) => ({ kind: 'user', id }));
    case 'channel':
      return [{ kind: 'channel', id: target.channel }];
    case 'channels':
      return [...new Set(target.channels)].map((id) => ({ kind: 'channel', id }));
    case 'broadcast':
      return [];
  }
}

function count(counters: NotificationCounters, targetType: TargetType, result: DispatchResult): void {
  counters.totalSent++;
  counters.totalDelivered += result.delivered;
  counters.totalFailed += result.failed;
  counters.totalQueued += result.queued;
  if (targetType === 'user' || targetType === 'users') counters.userNotifications++;
  else if (targetType === 'broadcast') counters.broadcastNotifications++;
  else counters.channelNotifications++;
}

export type { LiveResult };
