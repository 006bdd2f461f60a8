/**
 * Redis trigger messages (SPEC §8), Ara 1.0's format:
 *
 *   {"type":"user|users|broadcast|channel|channels","target":"id or [ids]",
 *    "tenant_id":"acme"?, "event":{"event_type","payload","priority"?,"ttl"?,"correlation_id"?}}
 *
 * The body decides the target; the Redis channel only becomes
 * `metadata.source`. Parsing never throws: a bad message yields the first
 * problem found, in words that never quote the payload.
 */
import { ALL_TENANTS, type Target } from '../delivery/dispatcher.js';
import type { NotificationContent } from '../delivery/notification.js';
import { isValidChannelName } from '../hub/channel-name.js';
import { PRIORITIES, type Priority } from '../hub/outbound.js';
import { DEFAULT_TENANT, isValidTenantId } from '../tenancy/tenant-id.js';
import { isPlainObject } from '../transport/protocol.js';

/** Largest trigger message accepted, in UTF-16 units (about bytes for JSON). */
export const MAX_TRIGGER_MESSAGE_LENGTH = 1024 * 1024;

export interface TriggerRequest {
  /** A tenant id, or `*` for a broadcast to every tenant. */
  tenantId: string;
  target: Target;
  content: NotificationContent;
}

export type TriggerParse = { ok: true; request: TriggerRequest } | { ok: false; problem: string };

export function parseTriggerMessage(text: string, tenancyEnabled: boolean): TriggerParse {
  if (text.length > MAX_TRIGGER_MESSAGE_LENGTH) return problem('message is larger than 1 MiB');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return problem('message is not valid JSON');
  }
  if (!isPlainObject(body)) return problem('message must be a JSON object');
  const target = targetOf(body.type, body.target);
  if (typeof target === 'string') return problem(target);
  const tenantId = tenantOf(body.tenant_id, target.type, tenancyEnabled);
  if (tenantId === null) return problem('tenant_id must be a valid tenant id ("*" only for broadcast)');
  const content = contentOf(body.event);
  if (typeof content === 'string') return problem(content);
  return { ok: true, request: { tenantId, target, content } };
}

function targetOf(type: unknown, target: unknown): Target | string {
  switch (type) {
    case 'user':
      return isUserId(target) ? { type: 'user', userId: target } : 'target must be a user id (1-256 characters)';
    case 'users': {
      const ids = typeof target === 'string' ? [target] : target;
      if (!Array.isArray(ids) || ids.length === 0 || ids.length > 10_000 || !ids.every(isUserId)) {
        return 'target must be 1-10000 user ids';
      }
      return { type: 'users', userIds: ids };
    }
    case 'broadcast':
      return { type: 'broadcast' };
    case 'channel':
      return isValidChannelName(target) ? { type: 'channel', channel: target } : 'target must be a valid channel name';
    case 'channels': {
      const names = typeof target === 'string' ? [target] : target;
      if (!Array.isArray(names) || names.length === 0 || names.length > 100 || !names.every(isValidChannelName)) {
        return 'target must be 1-100 valid channel names';
      }
      return { type: 'channels', channels: names };
    }
    default:
      return 'type must be one of user, users, broadcast, channel, channels';
  }
}

/** With tenancy off every message lives in `default` (SPEC §3). */
function tenantOf(claim: unknown, targetType: Target['type'], tenancyEnabled: boolean): string | null {
  if (!tenancyEnabled || claim === undefined || claim === null) return DEFAULT_TENANT;
  if (claim === ALL_TENANTS) return targetType === 'broadcast' ? ALL_TENANTS : null;
  return isValidTenantId(claim) ? claim : null;
}

function contentOf(event: unknown): NotificationContent | string {
  if (!isPlainObject(event)) return 'event must be an object';
  const { event_type: eventType, priority, ttl, correlation_id: correlationId } = event;
  if (typeof eventType !== 'string' || eventType.length === 0 || eventType.length > 128) {
    return 'event.event_type must be 1-128 characters';
  }
  if (!('payload' in event)) return 'event.payload is required';
  if (priority !== undefined && !PRIORITIES.includes(priority as Priority)) {
    return 'event.priority must be Low, Normal, High or Critical';
  }
  if (ttl !== undefined && !(Number.isInteger(ttl) && (ttl as number) >= 0 && (ttl as number) <= 4294967295)) {
    return 'event.ttl must be a whole number of seconds';
  }
  if (correlationId !== undefined && !(typeof correlationId === 'string' && correlationId.length <= 128)) {
    return 'event.correlation_id must be a string of at most 128 characters';
  }
  const content: NotificationContent = {
    eventType,
    payload: event.payload,
    priority: (priority as Priority | undefined) ?? 'Normal',
  };
  if (ttl !== undefined) content.ttl = ttl as number;
  if (correlationId !== undefined) content.correlationId = correlationId as string;
  return content;
}

function isUserId(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= 256;
}

function problem(text: string): TriggerParse {
  return { ok: false, problem: text };
}
