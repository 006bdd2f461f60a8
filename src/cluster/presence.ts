/**
 * Who is connected where, across the cluster (SPEC §6.2 cluster routes,
 * §8). Each node writes only its own entries and refreshes its liveness;
 * readers ignore nodes that stopped refreshing, so a node that dies drops
 * out within CLUSTER_SESSION_TTL_SECONDS, and a janitor on a live node
 * later removes what it left behind.
 *
 * Keys (`<p>` = REDIS_KEY_PREFIX; tenant its own segment, names last):
 * - `<p>:cluster-nodes`                 ZSET node id → last heartbeat (ms)
 * - `<p>:cluster-node-conns`            HASH node id → its connection count
 * - `<p>:cluster-sessions:<t>:<user>`   HASH `<node>|<connection id>` → session JSON
 * - `<p>:cluster-tenant-conns:<t>`      HASH node id → the tenant's connections there
 * - `<p>:cluster-channel-subs:<t>:<ch>` HASH node id → that channel's subscribers there
 * - `<p>:cluster-channel-members:<t>:<ch>` SET `<node>|<connection id>` of those subscribers
 * - `<p>:cluster-role-conns:<t>:<role>` HASH node id → connections holding that JWT role there
 * - `<p>:cluster-role-members:<t>:<role>` SET `<node>|<connection id>` of those connections
 * - `<p>:cluster-node-keys:<node>`      SET of the keys above a node wrote into
 *
 * Counts answer a send to one channel or one role in O(1). A send to several
 * channels (or roles) must count a connection in two of them once (SPEC
 * §6.1 "the target's connections"), so it counts the union of the member
 * sets in Redis: O(members), paid only by such sends.
 *
 * Writes are fire-and-forget from the connection path (local delivery never
 * waits on Redis); when Redis comes back after an outage, the node rewrites
 * all of its entries from its own registry.
 */
import type { Logger } from 'pino';
import type { Connection } from '../hub/connection.js';
import type { Hub } from '../hub/hub.js';
import type { RedisService } from '../redis/redis-service.js';
import { globEscape, pipelineResults, type RedisScript } from '../storage/redis/redis-connection.js';

export interface SessionInfo {
  connection_id: string;
  server_id: string;
  tenant_id: string;
  connected_at: string;
  channels: string[];
}

export interface NodeInfo {
  server_id: string;
  connections: number;
  last_seen: string;
}

/** Remote connections of a target, per live node other than this one. */
export type RemoteCounts = Map<string, number>;

/**
 * Distinct members of the sets in KEYS, counted per node (the part of a
 * member before its last `|`); ARGV[1] is this node, left out.
 * Returns a flat list: node, count, node, count…
 */
const UNION_COUNTS = `
local seen, counts, order = {}, {}, {}
for i = 1, #KEYS do
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if not seen[member] then
      seen[member] = true
      local node = string.match(member, '^(.*)|')
      if node and node ~= ARGV[1] then
        if not counts[node] then counts[node] = 0; order[#order + 1] = node end
        counts[node] = counts[node] + 1
      end
    end
  end
end
local out = {}
for _, node in ipairs(order) do out[#out + 1] = node; out[#out + 1] = counts[node] end
return out
`;

export class ClusterPresence {
  readonly #redis: RedisService;
  readonly #hub: Hub;
  readonly #nodeId: string;
  readonly #ttlMs: number;
  readonly #log: Logger;
  readonly #unionCounts: RedisScript;
  #heartbeat: NodeJS.Timeout | null = null;

  constructor(redis: RedisService, hub: Hub, nodeId: string, ttlMs: number, log: Logger) {
    this.#redis = redis;
    this.#hub = hub;
    this.#nodeId = nodeId;
    this.#ttlMs = ttlMs;
    this.#log = log;
    this.#unionCounts = redis.connection.defineScript('araPresenceUnionCounts', null, UNION_COUNTS);
    redis.connection.client.on('ready', () => void this.resync());
  }

  get nodeId(): string {
    return this.#nodeId;
  }

  /** Beats at a third of the TTL, so one missed beat never makes a live node look dead. */
  async start(): Promise<void> {
    await this.#beat();
    await this.resync();
    this.#heartbeat = setInterval(() => void this.#beat(), Math.max(100, Math.floor(this.#ttlMs / 3)));
    this.#heartbeat.unref();
  }

  /** Removes this node's entries: a clean shutdown leaves nothing behind. */
  async stop(): Promise<void> {
    if (this.#heartbeat) clearInterval(this.#heartbeat);
    this.#heartbeat = null;
    await this.#forgetNode(this.#nodeId).catch((error: unknown) => this.#log.debug({ err: error }, 'presence cleanup failed'));
  }

  // -------------------------------------------------------------------------
  // Writes from the connection path

  connectionOpened(connection: Connection): void {
    this.#write((pipeline, keys) => {
      const sessions = this.#sessionsKey(connection.tenantId, connection.userId);
      const field = this.#field(connection);
      pipeline.hset(sessions, field, this.#session(connection));
      pipeline.hincrby(this.#tenantConnsKey(connection.tenantId), this.#nodeId, 1);
      pipeline.hincrby(this.#key('cluster-node-conns'), this.#nodeId, 1);
      keys.push(sessions, this.#tenantConnsKey(connection.tenantId));
      for (const role of connection.roles) {
        const [conns, members] = [this.#roleConnsKey(connection.tenantId, role), this.#roleMembersKey(connection.tenantId, role)];
        pipeline.hincrby(conns, this.#nodeId, 1);
        pipeline.sadd(members, field);
        keys.push(conns, members);
      }
    });
  }

  connectionClosed(connection: Connection): void {
    this.#write((pipeline) => {
      const field = this.#field(connection);
      pipeline.hdel(this.#sessionsKey(connection.tenantId, connection.userId), field);
      pipeline.hincrby(this.#tenantConnsKey(connection.tenantId), this.#nodeId, -1);
      pipeline.hincrby(this.#key('cluster-node-conns'), this.#nodeId, -1);
      for (const channel of connection.channels) {
        pipeline.hincrby(this.#channelSubsKey(connection.tenantId, channel), this.#nodeId, -1);
        pipeline.srem(this.#channelMembersKey(connection.tenantId, channel), field);
      }
      for (const role of connection.roles) {
        pipeline.hincrby(this.#roleConnsKey(connection.tenantId, role), this.#nodeId, -1);
        pipeline.srem(this.#roleMembersKey(connection.tenantId, role), field);
      }
    });
  }

  subscriptionChanged(connection: Connection, channel: string, delta: 1 | -1): void {
    this.#write((pipeline, keys) => {
      const field = this.#field(connection);
      pipeline.hset(this.#sessionsKey(connection.tenantId, connection.userId), field, this.#session(connection));
      const subs = this.#channelSubsKey(connection.tenantId, channel);
      const members = this.#channelMembersKey(connection.tenantId, channel);
      pipeline.hincrby(subs, this.#nodeId, delta);
      if (delta === 1) pipeline.sadd(members, field);
      else pipeline.srem(members, field);
      keys.push(subs, members);
    });
  }

  // -------------------------------------------------------------------------
  // Reads

  /** Connections of these users on other live nodes. */
  async userCounts(tenantId: string, userIds: readonly string[]): Promise<RemoteCounts> {
    const [live, ...fieldLists] = await this.#readWithLiveNodes((pipeline) => {
      for (const userId of userIds) pipeline.hkeys(this.#sessionsKey(tenantId, userId));
    });
    const counts: RemoteCounts = new Map();
    for (const fields of fieldLists as string[][]) {
      for (const field of fields) {
        const node = field.slice(0, field.indexOf('|'));
        if (node !== this.#nodeId && live.has(node)) counts.set(node, (counts.get(node) ?? 0) + 1);
      }
    }
    return counts;
  }

  /** Connections subscribed to any of these channels on other live nodes, each counted once. */
  async channelCounts(tenantId: string, channels: readonly string[]): Promise<RemoteCounts> {
    if (channels.length === 1) return this.#countsOne(this.#channelSubsKey(tenantId, channels[0]!));
    return this.#countsUnion(channels.map((channel) => this.#channelMembersKey(tenantId, channel)));
  }

  /** Connections holding any of these JWT roles on other live nodes, each counted once. */
  async roleCounts(tenantId: string, roles: readonly string[]): Promise<RemoteCounts> {
    if (roles.length === 1) return this.#countsOne(this.#roleConnsKey(tenantId, roles[0]!));
    return this.#countsUnion(roles.map((role) => this.#roleMembersKey(tenantId, role)));
  }

  async #countsOne(hashKey: string): Promise<RemoteCounts> {
    const [live, hash] = await this.#readWithLiveNodes((pipeline) => void pipeline.hgetall(hashKey));
    return this.#sumLive(live, [hash as Record<string, string>]);
  }

  async #countsUnion(setKeys: string[]): Promise<RemoteCounts> {
    const [live, flat] = await this.#readWithLiveNodes((pipeline) => this.#unionCounts.queue(pipeline, setKeys, [this.#nodeId]));
    const counts: RemoteCounts = new Map();
    const list = flat as (string | number)[];
    for (let i = 0; i < list.length; i += 2) {
      const node = String(list[i]);
      if (live.has(node)) counts.set(node, Number(list[i + 1]));
    }
    return counts;
  }

  /** Connections of a tenant (or of every tenant) on other live nodes. */
  async tenantCounts(tenantId: string | null): Promise<RemoteCounts> {
    const key = tenantId === null ? this.#key('cluster-node-conns') : this.#tenantConnsKey(tenantId);
    const [live, hash] = await this.#readWithLiveNodes((pipeline) => void pipeline.hgetall(key));
    return this.#sumLive(live, [hash as Record<string, string>]);
  }

  /** Runs the reads in one round trip together with the list of live nodes. */
  async #readWithLiveNodes(
    build: (pipeline: ReturnType<RedisService['connection']['client']['pipeline']>) => void,
  ): Promise<[Set<string>, ...unknown[]]> {
    const pipeline = this.#redis.connection.client.pipeline();
    pipeline.zrange(this.#key('cluster-nodes'), Date.now() - this.#ttlMs, '+inf', 'BYSCORE');
    build(pipeline);
    // Command errors inside the pipeline count as failures for the breaker, not as a success.
    const [live, ...rest] = await this.#redis.guarded(async () => pipelineResults(await pipeline.exec()));
    return [new Set(live as string[]), ...rest];
  }

  /**
   * Live nodes with their connection counts, this one included: all
   * connections, or only one tenant's.
   */
  async nodesFor(tenantId: string | null): Promise<NodeInfo[]> {
    const nodes = await this.nodes();
    if (tenantId === null) return nodes;
    const perNode = await this.#redis.guarded(() => this.#redis.connection.client.hgetall(this.#tenantConnsKey(tenantId)));
    return nodes.map((node) => ({ ...node, connections: Math.max(0, Number(perNode[node.server_id] ?? 0)) }));
  }

  async nodes(): Promise<NodeInfo[]> {
    const client = this.#redis.connection.client;
    const [beats, counts] = await this.#redis.guarded(() =>
      Promise.all([
        client.zrange(this.#key('cluster-nodes'), Date.now() - this.#ttlMs, '+inf', 'BYSCORE', 'WITHSCORES'),
        client.hgetall(this.#key('cluster-node-conns')),
      ]),
    );
    const nodes: NodeInfo[] = [];
    for (let i = 0; i < beats.length; i += 2) {
      const id = beats[i]!;
      nodes.push({ server_id: id, connections: Math.max(0, Number(counts[id] ?? 0)), last_seen: new Date(Number(beats[i + 1])).toISOString() });
    }
    return nodes.sort((a, b) => (a.server_id < b.server_id ? -1 : 1));
  }

  /** The user's sessions on live nodes, in one tenant or (tenantId null) all of them. */
  async sessions(tenantId: string | null, userId: string): Promise<SessionInfo[]> {
    const keys: string[] = [];
    if (tenantId !== null) {
      keys.push(this.#sessionsKey(tenantId, userId));
    } else {
      const probe = this.#sessionsKey('x', userId);
      const tail = probe.slice(this.#sessionsKey('x', '').length);
      const pattern = `${globEscape(`${this.#redis.connection.keyPrefix}:cluster-sessions:`)}*${globEscape(`:${tail}`)}`;
      await this.#redis.guarded(() => this.#redis.connection.scan(pattern, async (found) => void keys.push(...found)));
    }
    const live = new Set((await this.nodes()).map((node) => node.server_id));
    const sessions: SessionInfo[] = [];
    for (const key of keys) {
      const entries = await this.#redis.guarded(() => this.#redis.connection.client.hgetall(key));
      for (const [field, json] of Object.entries(entries)) {
        const session = JSON.parse(json) as SessionInfo;
        // A key matched by the scan may belong to a user whose id only ends like this one.
        if (live.has(field.slice(0, field.indexOf('|'))) && (tenantId !== null || key === this.#sessionsKey(session.tenant_id, userId))) {
          sessions.push(session);
        }
      }
    }
    return sessions.sort((a, b) => (a.connected_at < b.connected_at ? -1 : 1));
  }

  // -------------------------------------------------------------------------
  // Liveness, resync and the janitor

  async #beat(): Promise<void> {
    try {
      const client = this.#redis.connection.client;
      const added = await this.#redis.guarded(() => client.zadd(this.#key('cluster-nodes'), Date.now(), this.#nodeId));
      // No longer listed: another node's janitor took this one for dead (its last beat
      // was older than 3 × TTL, as after a long Redis outage) and removed its entries.
      if (Number(added) === 1 && this.#heartbeat !== null) await this.resync();
      await this.#sweepDeadNodes();
    } catch (error) {
      this.#log.debug({ err: error }, 'cluster heartbeat failed');
    }
  }

  /** Rewrites every entry of this node from the local registry. */
  async resync(): Promise<void> {
    try {
      await this.#forgetNode(this.#nodeId, false);
      const pipeline = this.#redis.connection.client.pipeline();
      const keys: string[] = [];
      const channelSubs = new Map<string, number>();
      let total = 0;
      for (const space of this.#hub.spaces()) {
        pipeline.hset(this.#tenantConnsKey(space.tenantId), this.#nodeId, space.connections.size);
        keys.push(this.#tenantConnsKey(space.tenantId));
        total += space.connections.size;
        const roleConns = new Map<string, number>();
        for (const connection of space.connections) {
          const sessions = this.#sessionsKey(connection.tenantId, connection.userId);
          const field = this.#field(connection);
          pipeline.hset(sessions, field, this.#session(connection));
          keys.push(sessions);
          for (const channel of connection.channels) {
            const members = this.#channelMembersKey(space.tenantId, channel);
            pipeline.sadd(members, field);
            keys.push(members);
          }
          for (const role of connection.roles) {
            const members = this.#roleMembersKey(space.tenantId, role);
            pipeline.sadd(members, field);
            keys.push(members);
            roleConns.set(role, (roleConns.get(role) ?? 0) + 1);
          }
        }
        for (const [channel, subscribers] of space.channels) {
          channelSubs.set(this.#channelSubsKey(space.tenantId, channel), subscribers.size);
        }
        for (const [role, count] of roleConns) channelSubs.set(this.#roleConnsKey(space.tenantId, role), count);
      }
      // Counts per node: channel subscribers and role holders.
      for (const [key, count] of channelSubs) {
        pipeline.hset(key, this.#nodeId, count);
        keys.push(key);
      }
      pipeline.hset(this.#key('cluster-node-conns'), this.#nodeId, total);
      // Listed as live at once: a restarted Redis lost the node list, and waiting for the
      // next heartbeat (a third of the TTL) would count this node as dead meanwhile.
      pipeline.zadd(this.#key('cluster-nodes'), Date.now(), this.#nodeId);
      if (keys.length > 0) pipeline.sadd(this.#nodeKeysKey(this.#nodeId), ...new Set(keys));
      await this.#redis.guarded(async () => pipelineResults(await pipeline.exec()));
    } catch (error) {
      this.#log.debug({ err: error }, 'presence resync failed; retried on the next reconnect');
    }
  }

  async #sweepDeadNodes(): Promise<void> {
    const client = this.#redis.connection.client;
    const dead = await client.zrange(this.#key('cluster-nodes'), '-inf', Date.now() - this.#ttlMs * 3, 'BYSCORE');
    for (const node of dead) {
      // One janitor per dead node at a time; the others skip it.
      if ((await client.set(this.#key(`cluster-janitor:${node}`), this.#nodeId, 'PX', this.#ttlMs, 'NX')) !== 'OK') continue;
      await this.#forgetNode(node);
      this.#log.info({ node }, 'removed the presence of a dead node');
    }
  }

  /** Deletes what `node` wrote; `andNode` also removes it from the node list. */
  async #forgetNode(node: string, andNode = true): Promise<void> {
    const client = this.#redis.connection.client;
    const keys = await client.smembers(this.#nodeKeysKey(node));
    const pipeline = client.pipeline();
    for (const key of keys) {
      if (key.includes(':cluster-sessions:')) {
        const fields = (await client.hkeys(key)).filter((field) => field.startsWith(`${node}|`));
        if (fields.length > 0) pipeline.hdel(key, ...fields);
      } else if (key.includes(':cluster-channel-members:') || key.includes(':cluster-role-members:')) {
        const members = (await client.smembers(key)).filter((member) => member.startsWith(`${node}|`));
        if (members.length > 0) pipeline.srem(key, ...members);
      } else {
        pipeline.hdel(key, node);
      }
    }
    pipeline.del(this.#nodeKeysKey(node));
    pipeline.hdel(this.#key('cluster-node-conns'), node);
    if (andNode) pipeline.zrem(this.#key('cluster-nodes'), node);
    pipelineResults(await pipeline.exec());
  }

  // -------------------------------------------------------------------------

  #write(build: (pipeline: ReturnType<RedisService['connection']['client']['pipeline']>, keys: string[]) => void): void {
    if (!this.#redis.connection.ready) return; // rewritten by resync when Redis is back
    const pipeline = this.#redis.connection.client.pipeline();
    const keys: string[] = [];
    build(pipeline, keys);
    if (keys.length > 0) pipeline.sadd(this.#nodeKeysKey(this.#nodeId), ...keys);
    pipeline.exec().catch((error: unknown) => this.#log.debug({ err: error }, 'presence write failed'));
  }

  #sumLive(live: Set<string>, hashes: Record<string, string>[]): RemoteCounts {
    const counts: RemoteCounts = new Map();
    for (const hash of hashes) {
      for (const [node, value] of Object.entries(hash)) {
        const count = Number(value);
        if (node !== this.#nodeId && count > 0 && live.has(node)) counts.set(node, (counts.get(node) ?? 0) + count);
      }
    }
    return counts;
  }

  #session(connection: Connection): string {
    const session: SessionInfo = {
      connection_id: connection.id,
      server_id: this.#nodeId,
      tenant_id: connection.tenantId,
      connected_at: new Date(connection.connectedAtMs).toISOString(),
      channels: [...connection.channels].sort(),
    };
    return JSON.stringify(session);
  }

  #field(connection: Connection): string {
    return `${this.#nodeId}|${connection.id}`;
  }

  #key(name: string): string {
    return this.#redis.connection.globalKey(name);
  }

  #sessionsKey(tenantId: string, userId: string): string {
    return this.#redis.connection.key('cluster-sessions', tenantId, userId);
  }

  #tenantConnsKey(tenantId: string): string {
    return this.#redis.connection.key('cluster-tenant-conns', tenantId);
  }

  #channelSubsKey(tenantId: string, channel: string): string {
    return this.#redis.connection.key('cluster-channel-subs', tenantId, channel);
  }

  #channelMembersKey(tenantId: string, channel: string): string {
    return this.#redis.connection.key('cluster-channel-members', tenantId, channel);
  }

  #roleConnsKey(tenantId: string, role: string): string {
    return this.#redis.connection.key('cluster-role-conns', tenantId, role);
  }

  #roleMembersKey(tenantId: string, role: string): string {
    return this.#redis.connection.key('cluster-role-members', tenantId, role);
  }

  #nodeKeysKey(node: string): string {
    return this.#key(`cluster-node-keys:${node}`);
  }
}
