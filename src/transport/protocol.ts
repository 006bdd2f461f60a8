/**
 * Client → server messages of the WebSocket protocol (SPEC §4): parsed from
 * untrusted text into a closed set of shapes. Type names are exact and
 * case-sensitive, as Ara 1.0 clients send them.
 */

export type ClientMessage =
  | { type: 'Subscribe'; channels: unknown[] }
  | { type: 'Unsubscribe'; channels: unknown[] }
  | { type: 'Ping' }
  | { type: 'Ack'; notificationId: string }
  | { type: 'Refresh'; token: string }
  | { type: 'Resume'; since: string; channels: unknown[] | null };

export type ParseResult = { ok: true; message: ClientMessage } | { ok: false; problem: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: unknown): value is string {
  return typeof value === 'string' && UUID.test(value);
}

export function parseClientMessage(text: string): ParseResult {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    return problem('message is not valid JSON');
  }
  if (!isPlainObject(data)) return problem('message must be a JSON object');
  switch (data.type) {
    case 'Subscribe':
    case 'Unsubscribe':
      return channelsMessage(data.type, data.payload);
    case 'Ping':
      return data.payload === undefined || data.payload === null
        ? { ok: true, message: { type: 'Ping' } }
        : problem('Ping takes no payload');
    case 'Ack':
      return ackMessage(data.payload);
    case 'Refresh':
      return refreshMessage(data.payload);
    case 'Resume':
      return resumeMessage(data.payload);
    default:
      return problem('unknown message type; expected Subscribe, Unsubscribe, Ping, Ack, Refresh or Resume');
  }
}

function channelsMessage(type: 'Subscribe' | 'Unsubscribe', payload: unknown): ParseResult {
  if (!isPlainObject(payload) || !Array.isArray(payload.channels)) {
    return problem(`${type} needs payload.channels as an array`);
  }
  return { ok: true, message: { type, channels: payload.channels } };
}

function ackMessage(payload: unknown): ParseResult {
  if (!isPlainObject(payload) || !isUuid(payload.notification_id)) {
    return problem('Ack needs payload.notification_id as a UUID');
  }
  return { ok: true, message: { type: 'Ack', notificationId: payload.notification_id.toLowerCase() } };
}

function refreshMessage(payload: unknown): ParseResult {
  if (!isPlainObject(payload) || typeof payload.token !== 'string' || payload.token.length === 0) {
    return problem('Refresh needs payload.token as a string');
  }
  return { ok: true, message: { type: 'Refresh', token: payload.token } };
}

function resumeMessage(payload: unknown): ParseResult {
  if (!isPlainObject(payload) || !isUuid(payload.since)) {
    return problem('Resume needs payload.since as a notification id');
  }
  const channels = payload.channels;
  if (channels !== undefined && channels !== null && !Array.isArray(channels)) {
    return problem('Resume payload.channels must be an array');
  }
  return {
    ok: true,
    message: { type: 'Resume', since: payload.since.toLowerCase(), channels: channels ?? null },
  };
}

function problem(text: string): ParseResult {
  return { ok: false, problem: text };
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
