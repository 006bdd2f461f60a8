/**
 * Live fan-out on this node: decides which connections a notification
 * reaches and hands each of them the one shared message (SPEC §6.1, §7).
 * Per recipient the work is a stamp check and a write: no serialisation,
 * no allocation, no closure. What happens to offline users (queue,
 * history, acks) is the Delivery's business.
 */
import type { Connection } from '../hub/connection.js';
import type { Hub, TenantSpace } from '../hub/hub.js';
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

export interface LiveResult {
  /** Connections that accepted the message. */
  delivered: number;
  /** Target connections that could not take it. */
  failed: number;
  /** Targeted users (user/users targets) with no live connection here. */
  offlineUsers: string[];
  /** Tenant → users at least one of whose connections accepted it, when asked for. */
  reachedUsers: Map<string, Set<string>> | null;
}

export class Dispatcher {
  readonly #hub: Hub;
  #stamp = 0;
  #delivered = 0;
  #failed = 0;
  #reached: Map<string, Set<string>> | null = null;

  constructor(hub: Hub) {
    this.#hub = hub;
  }

  /** `trackReached`: also collect the users reached (costs a Set insert per delivery). */
  dispatch(tenantId: string, target: Target, notification: Notification, trackReached = false): LiveResult {
    this.#stamp++;
    this.#delivered = 0;
    this.#failed = 0;
    this.#reached = trackReached ? new Map() : null;
    const offlineUsers: string[] = [];
    if (tenantId === ALL_TENANTS) {
      for (const space of this.#hub.spaces()) this.#toBroadcast(space, notification);
    } else {
      this.#toTarget(this.#hub.space(tenantId), target, notification, offlineUsers);
    }
    const result = { delivered: this.#delivered, failed: this.#failed, offlineUsers, reachedUsers: this.#reached };
    this.#reached = null;
    return result;
  }

  #toTarget(space: TenantSpace | undefined, target: Target, notification: Notification, offline: string[]): void {
    switch (target.type) {
      case 'user':
        this.#toUser(space, target.userId, notification, offline);
        return;
      case 'users':
        for (const userId of new Set(target.userIds)) this.#toUser(space, userId, notification, offline);
        return;
      case 'broadcast':
        if (space) this.#toBroadcast(space, notification);
        return;
      case 'channel':
        if (space) this.#toChannel(space, target.channel, notification);
        return;
      case 'channels':
        if (space) for (const channel of target.channels) this.#toChannel(space, channel, notification);
        return;
    }
  }

  #toUser(space: TenantSpace | undefined, userId: string, notification: Notification, offline: string[]): void {
    const connections = space?.users.get(userId);
    if (connections && connections.size > 0) this.#toEach(connections, notification);
    else offline.push(userId);
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
    if (connection.deliver(notification.message)) {
      this.#delivered++;
      if (this.#reached !== null) this.#noteReached(connection);
    } else {
      this.#failed++;
    }
  }

  #noteReached(connection: Connection): void {
    let users = this.#reached!.get(connection.tenantId);
    if (!users) this.#reached!.set(connection.tenantId, (users = new Set()));
    users.add(connection.userId);
  }
}
