/**
 * `/stats` and `/api/v1/stats` (SPEC §6.2): node-wide for the operator
 * without X-Tenant-ID, one tenant's figures otherwise.
 */
import type { FastifyInstance } from 'fastify';
import type { Hub, TenantSpace } from '../../hub/hub.js';
import type { NotificationCounters, NotificationStats } from '../../tenancy/tenant-stats.js';
import { emptyCounters } from '../../tenancy/tenant-stats.js';

/** Sections that features add to the stats (queue, ack, redis). */
export interface StatsSections {
  redis(): object;
  queue(tenantId: string | null): Promise<object>;
  ack(tenantId: string | null): Promise<object>;
}

export interface ConnectionFigures {
  total_connections: number;
  websocket: number;
  sse: number;
  unique_users: number;
  channels: number;
}

export function connectionFigures(spaces: Iterable<TenantSpace>): ConnectionFigures {
  const figures = { total_connections: 0, websocket: 0, sse: 0, unique_users: 0, channels: 0 };
  for (const space of spaces) {
    figures.total_connections += space.connections.size;
    figures.unique_users += space.users.size;
    figures.channels += space.channels.size;
    for (const connection of space.connections) {
      if (connection.kind === 'sse') figures.sse++;
    }
  }
  figures.websocket = figures.total_connections - figures.sse;
  return figures;
}

export function spacesInScope(hub: Hub, tenantId: string | null): TenantSpace[] {
  if (tenantId === null) return [...hub.spaces()];
  const space = hub.space(tenantId);
  return space ? [space] : [];
}

function notificationFigures(counters: NotificationCounters) {
  return {
    total_sent: counters.totalSent,
    total_delivered: counters.totalDelivered,
    total_failed: counters.totalFailed,
    total_queued: counters.totalQueued,
    user_notifications: counters.userNotifications,
    broadcast_notifications: counters.broadcastNotifications,
    channel_notifications: counters.channelNotifications,
  };
}

export function registerStatsRoutes(
  app: FastifyInstance,
  hub: Hub,
  stats: NotificationStats,
  sections: StatsSections,
): void {
  const handler = async (request: { scope: { tenantId: string | null } }) => {
    const tenantId = request.scope.tenantId;
    const counters = tenantId === null ? stats.node : (stats.peekTenant(tenantId) ?? emptyCounters());
    return {
      connections: connectionFigures(spacesInScope(hub, tenantId)),
      notifications: notificationFigures(counters),
      redis: sections.redis(),
      queue: await sections.queue(tenantId),
      ack: await sections.ack(tenantId),
    };
  };
  app.get('/stats', { config: { crossTenant: true } }, handler);
  app.get('/api/v1/stats', { config: { crossTenant: true } }, handler);
  app.get('/api/v1/stats/acks', { config: { crossTenant: true } }, (request) => sections.ack(request.scope.tenantId));
}
