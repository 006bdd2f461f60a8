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
 * Pub/sub forgets what it could not deliver. So every bus message that
 * was not queued is also appended, in the same script as its PUBLISH, to a
 * short log stream (src/storage/redis/bus-log.ts). A node whose pub/sub
 * link dropped (Redis restarted, CLIENT KILL, a network blip) reads the log
 * from just before the drop once it has resubscribed, and delivers what it
 * missed; what it already delivered is recognised and dropped. Without
 * this, a send taken by a node that reconnected first is answered 200 and
 * never reaches a node still resubscribing. A user message no node heard
 * is queued instead (and not logged), so it is replayed once, at connect.
 *
 * Bus message: one JSON header line, then the notification JSON exactly as
 * built by the sender (never serialised again); published behind one more
 * line, the id of its bus log entry:
 *   {"o":origin node,"t":tenant or "*","k":"u"|"c"|"b","i":id,"l":lane,"c":[channels]?,"a":audience?}
 */
import type { Logger } from 'pino';
import { isoTime } from '../clock.js';
import type { Config } from '../config/types.js';
import { ALL_TENANTS, type Target } from '../delivery/dispatcher.js';
import type { Audience, Notification } from '../delivery/notification.js';
import type { Connection } from '../hub/connection.js';
import type { Hub, HubListener } from '../hub/hub.js';
import { OutboundMessage } from '../hub/outbound.js';
import type { Metrics } from '../ops/metrics.js';
import type { RedisService } from '../redis/redis-service.js';
import type { RedisQueue } from '../storage/queue/redis-queue.js';
import { BUS_LOG_LUA, busLogChannels, busLogLimitArgs, type BusLogLimits } from '../storage/redis/bus-log.js';
import { BusGap } from './bus-gap.js';
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

/** The bus log (src/storage/redis/bus-log.ts): a node resubscribing later than the window lost those messages. */
const BUS_LOG_MAX_ENTRIES = 10_000;
const BUS_LOG_MAX_BYTES = 32 * 1024 * 1024;
const BUS_LOG_WINDOW_MS = 60_000;
/** Entries per XRANGE page during a catch-up; it yields between pages (an entry may list thousands of users). */
const CATCH_UP_PAGE = 100;
/** How long a catch-up waits for the command connection, which may come back after pub/sub. */
const CATCH_UP_PATIENCE_MS = 30_000;

/**
 * Append one entry to the bus log and PUBLISH the message, behind the
 * entry's id, on each bus channel.
 * KEYS: log, its byte counter. ARGV: log limits (3), message, the entry's
 * channel field ('' for none), bus channels…
 */
const BUS_PUBLISH = `${BUS_LOG_LUA}
local entry = bus_log_add(KEYS[1], ARGV[4], ARGV[5])
local message = entry .. '\\n' .. ARGV[4]
for i = 6, #ARGV do redis.call('PUBLISH', ARGV[i], message) end
bus_log_trim(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), #ARGV[4] + #ARGV[5])
return 1
`;

export class Cluster implements HubListener {
  readonly presence: ClusterPresence;
  readonly #redis: RedisService;
  readonly #nodeId: string;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #busPrefix: string;
  readonly #broadcastChannel: string;
  readonly #busLog: BusLogLimits;
  readonly #busPublish: RedisScript;
  /** Null until start(): what this node has had of the bus log. */
  #gap: BusGap | null = null;
  /** Bumped by each catch-up: an older one still running stops. */
  #catchUpRun = 0;
  /** Subscriptions of users in flight: a replay waits for its user's. */
  readonly #userSubscriptions = new Map<string, Promise<void>>();
  #onRemote: (delivery: RemoteDelivery) => number = () => 0;
  #stopped = false;

  constructor(config: Config, redis: RedisService, hub: Hub, metrics: Metrics, log: Logger) {
    this.#redis = redis;
    this.#nodeId = config.cluster.serverId;
    this.#log = log.child({ component: 'cluster' });
    this.#metrics = metrics;
    this.#busPrefix = `${redis.connection.keyPrefix}:bus:`;
    this.#broadcastChannel = redis.connection.globalKey('bus-broadcast');
    this.#busLog = {
      key: redis.connection.globalKey('bus-log'),
      bytesKey: redis.connection.globalKey('bus-log-bytes'),
      maxEntries: BUS_LOG_MAX_ENTRIES,
      maxBytes: BUS_LOG_MAX_BYTES,
      windowMs: BUS_LOG_WINDOW_MS,
    };
    this.#busPublish = redis.connection.defineScript('araBusPublish', 2, BUS_PUBLISH);
    redis.subscriber.onLost(() => this.#gap?.lost());
    redis.subscriber.onResubscribed((lostAtMs) => void this.#catchUp(lostAtMs));
    this.presence = new ClusterPresence(redis, hub, this.#nodeId, config.cluster.sessionTtlMs, this.#log);
    hub.addListener(this);
  }

  get nodeId(): string {
    return this.#nodeId;
  }

  /** `handler` delivers to this node's connections and answers how many it reached. */
  onRemoteDelivery(handler: (delivery: RemoteDelivery) => number): void {
    this.#onRemote = handler;
  }

  async start(): Promise<void> {
    // Where this node starts in the bus log: earlier entries were never its business.
    const client = this.#redis.connection.client;
    const [last] = await client.xrevrange(this.#busLog.key, '+', '-', 'COUNT', 1);
    this.#gap = new BusGap(last?.[0] ?? '0-0');
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
    switch (target.type) {
      case 'user':
      case 'users': {
        const userIds = target.type === 'user' ? [target.userId] : [...new Set(target.userIds)];
        // Users this node holds are never queued (they are online); without a queue none are.
        const published = queue === null ? userIds : userIds.filter((userId) => localUsers.has(userId));
        const queueable = queue === null ? [] : userIds.filter((userId) => !localUsers.has(userId));
        const pending: Promise<boolean>[] = [];
        if (published.length > 0) {
          const channels = published.map((userId) => this.#userChannel(tenantId, userId));
          pending.push(this.#publishLogged(channels, message, busLogChannels(channels)).then(() => false));
        }
        for (const userId of queueable) {
          const bus = { channel: this.#userChannel(tenantId, userId), message, log: this.#busLog };
          pending.push(
            this.#redis.guarded(() => queue!.store.publishOrEnqueue(tenantId, userId, queue!.entry, queue!.maxSize, bus)).then((outcome) => outcome.queued),
          );
        }
        return (await Promise.all(pending)).filter(Boolean).length;
      }
      case 'channel':
      case 'channels': {
        const channels = target.type === 'channel' ? [target.channel] : [...new Set(target.channels)];
        await this.#publishLogged(channels.map((channel) => this.#channelChannel(tenantId, channel)), message, '');
        return 0;
      }
      case 'broadcast':
        await this.#publishLogged([this.#broadcastChannel], message, '');
        return 0;
    }
  }

  /** PUBLISH on each bus channel and append to the bus log, in one script. */
  async #publishLogged(busChannels: string[], message: string, entryChannels: string): Promise<void> {
    await this.#redis.guarded(() =>
      this.#busPublish.run([this.#busLog.key, this.#busLog.bytesKey], [...busLogLimitArgs(this.#busLog), message, entryChannels, ...busChannels]),
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

  /** A message on one of this node's bus channels: `<log entry id>\n<header>\n<notification JSON>`. */
  receive(channel: string, raw: string): void {
    const cut = raw.indexOf('\n');
    const gap = this.#gap;
    if (cut < 0 || gap === null) return;
    const parsed = this.#parse(channel, raw.slice(cut + 1));
    if (parsed === null) return;
    if (!gap.acceptLive(raw.slice(0, cut), parsed.header.k === 'u' ? channel : null)) return;
    if (parsed.header.o !== this.#nodeId) this.#deliver(parsed);
  }

  #parse(channel: string, message: string): { header: BusHeader; target: Target; json: string } | null {
    const newline = message.indexOf('\n');
    if (newline < 0) return null;
    let header: BusHeader;
    try {
      header = JSON.parse(message.slice(0, newline)) as BusHeader;
    } catch {
      this.#log.warn({ channel }, 'ignored a malformed cluster bus message');
      return null;
    }
    const target = this.#targetOf(header, channel);
    return target === null ? null : { header, target, json: message.slice(newline + 1) };
  }

  /** Local delivery of a message from another node; the connections it reached. */
  #deliver({ header, target, json }: { header: BusHeader; target: Target; json: string }): number {
    this.#metrics.clusterMessages.inc({ direction: 'received' });
    const content = header.a === undefined ? { eventType: '', payload: null, priority: 'Normal' as const } : {
      eventType: '', payload: null, priority: 'Normal' as const, audience: header.a,
    };
    const receivedAtMs = Date.now();
    const notification: Notification = {
      id: header.i,
      occurredAt: isoTime(receivedAtMs),
      occurredAtMs: receivedAtMs,
      content,
      source: 'cluster',
      message: new OutboundMessage(json, 'notification', header.l, header.i),
    };
    return this.#onRemote({ tenantId: header.t, target, notification });
  }

  #targetOf(header: BusHeader, channel: string): Target | null {
    if (header.k === 'b') return { type: 'broadcast' };
    if (header.k === 'c') return header.c && header.c.length > 0 ? { type: 'channels', channels: header.c } : null;
    // A user's bus channel is `<prefix>:bus:<tenant>:u:<user>`; the user comes from it.
    return channel.startsWith(this.#userChannel(header.t, '')) ? { type: 'user', userId: this.#userFromChannel(header.t, channel) } : null;
  }

  /**
   * After the pub/sub link came back: delivers what the bus log holds
   * after the last entry this node had, up to its end now, that this node
   * did not get live (BusGap). Runs once the command connection is up too,
   * yields between pages, and gives up with a warning after a long wait.
   */
  async #catchUp(lostAtMs: number): Promise<void> {
    const gap = this.#gap;
    if (gap === null || !gap.inGap) return;
    const run = ++this.#catchUpRun;
    const giveUpAt = Date.now() + CATCH_UP_PATIENCE_MS;
    const client = this.#redis.connection.client;
    let delivered = 0;
    for (;;) {
      try {
        // Entry ids are times: a Redis that restarted with its log kept goes on after the last
        // one, and one that lost it starts a new log later than anything this node had.
        const [last] = await this.#redis.guarded(() => client.xrevrange(this.#busLog.key, '+', '-', 'COUNT', 1));
        const end = last?.[0] ?? null;
        let start = `(${gap.coveredUpTo}`;
        while (end !== null) {
          const page = await this.#redis.guarded(() => client.xrange(this.#busLog.key, start, end, 'COUNT', CATCH_UP_PAGE));
          if (run !== this.#catchUpRun || this.#stopped) return; // a newer catch-up (or shutdown) took over
          for (const [entryId, fields] of page) delivered += this.#deliverLogged(gap, entryId, fields);
          if (page.length < CATCH_UP_PAGE) break;
          start = `(${page[page.length - 1]![0]}`;
          await new Promise((resolve) => setImmediate(resolve));
        }
        gap.closed(end);
        break;
      } catch (error) {
        if (Date.now() > giveUpAt || this.#stopped || run !== this.#catchUpRun) {
          if (run === this.#catchUpRun) {
            this.#log.warn({ err: error }, 'bus catch-up abandoned: messages sent while the pub/sub link was down may be missing here');
          }
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
    this.#log.info({ delivered, since: new Date(lostAtMs).toISOString() }, 'bus catch-up after the pub/sub link came back');
  }

  /**
   * One bus log entry (fields `m`, and `c` for user messages): delivered
   * unless this node had it. User messages only for the users this node
   * holds. Answers the local connections it reached.
   */
  #deliverLogged(gap: BusGap, entryId: string, fields: string[]): number {
    let message: string | undefined;
    let userChannels: string[] | null = null;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      if (fields[i] === 'm') message = fields[i + 1];
      else if (fields[i] === 'c') userChannels = JSON.parse(fields[i + 1]!) as string[];
    }
    if (message === undefined) return 0;
    if (userChannels === null) {
      const parsed = this.#parse('', message);
      if (parsed === null || parsed.header.o === this.#nodeId || !gap.claim(entryId, null)) return 0;
      return this.#deliver(parsed);
    }
    let delivered = 0;
    for (const channel of userChannels) {
      if (!this.#redis.subscriber.wants(channel)) continue;
      const parsed = this.#parse(channel, message);
      if (parsed === null || parsed.header.o === this.#nodeId || !gap.claim(entryId, channel)) continue;
      delivered += this.#deliver(parsed);
    }
    return delivered;
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
