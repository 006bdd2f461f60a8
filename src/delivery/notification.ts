/**
 * The notification event (SPEC §4 "Notification message"): built once per
 * send, serialised at most once, and shared as one OutboundMessage by every
 * connection, the queue and the bus.
 */
import { randomUUID } from 'node:crypto';
import { isoTime } from '../clock.js';
import { OutboundMessage, PRIORITY_LANE, type Priority } from '../hub/outbound.js';

export type Audience =
  | { type: 'All' }
  | { type: 'Roles'; value: string[] }
  | { type: 'Users'; value: string[] }
  | { type: 'Channels'; value: string[] };

/** What a sender asked to deliver, after templates were rendered. */
export interface NotificationContent {
  eventType: string;
  payload: unknown;
  priority: Priority;
  /** Seconds; 0 = live connections only, never queued. */
  ttl?: number;
  correlationId?: string;
  audience?: Audience;
}

export interface Notification {
  readonly id: string;
  readonly occurredAt: string;
  /** `occurredAt` as epoch milliseconds, when known (saves parsing it back). */
  readonly occurredAtMs?: number;
  readonly content: NotificationContent;
  readonly source: string;
  readonly message: OutboundMessage;
}

/**
 * A notification whose JSON is written the first time something needs it
 * (a connection, a store, the bus) and then shared. A send that reaches no
 * connection and is stored nowhere, the common case of a user-targeted
 * send to an offline user without a queue, never pays for serialising it.
 */
class BuiltNotification implements Notification {
  readonly id: string;
  readonly occurredAtMs: number;
  readonly content: NotificationContent;
  readonly source: string;
  #message: OutboundMessage | undefined;

  constructor(id: string, occurredAtMs: number, content: NotificationContent, source: string) {
    this.id = id;
    this.occurredAtMs = occurredAtMs;
    this.content = content;
    this.source = source;
  }

  /** Formatted when first read: only the JSON (and the bus) need the text. */
  get occurredAt(): string {
    return isoTime(this.occurredAtMs);
  }

  get message(): OutboundMessage {
    return (this.#message ??= serialise(this));
  }
}

/** `id`: a given id (trigger messages in cluster mode), else a random UUID v4. */
export function buildNotification(content: NotificationContent, source: string, id: string = randomUUID()): Notification {
  return new BuiltNotification(id, Date.now(), content, source);
}

function serialise(notification: Notification): OutboundMessage {
  const { id, content } = notification;
  const json = JSON.stringify({
    type: 'notification',
    id,
    occurred_at: notification.occurredAt,
    event_type: content.eventType,
    payload: content.payload,
    metadata: metadataOf(content, notification.source),
  });
  return new OutboundMessage(json, 'notification', PRIORITY_LANE[content.priority], id);
}

/** Field order as Ara 1.0 emits it; absent optional fields are omitted. */
function metadataOf(content: NotificationContent, source: string): Record<string, unknown> {
  const metadata: Record<string, unknown> = { source, priority: content.priority };
  if (content.ttl !== undefined) metadata.ttl = content.ttl;
  if (content.audience !== undefined) metadata.audience = content.audience;
  if (content.correlationId !== undefined) metadata.correlation_id = content.correlationId;
  return metadata;
}
