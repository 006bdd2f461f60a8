/**
 * The one catalogue of what this service tells clients when something goes
 * wrong: HTTP error codes (SPEC §6), realtime error codes (SPEC §4, §5) and
 * WebSocket close codes (SPEC §4). The client SDK and docs/errors.md are
 * derived from these tables; test/unit/errors.test.ts keeps them in step.
 */

/** HTTP error codes with their status. Keys are the wire `code` values. */
export const HTTP_ERRORS = {
  INVALID_JSON: { status: 400, message: 'Request body is not valid JSON' },
  VALIDATION_ERROR: { status: 400, message: 'Request is invalid' },
  INVALID_TENANT: { status: 400, message: 'X-Tenant-ID is missing or malformed' },
  INVALID_HANDSHAKE: { status: 400, message: 'Invalid WebSocket handshake' },
  BAD_REQUEST: { status: 400, message: 'Malformed HTTP request' },
  UNAUTHORIZED: { status: 401, message: 'Missing or invalid credentials' },
  TENANT_ACCESS_DENIED: { status: 403, message: 'Access to this tenant is denied' },
  ORIGIN_NOT_ALLOWED: { status: 403, message: 'Origin not allowed' },
  NOT_FOUND: { status: 404, message: 'Route not found' },
  CHANNEL_NOT_FOUND: { status: 404, message: 'Channel not found' },
  USER_NOT_CONNECTED: { status: 404, message: 'User has no active connections' },
  TEMPLATE_NOT_FOUND: { status: 404, message: 'Template not found' },
  TENANT_NOT_FOUND: { status: 404, message: 'Tenant not found' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed' },
  TEMPLATE_EXISTS: { status: 409, message: 'Template already exists' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'Request body is too large' },
  URI_TOO_LONG: { status: 414, message: 'Request URL is too long' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Content-Type must be application/json' },
  UPGRADE_REQUIRED: { status: 426, message: 'WebSocket upgrade required' },
  RATE_LIMITED: { status: 429, message: 'Too many requests' },
  HEADERS_TOO_LARGE: { status: 431, message: 'Request headers are too large' },
  CONNECTION_LIMIT: { status: 429, message: 'Connection limit reached' },
  INTERNAL_ERROR: { status: 500, message: 'Internal server error' },
  SERVICE_UNAVAILABLE: { status: 503, message: 'Service temporarily unavailable' },
} as const satisfies Record<string, { status: number; message: string }>;

export type HttpErrorCode = keyof typeof HTTP_ERRORS;

/** One entry of `details` in a VALIDATION_ERROR envelope. */
export interface ErrorDetail {
  path: string;
  message: string;
}

/**
 * An error meant for the client. Anything thrown that is not an ApiError is
 * an internal error: logged in full, answered with INTERNAL_ERROR.
 */
export class ApiError extends Error {
  readonly code: HttpErrorCode;
  readonly status: number;
  readonly details: ErrorDetail[] | undefined;
  readonly headers: Record<string, string> | undefined;

  constructor(
    code: HttpErrorCode,
    message?: string,
    options: { details?: ErrorDetail[]; status?: number; headers?: Record<string, string> } = {},
  ) {
    super(message ?? HTTP_ERRORS[code].message);
    this.name = 'ApiError';
    this.code = code;
    this.status = options.status ?? HTTP_ERRORS[code].status;
    this.details = options.details;
    this.headers = options.headers;
  }

  toBody(): ErrorBody {
    return errorBody(this.code, this.message, this.details);
  }
}

export interface ErrorBody {
  error: { code: string; message: string; details?: ErrorDetail[] };
}

export function errorBody(code: string, message: string, details?: ErrorDetail[]): ErrorBody {
  return details && details.length > 0
    ? { error: { code, message, details } }
    : { error: { code, message } };
}

/**
 * Codes of `{"type":"error"}` messages on WebSocket and SSE. `fatal` means
 * the server closes the connection right after sending it.
 */
export const REALTIME_ERRORS = {
  INVALID_MESSAGE: { fatal: false, meaning: 'unparseable JSON, unknown type or wrong payload shape' },
  UNSUPPORTED_FORMAT: { fatal: false, meaning: 'binary frames are not supported' },
  SUBSCRIPTION_ERROR: { fatal: false, meaning: 'one or more channels could not be subscribed' },
  INVALID_ACK: { fatal: false, meaning: 'unknown, foreign or already acknowledged notification' },
  INVALID_TOKEN: { fatal: false, meaning: 'a Refresh token did not verify or changed identity' },
  RATE_LIMITED: { fatal: false, meaning: 'inbound message rate exceeded; the message was dropped' },
  CONNECTION_LIMIT: { fatal: true, meaning: 'a node, tenant or user connection cap was reached' },
  TOKEN_EXPIRED: { fatal: true, meaning: 'the token expired without a Refresh' },
} as const;

export type RealtimeErrorCode = keyof typeof REALTIME_ERRORS;

/**
 * WebSocket close codes the server uses, with what a client should do.
 * `reconnect`: whether reconnecting (with backoff) can succeed as is.
 */
export const CLOSE_CODES = {
  NORMAL: { code: 1000, reconnect: false, reason: 'normal closure' },
  GOING_AWAY: { code: 1001, reconnect: true, reason: 'server shutting down' },
  INVALID_PAYLOAD: { code: 1007, reconnect: false, reason: 'invalid UTF-8 in a text frame' },
  POLICY_VIOLATION: { code: 1008, reconnect: false, reason: 'user or tenant cap, or message rate abuse' },
  MESSAGE_TOO_BIG: { code: 1009, reconnect: false, reason: 'inbound frame over WEBSOCKET_MAX_MESSAGE_BYTES' },
  INTERNAL_ERROR: { code: 1011, reconnect: true, reason: 'unexpected server error' },
  TRY_AGAIN_LATER: { code: 1013, reconnect: true, reason: 'node connection cap reached' },
  TOKEN_EXPIRED: { code: 4001, reconnect: true, reason: 'token expired; reconnect with a fresh token' },
  IDLE_TIMEOUT: { code: 4002, reconnect: true, reason: 'no inbound frame within WEBSOCKET_CONNECTION_TIMEOUT' },
  SLOW_CONSUMER: { code: 4008, reconnect: true, reason: 'outbound backlog over WEBSOCKET_MAX_BUFFERED_BYTES' },
} as const;

export type CloseCodeName = keyof typeof CLOSE_CODES;
