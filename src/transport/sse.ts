/**
 * Server-Sent Events transport (SPEC §5). Refusals happen before the
 * stream starts, as JSON errors; once streaming, the response is written
 * by the connection alone and ends only when the client goes away, the
 * token expires, the client is too slow, or the server shuts down.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../errors.js';
import type { CloseReason, Connection, Transport } from '../hub/connection.js';
import type { OutboundMessage } from '../hub/outbound.js';
import { connectOptions, type HandshakeAuthenticator } from './handshake.js';
import type { RealtimeService } from './realtime.js';

const CONNECTION = Symbol('ara.connection');

interface TaggedResponse {
  [CONNECTION]?: Connection;
}

const STREAM_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache, no-transform',
  'X-Accel-Buffering': 'no',
  Connection: 'keep-alive',
};

class SseTransport implements Transport {
  readonly kind = 'sse' as const;

  constructor(readonly res: ServerResponse) {}

  write(message: OutboundMessage): void {
    this.res.write(message.sseFrame);
  }

  bufferedBytes(): number {
    return this.res.writableLength;
  }

  needsDrain(): boolean {
    return this.res.writableNeedDrain;
  }

  ping(): void {
    // SSE has no protocol-level ping; the heartbeat event keeps proxies awake.
  }

  end(reason: CloseReason): void {
    // A slow consumer cannot take even a last event: drop the socket.
    if (reason === 'slow_consumer' || reason === 'error') this.res.destroy();
    else this.res.end();
  }
}

export interface SseRouteOptions {
  clientAddress(req: IncomingMessage): string;
  isAccepting(): boolean;
}

export function registerSseRoute(
  app: FastifyInstance,
  authenticator: HandshakeAuthenticator,
  realtime: RealtimeService,
  options: SseRouteOptions,
): void {
  app.get('/sse', async (request: FastifyRequest, reply: FastifyReply) => {
    if (!options.isAccepting()) throw new ApiError('SERVICE_UNAVAILABLE', 'Server is shutting down');
    const url = new URL(request.raw.url ?? '/', 'http://localhost');
    const outcome = await authenticator.authenticate(request.raw, url, options.clientAddress);
    if (!outcome.ok) {
      throw new ApiError(outcome.code, outcome.message, { status: outcome.status, headers: outcome.headers });
    }
    const { channels, lastEventId } = connectOptions(request.raw, url);
    const failures = realtime.channelProblems(outcome.identity, channels);
    if (failures.length > 0) {
      throw new ApiError('VALIDATION_ERROR', 'Invalid channels parameter', {
        details: failures.map((message) => ({ path: 'channels', message })),
      });
    }
    const opened = realtime.open(outcome.identity, new SseTransport(reply.raw));
    if (!opened.ok) {
      throw new ApiError('CONNECTION_LIMIT', opened.message, { status: opened.cap === 'node' ? 503 : 429 });
    }
    const connection = opened.connection;
    realtime.subscribeAll(connection, channels, false);
    startStream(reply, connection);
    await realtime.start(connection, lastEventId);
  });
}

function startStream(reply: FastifyReply, connection: Connection): void {
  // Headers set by hooks before the hijack (CORS above all: a browser's
  // cross-origin EventSource is refused without them) would be lost otherwise.
  const hookHeaders = reply.getHeaders() as OutgoingHttpHeaders;
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { ...hookHeaders, ...STREAM_HEADERS });
  res.socket?.setNoDelay(true);
  (res as unknown as TaggedResponse)[CONNECTION] = connection;
  res.on('close', onResponseClose);
  res.on('drain', onResponseDrain);
}

function onResponseClose(this: ServerResponse): void {
  (this as unknown as TaggedResponse)[CONNECTION]!.transportClosed();
}

function onResponseDrain(this: ServerResponse): void {
  (this as unknown as TaggedResponse)[CONNECTION]!.flush();
}
