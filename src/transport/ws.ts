/**
 * WebSocket transport (SPEC §4). The HTTP upgrade is answered here, before
 * the `ws` library sees it, so every refusal is a JSON error with a proper
 * status and nothing is upgraded for a caller who may not connect.
 *
 * Event handlers are module-level functions that find their connection on
 * the socket object: no closures are created per connection.
 */
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import { CLOSE_CODES, HTTP_ERRORS, errorBody, type HttpErrorCode } from '../errors.js';
import type { CloseReason, Connection, Transport } from '../hub/connection.js';
import type { OutboundMessage } from '../hub/outbound.js';
import { redactUrl } from '../ops/logger.js';
import { connectOptions, requestTarget, type ConnectOptions, type HandshakeAuthenticator, type RequestTarget } from './handshake.js';
import type { Identity } from '../auth/jwt.js';
import type { RealtimeService } from './realtime.js';
import { sendError } from './realtime.js';

const CONNECTION = Symbol('ara.connection');
const GATEWAY = Symbol('ara.gateway');
const CLOSE_REASON = Symbol('ara.closeReason');

interface TaggedSocket {
  [CONNECTION]?: Connection;
  [GATEWAY]?: WsGateway;
  [CLOSE_REASON]?: CloseReason;
}

/** RFC 6455: the key is 16 random bytes, base64-encoded. */
const WEBSOCKET_KEY = /^[+/0-9A-Za-z]{22}==$/;
const TEXT_FRAME = { binary: false } as const;
const OPEN = 1;

const CLOSE_FOR_REASON: Partial<Record<CloseReason, { code: number; reason: string }>> = {
  shutdown: { code: CLOSE_CODES.GOING_AWAY.code, reason: 'server shutting down' },
  idle: { code: CLOSE_CODES.IDLE_TIMEOUT.code, reason: 'idle timeout' },
  slow_consumer: { code: CLOSE_CODES.SLOW_CONSUMER.code, reason: 'slow consumer' },
  token_expired: { code: CLOSE_CODES.TOKEN_EXPIRED.code, reason: 'token expired' },
  rate_limited: { code: CLOSE_CODES.POLICY_VIOLATION.code, reason: 'message rate exceeded' },
  error: { code: CLOSE_CODES.INTERNAL_ERROR.code, reason: 'internal error' },
};

class WsTransport implements Transport {
  readonly kind = 'ws' as const;

  /**
   * `directFrames`: without permessage-deflate, `ws` writes every frame to
   * the socket synchronously, so writing our prepared frame straight to the
   * socket keeps the order of everything sent and skips per-recipient
   * framing. With compression, `ws` may hold frames while it deflates, so
   * everything goes through it.
   */
  constructor(
    readonly ws: WebSocket,
    readonly socket: Duplex,
    readonly directFrames: boolean,
  ) {}

  write(message: OutboundMessage): void {
    if (this.ws.readyState !== OPEN) return;
    if (this.directFrames) this.socket.write(message.wsFrame);
    else this.ws.send(message.wsPayload, TEXT_FRAME);
  }

  bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }

  needsDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  ping(): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.ping();
  }

  end(reason: CloseReason): void {
    const close = CLOSE_FOR_REASON[reason];
    if (close === undefined) {
      this.ws.terminate();
    } else if (this.ws.readyState === this.ws.OPEN) {
      this.ws.close(close.code, close.reason);
    }
  }
}

export interface WsGatewayOptions {
  maxMessageBytes: number;
  compression: boolean;
  clientAddress(req: IncomingMessage): string;
}

export class WsGateway {
  readonly #wss: WebSocketServer;
  readonly #authenticator: HandshakeAuthenticator;
  readonly #realtime: RealtimeService;
  readonly #log: Logger;
  readonly #options: WsGatewayOptions;
  /** Upgraded sockets, so shutdown can finish off clients that never close. */
  readonly #sockets = new Set<WebSocket>();
  #allClosed: (() => void) | null = null;
  #accepting = true;

  constructor(authenticator: HandshakeAuthenticator, realtime: RealtimeService, log: Logger, options: WsGatewayOptions) {
    this.#authenticator = authenticator;
    this.#realtime = realtime;
    this.#log = log;
    this.#options = options;
    this.#wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      maxPayload: options.maxMessageBytes,
      perMessageDeflate: options.compression ? { threshold: 1024 } : false,
    });
  }

  stopAccepting(): void {
    this.#accepting = false;
  }

  /** Waits up to `waitMs` for clients to finish their close handshake, then drops the rest. */
  async terminateAll(waitMs: number): Promise<void> {
    if (this.#sockets.size > 0) {
      await new Promise<void>((resolve) => {
        this.#allClosed = resolve;
        setTimeout(resolve, waitMs).unref();
      });
    }
    for (const ws of this.#sockets) ws.terminate();
  }

  socketClosed(ws: WebSocket): void {
    this.#sockets.delete(ws);
    if (this.#sockets.size === 0) this.#allClosed?.();
  }

  /** The http server's 'upgrade' listener. */
  readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    socket.on('error', onSocketError);
    this.#upgrade(req, socket, head).catch((error: unknown) => {
      this.#log.error({ err: error }, 'websocket upgrade failed');
      reject(socket, 'INTERNAL_ERROR', HTTP_ERRORS.INTERNAL_ERROR.message);
    });
  };

  async #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = requestTarget(req.url);
    if (this.#log.isLevelEnabled('trace')) this.#log.trace({ url: redactUrl(req.url) }, 'websocket upgrade request');
    const refusal = this.#checkRequest(req, url);
    if (refusal) {
      reject(socket, refusal.code, refusal.message, refusal.status, refusal.headers);
      return;
    }
    const outcome = await this.#authenticator.authenticate(req, url, this.#options.clientAddress);
    if (!outcome.ok) {
      reject(socket, outcome.code, outcome.message, outcome.status, outcome.headers);
      return;
    }
    const options = connectOptions(req, url);
    const problems = this.#realtime.channelProblems(outcome.identity, options.channels);
    if (problems.length > 0) {
      reject(socket, 'VALIDATION_ERROR', `Invalid channels parameter: ${problems.join('; ')}`);
      return;
    }
    if (socket.destroyed || !this.#accepting) {
      reject(socket, 'SERVICE_UNAVAILABLE', 'Server is shutting down');
      return;
    }
    // ws writes the 101 response and #accept the `connected` greeting right
    // after it, synchronously: corked, both leave in one write (one system
    // call, one segment) instead of two. The bytes are the same.
    socket.cork();
    try {
      this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, socket, outcome.identity, options));
    } finally {
      socket.uncork();
    }
  }

  #checkRequest(req: IncomingMessage, url: RequestTarget): UpgradeRefusal | null {
    if (url.pathname !== '/ws') return { code: 'NOT_FOUND', message: 'Route not found' };
    if (!this.#accepting) return { code: 'SERVICE_UNAVAILABLE', message: 'Server is shutting down' };
    if (req.method !== 'GET') {
      return { code: 'METHOD_NOT_ALLOWED', message: 'Method not allowed', headers: { Allow: 'GET' } };
    }
    if (req.headers.upgrade?.toLowerCase() !== 'websocket') {
      return { code: 'UPGRADE_REQUIRED', message: 'Upgrade: websocket is required', headers: { Upgrade: 'websocket' } };
    }
    if (req.headers['sec-websocket-version'] !== '13') {
      return {
        code: 'UPGRADE_REQUIRED',
        message: 'Unsupported WebSocket version; this server speaks version 13',
        headers: { 'Sec-WebSocket-Version': '13' },
      };
    }
    const key = req.headers['sec-websocket-key'];
    if (key === undefined || !WEBSOCKET_KEY.test(key.trim())) {
      return { code: 'INVALID_HANDSHAKE', message: 'Missing or invalid Sec-WebSocket-Key' };
    }
    return null;
  }

  #accept(ws: WebSocket, socket: Duplex, identity: Identity, options: ConnectOptions): void {
    const opened = this.#realtime.open(identity, new WsTransport(ws, socket, !this.#options.compression));
    if (!opened.ok) {
      ws.on('error', onSocketError);
      ws.send(JSON.stringify({ type: 'error', code: 'CONNECTION_LIMIT', message: opened.message }));
      const close = opened.cap === 'node' ? CLOSE_CODES.TRY_AGAIN_LATER : CLOSE_CODES.POLICY_VIOLATION;
      ws.close(close.code, 'connection limit');
      return;
    }
    const connection = opened.connection;
    this.#sockets.add(ws);
    const tagged = ws as unknown as TaggedSocket;
    tagged[CONNECTION] = connection;
    tagged[GATEWAY] = this;
    (socket as unknown as TaggedSocket)[CONNECTION] = connection;
    ws.on('message', onMessage);
    ws.on('pong', onAlive);
    ws.on('ping', onAlive);
    ws.on('error', onWsError);
    ws.on('close', onClose);
    socket.on('drain', onDrain);
    this.#realtime.subscribeAll(connection, options.channels, false);
    this.#realtime.start(connection, options.lastEventId).catch((error: unknown) => this.#failed(connection, error));
  }

  handleMessage(connection: Connection, data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      this.#realtime.handleBinary(connection);
      return;
    }
    this.#realtime.handleText(connection, data.toString('utf8')).catch((error: unknown) => {
      this.#log.error({ err: error, connectionId: connection.id }, 'websocket message handling failed');
      sendError(connection, 'INVALID_MESSAGE', 'Message could not be processed');
    });
  }

  #failed(connection: Connection, error: unknown): void {
    this.#log.error({ err: error, connectionId: connection.id }, 'connection start failed');
    connection.end('error');
  }
}

interface UpgradeRefusal {
  code: HttpErrorCode;
  message: string;
  status?: number;
  headers?: Record<string, string>;
}

/** Answers a refused upgrade with the JSON error envelope and closes the socket. */
function reject(
  socket: Duplex,
  code: HttpErrorCode,
  message: string,
  status: number = HTTP_ERRORS[code].status,
  headers: Record<string, string> = {},
): void {
  if (socket.destroyed || !socket.writable) return;
  const body = JSON.stringify(errorBody(code, message));
  const head = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
    'Connection: close',
    'Content-Type: application/json; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
  ];
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
}

function onSocketError(): void {
  // A peer vanishing mid-handshake is routine; 'close' does the cleanup.
}

function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  const tagged = this as unknown as TaggedSocket;
  const connection = tagged[CONNECTION]!;
  connection.lastSeenMs = Date.now();
  tagged[GATEWAY]!.handleMessage(connection, data, isBinary);
}

function onAlive(this: WebSocket): void {
  (this as unknown as TaggedSocket)[CONNECTION]!.lastSeenMs = Date.now();
}

/** ws closes the socket itself after these (1007, 1009); remember why. */
function onWsError(this: WebSocket): void {
  (this as unknown as TaggedSocket)[CLOSE_REASON] = 'protocol_error';
}

function onClose(this: WebSocket): void {
  const tagged = this as unknown as TaggedSocket;
  tagged[GATEWAY]!.socketClosed(this);
  tagged[CONNECTION]!.transportClosed(tagged[CLOSE_REASON] ?? 'client');
}

function onDrain(this: Duplex): void {
  (this as unknown as TaggedSocket)[CONNECTION]!.flush();
}
