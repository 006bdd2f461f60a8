/**
 * Two node-wide timers keep connections honest (SPEC §4, §5):
 *
 * - every heartbeat interval, each connection gets a heartbeat message
 *   (and WebSocket a protocol ping, which browsers answer by themselves),
 *   and connections whose token has expired are told so and closed (4001);
 * - every cleanup interval, WebSocket connections that sent nothing, not
 *   even a pong, for WEBSOCKET_CONNECTION_TIMEOUT are closed (4002) and
 *   unregistered at once. SSE streams are never closed for inactivity.
 *
 * One timer per node, never one per connection or per message.
 */
import type { Connection } from './connection.js';
import type { Hub } from './hub.js';
import { OutboundMessage } from './outbound.js';

export interface LivenessOptions {
  heartbeatIntervalMs: number;
  connectionTimeoutMs: number;
  cleanupIntervalMs: number;
  leewayMs: number;
}

const WS_HEARTBEAT = OutboundMessage.control({ type: 'heartbeat' });

/** A WebSocket `Resume` is meant for right after connecting; later ones are refused. */
export const RESUME_WINDOW_MS = 10_000;

export class Liveness {
  readonly #hub: Hub;
  readonly #options: LivenessOptions;
  readonly #onTokenExpired: (connection: Connection) => void;
  #heartbeatTimer: NodeJS.Timeout | null = null;
  #sweepTimer: NodeJS.Timeout | null = null;

  constructor(hub: Hub, options: LivenessOptions, onTokenExpired: (connection: Connection) => void) {
    this.#hub = hub;
    this.#options = options;
    this.#onTokenExpired = onTokenExpired;
  }

  start(): void {
    this.#heartbeatTimer = setInterval(() => this.heartbeat(), this.#options.heartbeatIntervalMs);
    this.#sweepTimer = setInterval(() => this.sweep(), this.#options.cleanupIntervalMs);
    this.#heartbeatTimer.unref();
    this.#sweepTimer.unref();
  }

  stop(): void {
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
    if (this.#sweepTimer) clearInterval(this.#sweepTimer);
    this.#heartbeatTimer = this.#sweepTimer = null;
  }

  heartbeat(): void {
    const now = Date.now();
    const sseHeartbeat = OutboundMessage.control({ type: 'heartbeat', timestamp: new Date(now).toISOString() });
    for (const connection of this.#connections()) {
      if (now > connection.expiresAtMs + this.#options.leewayMs) {
        this.#onTokenExpired(connection);
        continue;
      }
      // A connection with a backlog is visibly alive to its proxy already.
      if (!connection.congested) connection.deliver(connection.kind === 'ws' ? WS_HEARTBEAT : sseHeartbeat);
      connection.ping();
    }
  }

  sweep(): void {
    const now = Date.now();
    const idleBefore = now - this.#options.connectionTimeoutMs;
    const resumeWindowBefore = now - RESUME_WINDOW_MS;
    for (const connection of this.#connections()) {
      if (connection.kind === 'ws' && connection.lastSeenMs < idleBefore) connection.end('idle');
      else if (connection.resumeWindowOpen && connection.connectedAtMs < resumeWindowBefore) {
        connection.takeResumeWindow();
      }
    }
  }

  /** A snapshot, because ending a connection edits the sets being walked. */
  #connections(): Connection[] {
    const all: Connection[] = [];
    for (const space of this.#hub.spaces()) for (const connection of space.connections) all.push(connection);
    return all;
  }
}
