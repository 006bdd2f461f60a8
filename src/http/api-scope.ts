/**
 * Who is calling the HTTP API and which tenant the request acts in
 * (SPEC §2 "HTTP API", §3). Every `/api/v1` route and `/stats` runs this
 * before its handler; handlers read `request.scope` and nothing else.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { HttpRateLimiter } from '../ratelimit/http-rate-limiter.js';
import type { ApiKeyAuthority, Caller } from '../auth/api-key.js';
import { ApiError } from '../errors.js';
import { DEFAULT_TENANT, isValidTenantId } from '../tenancy/tenant-id.js';

export interface RequestScope {
  caller: Caller;
  /** The tenant acted in; null = every tenant (operator cross-tenant routes only). */
  tenantId: string | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    scope: RequestScope;
  }
  interface FastifyContextConfig {
    /** Operator may call without X-Tenant-ID and then sees every tenant. */
    crossTenant?: boolean;
  }
}

export interface ScopeOptions {
  tenancyEnabled: boolean;
  keys: ApiKeyAuthority;
  /** RATELIMIT_ENABLED: one bucket per caller, per client IP before authentication. */
  limiter: HttpRateLimiter | null;
}

export function registerApiScope(app: FastifyInstance, options: ScopeOptions): void {
  app.decorateRequest('scope', null as unknown as RequestScope);
  const limiter = options.limiter;
  if (limiter === null) {
    // Nothing to wait for: a callback hook spares every request a promise and a microtask.
    app.addHook('onRequest', (request, _reply, done) => {
      try {
        const presented = headerValue(request.headers['x-api-key']);
        request.scope = scopeOf(request, presented, presented === undefined ? null : options.keys.identify(presented), options);
      } catch (error) {
        done(error as Error);
        return;
      }
      done();
    });
    return;
  }
  app.addHook('onRequest', async (request, reply) => {
    const presented = headerValue(request.headers['x-api-key']);
    const caller = presented === undefined ? null : options.keys.identify(presented);
    // Unauthenticated requests spend their client address's tokens, so
    // inventing keys never buys a fresh bucket (SPEC §6, case C19).
    await limiter.admit(caller === null ? `ip:${request.ip}` : callerKey(caller), reply);
    request.scope = scopeOf(request, presented, caller, options);
  });
}

function scopeOf(request: FastifyRequest, presented: string | undefined, caller: Caller | null, options: ScopeOptions): RequestScope {
  if (presented === undefined) throw new ApiError('UNAUTHORIZED', 'Missing API key');
  if (caller === null) throw new ApiError('UNAUTHORIZED', 'Invalid API key');
  return resolveScope(request, caller, options);
}

function callerKey(caller: Caller): string {
  return caller.kind === 'operator' ? 'key:operator' : `key:tenant:${caller.tenantId}`;
}

function resolveScope(request: FastifyRequest, caller: Caller, options: ScopeOptions): RequestScope {
  if (!options.tenancyEnabled) return { caller, tenantId: DEFAULT_TENANT };
  const requested = headerValue(request.headers['x-tenant-id']);
  return caller.kind === 'tenant'
    ? tenantKeyScope(caller, requested)
    : operatorScope(caller, requested, request.routeOptions.config.crossTenant === true);
}

function tenantKeyScope(caller: Extract<Caller, { kind: 'tenant' }>, requested: string | undefined): RequestScope {
  if (requested !== undefined && requested !== caller.tenantId) {
    throw new ApiError('TENANT_ACCESS_DENIED', 'This API key cannot act for that tenant');
  }
  return { caller, tenantId: caller.tenantId };
}

function operatorScope(caller: Caller, requested: string | undefined, crossTenant: boolean): RequestScope {
  if (requested === undefined) {
    if (crossTenant) return { caller, tenantId: null };
    throw new ApiError('INVALID_TENANT', 'X-Tenant-ID is required with the operator key');
  }
  if (!isValidTenantId(requested)) {
    throw new ApiError('INVALID_TENANT', 'X-Tenant-ID must be 1-64 characters of A-Z a-z 0-9 . _ -');
  }
  return { caller, tenantId: requested };
}

function headerValue(value: string | string[] | undefined): string | undefined {
  const single = Array.isArray(value) ? value[0] : value;
  const trimmed = single?.trim();
  return trimmed === undefined || trimmed === '' ? undefined : trimmed;
}

/** The tenant of a tenant-scoped route; cross-tenant routes never call this. */
export function tenantOf(request: FastifyRequest): string {
  const tenantId = request.scope.tenantId;
  if (tenantId === null) throw new ApiError('INVALID_TENANT', 'X-Tenant-ID is required');
  return tenantId;
}
