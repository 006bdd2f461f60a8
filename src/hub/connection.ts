/**
 * One live client connection, WebSocket or SSE, as the hub and the
 * dispatcher see it. The transport underneath only knows how to write a
 * prepared message; everything about ordering and backpressure is here:
 *
 * - While the socket keeps up, messages are written straight through.
 * - Once it falls behind (the socket asks for 'drain'), messages wait in a
 *   backlog with one lane per priority, so Critical/High overtake
 *   Normal/Low (SPEC §7), and the backlog is flushed on 'drain'.
 * - When bytes buffered in the socket plus the backlog pass
 *   WEBSOCKET_MAX_BUFFERED_BYTES, the connection is closed as a slow
 *   consumer (4008). Memory per connection is therefore bounded.
 * - While a replay runs (SPEC §7), live messages are held in the backlog
 *   and follow the replayed ones.
 */
import type { Identity } from '../auth/jwt.js';
import { LANE_COUNT, type OutboundMessage } from './outbound.js';

export type TransportKind = 'ws' | 'sse';

/** Why a connection ended; also the `reason` label of the close metric. */
export type CloseReason =
  | 'client'
  | 'idle'
  | 'slow_consumer'
  | 'shutdown'
  | 'limit'
  | 'token_expired'
  | 'rate_limited'
  | 'protocol_error'
  | 'error';

export interface Transport {
  readonly kind: TransportKind;
  /** Writes one message to the socket now. */
  write(message: OutboundMessage): void;
  /** Bytes accepted by the transport but not yet taken by the kernel. */
  bufferedBytes(): number;
  /** True after the socket's buffer filled, until it emits 'drain'. */
  needsDrain(): boolean;
  /** Protocol-level keep-alive probe (WebSocket ping); SSE has none. */
  ping(): void;
  /** Ends the connection the way its protocol does; called once. */
  end(reason: CloseReason): void;
}

/** Called by the connection when it ends, whoever ended it. */
export interface ConnectionOwner {
  connectionEnded(connection: Connection, reason: CloseReason): void;
}

const NO_ROLES: ReadonlySet<string> = new Set();
const NO_CHANNELS: ReadonlySet<string> = new Set();

/** Past this many notifications since connect, a Resume is refused. */
export const RESUME_WINDOW_MAX_IDS = 256;

class Lane {
  #items: OutboundMessage[] = [];
  #head = 0;

  get size(): number {
    return this.#items.length - this.#head;
  }

  push(message: OutboundMessage): void {
    this.#items.push(message);
  }

  /** Removes every message `drop` matches; returns their bytes. */
  removeWhere(drop: (message: OutboundMessage) => boolean): number {
    let bytes = 0;
    const kept: OutboundMessage[] = [];
    for (let i = this.#head; i < this.#items.length; i++) {
      const message = this.#items[i]!;
      if (drop(message)) bytes += message.byteLength;
      else kept.push(message);
    }
    this.#items = kept;
    this.#head = 0;
    return bytes;
  }

  shift(): OutboundMessage | undefined {
    const message = this.#items[this.#head];
    if (message === undefined) return undefined;
    this.#items[this.#head++] = undefined as unknown as OutboundMessage;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    }
    return message;
  }
}

export class Connection {
  readonly id: string;
  readonly tenantId: string;
  readonly userId: string;
  /** JWT roles; one shared empty set for the many connections without any. */
  readonly roles: ReadonlySet<string>;
  readonly permittedChannels: readonly string[] | null;
  readonly kind: TransportKind;
  /** Epoch ms. */
  readonly connectedAtMs: number;
  expiresAtMs: number;
  lastSeenMs: number;
  /** Dispatch sequence that last reached this connection (one copy per dispatch). */
  dispatchStamp = 0;
  /** Inbound message rate (SPEC §4): the current second, its count, and past seconds over the limit in a row. */
  rateSecond = 0;
  rateCount = 0;
  rateOverStreak = 0;

  readonly #transport: Transport;
  readonly #owner: ConnectionOwner;
  readonly #maxBufferedBytes: number;
  #lanes: Lane[] | null = null;
  #backlogBytes = 0;
  #holdingForReplay = false;
  #ended = false;
  #drainWaiters: Array<() => void> | null = null;
  /** Created on the first subscription: most connections never subscribe. */
  #channels: Set<string> | null = null;
  /**
   * Notification ids sent since connect, kept only briefly after connect
   * and only while few, so a WebSocket `Resume` sent right after connecting
   * does not repeat what the connection already got (SPEC §7).
   */
  #resumeWindow: Set<string> | null = null;

  constructor(
    id: string,
    identity: Identity,
    transport: Transport,
    owner: ConnectionOwner,
    maxBufferedBytes: number,
  ) {
    this.id = id;
    this.tenantId = identity.tenantId;
    this.userId = identity.userId;
    this.roles = identity.roles.length === 0 ? NO_ROLES : new Set(identity.roles);
    this.permittedChannels = identity.permittedChannels;
    this.expiresAtMs = identity.expiresAtMs;
    this.kind = transport.kind;
    this.connectedAtMs = Date.now();
    this.lastSeenMs = this.connectedAtMs;
    this.#transport = transport;
    this.#owner = owner;
    this.#maxBufferedBytes = maxBufferedBytes;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** The channels this connection is subscribed to (changed only through the hub). */
  get channels(): ReadonlySet<string> {
    return this.#channels ?? NO_CHANNELS;
  }

  /** For the hub: returns false when already subscribed. */
  addChannel(channel: string): boolean {
    const channels = (this.#channels ??= new Set());
    if (channels.has(channel)) return false;
    channels.add(channel);
    return true;
  }

  /** For the hub: returns false when not subscribed. */
  removeChannel(channel: string): boolean {
    return this.#channels?.delete(channel) ?? false;
  }

  /**
   * Hands a message to this connection. Returns false when the connection
   * could not take it: already ended, or ended now as a slow consumer.
   */
  deliver(message: OutboundMessage): boolean {
    if (this.#ended) return false;
    if (this.#resumeWindow !== null && message.id !== undefined) this.#noteSent(message.id);
    if (this.#backlogBytes === 0 && !this.#holdingForReplay && !this.#transport.needsDrain()) {
      this.#transport.write(message);
    } else {
      this.#enqueue(message);
    }
    return this.#withinBufferLimit();
  }

  /** Writes a replayed message ahead of anything held back (SPEC §7). */
  writeReplayed(message: OutboundMessage): boolean {
    if (this.#ended) return false;
    if (this.#resumeWindow !== null && message.id !== undefined) this.#noteSent(message.id);
    this.#transport.write(message);
    return this.#withinBufferLimit();
  }

  /** Live messages wait in the backlog until the replay ends. */
  holdForReplay(): void {
    this.#holdingForReplay = true;
  }

  /**
   * Releases the live messages held during the replay, minus those the
   * replay itself wrote (`replayed`): a notification sent while the replay
   * read its store can be both held here and in what the store returned.
   */
  endReplay(replayed?: ReadonlySet<string>): void {
    this.#holdingForReplay = false;
    if (replayed !== undefined && replayed.size > 0 && this.#lanes !== null) {
      for (const lane of this.#lanes) {
        this.#backlogBytes -= lane.removeWhere((message) => message.id !== undefined && replayed.has(message.id));
      }
    }
    this.flush();
  }

  /** True while the socket wants 'drain' before more writes. */
  get backpressured(): boolean {
    return this.#transport.needsDrain();
  }

  /** Resolves at the socket's next 'drain', or when the connection ends. */
  drained(): Promise<void> {
    if (this.#ended || !this.#transport.needsDrain()) return Promise.resolve();
    return new Promise((resolve) => (this.#drainWaiters ??= []).push(resolve));
  }

  /** Starts remembering sent notification ids, for a Resume right after connect. */
  openResumeWindow(): void {
    this.#resumeWindow = new Set();
  }

  /** The ids sent so far, once; null when the window has closed. */
  takeResumeWindow(): Set<string> | null {
    const window = this.#resumeWindow;
    this.#resumeWindow = null;
    return window;
  }

  get resumeWindowOpen(): boolean {
    return this.#resumeWindow !== null;
  }

  /** Writes backlog, most urgent lane first, until the socket pushes back. */
  flush(): void {
    this.#wakeDrainWaiters();
    const lanes = this.#lanes;
    if (lanes === null || this.#ended || this.#holdingForReplay) return;
    for (let lane = 0; lane < LANE_COUNT && this.#backlogBytes > 0; lane++) {
      const queue = lanes[lane]!;
      while (queue.size > 0) {
        if (this.#transport.needsDrain()) return;
        const message = queue.shift()!;
        this.#backlogBytes -= message.byteLength;
        this.#transport.write(message);
      }
    }
  }

  /** Ends the connection (idempotent); the owner hears about it once. */
  end(reason: CloseReason): void {
    if (this.#markEnded()) {
      this.#transport.end(reason);
      this.#owner.connectionEnded(this, reason);
    }
  }

  /** The socket went away underneath us (peer closed or errored). */
  transportClosed(reason: CloseReason = 'client'): void {
    if (this.#markEnded()) this.#owner.connectionEnded(this, reason);
  }

  /** Releases what the connection holds; false when it had ended already. */
  #markEnded(): boolean {
    if (this.#ended) return false;
    this.#ended = true;
    this.#lanes = null;
    this.#backlogBytes = 0;
    this.#resumeWindow = null;
    this.#wakeDrainWaiters();
    return true;
  }

  /** True while messages wait in the backlog or the socket wants 'drain'. */
  get congested(): boolean {
    return this.#backlogBytes > 0 || this.#transport.needsDrain();
  }

  ping(): void {
    if (!this.#ended) this.#transport.ping();
  }

  #wakeDrainWaiters(): void {
    const waiters = this.#drainWaiters;
    if (waiters === null) return;
    this.#drainWaiters = null;
    for (const wake of waiters) wake();
  }

  #noteSent(id: string): void {
    if (this.#resumeWindow!.size >= RESUME_WINDOW_MAX_IDS) this.#resumeWindow = null;
    else this.#resumeWindow!.add(id);
  }

  #enqueue(message: OutboundMessage): void {
    const lanes = (this.#lanes ??= Array.from({ length: LANE_COUNT }, () => new Lane()));
    lanes[message.lane]!.push(message);
    this.#backlogBytes += message.byteLength;
  }

  #withinBufferLimit(): boolean {
    if (this.#transport.bufferedBytes() + this.#backlogBytes <= this.#maxBufferedBytes) return true;
    this.end('slow_consumer');
    return false;
  }
}
