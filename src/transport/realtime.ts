/**
 * The life of a realtime connection once authenticated, common to WS and
 * SSE: registration under the caps, the `connected` greeting, the client
 * messages of SPEC §4, and the bookkeeping when it ends.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { AuthError, type Identity, type TokenVerifier } from '../auth/jwt.js';
import type { RealtimeErrorCode } from '../errors.js';
import { isChannelPermitted, isValidChannelName } from '../hub/channel-name.js';
import { Connection, type CloseReason, type ConnectionOwner, type Transport } from '../hub/connection.js';
import type { CapName, Hub } from '../hub/hub.js';
import { OutboundMessage } from '../hub/outbound.js';
import type { Metrics } from '../ops/metrics.js';
import type { ClientMessage } from './protocol.js';
import { parseClientMessage } from './protocol.js';

export type OpenResult =
  | { ok: true; connection: Connection }
  | { ok: false; cap: CapName; message: string };

/** Answers `Ack` messages (SPEC §7); absent while ACK is disabled. */
export interface AckHandler {
  acknowledge(connection: Connection, notificationId: string): Promise<boolean>;
}

/** Queue replay and resume from history (SPEC §7); absent while the queue is off. */
export interface ReplayHandler {
  replayOnConnect(connection: Connection, lastEventId: string | null): Promise<void>;
  resume(connection: Connection, since: string, channels: string[]): Promise<void>;
}

export interface RealtimeOptions {
  heartbeatIntervalMs: number;
  maxBufferedBytes: number;
  leewayMs: number;
  /** RATELIMIT_WS_MESSAGES_PER_SECOND when rate limiting is on; 0 = no limit. */
  messagesPerSecond: number;
}

/** Seconds over the message rate in a row that end the connection (SPEC §4). */
const OVER_LIMIT_SECONDS_TO_CLOSE = 3;

const PONG = OutboundMessage.control({ type: 'pong' });
const NO_PROBLEMS: readonly string[] = Object.freeze([]);

export class RealtimeService implements ConnectionOwner {
  readonly #hub: Hub;
  readonly #verifier: TokenVerifier;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #options: RealtimeOptions;
  /** heartbeat_interval of the connected message, as JSON writes the number. */
  readonly #heartbeatSeconds: string;
  #acks: AckHandler | null = null;
  #replay: ReplayHandler | null = null;
  /** Connect-time replays still running, so a `Resume` can wait for its connection's. */
  readonly #replaying = new WeakMap<Connection, Promise<void>>();

  constructor(hub: Hub, verifier: TokenVerifier, metrics: Metrics, log: Logger, options: RealtimeOptions) {
    this.#hub = hub;
    this.#verifier = verifier;
    this.#metrics = metrics;
    this.#log = log;
    this.#options = options;
    this.#heartbeatSeconds = JSON.stringify(options.heartbeatIntervalMs / 1000);
  }

  setAckHandler(handler: AckHandler | null): void {
    this.#acks = handler;
  }

  setReplayHandler(handler: ReplayHandler | null): void {
    this.#replay = handler;
  }

  /** Creates and registers a connection, or says which cap refused it. */
  open(identity: Identity, transport: Transport): OpenResult {
    const connection = new Connection(randomUUID(), identity, transport, this, this.#options.maxBufferedBytes);
    const registered = this.#hub.register(connection);
    if (!registered.ok) {
      this.#log.info(
        { tenantId: identity.tenantId, userId: identity.userId, cap: registered.cap },
        'realtime connection refused: connection limit',
      );
      return registered;
    }
    this.#metrics.wsOpened.inc();
    // Guarded: the fields object would be built on every connect even with debug off.
    if (this.#log.isLevelEnabled('debug')) {
      this.#log.debug(
        { connectionId: connection.id, tenantId: connection.tenantId, userId: connection.userId, kind: connection.kind },
        'connection opened',
      );
    }
    return { ok: true, connection };
  }

  /**
   * Greets the client (unless the transport wrote `greetingJson` itself), then
   * replays what waited for it, then goes live. Without a replay
   * (QUEUE_ENABLED off) it is done on return: no promise.
   */
  start(connection: Connection, lastEventId: string | null = null, greeted = false): Promise<void> | undefined {
    if (!greeted) connection.deliver(OutboundMessage.controlJson(this.greetingJson(connection), 'connected'));
    return this.#replay === null ? undefined : this.#startReplay(this.#replay, connection, lastEventId);
  }

  async #startReplay(replay: ReplayHandler, connection: Connection, lastEventId: string | null): Promise<void> {
    connection.openResumeWindow();
    const replaying = replay.replayOnConnect(connection, lastEventId);
    this.#replaying.set(connection, replaying);
    try {
      await replaying;
    } finally {
      this.#replaying.delete(connection);
    }
  }

  /**
   * `{"type":"connected","connection_id","user_id","tenant_id","heartbeat_interval"}`
   * (SPEC §4), the same text JSON.stringify gives for that object, from
   * prepared parts: serialising the whole object showed on every connect.
   */
  greetingJson(connection: Connection): string {
    return (
      `{"type":"connected","connection_id":${JSON.stringify(connection.id)},"user_id":${JSON.stringify(connection.userId)},` +
      `"tenant_id":${JSON.stringify(connection.tenantId)},"heartbeat_interval":${this.#heartbeatSeconds}}`
    );
  }

  connectionEnded(connection: Connection, reason: CloseReason): void {
    this.#hub.unregister(connection, reason);
    this.#metrics.wsClosed.inc({ reason });
    if (reason === 'slow_consumer') {
      this.#metrics.slowConsumerDisconnects.inc();
      this.#log.info({ connectionId: connection.id, tenantId: connection.tenantId }, 'slow consumer disconnected');
    } else {
      this.#log.debug({ connectionId: connection.id, reason }, 'connection closed');
    }
  }

  /** One inbound WebSocket text frame. */
  async handleText(connection: Connection, text: string): Promise<void> {
    if (!this.#admitMessage(connection)) return;
    const parsed = parseClientMessage(text);
    if (!parsed.ok) {
      this.#metrics.wsMessagesReceived.inc({ type: 'invalid' });
      sendError(connection, 'INVALID_MESSAGE', parsed.problem);
      return;
    }
    this.#metrics.wsMessagesReceived.inc({ type: parsed.message.type.toLowerCase() });
    await this.#handleMessage(connection, parsed.message);
  }

  handleBinary(connection: Connection): void {
    if (!this.#admitMessage(connection)) return;
    this.#metrics.wsMessagesReceived.inc({ type: 'binary' });
    sendError(connection, 'UNSUPPORTED_FORMAT', 'Binary messages are not supported');
  }

  /**
   * Counts the message against its second. An excess message is dropped
   * and answered with RATE_LIMITED; a third second in a row over the limit
   * closes the connection with 1008.
   */
  #admitMessage(connection: Connection): boolean {
    const limit = this.#options.messagesPerSecond;
    if (limit === 0) return true;
    const second = Math.floor(Date.now() / 1000);
    if (second !== connection.rateSecond) {
      const previousWasOver = second === connection.rateSecond + 1 && connection.rateCount > limit;
      connection.rateOverStreak = previousWasOver ? connection.rateOverStreak + 1 : 0;
      connection.rateSecond = second;
      connection.rateCount = 0;
    }
    if (++connection.rateCount <= limit) {
      this.#metrics.rateLimitAllowed.inc({ type: 'ws_message' });
      return true;
    }
    this.#metrics.rateLimitDenied.inc({ type: 'ws_message' });
    if (connection.rateOverStreak + 1 >= OVER_LIMIT_SECONDS_TO_CLOSE) {
      this.#log.info({ connectionId: connection.id, tenantId: connection.tenantId }, 'closing connection: message rate');
      connection.end('rate_limited');
    } else {
      sendError(connection, 'RATE_LIMITED', `More than ${limit} messages per second; message dropped`);
    }
    return false;
  }

  async #handleMessage(connection: Connection, message: ClientMessage): Promise<void> {
    switch (message.type) {
      case 'Ping':
        connection.deliver(PONG);
        return;
      case 'Subscribe':
        this.subscribeAll(connection, message.channels, true);
        return;
      case 'Unsubscribe':
        this.#unsubscribeAll(connection, message.channels);
        return;
      case 'Ack':
        await this.#acknowledge(connection, message.notificationId);
        return;
      case 'Refresh':
        await this.#refresh(connection, message.token);
        return;
      case 'Resume':
        await this.#resume(connection, message.since, message.channels ?? []);
        return;
    }
  }

  /**
   * Subscribes to each valid, permitted name; returns the failures. With
   * `reply`, answers as SPEC §4 says: `subscribed` unless every name failed,
   * then one SUBSCRIPTION_ERROR naming each failure.
   */
  subscribeAll(connection: Connection, requested: readonly unknown[], reply: boolean): string[] {
    const subscribed: string[] = [];
    const failures: string[] = [];
    for (const name of requested) {
      const failure = this.#subscribeOne(connection, name);
      if (failure === null) subscribed.push(name as string);
      else failures.push(failure);
    }
    if (reply && (subscribed.length > 0 || failures.length === 0)) {
      connection.deliver(OutboundMessage.control({ type: 'subscribed', payload: subscribed }));
    }
    if (reply && failures.length > 0) sendError(connection, 'SUBSCRIPTION_ERROR', failures.join('; '));
    return failures;
  }

  /** Problems with channels requested at connect (SSE `?channels=`), before any connection exists. */
  channelProblems(identity: Identity, requested: readonly string[]): readonly string[] {
    if (requested.length === 0) return NO_PROBLEMS;
    const problems: string[] = [];
    for (const name of requested) {
      const problem = nameProblem(name, identity.permittedChannels);
      if (problem !== null) problems.push(problem);
    }
    const max = this.#hub.limitsFor(identity.tenantId).maxSubscriptionsPerConnection;
    const distinct = new Set(requested).size;
    if (max > 0 && distinct > max) problems.push(`Subscription limit exceeded (${distinct}/${max})`);
    return problems;
  }

  #subscribeOne(connection: Connection, name: unknown): string | null {
    const problem = nameProblem(name, connection.permittedChannels);
    if (problem !== null) return problem;
    if (this.#hub.subscribe(connection, name as string) !== 'limit') return null;
    const max = this.#hub.limitsFor(connection.tenantId).maxSubscriptionsPerConnection;
    return `Subscription limit reached (${connection.channels.size}/${max}): ${quoted(name)}`;
  }

  #unsubscribeAll(connection: Connection, requested: readonly unknown[]): void {
    const names: string[] = [];
    for (const name of requested) {
      if (typeof name !== 'string') continue;
      this.#hub.unsubscribe(connection, name);
      names.push(name);
    }
    connection.deliver(OutboundMessage.control({ type: 'unsubscribed', payload: names }));
  }

  async #acknowledge(connection: Connection, notificationId: string): Promise<void> {
    const acks = this.#acks;
    if (acks === null) return; // ACK disabled: no reply (SPEC §4)
    if (await acks.acknowledge(connection, notificationId)) {
      connection.deliver(OutboundMessage.control({ type: 'acked', notification_id: notificationId }));
    } else {
      sendError(connection, 'INVALID_ACK', `Unknown or invalid notification: ${notificationId}`);
    }
  }

  /**
   * `Resume {since, channels?}` (SPEC §7): subscribes the channels, then
   * sends what history holds after `since`. Meant for right after
   * connecting; afterwards what the connection already got is unknown.
   */
  async #resume(connection: Connection, since: string, channels: readonly unknown[]): Promise<void> {
    if (this.#replay === null) {
      sendError(connection, 'INVALID_MESSAGE', 'Resume is not available: QUEUE_ENABLED is off on this server');
      return;
    }
    // A Resume that arrives while the connect-time replay still runs (a slow
    // store) waits for it: what the replay wrote is then in the resume window
    // and is not written a second time.
    await this.#replaying.get(connection)?.catch(() => undefined);
    if (!connection.resumeWindowOpen) {
      sendError(connection, 'INVALID_MESSAGE', 'Resume must be sent right after connecting');
      return;
    }
    this.subscribeAll(connection, channels, channels.length > 0);
    const subscribed = channels.filter((name): name is string => typeof name === 'string' && connection.channels.has(name));
    await this.#replay.resume(connection, since, subscribed);
  }

  async #refresh(connection: Connection, token: string): Promise<void> {
    let identity: Identity;
    try {
      identity = await this.#verifier.verify(token);
    } catch (error) {
      const reason = error instanceof AuthError ? error.reason : 'verification failed';
      this.#log.info({ connectionId: connection.id, reason }, 'refresh refused: invalid token');
      sendError(connection, 'INVALID_TOKEN', 'Invalid token');
      return;
    }
    if (identity.userId !== connection.userId || identity.tenantId !== connection.tenantId) {
      this.#log.info({ connectionId: connection.id }, 'refresh refused: token is for another identity');
      sendError(connection, 'INVALID_TOKEN', 'Token belongs to another user or tenant');
      return;
    }
    connection.expiresAtMs = identity.expiresAtMs;
    const expiresAt = new Date(identity.expiresAtMs).toISOString();
    connection.deliver(OutboundMessage.control({ type: 'refreshed', expires_at: expiresAt }));
  }
}

export function sendError(connection: Connection, code: RealtimeErrorCode, message: string): void {
  connection.deliver(OutboundMessage.control({ type: 'error', code, message }));
}

function nameProblem(name: unknown, permitted: readonly string[] | null): string | null {
  if (!isValidChannelName(name)) return `Invalid channel name: ${quoted(name)}`;
  if (!isChannelPermitted(name, permitted)) return `Channel not permitted: ${quoted(name)}`;
  return null;
}

/** Names in error texts are JSON-quoted so control characters stay visible and inert. */
function quoted(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    // Nested too deeply to serialise: a client's mistake, not an internal error.
    text = Array.isArray(value) ? '[...]' : '{...}';
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
