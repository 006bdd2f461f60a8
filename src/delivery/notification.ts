/**
 * The notification event (SPEC §4 "Notification message"): built once per
 * send, serialised once, and shared as one OutboundMessage by every
 * connection, the queue and the bus.
 */
import { randomUUID } from 'node:crypto';
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
  readonly content: NotificationContent;
  readonly source: string;
  readonly message: OutboundMessage;
}

/** `id`: a given id (trigger messages in cluster mode), else a random UUID v4. */
export function buildNotification(content: NotificationContent, source: string, id: string = randomUUID()): Notification {
  const occurredAt = new Date().toISOString();
  const json = JSON.stringify({
    type: 'notification',
    id,
    occurred_at: occurredAt,
    event_type: content.eventType,
    payload: content.payload,
    metadata: metadataOf(content, source),
  });
  const message = new OutboundMessage(json, 'notification', PRIORITY_LANE[content.priority], id);
  return { id, occurredAt, content, source, message };
}

/** Field order as Ara 1.0 emits it; absent optional fields are omitted. */
function metadataOf(content: NotificationContent, source: string): Record<string, unknown> {
  const metadata: Record<string, unknown> = { source, priority: content.priority };
  if (content.ttl !== undefined) metadata.ttl = content.ttl;
  if (content.audience !== undefined) metadata.audience = content.audience;
  if (content.correlationId !== undefined) metadata.correlation_id = content.correlationId;
  return metadata;
}
