/**
 * The connection registry of one node. Tenancy is structural: every tenant
 * has its own space holding its users and channels, and every lookup goes
 * through a space, so no crafted user or channel name can reach into
 * another tenant (SPEC §3).
 *
 * Caps are checked and the connection inserted in one synchronous step, so
 * concurrent connects can never overshoot a cap.
 */
import type { ConnectionLimits } from '../config/types.js';
import type { CloseReason, Connection } from './connection.js';

export class TenantSpace {
  readonly connections = new Set<Connection>();
  readonly users = new Map<string, Set<Connection>>();
  readonly channels = new Map<string, Set<Connection>>();

  constructor(readonly tenantId: string) {}
}

export type CapName = 'node' | 'tenant' | 'user';

export type RegisterResult =
  | { ok: true }
  | { ok: false; cap: CapName; message: string };

const REGISTERED: RegisterResult = Object.freeze({ ok: true });

export type SubscribeResult = 'subscribed' | 'already_subscribed' | 'limit';

/** Caps that apply to a connection of one tenant; 0 = unlimited. */
export interface EffectiveLimits {
  nodeMaxConnections: number;
  tenantMaxConnections: number;
  maxConnectionsPerUser: number;
  maxSubscriptionsPerConnection: number;
}

/**
 * Told about changes to the registry, in order. The user and channel events
 * fire on the first connection or subscriber of a (tenant, name) pair and
 * after the last one leaves: what a cluster needs to know which users and
 * channels live on this node.
 */
export interface HubListener {
  connectionRegistered?(connection: Connection): void;
  connectionUnregistered?(connection: Connection, reason: CloseReason): void;
  userOnline?(tenantId: string, userId: string): void;
  userOffline?(tenantId: string, userId: string): void;
  channelActive?(tenantId: string, channel: string): void;
  channelInactive?(tenantId: string, channel: string): void;
  /** Every subscribe and unsubscribe of a registered connection. */
  subscriptionChanged?(connection: Connection, channel: string, subscribed: boolean): void;
}

/** The smaller of two caps where 0 means unlimited. */
export function tighterCap(a: number, b: number): number {
  if (a === 0) return b;
  if (b === 0) return a;
  return Math.min(a, b);
}

export class Hub {
  readonly #spaces = new Map<string, TenantSpace>();
  readonly #nodeLimits: ConnectionLimits;
  readonly #tenantLimits: (tenantId: string) => ConnectionLimits | null;
  readonly #listeners: HubListener[] = [];
  #connectionCount = 0;
  #sseCount = 0;

  /**
   * `tenantLimits` returns the tenant's own caps, or null when tenancy is
   * off and only the node-wide caps apply.
   */
  constructor(nodeLimits: ConnectionLimits, tenantLimits: (tenantId: string) => ConnectionLimits | null) {
    this.#nodeLimits = nodeLimits;
    this.#tenantLimits = tenantLimits;
  }

  addListener(listener: HubListener): void {
    this.#listeners.push(listener);
  }

  get connectionCount(): number {
    return this.#connectionCount;
  }

  get sseCount(): number {
    return this.#sseCount;
  }

  space(tenantId: string): TenantSpace | undefined {
    return this.#spaces.get(tenantId);
  }

  spaces(): IterableIterator<TenantSpace> {
    return this.#spaces.values();
  }

  limitsFor(tenantId: string): EffectiveLimits {
    const node = this.#nodeLimits;
    const tenant = this.#tenantLimits(tenantId);
    return {
      nodeMaxConnections: node.maxConnections,
      tenantMaxConnections: tenant?.maxConnections ?? 0,
      maxConnectionsPerUser: tighterCap(node.maxConnectionsPerUser, tenant?.maxConnectionsPerUser ?? 0),
      maxSubscriptionsPerConnection: tighterCap(
        node.maxSubscriptionsPerConnection,
        tenant?.maxSubscriptionsPerConnection ?? 0,
      ),
    };
  }

  /** Checks every cap and inserts the connection, atomically. */
  register(connection: Connection): RegisterResult {
    const limits = this.limitsFor(connection.tenantId);
    const space = this.#spaces.get(connection.tenantId);
    const refusal = this.#capRefusal(limits, space, connection.userId);
    if (refusal) return refusal;
    const target = space ?? this.#createSpace(connection.tenantId);
    const firstOfUser = !target.users.has(connection.userId);
    this.#insert(target, connection);
    for (const listener of this.#listeners) {
      listener.connectionRegistered?.(connection);
      if (firstOfUser) listener.userOnline?.(connection.tenantId, connection.userId);
    }
    return REGISTERED;
  }

  /** Removes the connection from every index; safe to call twice. */
  unregister(connection: Connection, reason: CloseReason): void {
    const space = this.#spaces.get(connection.tenantId);
    if (!space || !space.connections.delete(connection)) return;
    this.#connectionCount--;
    if (connection.kind === 'sse') this.#sseCount--;
    const lastOfUser = removeFromIndex(space.users, connection.userId, connection);
    const emptied: string[] = [];
    for (const channel of connection.channels) {
      if (removeFromIndex(space.channels, channel, connection)) emptied.push(channel);
    }
    if (space.connections.size === 0) this.#spaces.delete(space.tenantId);
    for (const listener of this.#listeners) {
      listener.connectionUnregistered?.(connection, reason);
      for (const channel of emptied) listener.channelInactive?.(connection.tenantId, channel);
      if (lastOfUser) listener.userOffline?.(connection.tenantId, connection.userId);
    }
  }

  subscribe(connection: Connection, channel: string): SubscribeResult {
    if (connection.channels.has(channel)) return 'already_subscribed';
    const max = this.limitsFor(connection.tenantId).maxSubscriptionsPerConnection;
    if (max > 0 && connection.channels.size >= max) return 'limit';
    const space = this.#spaces.get(connection.tenantId);
    if (!space || !space.connections.has(connection)) return 'limit';
    connection.addChannel(channel);
    const first = addToIndex(space.channels, channel, connection);
    for (const listener of this.#listeners) {
      if (first) listener.channelActive?.(connection.tenantId, channel);
      listener.subscriptionChanged?.(connection, channel, true);
    }
    return 'subscribed';
  }

  unsubscribe(connection: Connection, channel: string): boolean {
    if (!connection.removeChannel(channel)) return false;
    const space = this.#spaces.get(connection.tenantId);
    const last = space !== undefined && removeFromIndex(space.channels, channel, connection);
    for (const listener of this.#listeners) {
      if (last) listener.channelInactive?.(connection.tenantId, channel);
      listener.subscriptionChanged?.(connection, channel, false);
    }
    return true;
  }

  #capRefusal(limits: EffectiveLimits, space: TenantSpace | undefined, userId: string): RegisterResult | null {
    if (limits.nodeMaxConnections > 0 && this.#connectionCount >= limits.nodeMaxConnections) {
      return refusal('node', 'Node', limits.nodeMaxConnections, this.#connectionCount);
    }
    const tenantCount = space?.connections.size ?? 0;
    if (limits.tenantMaxConnections > 0 && tenantCount >= limits.tenantMaxConnections) {
      return refusal('tenant', 'Tenant', limits.tenantMaxConnections, tenantCount);
    }
    const userCount = space?.users.get(userId)?.size ?? 0;
    if (limits.maxConnectionsPerUser > 0 && userCount >= limits.maxConnectionsPerUser) {
      return refusal('user', 'User', limits.maxConnectionsPerUser, userCount);
    }
    return null;
  }

  #createSpace(tenantId: string): TenantSpace {
    const space = new TenantSpace(tenantId);
    this.#spaces.set(tenantId, space);
    return space;
  }

  #insert(space: TenantSpace, connection: Connection): void {
    space.connections.add(connection);
    addToIndex(space.users, connection.userId, connection);
    this.#connectionCount++;
    if (connection.kind === 'sse') this.#sseCount++;
  }
}

function refusal(cap: CapName, label: string, limit: number, current: number): RegisterResult {
  return { ok: false, cap, message: `${label} connection limit reached (${current}/${limit})` };
}

/** Returns true when `key` was new to the index. */
function addToIndex(index: Map<string, Set<Connection>>, key: string, connection: Connection): boolean {
  let set = index.get(key);
  const created = set === undefined;
  if (!set) index.set(key, (set = new Set()));
  set.add(connection);
  return created;
}

/** Returns true when `key` left the index (its last connection went). */
function removeFromIndex(index: Map<string, Set<Connection>>, key: string, connection: Connection): boolean {
  const set = index.get(key);
  if (!set || !set.delete(connection)) return false;
  if (set.size > 0) return false;
  index.delete(key);
  return true;
}
