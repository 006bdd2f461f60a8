/**
 * Operations endpoints without an API key (SPEC §6.3): health for people
 * and load balancers, liveness and readiness for orchestrators, metrics.
 * Counts appear in /health only for a caller with a valid API key.
 */
import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { sha256, type ApiKeyAuthority } from '../../auth/api-key.js';
import { ApiError } from '../../errors.js';
import type { Hub } from '../../hub/hub.js';
import type { Metrics } from '../../ops/metrics.js';
import { isValidTenantId } from '../../tenancy/tenant-id.js';
import { connectionFigures, spacesInScope } from './stats.js';

export interface HealthSource {
  /** Sections of /health other than counts, and whether all required backends are up. */
  report(): { healthy: boolean; sections: Record<string, unknown> };
  accepting(): boolean;
}

export interface OpsRouteDeps {
  hub: Hub;
  metrics: Metrics;
  keys: ApiKeyAuthority;
  health: HealthSource;
  version: string;
  startedAtMs: number;
  metricsToken: string | undefined;
  /** TENANT_ENABLED: the operator's X-Tenant-ID then scopes the counts to that tenant (SPEC §3). */
  tenancyEnabled?: boolean;
}

export function registerOpsRoutes(app: FastifyInstance, deps: OpsRouteDeps): void {
  app.get('/health', async (request, reply) => {
    const { healthy, sections } = deps.health.report();
    const body: Record<string, unknown> = {
      status: healthy ? 'healthy' : 'degraded',
      version: deps.version,
      uptime_seconds: Math.floor((Date.now() - deps.startedAtMs) / 1000),
      ...sections,
    };
    const caller = deps.keys.identify(headerOf(request.headers['x-api-key']));
    if (caller !== null) {
      const tenantId = caller.kind === 'tenant'
        ? caller.tenantId
        : operatorTenant(request.headers['x-tenant-id'], deps);
      const figures = connectionFigures(spacesInScope(deps.hub, tenantId));
      body.connections = { total: figures.total_connections, unique_users: figures.unique_users, channels: figures.channels };
    }
    return reply.code(healthy ? 200 : 503).send(body);
  });

  app.get('/health/live', async () => ({ status: 'alive' }));

  app.get('/health/ready', async (_request, reply) => {
    const ready = deps.health.accepting() && deps.health.report().healthy;
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not_ready' });
  });

  const expected = deps.metricsToken ? sha256(deps.metricsToken) : null;
  app.get('/metrics', async (request, reply) => {
    if (expected !== null) {
      const presented = /^Bearer (.+)$/i.exec(request.headers.authorization ?? '')?.[1];
      if (presented === undefined || !timingSafeEqual(sha256(presented), expected)) {
        throw new ApiError('UNAUTHORIZED', 'Metrics require the bearer token');
      }
    }
    const text = await deps.metrics.registry.metrics();
    return reply.header('Content-Type', deps.metrics.registry.contentType).send(text);
  });
}

/** The tenant an operator names with X-Tenant-ID; null = every tenant (no, or a malformed, header). */
function operatorTenant(header: string | string[] | undefined, deps: OpsRouteDeps): string | null {
  const requested = headerOf(header);
  return deps.tenancyEnabled === true && isValidTenantId(requested) ? requested : null;
}

function headerOf(value: string | string[] | undefined): string | undefined {
  return (Array.isArray(value) ? value[0] : value)?.trim();
}
