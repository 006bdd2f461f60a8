/**
 * Cluster mode (SPEC §8): any node takes any send, and the message reaches
 * the target's connections on every node, once each.
 *
 * The bus is Redis pub/sub with one channel per (tenant, user) and per
 * (tenant, channel) that has connections on some node, plus one broadcast
 * channel. A node subscribes to a user's or channel's bus channel while it
 * holds that user or channel, so publishing is one PUBLISH per target and
 * Redis counts the nodes that heard it. For a user with no connection on
 * the sending node, one script publishes and, if no node heard it, queues
 * the message: a user connecting elsewhere at that instant subscribes
 * before reading the queue, so they either hear it live or find it queued.
 *
 * The sending node delivers to its own connections directly: local
 * delivery never waits on Redis.
 *
 * Bus message: one JSON header line, then the notification JSON exactly as
 * built by the sender (never serialised again):
 *   {"o":origin node,"t":tenant or "*","k":"u"|"c"|"b","i":id,"l":lane,"c":[channels]?,"a":audience?}
 */
import type { Logger } from 'pino';
import type { Config } from '../config/types.js';
import { ALL_TENANTS, type Target } from '../delivery/dispatcher.js';
import type { Audience, Notification } from '../delivery/notification.js';
import type { Connection } from '../hub/connection.js';
import type { Hub, HubListener } from '../hub/hub.js';
import { OutboundMessage } from '../hub/outbound.js';
import type { Metrics } from '../ops/metrics.js';
import type { RedisService } from '../redis/redis-service.js';
import type { RedisQueue } from '../storage/queue/redis-queue.js';
import { unescapeTail } from '../storage/redis/redis-connection.js';
import type { StoredNotification } from '../storage/types.js';
import { ClusterPresence, type RemoteCounts } from './presence.js';

interface BusHeader {
  o: string;
  t: string;
  k: 'u' | 'c' | 'b';
  i: string;
  l: number;
  c?: string[];
  a?: Audience;
}

/** A notification that arrived over the bus, for local delivery on this node. */
export interface RemoteDelivery {
  tenantId: string;
  target: Target;
  notification: Notification;
}

export interface RouteResult {
  /** Users queued (no node had them). */
  queued: number;
  /** Target connections on other live nodes when it was dispatched. */
  remoteConnections: number;
  /** Other nodes it was routed to. */
  remoteNodes: number;
}

/** Remote notification ids remembered to give a connection one copy when several channels match. */
const SEEN_IDS = 4096;

export class Cluster implements HubListener {
  readonly presence: ClusterPresence;
  readonly #redis: RedisService;
  readonly #nodeId: string;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #busPrefix: string;
  readonly #broadcastChannel: string;
  readonly #seen = new Set<string>();
  /** Subscriptions of users in flight: a replay waits for its user's. */
  readonly #userSubscriptions = new Map<string, Promise<void>>();
  #onRemote: (delivery: RemoteDelivery) => void = () => {};

  constructor(config: Config, redis: RedisService, hub: Hub, metrics: Metrics, log: Logger) {
    this.#redis = redis;
    this.#nodeId = config.cluster.serverId;
    this.#log = log.child({ component: 'cluster' });
    this.#metrics = metrics;
    this.#busPrefix = `${redis.connection.keyPrefix}:bus:`;
    this.#broadcastChannel = redis.connection.globalKey('bus-broadcast');
    this.presence = new ClusterPresence(redis, hub, this.#nodeId, config.cluster.sessionTtlMs, this.#log);
    hub.addListener(this);
  }

  get nodeId(): string {
    return this.#nodeId;
  }

  onRemoteDelivery(handler: (delivery: RemoteDelivery) => void): void {
    this.#onRemote = handler;
  }

  async start(): Promise<void> {
    await this.#redis.subscriber.subscribe(this.#broadcastChannel);
    await this.presence.start();
  }

  async stop(): Promise<void> {
    await this.presence.stop();
  }

  /** True for messages on the bus; the trigger gets the rest. */
  handles(channel: string): boolean {
    return channel.startsWith(this.#busPrefix) || channel === this.#broadcastChannel;
  }

  // -------------------------------------------------------------------------
  // Hub events: what this node subscribes to, and presence

  connectionRegistered(connection: Connection): void {
    this.presence.connectionOpened(connection);
  }

  connectionUnregistered(connection: Connection): void {
    this.presence.connectionClosed(connection);
  }

  subscriptionChanged(connection: Connection, channel: string, subscribed: boolean): void {
    this.presence.subscriptionChanged(connection, channel, subscribed ? 1 : -1);
  }

  userOnline(tenantId: string, userId: string): void {
    const channel = this.#userChannel(tenantId, userId);
    const subscribed = this.#redis.subscriber.subscribe(channel);
    const key = channel;
    this.#userSubscriptions.set(key, subscribed);
    subscribed.then(
      () => this.#userSubscriptions.get(key) === subscribed && this.#userSubscriptions.delete(key),
      (error: Error) => {
        if (this.#userSubscriptions.get(key) === subscribed) this.#userSubscriptions.delete(key);
        this.#log.debug({ err: error, tenantId }, 'bus subscription for a user failed; retried on reconnect');
      },
    );
  }

  userOffline(tenantId: string, userId: string): void {
    this.#redis.subscriber.unsubscribe(this.#userChannel(tenantId, userId));
  }

  channelActive(tenantId: string, channel: string): void {
    this.#redis.subscriber.subscribe(this.#channelChannel(tenantId, channel)).catch((error: Error) => {
      this.#log.debug({ err: error, tenantId }, 'bus subscription for a channel failed; retried on reconnect');
    });
  }

  channelInactive(tenantId: string, channel: string): void {
    this.#redis.subscriber.unsubscribe(this.#channelChannel(tenantId, channel));
  }

  /**
   * Resolves once this node listens on the user's bus channel, so a replay
   * that starts after it cannot miss a message published meanwhile.
   */
  async userListening(tenantId: string, userId: string): Promise<void> {
    await this.#userSubscriptions.get(this.#userChannel(tenantId, userId));
  }

  // -------------------------------------------------------------------------
  // Sending

  /**
   * Routes a notification that was already delivered to this node's
   * connections on to the other nodes. `localUsers`: targeted users that
   * have connections here. `queue`: the Redis queue when the queue is on.
   */
  async route(
    tenantId: string,
    target: Target,
    notification: Notification,
    localUsers: ReadonlySet<string>,
    queue: { store: RedisQueue; entry: StoredNotification; maxSize: number } | null,
  ): Promise<RouteResult> {
    const message = this.#busMessage(tenantId, target, notification);
    const [counts, queued] = await Promise.all([
      this.#remoteCounts(tenantId, target, notification.content.audience),
      this.#publish(tenantId, target, message, localUsers, notification.content.ttl === 0 ? null : queue),
    ]);
    this.#metrics.clusterMessages.inc({ direction: 'published' });
    let remoteConnections = 0;
    for (const count of counts.values()) remoteConnections += count;
    return { queued, remoteConnections, remoteNodes: counts.size };
  }

  async #publish(
    tenantId: string,
    target: Target,
    message: string,
    localUsers: ReadonlySet<string>,
    queue: { store: RedisQueue; entry: StoredNotification; maxSize: number } | null,
  ): Promise<number> {
    const client = this.#redis.connection.client;
    switch (target.type) {
      case 'user':
      case 'users': {
        const userIds = target.type === 'user' ? [target.userId] : [...new Set(target.userIds)];
        const results = await Promise.all(
          userIds.map((userId) => {
            const channel = this.#userChannel(tenantId, userId);
            if (queue === null || localUsers.has(userId)) return this.#redis.guarded(() => client.publish(channel, message)).then(() => false);
            return this.#redis
              .guarded(() => queue.store.publishOrEnqueue(tenantId, userId, queue.entry, queue.maxSize, { channel, message }))
              .then((outcome) => outcome.queued);
          }),
        );
        return results.filter(Boolean).length;
      }
      case 'channel':
      case 'channels': {
        const channels = target.type === 'channel' ? [target.channel] : [...new Set(target.channels)];
        await Promise.all(
          channels.map((channel) => this.#redis.guarded(() => client.publish(this.#channelChannel(tenantId, channel), message))),
        );
        return 0;
      }
      case 'broadcast':
        await this.#redis.guarded(() => client.publish(this.#broadcastChannel, message));
        return 0;
    }
  }

  /** What other nodes hold for the target, from presence (SPEC §6.1 `delivered_to` in cluster mode). */
  async #remoteCounts(tenantId: string, target: Target, audience: Audience | undefined): Promise<RemoteCounts> {
    switch (target.type) {
      case 'user':
        return this.presence.userCounts(tenantId, [target.userId]);
      case 'users':
        return this.presence.userCounts(tenantId, [...new Set(target.userIds)]);
      case 'channel':
        return this.presence.channelCounts(tenantId, [target.channel]);
      case 'channels':
        return this.presence.channelCounts(tenantId, [...new Set(target.channels)]);
      case 'broadcast':
        // Roles cannot be counted remotely: every tenant connection is counted.
        if (audience?.type === 'Users' && tenantId !== ALL_TENANTS) return this.presence.userCounts(tenantId, audience.value);
        if (audience?.type === 'Channels' && tenantId !== ALL_TENANTS) return this.presence.channelCounts(tenantId, audience.value);
        return this.presence.tenantCounts(tenantId === ALL_TENANTS ? null : tenantId);
    }
  }

  #busMessage(tenantId: string, target: Target, notification: Notification): string {
    const header: BusHeader = {
      o: this.#nodeId,
      t: tenantId,
      k: target.type === 'user' || target.type === 'users' ? 'u' : target.type === 'broadcast' ? 'b' : 'c',
      i: notification.id,
      l: notification.message.lane,
    };
    if (target.type === 'channel') header.c = [target.channel];
    if (target.type === 'channels') header.c = [...new Set(target.channels)];
    if (notification.content.audience) header.a = notification.content.audience;
    return `${JSON.stringify(header)}\n${notification.message.json}`;
  }

  // -------------------------------------------------------------------------
  // Receiving

  /** A message on one of this node's bus channels. */
  receive(channel: string, message: string): void {
    const newline = message.indexOf('\n');
    if (newline < 0) return;
    let header: BusHeader;
    try {
      header = JSON.parse(message.slice(0, newline)) as BusHeader;
    } catch {
      this.#log.warn({ channel }, 'ignored a malformed cluster bus message');
      return;
    }
    if (header.o === this.#nodeId) return;
    const target = this.#targetOf(header, channel);
    if (target === null || this.#alreadyDelivered(header)) return;
    this.#metrics.clusterMessages.inc({ direction: 'received' });
    const json = message.slice(newline + 1);
    const content = header.a === undefined ? { eventType: '', payload: null, priority: 'Normal' as const } : {
      eventType: '', payload: null, priority: 'Normal' as const, audience: header.a,
    };
    const notification: Notification = {
      id: header.i,
      occurredAt: new Date().toISOString(),
      content,
      source: 'cluster',
      message: new OutboundMessage(json, 'notification', header.l, header.i),
    };
    this.#onRemote({ tenantId: header.t, target, notification });
  }

  #targetOf(header: BusHeader, channel: string): Target | null {
    if (header.k === 'b') return { type: 'broadcast' };
    if (header.k === 'c') return header.c && header.c.length > 0 ? { type: 'channels', channels: header.c } : null;
    // A user's bus channel is `<prefix>:bus:<tenant>:u:<user>`; the user comes from it.
    return channel.startsWith(this.#userChannel(header.t, '')) ? { type: 'user', userId: this.#userFromChannel(header.t, channel) } : null;
  }

  /**
   * A connection subscribed to several channels of one notification gets
   * one copy: the first bus message delivers to all listed channels here,
   * the others are recognised by id and dropped.
   */
  #alreadyDelivered(header: BusHeader): boolean {
    if (header.k === 'u') return false;
    if (this.#seen.has(header.i)) return true;
    this.#seen.add(header.i);
    if (this.#seen.size > SEEN_IDS) this.#seen.delete(this.#seen.values().next().value!);
    return false;
  }

  /** The bus channel a user's node listens on; trigger queueing asks Redis who listens. */
  userBusChannel(tenantId: string, userId: string): string {
    return this.#userChannel(tenantId, userId);
  }

  /** True for exactly one caller per `name` within `ttlMs`, across every node. */
  async claimOnce(name: string, ttlMs: number): Promise<boolean> {
    const key = this.#redis.connection.globalKey(`cluster-once:${name}`);
    return (await this.#redis.guarded(() => this.#redis.connection.client.set(key, this.#nodeId, 'PX', ttlMs, 'NX'))) === 'OK';
  }

  #userChannel(tenantId: string, userId: string): string {
    return this.#redis.connection.key('bus', tenantId, 'u', userId);
  }

  #userFromChannel(tenantId: string, channel: string): string {
    return unescapeTail(channel.slice(this.#userChannel(tenantId, '').length));
  }

  #channelChannel(tenantId: string, channel: string): string {
    return this.#redis.connection.key('bus', tenantId, 'c', channel);
  }
}
