/**
 * Decides who receives a notification on this node and hands each of them
 * the one shared message (SPEC §6.1, §7). Per recipient the work is a
 * stamp check and a write: no serialisation, no allocation, no closure.
 */
import type { Connection } from '../hub/connection.js';
import type { Hub, TenantSpace } from '../hub/hub.js';
import type { Metrics } from '../ops/metrics.js';
import type { NotificationCounters, NotificationStats } from '../tenancy/tenant-stats.js';
import type { Notification } from './notification.js';

export type Target =
  | { type: 'user'; userId: string }
  | { type: 'users'; userIds: string[] }
  | { type: 'broadcast' }
  | { type: 'channel'; channel: string }
  | { type: 'channels'; channels: string[] };

export type TargetType = Target['type'];

/** Every tenant at once: Redis broadcasts with `tenant_id: "*"` (SPEC §8). */
export const ALL_TENANTS = '*';

export interface DispatchResult {
  /** Connections that accepted the message. */
  delivered: number;
  /** Target connections that could not take it. */
  failed: number;
  /** Users it was queued for. */
  queued: number;
}

/** Where messages for offline users go (SPEC §7); absent when the queue is off. */
export interface OfflineSink {
  enqueue(tenantId: string, userId: string, notification: Notification): boolean;
}

export class Dispatcher {
  readonly #hub: Hub;
  readonly #metrics: Metrics;
  readonly #stats: NotificationStats;
  #offline: OfflineSink | null = null;
  #stamp = 0;
  #delivered = 0;
  #failed = 0;

  constructor(hub: Hub, metrics: Metrics, stats: NotificationStats) {
    this.#hub = hub;
    this.#metrics = metrics;
    this.#stats = stats;
  }

  setOfflineSink(sink: OfflineSink | null): void {
    this.#offline = sink;
  }

  dispatch(tenantId: string, target: Target, notification: Notification): DispatchResult {
    this.#stamp++;
    this.#delivered = 0;
    this.#failed = 0;
    let queued = 0;
    if (tenantId === ALL_TENANTS) {
      for (const space of this.#hub.spaces()) this.#toBroadcast(space, notification);
    } else {
      queued = this.#toTarget(tenantId, target, notification);
    }
    const result = { delivered: this.#delivered, failed: this.#failed, queued };
    this.#record(tenantId, target.type, notification, result);
    return result;
  }

  #toTarget(tenantId: string, target: Target, notification: Notification): number {
    const space = this.#hub.space(tenantId);
    switch (target.type) {
      case 'user':
        return this.#toUser(space, tenantId, target.userId, notification);
      case 'users': {
        let queued = 0;
        for (const userId of new Set(target.userIds)) {
          queued += this.#toUser(space, tenantId, userId, notification);
        }
        return queued;
      }
      case 'broadcast':
        if (space) this.#toBroadcast(space, notification);
        return 0;
      case 'channel':
        if (space) this.#toChannel(space, target.channel, notification);
        return 0;
      case 'channels':
        if (space) for (const channel of target.channels) this.#toChannel(space, channel, notification);
        return 0;
    }
  }

  /** Returns 1 when the user was offline and the message was queued. */
  #toUser(space: TenantSpace | undefined, tenantId: string, userId: string, notification: Notification): number {
    const connections = space?.users.get(userId);
    if (connections && connections.size > 0) {
      this.#toEach(connections, notification);
      return 0;
    }
    const offline = this.#offline;
    if (offline === null || notification.content.ttl === 0) return 0;
    return offline.enqueue(tenantId, userId, notification) ? 1 : 0;
  }

  #toBroadcast(space: TenantSpace, notification: Notification): void {
    const audience = notification.content.audience;
    if (audience === undefined || audience.type === 'All') {
      this.#toEach(space.connections, notification);
    } else if (audience.type === 'Roles') {
      for (const connection of space.connections) {
        if (audience.value.some((role) => connection.roles.has(role))) this.#toOne(connection, notification);
      }
    } else if (audience.type === 'Users') {
      for (const userId of audience.value) {
        const connections = space.users.get(userId);
        if (connections) this.#toEach(connections, notification);
      }
    } else {
      for (const channel of audience.value) this.#toChannel(space, channel, notification);
    }
  }

  #toChannel(space: TenantSpace, channel: string, notification: Notification): void {
    const subscribers = space.channels.get(channel);
    if (subscribers) this.#toEach(subscribers, notification);
  }

  #toEach(connections: Iterable<Connection>, notification: Notification): void {
    for (const connection of connections) this.#toOne(connection, notification);
  }

  /** The stamp gives a connection one copy however many targets name it. */
  #toOne(connection: Connection, notification: Notification): void {
    if (connection.dispatchStamp === this.#stamp) return;
    connection.dispatchStamp = this.#stamp;
    if (connection.deliver(notification.message)) this.#delivered++;
    else this.#failed++;
  }

  #record(tenantId: string, targetType: TargetType, notification: Notification, result: DispatchResult): void {
    count(this.#stats.node, targetType, result);
    if (tenantId !== ALL_TENANTS) count(this.#stats.forTenant(tenantId), targetType, result);
    this.#metrics.messagesSent.inc({ target: targetType });
    if (result.delivered > 0) this.#metrics.messagesDelivered.inc(result.delivered);
    if (result.failed > 0) this.#metrics.messagesFailed.inc(result.failed);
    this.#metrics.deliveryLatency.observe((Date.now() - Date.parse(notification.occurredAt)) / 1000);
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
