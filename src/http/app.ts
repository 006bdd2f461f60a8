/**
 * The Fastify application: body parsing, CORS, the JSON error envelope for
 * every failure (SPEC §6, including 404, 405, 413, 415 and parse errors),
 * request metrics, and the route modules.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { ApiError, HTTP_ERRORS, errorBody, type ErrorDetail } from '../errors.js';
import type { OriginPolicy } from '../auth/origin.js';
import type { Metrics } from '../ops/metrics.js';
import { redactUrl } from '../ops/logger.js';
import { AllowedMethods } from './allowed-methods.js';
import { registerCorsHook, registerPreflightRoute } from './cors.js';

export const SEND_BODY_LIMIT = 64 * 1024;
export const BATCH_BODY_LIMIT = 1024 * 1024;

export interface AppOptions {
  log: Logger;
  metrics: Metrics;
  origins: OriginPolicy;
  production: boolean;
  /** Fastify/proxy-addr form: true, proxy addresses, or a hop test. */
  trustProxy: boolean | string[] | ((address: string, hop: number) => boolean);
}

export function createApp(options: AppOptions): FastifyInstance {
  const app: FastifyInstance = Fastify({
    loggerInstance: options.log as FastifyBaseLogger,
    // Requests are logged once, by registerRequestMetrics, with redacted URLs.
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request: request lines are written by our hook.
    childLoggerFactory: (logger) => logger,
    bodyLimit: SEND_BODY_LIMIT,
    routerOptions: { maxParamLength: 2048 },
    trustProxy: options.trustProxy,
    return503OnClosing: true,
    clientErrorHandler: answerClientError,
    frameworkErrors: answerFrameworkError,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: true } },
  });
  acceptJsonVariants(app);
  registerCorsHook(app, options.origins);
  registerErrorHandling(app, options);
  registerRequestMetrics(app, options.metrics, options.log);
  // After the onRoute hooks above, which must see this route too.
  registerPreflightRoute(app);
  return app;
}

/**
 * Requests Node's parser rejects before any route runs (malformed lines,
 * too many or too large headers) still get the JSON envelope (SPEC §6).
 */
function answerClientError(error: Error & { code?: string }, socket: Duplex): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
  const code = tooLarge ? 'HEADERS_TOO_LARGE' : 'BAD_REQUEST';
  const { status, message } = HTTP_ERRORS[code];
  const body = JSON.stringify(errorBody(code, message));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\n` +
      `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/**
 * URLs the router cannot take (malformed percent-encoding, an over-long
 * path parameter) still get the JSON envelope (SPEC §6), not Fastify's own body.
 */
function answerFrameworkError(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  if (error.code === 'FST_ERR_BAD_URL') {
    void reply.code(400).send(errorBody('BAD_REQUEST', 'Malformed URL'));
  } else if (error.statusCode === 414) {
    void reply.code(414).send(errorBody('URI_TOO_LONG', HTTP_ERRORS.URI_TOO_LONG.message));
  } else {
    void reply.code(error.statusCode ?? 400).send(errorBody('VALIDATION_ERROR', 'Request is invalid'));
  }
}

/** `application/*+json` is JSON too (SPEC §6 refuses only non-JSON types). */
function acceptJsonVariants(app: FastifyInstance): void {
  // Fastify parses text/plain by default; SPEC §6 answers it with 415.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser(/^application\/[\w.-]+\+json(?:;.*)?$/i, { parseAs: 'string' }, (_req, body, done) => {
    const parser = app.getDefaultJsonParser('error', 'error');
    parser(_req, body as string, done);
  });
}

function registerErrorHandling(app: FastifyInstance, options: AppOptions): void {
  const allowed = new AllowedMethods();
  app.addHook('onRoute', (route) => allowed.add(route.method, route.url));

  app.setNotFoundHandler((request, reply) => {
    const methods = allowed.forPath(request.url.split('?')[0] ?? '/');
    if (methods.length > 0) {
      void reply
        .code(405)
        .header('Allow', methods.join(', '))
        .send(errorBody('METHOD_NOT_ALLOWED', `Method ${request.method} is not allowed here`));
      return;
    }
    void reply.code(404).send(errorBody('NOT_FOUND', 'Route not found'));
  });

  app.setErrorHandler((error: FastifyError | ApiError, request, reply) => {
    const apiError = error instanceof ApiError ? error : translate(error as FastifyError);
    if (apiError === null) {
      request.log.error({ err: error, url: redactUrl(request.url) }, 'request failed');
      const message = options.production
        ? HTTP_ERRORS.INTERNAL_ERROR.message
        : `${HTTP_ERRORS.INTERNAL_ERROR.message}: ${(error as Error).message}`;
      void reply.code(500).send(errorBody('INTERNAL_ERROR', message));
      return;
    }
    if (apiError.headers) void reply.headers(apiError.headers);
    void reply.code(apiError.status).send(apiError.toBody());
  });
}

/** Fastify's own errors, as entries of our catalogue; null = internal. */
function translate(error: FastifyError): ApiError | null {
  if (error.validation) {
    return new ApiError('VALIDATION_ERROR', 'Request is invalid', { details: validationDetails(error) });
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError('UNSUPPORTED_MEDIA_TYPE', 'Content-Type must be application/json');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('PAYLOAD_TOO_LARGE', 'Request body is too large');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError('INVALID_JSON', 'Request body is empty');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError('VALIDATION_ERROR', 'Content-Length does not match the body');
  }
  if (error instanceof SyntaxError || error.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return new ApiError('INVALID_JSON', 'Request body is not valid JSON');
  }
  if (error.statusCode === 400 && /__proto__|constructor/.test(error.message)) {
    return new ApiError('INVALID_JSON', 'Request body contains a forbidden key (__proto__ or constructor.prototype)');
  }
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
    return new ApiError('VALIDATION_ERROR', 'Request is invalid', { status: error.statusCode });
  }
  return null;
}

function validationDetails(error: FastifyError): ErrorDetail[] {
  return (error.validation ?? []).map((issue) => {
    const params = issue.params as { missingProperty?: string };
    const base = issue.instancePath.replace(/^\//, '').replace(/\//g, '.');
    const path = params.missingProperty ? (base ? `${base}.${params.missingProperty}` : params.missingProperty) : base;
    return { path: path || '(body)', message: issue.message ?? 'is invalid' };
  });
}

/**
 * One counter increment and one histogram sample per request, through
 * label children cached per (method, route, status): label sets are
 * bounded (methods Node accepts, registered route patterns, statuses).
 * Each route gets its own hook with its pattern bound when it is
 * registered, so a request costs no routeOptions lookup and no key string;
 * one shared hook covers requests no route matched.
 */
function registerRequestMetrics(app: FastifyInstance, metrics: Metrics, log: Logger): void {
  app.addHook('onRoute', (route) => {
    const recorder = new RouteMetrics(metrics, route.url);
    const hook = (request: FastifyRequest, reply: FastifyReply, done: () => void) => {
      recorder.record(request, reply, log);
      done();
    };
    const existing = route.onResponse;
    route.onResponse = existing === undefined ? [hook] : [...(Array.isArray(existing) ? existing : [existing]), hook];
  });
  const unmatched = new RouteMetrics(metrics, 'unmatched');
  app.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, done) => {
    if (request.is404) unmatched.record(request, reply, log);
    done();
  });
}

class RouteMetrics {
  readonly #metrics: Metrics;
  readonly #route: string;
  readonly #byMethod = new Map<string, { timer: { observe(value: number): void }; counters: Map<number, { inc(): void }> }>();

  constructor(metrics: Metrics, route: string) {
    this.#metrics = metrics;
    this.#route = route;
  }

  record(request: FastifyRequest, reply: FastifyReply, log: Logger): void {
    const method = request.method;
    const status = reply.statusCode;
    let series = this.#byMethod.get(method);
    if (series === undefined) {
      series = { timer: this.#metrics.httpDuration.labels(method, this.#route), counters: new Map() };
      this.#byMethod.set(method, series);
    }
    let counter = series.counters.get(status);
    if (counter === undefined) {
      counter = this.#metrics.httpRequests.labels(method, this.#route, String(status));
      series.counters.set(status, counter);
    }
    counter.inc();
    series.timer.observe(reply.elapsedTime / 1000);
    if (log.isLevelEnabled('debug')) {
      log.debug({ method, url: redactUrl(request.url), status, ms: reply.elapsedTime }, 'http request');
    }
  }
}
