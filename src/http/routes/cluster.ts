/**
 * `GET /api/v1/cluster/status` and `/api/v1/cluster/users/{user_id}`
 * (SPEC §6.2): operator routes that cover every tenant without X-Tenant-ID
 * and one tenant with it; a tenant key sees its own tenant.
 */
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { Cluster } from '../../cluster/cluster.js';
import type { SessionInfo } from '../../cluster/presence.js';
import { ApiError } from '../../errors.js';
import type { Hub } from '../../hub/hub.js';
import { spacesInScope } from './stats.js';

export interface ClusterRouteDeps {
  hub: Hub;
  cluster: Cluster | null;
  serverId: string;
}

export function registerClusterRoutes(app: FastifyInstance, deps: ClusterRouteDeps): void {
  app.get('/api/v1/cluster/status', { config: { crossTenant: true } }, async (request) => {
    const tenantId = request.scope.tenantId;
    const local = spacesInScope(deps.hub, tenantId).reduce((sum, space) => sum + space.connections.size, 0);
    if (deps.cluster === null) {
      const self = { server_id: deps.serverId, connections: local, last_seen: new Date().toISOString() };
      return { enabled: false, mode: 'standalone', server_id: deps.serverId, nodes: [self], local_connections: local, cluster_connections: local };
    }
    const nodes = await unavailableOnError(deps.cluster.presence.nodesFor(tenantId));
    const total = nodes.reduce((sum, node) => sum + node.connections, 0);
    return { enabled: true, mode: 'distributed', server_id: deps.serverId, nodes, local_connections: local, cluster_connections: total };
  });

  app.get(
    '/api/v1/cluster/users/:user_id',
    { config: { crossTenant: true }, schema: { params: Type.Object({ user_id: Type.String({ minLength: 1, maxLength: 256 }) }) } },
    async (request) => {
      const { user_id: userId } = request.params as { user_id: string };
      const tenantId = request.scope.tenantId;
      const sessions =
        deps.cluster === null
          ? localSessions(deps, tenantId, userId)
          : await unavailableOnError(deps.cluster.presence.sessions(tenantId, userId));
      return {
        user_id: userId,
        found: sessions.length > 0,
        sessions: sessions.map(({ connection_id, server_id, tenant_id, connected_at, channels }) => ({
          connection_id,
          server_id,
          tenant_id,
          connected_at,
          channels,
        })),
      };
    },
  );
}

function localSessions(deps: ClusterRouteDeps, tenantId: string | null, userId: string): SessionInfo[] {
  const sessions: SessionInfo[] = [];
  for (const space of spacesInScope(deps.hub, tenantId)) {
    for (const connection of space.users.get(userId) ?? []) {
      sessions.push({
        connection_id: connection.id,
        server_id: deps.serverId,
        tenant_id: connection.tenantId,
        connected_at: new Date(connection.connectedAtMs).toISOString(),
        channels: [...connection.channels].sort(),
      });
    }
  }
  return sessions;
}

async function unavailableOnError<T>(pending: Promise<T>): Promise<T> {
  try {
    return await pending;
  } catch (error) {
    const unavailable = new ApiError('SERVICE_UNAVAILABLE', 'Cluster state is unavailable while Redis is down');
    unavailable.cause = error;
    throw unavailable;
  }
}
