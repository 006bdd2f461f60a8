/**
 * `GET /api/v1/tenants` and `/api/v1/tenants/{id}` (SPEC §6.2): live and
 * cumulative figures per tenant. The operator key without X-Tenant-ID sees
 * every tenant; anyone else sees exactly their own.
 */
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { ApiError } from '../../errors.js';
import type { Hub } from '../../hub/hub.js';
import { DEFAULT_TENANT } from '../../tenancy/tenant-id.js';
import type { NotificationStats } from '../../tenancy/tenant-stats.js';

export interface TenantRouteDeps {
  hub: Hub;
  stats: NotificationStats;
  tenancyEnabled: boolean;
  /** Tenants named by configuration (TENANTS_FILE, TENANT_API_KEYS). */
  configuredTenants: readonly string[];
}

export function registerTenantRoutes(app: FastifyInstance, deps: TenantRouteDeps): void {
  const known = (): Set<string> => {
    const ids = new Set<string>(deps.tenancyEnabled ? deps.configuredTenants : [DEFAULT_TENANT]);
    for (const space of deps.hub.spaces()) ids.add(space.tenantId);
    for (const id of deps.stats.tenantIds()) ids.add(id);
    return ids;
  };
  const entry = (tenantId: string) => {
    const space = deps.hub.space(tenantId);
    const counters = deps.stats.peekTenant(tenantId);
    return {
      tenant_id: tenantId,
      stats: {
        active_connections: space?.connections.size ?? 0,
        unique_users: space?.users.size ?? 0,
        channels: space?.channels.size ?? 0,
        messages_sent: counters?.totalSent ?? 0,
        messages_delivered: counters?.totalDelivered ?? 0,
      },
    };
  };

  app.get('/api/v1/tenants', { config: { crossTenant: true } }, async (request) => {
    const scope = request.scope.tenantId;
    const ids = scope === null ? [...known()].sort() : [scope];
    const tenants = ids.map(entry);
    return { enabled: deps.tenancyEnabled, tenants, total: tenants.length };
  });

  app.get(
    '/api/v1/tenants/:tenant_id',
    { config: { crossTenant: true }, schema: { params: Type.Object({ tenant_id: Type.String() }) } },
    async (request) => {
      const { tenant_id: tenantId } = request.params as { tenant_id: string };
      const scope = request.scope.tenantId;
      if (scope !== null && scope !== tenantId) {
        throw new ApiError('TENANT_ACCESS_DENIED', "Cannot access another tenant's data");
      }
      if (!known().has(tenantId)) throw new ApiError('TENANT_NOT_FOUND', `Tenant '${tenantId}' not found`);
      return entry(tenantId);
    },
  );
}
