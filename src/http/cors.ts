/**
 * CORS for the HTTP API (SPEC §1 CORS_ORIGINS, §6): the responses
 * @fastify/cors gave with our options, header for header, from one
 * synchronous hook. The plugin resolved its options per request (two
 * routeOptions lookups, an options copy, closures, a Vary cache) even for
 * the server-to-server requests that carry no Origin and only get
 * `Vary: Origin`; that was several microseconds of every API call.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { OriginPolicy } from '../auth/origin.js';

const ALLOW_METHODS = 'GET, POST, PUT, DELETE, OPTIONS';
const ALLOW_HEADERS = 'Content-Type, Authorization, X-API-Key, X-Tenant-ID, Last-Event-ID';
const EXPOSE_HEADERS = 'Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset';
const MAX_AGE_SECONDS = '600';

declare module 'fastify' {
  interface FastifyRequest {
    /** An allowed preflight: the `OPTIONS *` route answers it (the hook already has). */
    corsPreflightEnabled: boolean;
  }
}

/** The hook; call before any route is registered so it covers them all. */
export function registerCorsHook(app: FastifyInstance, origins: OriginPolicy): void {
  app.decorateRequest('corsPreflightEnabled', false);
  app.addHook('onRequest', (request: FastifyRequest, reply: FastifyReply, done: () => void) => {
    // The answer depends on Origin, so caches must key on it, whatever it is.
    reply.header('Vary', 'Origin');
    const origin = request.headers.origin;
    // A request without Origin is not a CORS request: no CORS headers at all.
    if (origin === undefined) return done();
    if (origins.restricted && !origins.allows(origin)) return done();
    reply.header('Access-Control-Allow-Origin', origins.restricted ? origin : '*');
    reply.header('Access-Control-Expose-Headers', EXPOSE_HEADERS);
    if (request.raw.method !== 'OPTIONS') return done();
    request.corsPreflightEnabled = true;
    reply.header('Access-Control-Allow-Methods', ALLOW_METHODS);
    reply.header('Access-Control-Allow-Headers', ALLOW_HEADERS);
    reply.header('Access-Control-Max-Age', MAX_AGE_SECONDS);
    // Answered here, before authentication: browsers send no credentials on a preflight.
    // Content-Length 0 on the 204: some browsers wait for a body otherwise.
    void reply.code(204).header('Content-Length', '0').send();
  });
}

/**
 * `OPTIONS` on any path, so a preflight is routed at all; one the hook did
 * not answer (no or a refused Origin) is treated as an unknown route (404/405).
 */
export function registerPreflightRoute(app: FastifyInstance): void {
  app.options('*', (request, reply) => {
    if (!request.corsPreflightEnabled) {
      reply.callNotFound();
      return;
    }
    void reply.send();
  });
}
