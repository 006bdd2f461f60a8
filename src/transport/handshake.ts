/**
 * What WS upgrades and SSE requests share before a connection exists
 * (SPEC §2, §4, §5): the Origin check, the connect-rate limit and the JWT.
 * Cheap checks run first so a flood of bad handshakes costs little.
 */
import type { IncomingMessage } from 'node:http';
import type { Logger } from 'pino';
import { AuthError, type Identity, type TokenVerifier } from '../auth/jwt.js';
import type { OriginPolicy } from '../auth/origin.js';
import type { HttpErrorCode } from '../errors.js';

export type HandshakeOutcome =
  | { ok: true; identity: Identity }
  | { ok: false; code: HttpErrorCode; message: string; status?: number; headers?: Record<string, string> };

/** Decides whether a client address may open another connection now. */
export interface ConnectGate {
  /** null = allowed; otherwise seconds until a retry can succeed. */
  check(clientAddress: string): Promise<number | null>;
}

export class HandshakeAuthenticator {
  readonly #verifier: TokenVerifier;
  readonly #origins: OriginPolicy;
  readonly #log: Logger;
  #connectGate: ConnectGate | null = null;

  constructor(verifier: TokenVerifier, origins: OriginPolicy, log: Logger) {
    this.#verifier = verifier;
    this.#origins = origins;
    this.#log = log;
  }

  setConnectGate(gate: ConnectGate | null): void {
    this.#connectGate = gate;
  }

  /**
   * The outcome now when nothing needs waiting for (no connect gate, an
   * HMAC key: the usual connect), else a promise of it. Callers that can
   * continue synchronously save a promise and a turn of the microtask queue
   * per connect; `await` takes either.
   *
   * `clientAddress` is asked only when something needs the address (the
   * connect gate, a refusal's log line): reading the peer address is a
   * system call, and most connects need neither.
   */
  authenticate(
    req: IncomingMessage,
    url: RequestTarget,
    clientAddress: (req: IncomingMessage) => string,
  ): HandshakeOutcome | Promise<HandshakeOutcome> {
    const origin = req.headers.origin;
    if (!this.#origins.allows(origin)) {
      this.#log.info({ origin, clientAddress: clientAddress(req) }, 'realtime connection refused: origin not allowed');
      return { ok: false, code: 'ORIGIN_NOT_ALLOWED', message: 'Origin not allowed' };
    }
    const gate = this.#connectGate;
    if (gate === null) return this.#verify(req, url, clientAddress);
    return gate.check(clientAddress(req)).then((retryAfter) => {
      if (retryAfter === null) return this.#verify(req, url, clientAddress);
      return {
        ok: false,
        code: 'RATE_LIMITED',
        message: `Too many connection attempts, retry after ${retryAfter} seconds`,
        headers: { 'Retry-After': String(retryAfter) },
      };
    });
  }

  #verify(
    req: IncomingMessage,
    url: RequestTarget,
    clientAddress: (req: IncomingMessage) => string,
  ): HandshakeOutcome | Promise<HandshakeOutcome> {
    const token = tokenOf(req, url);
    if (token === null) return { ok: false, code: 'UNAUTHORIZED', message: 'Missing authentication token' };
    try {
      const identity = this.#verifier.verifyNow(token);
      if (identity !== undefined) return { ok: true, identity };
    } catch (error) {
      return this.#refused(error, req, clientAddress);
    }
    return this.#verifier.verify(token).then(
      (identity): HandshakeOutcome => ({ ok: true, identity }),
      (error: unknown) => this.#refused(error, req, clientAddress),
    );
  }

  #refused(error: unknown, req: IncomingMessage, clientAddress: (req: IncomingMessage) => string): HandshakeOutcome {
    const reason = error instanceof AuthError ? error.reason : 'verification failed';
    this.#log.info({ reason, clientAddress: clientAddress(req) }, 'realtime connection refused: invalid token');
    return { ok: false, code: 'UNAUTHORIZED', message: 'Invalid token' };
  }
}

/** What the handshake reads from the request target: a URL has both. */
export type RequestTarget = Pick<URL, 'pathname' | 'searchParams'>;

/** A plain `/ws?…`: no fragment, whitespace, control or non-ASCII characters. */
const PLAIN_WS_TARGET = /^\/ws(?:\?[\x21-\x22\x24-\x7e]*)?$/;

/**
 * The request target of an upgrade. The usual `/ws?token=…` is read
 * without building a URL (a measurable share of a connect): for such a
 * target URL keeps the path as is and would only percent-encode query
 * characters that URLSearchParams decodes back, so the result is the
 * same. Anything else goes through URL, as before; a target URL cannot
 * parse has an empty path, which the caller answers 404.
 */
export function requestTarget(rawUrl: string | undefined): RequestTarget {
  if (rawUrl !== undefined && PLAIN_WS_TARGET.test(rawUrl)) {
    // From the `?` on: the constructor drops exactly that one, as URL does.
    return { pathname: '/ws', searchParams: new URLSearchParams(rawUrl.slice(3)) };
  }
  try {
    return new URL(rawUrl ?? '/', 'http://localhost');
  } catch {
    // Not a URL at all (e.g. `http://[zz/ws`): no route has such a path.
    return { pathname: '', searchParams: new URLSearchParams() };
  }
}

/** `?token=` wins, even when empty; otherwise `Authorization: Bearer`. */
export function tokenOf(req: IncomingMessage, url: RequestTarget): string | null {
  const fromQuery = url.searchParams.get('token');
  if (fromQuery !== null) return fromQuery;
  const header = req.headers.authorization;
  if (header === undefined) return null;
  const match = /^bearer +(\S+)\s*$/i.exec(header);
  return match ? match[1]! : null;
}

/** What a client may ask for when connecting, on /ws and /sse alike (SPEC §5, §7). */
export interface ConnectOptions {
  /** `?channels=a,b`: subscribed at connect. */
  channels: string[];
  /** `Last-Event-ID` header or `?last_event_id=`: resume from history instead of the plain replay. */
  lastEventId: string | null;
}

export function connectOptions(req: IncomingMessage, url: RequestTarget): ConnectOptions {
  const rawChannels = url.searchParams.get('channels');
  const header = req.headers['last-event-id'];
  const lastEventId = url.searchParams.get('last_event_id') ?? (typeof header === 'string' ? header : null);
  return {
    channels: rawChannels === null || rawChannels === '' ? [] : rawChannels.split(','),
    lastEventId: lastEventId === null || lastEventId === '' ? null : lastEventId,
  };
}
