/**
 * WebSocket transport (SPEC §4). The HTTP upgrade is answered here, before
 * the `ws` library sees it, so every refusal is a JSON error with a proper
 * status and nothing is upgraded for a caller who may not connect.
 *
 * A connect registers no event listeners and creates no closures but the
 * one `ws` asks for: the socket class `ws` builds for us takes its own
 * events, and the socket's 'drain' is listened to only once it is needed.
 */
import { hash } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocket, WebSocketServer } from 'ws';
import { CLOSE_CODES, HTTP_ERRORS, errorBody, type HttpErrorCode } from '../errors.js';
import type { CloseReason, Connection, Transport } from '../hub/connection.js';
import type { CapName } from '../hub/hub.js';
import { textFrameHeaderLength, writeTextFrameHeader, type OutboundMessage } from '../hub/outbound.js';
import { redactUrl } from '../ops/logger.js';
import {
  connectOptions,
  requestTarget,
  type ConnectOptions,
  type HandshakeAuthenticator,
  type HandshakeOutcome,
  type RequestTarget,
} from './handshake.js';
import type { Identity } from '../auth/jwt.js';
import type { RealtimeService } from './realtime.js';
import { sendError } from './realtime.js';

/** RFC 6455: the key is 16 random bytes, base64-encoded. */
const WEBSOCKET_KEY = /^[+/0-9A-Za-z]{22}==$/;
const TEXT_FRAME = { binary: false } as const;

const CLOSE_FOR_REASON: Partial<Record<CloseReason, { code: number; reason: string }>> = {
  shutdown: { code: CLOSE_CODES.GOING_AWAY.code, reason: 'server shutting down' },
  idle: { code: CLOSE_CODES.IDLE_TIMEOUT.code, reason: 'idle timeout' },
  slow_consumer: { code: CLOSE_CODES.SLOW_CONSUMER.code, reason: 'slow consumer' },
  token_expired: { code: CLOSE_CODES.TOKEN_EXPIRED.code, reason: 'token expired' },
  rate_limited: { code: CLOSE_CODES.POLICY_VIOLATION.code, reason: 'message rate exceeded' },
  error: { code: CLOSE_CODES.INTERNAL_ERROR.code, reason: 'internal error' },
};

/**
 * The WebSocket class `ws` creates for each upgrade (its `WebSocket`
 * option). It knows its connection and takes the events `ws` emits on it
 * itself: five listeners per connect, and their storage, are not needed.
 * Until it has a connection (a refused connect) events go to listeners.
 */
class GatewaySocket extends WebSocket {
  connection: Connection | null = null;
  gateway: WsGateway | null = null;
  /** Set when `ws` reports a protocol error, after which it closes the socket itself (1007, 1009). */
  protocolError = false;

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    const connection = this.connection;
    if (connection === null) return super.emit(event, ...args);
    switch (event) {
      case 'message':
        connection.lastSeenMs = Date.now();
        this.gateway!.handleMessage(connection, args[0] as Buffer, args[1] as boolean);
        return true;
      case 'ping':
      case 'pong':
        connection.lastSeenMs = Date.now();
        return true;
      case 'error':
        this.protocolError = true;
        return true;
      case 'close':
        this.gateway!.socketClosed(this);
        connection.transportClosed(this.protocolError ? 'protocol_error' : 'client');
        return true;
      default:
        return super.emit(event, ...args);
    }
  }
}

class WsTransport implements Transport {
  readonly kind = 'ws' as const;
  #drainHeard = false;

  /**
   * `directFrames`: without permessage-deflate, `ws` writes every frame to
   * the socket synchronously, so writing our prepared frame straight to the
   * socket keeps the order of everything sent and skips per-recipient
   * framing. With compression, `ws` may hold frames while it deflates, so
   * everything goes through it.
   */
  constructor(
    readonly ws: GatewaySocket,
    readonly socket: Duplex,
    readonly directFrames: boolean,
  ) {}

  write(message: OutboundMessage): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    if (this.directFrames) this.socket.write(message.wsFrame);
    else this.ws.send(message.wsPayload, TEXT_FRAME);
  }

  bufferedBytes(): number {
    return this.ws.bufferedAmount;
  }

  /**
   * Whoever holds messages back because of this answer waits for the
   * connection's flush on 'drain': the listener is added here, the first
   * time the socket pushes back, and kept. Most connections never do.
   */
  needsDrain(): boolean {
    if (!this.socket.writableNeedDrain) return false;
    if (!this.#drainHeard) {
      this.#drainHeard = true;
      this.socket.on('drain', () => this.ws.connection?.flush());
    }
    return true;
  }

  ping(): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.ping();
  }

  end(reason: CloseReason): void {
    const close = CLOSE_FOR_REASON[reason];
    if (close === undefined) {
      this.ws.terminate();
    } else if (this.ws.readyState === WebSocket.OPEN) {
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
      WebSocket: GatewaySocket,
    });
    // What ws still checks itself (a malformed permessage-deflate offer)
    // is refused with our JSON envelope, not ws's plain-text 400.
    this.#wss.on('wsClientError', (error: Error, socket: Duplex) => reject(socket, 'INVALID_HANDSHAKE', error.message));
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
    try {
      this.#upgrade(req, socket, head);
    } catch (error) {
      this.#upgradeFailed(socket, error);
    }
  };

  /**
   * Node's http server hands over the socket with no 'error' listener, and
   * an 'error' nobody listens to is thrown. Every path below either gives
   * the socket to `ws` (which listens) within this call, or adds one:
   * `reject` does, and so does waiting for an asynchronous check.
   */
  #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = requestTarget(req.url);
    if (this.#log.isLevelEnabled('trace')) this.#log.trace({ url: redactUrl(req.url) }, 'websocket upgrade request');
    const refusal = this.#checkRequest(req, url);
    if (refusal) {
      reject(socket, refusal.code, refusal.message, refusal.status, refusal.headers);
      return;
    }
    const outcome = this.#authenticator.authenticate(req, url, this.#options.clientAddress);
    if (!(outcome instanceof Promise)) {
      this.#complete(req, socket, head, url, outcome);
      return;
    }
    socket.on('error', onSocketError);
    outcome
      .then((settled) => this.#complete(req, socket, head, url, settled))
      .catch((error: unknown) => this.#upgradeFailed(socket, error));
  }

  #complete(req: IncomingMessage, socket: Duplex, head: Buffer, url: RequestTarget, outcome: HandshakeOutcome): void {
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
    if (this.#options.compression) this.#upgradeNegotiated(req, socket, head, outcome.identity, options);
    else this.#upgradePlain(req, socket, head, outcome.identity, options);
  }

  /**
   * The handshake without extensions (WEBSOCKET_COMPRESSION off), answered
   * here: the 101 response is the four lines `ws` would write, and it
   * leaves with the `connected` greeting in one buffer and one write. (Via
   * `ws` they are a string and a buffer that cork/uncork gather into a
   * writev: a measurable share of a connect in the bench.) The WebSocket
   * is still `ws`'s, built and attached to the socket with the calls `ws`'s
   * server makes (see newServerSideSocket and attachSocket).
   */
  #upgradePlain(req: IncomingMessage, socket: Duplex, head: Buffer, identity: Identity, options: ConnectOptions): void {
    // As ws: a client that already half-closed gets nothing.
    if (!socket.readable || !socket.writable) {
      socket.destroy();
      return;
    }
    const serverOptions = this.#wss.options;
    const ws = newServerSideSocket(serverOptions);
    const accept = acceptValue(req.headers['sec-websocket-key']!);
    const opened = this.#realtime.open(identity, new WsTransport(ws, socket, true));
    if (!opened.ok) {
      socket.write(switchingProtocols(accept));
      attachSocket(ws, socket, head, serverOptions);
      refuse(ws, opened);
      return;
    }
    socket.write(switchingProtocols(accept, this.#realtime.greetingJson(opened.connection)));
    attachSocket(ws, socket, head, serverOptions);
    this.#goLive(ws, opened.connection, options, true);
  }

  /** With compression on, `ws` negotiates permessage-deflate and writes the 101 response. */
  #upgradeNegotiated(req: IncomingMessage, socket: Duplex, head: Buffer, identity: Identity, options: ConnectOptions): void {
    // No subprotocol is ever selected, as in Ara 1.0 and on the plain path,
    // which never reads the header: ws must not pick or judge one either.
    delete req.headers['sec-websocket-protocol'];
    // ws writes the 101 response and start() the `connected` greeting right
    // after it, synchronously: corked, both leave in one write. (Once
    // permessage-deflate is negotiated ws compresses every message, so the
    // greeting is deflated asynchronously and follows in a write of its own.)
    socket.cork();
    try {
      this.#wss.handleUpgrade(req, socket, head, (ws) => {
        const opened = this.#realtime.open(identity, new WsTransport(ws as GatewaySocket, socket, false));
        if (opened.ok) this.#goLive(ws as GatewaySocket, opened.connection, options, false);
        else refuse(ws, opened);
      });
    } finally {
      socket.uncork();
    }
  }

  #goLive(ws: GatewaySocket, connection: Connection, options: ConnectOptions, greeted: boolean): void {
    this.#sockets.add(ws);
    ws.gateway = this;
    ws.connection = connection;
    // Upgraded by now: a failure here closes the WebSocket (1011), never an HTTP answer.
    try {
      this.#realtime.subscribeAll(connection, options.channels, false);
      this.#realtime.start(connection, options.lastEventId, greeted)?.catch((error: unknown) => this.#failed(connection, error));
    } catch (error) {
      this.#failed(connection, error);
    }
  }

  #upgradeFailed(socket: Duplex, error: unknown): void {
    this.#log.error({ err: error }, 'websocket upgrade failed');
    reject(socket, 'INTERNAL_ERROR', HTTP_ERRORS.INTERNAL_ERROR.message);
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
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 0) {
      return { code: 'INVALID_HANDSHAKE', message: 'A WebSocket upgrade needs HTTP/1.1' };
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

/** A connection cap refused the connection: it is told why after the upgrade, as in Ara 1.0 (SPEC §4). */
function refuse(ws: WebSocket, refusal: { cap: CapName; message: string }): void {
  ws.on('error', onSocketError);
  ws.send(JSON.stringify({ type: 'error', code: 'CONNECTION_LIMIT', message: refusal.message }));
  const close = refusal.cap === 'node' ? CLOSE_CODES.TRY_AGAIN_LATER : CLOSE_CODES.POLICY_VIOLATION;
  ws.close(close.code, 'connection limit');
}

/** RFC 6455 §1.3: the key with this GUID appended, SHA-1, base64. */
const HANDSHAKE_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

function acceptValue(key: string): string {
  return hash('sha1', key + HANDSHAKE_GUID, 'base64');
}

/**
 * The 101 response `ws` writes for a handshake without extensions or
 * subprotocol, followed, if given, by `greetingJson` as a text frame.
 */
function switchingProtocols(accept: string, greetingJson?: string): Buffer {
  const head = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`;
  if (greetingJson === undefined) return Buffer.from(head, 'latin1');
  const payloadLength = Buffer.byteLength(greetingJson, 'utf8');
  const response = Buffer.allocUnsafe(head.length + textFrameHeaderLength(payloadLength) + payloadLength);
  let offset = response.write(head, 0, 'latin1'); // ASCII only
  offset += writeTextFrameHeader(response, offset, payloadLength);
  response.write(greetingJson, offset, 'utf8');
  return response;
}

/**
 * `ws`'s server creates its sockets as `new WebSocket(null, undefined,
 * serverOptions)` and attaches them with `setSocket(socket, head, limits)`,
 * where `limits` are five fields copied from its options
 * (allowSynchronousEvents, maxBufferedChunks, maxFragments, maxPayload,
 * skipUTF8Validation). Both calls are internal to `ws` and missing from its
 * types. Here `setSocket` is given the options object itself: it reads
 * those same fields from it (and `generateMask`, which server options never
 * hold), so a limit `ws` adds to that list later applies here too.
 */
type ServerSideSocketClass = new (address: null, protocols: undefined, options: object) => GatewaySocket;
interface AttachableSocket {
  setSocket(socket: Duplex, head: Buffer, options: object): void;
}

function newServerSideSocket(serverOptions: object): GatewaySocket {
  return new (GatewaySocket as unknown as ServerSideSocketClass)(null, undefined, serverOptions);
}

function attachSocket(ws: GatewaySocket, socket: Duplex, head: Buffer, serverOptions: object): void {
  (ws as unknown as AttachableSocket).setSocket(socket, head, serverOptions);
}

/** Answers a refused upgrade with the JSON error envelope and closes the socket. */
function reject(
  socket: Duplex,
  code: HttpErrorCode,
  message: string,
  status: number = HTTP_ERRORS[code].status,
  headers: Record<string, string> = {},
): void {
  // A peer that resets the connection now must not make an unheard 'error'.
  if (socket.listenerCount('error') === 0) socket.on('error', onSocketError);
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
