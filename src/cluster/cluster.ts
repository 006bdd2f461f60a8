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
 * Pub/sub forgets what it could not deliver, so channel and broadcast
 * messages (which have no queue behind them) are also appended, in the same
 * script as the PUBLISH, to a short log stream. A node whose pub/sub link
 * dropped (Redis restarted, CLIENT KILL, a network blip) reads the log from
 * just before the drop once it has resubscribed, and delivers what it
 * missed; ids it already delivered are dropped. Without this, a send taken
 * by a node that reconnected first is answered 200 and never reaches a
 * node still resubscribing. User messages need no log: the publish-or-
 * enqueue script queues them when no node heard them.
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
import { unescapeTail, type RedisScript } from '../storage/redis/redis-connection.js';
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

/**
 * Remote channel/broadcast notification ids remembered: a connection in
 * several targeted channels gets one copy, and a catch-up read of the bus
 * log skips what was already delivered live.
 */
const SEEN_IDS = 16_384;

/** The bus log keeps at most this many entries … */
const BUS_LOG_MAX_ENTRIES = 10_000;
/** … fewer when messages are large: about this many bytes of messages of that size (never under 100 entries) … */
const BUS_LOG_BYTES = 32 * 1024 * 1024;
/** … and none older than this: a node resubscribing later than this has lost the messages. */
const BUS_LOG_WINDOW_MS = 60_000;
/** A catch-up reads from this long before the link was lost: clocks of nodes and Redis differ a little. */
const CATCH_UP_MARGIN_MS = 2000;
/** Entries per XRANGE page during a catch-up. */
const CATCH_UP_PAGE = 500;
/** How long a catch-up waits for the command connection, which may come back after pub/sub. */
const CATCH_UP_PATIENCE_MS = 30_000;

/**
 * XADD to the bus log (trimmed by count and by age), then PUBLISH on each
 * bus channel. KEYS[1] log; ARGV: max entries, window ms, message, channels…
 * Returns the receivers per channel.
 */
const BUS_PUBLISH = `
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[3])
local now = redis.call('TIME')
local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[2])
redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest)
local receivers = {}
for i = 4, #ARGV do receivers[#receivers + 1] = redis.call('PUBLISH', ARGV[i], ARGV[3]) end
return receivers
`;

export class Cluster implements HubListener {
  readonly presence: ClusterPresence;
  readonly #redis: RedisService;
  readonly #nodeId: string;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #busPrefix: string;
  readonly #broadcastChannel: string;
  readonly #busLogKey: string;
  readonly #busPublish: RedisScript;
  readonly #seen = new Set<string>();
  /** Subscriptions of users in flight: a replay waits for its user's. */
  readonly #userSubscriptions = new Map<string, Promise<void>>();
  #onRemote: (delivery: RemoteDelivery) => void = () => {};
  #stopped = false;

  constructor(config: Config, redis: RedisService, hub: Hub, metrics: Metrics, log: Logger) {
    this.#redis = redis;
    this.#nodeId = config.cluster.serverId;
    this.#log = log.child({ component: 'cluster' });
    this.#metrics = metrics;
    this.#busPrefix = `${redis.connection.keyPrefix}:bus:`;
    this.#broadcastChannel = redis.connection.globalKey('bus-broadcast');
    this.#busLogKey = redis.connection.globalKey('bus-log');
    this.#busPublish = redis.connection.defineScript('araBusPublish', 1, BUS_PUBLISH);
    redis.subscriber.onResubscribed((lostAtMs) => void this.#catchUp(lostAtMs));
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
    this.#stopped = true;
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
        await this.#publishLogged(channels.map((channel) => this.#channelChannel(tenantId, channel)), message);
        return 0;
      }
      case 'broadcast':
        await this.#publishLogged([this.#broadcastChannel], message);
        return 0;
    }
  }

  async #publishLogged(busChannels: string[], message: string): Promise<void> {
    await this.#redis.guarded(() =>
      this.#busPublish.run([this.#busLogKey], [busLogLength(message), BUS_LOG_WINDOW_MS, message, ...busChannels]),
    );
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
        if (audience?.type === 'Roles' && tenantId !== ALL_TENANTS) return this.presence.roleCounts(tenantId, [...new Set(audience.value)]);
        if (audience?.type === 'Users' && tenantId !== ALL_TENANTS) return this.presence.userCounts(tenantId, [...new Set(audience.value)]);
        if (audience?.type === 'Channels' && tenantId !== ALL_TENANTS) return this.presence.channelCounts(tenantId, [...new Set(audience.value)]);
        // A trigger broadcast to every tenant answers no one: it counts every connection, audience or not.
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

  /**
   * A message on one of this node's bus channels (or from the bus log, with
   * no channel). True when it was handed on for local delivery.
   */
  receive(channel: string, message: string): boolean {
    const newline = message.indexOf('\n');
    if (newline < 0) return false;
    let header: BusHeader;
    try {
      header = JSON.parse(message.slice(0, newline)) as BusHeader;
    } catch {
      this.#log.warn({ channel }, 'ignored a malformed cluster bus message');
      return false;
    }
    if (header.o === this.#nodeId) return false;
    const target = this.#targetOf(header, channel);
    if (target === null || this.#alreadyDelivered(header)) return false;
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
    return true;
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

  /**
   * After the pub/sub link came back: delivers the channel and broadcast
   * messages logged since just before it was lost that this node did not
   * get live (the others are recognised by id). Runs once the command
   * connection is up too; gives up, with a warning, after a long wait.
   */
  async #catchUp(lostAtMs: number): Promise<void> {
    const giveUpAt = Date.now() + CATCH_UP_PATIENCE_MS;
    let start = String(Math.max(0, lostAtMs - CATCH_UP_MARGIN_MS));
    let delivered = 0;
    for (;;) {
      let page: [string, string[]][];
      try {
        page = await this.#redis.guarded(() =>
          this.#redis.connection.client.xrange(this.#busLogKey, start, '+', 'COUNT', CATCH_UP_PAGE),
        );
      } catch (error) {
        if (Date.now() > giveUpAt || this.#stopped) {
          this.#log.warn({ err: error }, 'bus catch-up abandoned: messages sent while the pub/sub link was down may be missing here');
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
        continue;
      }
      for (const [, fields] of page) {
        const message = fields[1];
        if (message !== undefined && this.receive('', message)) delivered++;
      }
      if (page.length < CATCH_UP_PAGE) break;
      start = `(${page[page.length - 1]![0]}`;
    }
    this.#log.info({ delivered, since: new Date(lostAtMs).toISOString() }, 'bus catch-up after the pub/sub link came back');
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

/** Entries the bus log may keep after appending `message`: a few large messages must not hold many MiB. */
export function busLogLength(message: string): number {
  return Math.max(100, Math.min(BUS_LOG_MAX_ENTRIES, Math.floor(BUS_LOG_BYTES / Math.max(1, message.length))));
}
