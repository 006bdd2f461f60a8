/**
 * What every bench process agrees on: the clock, the notification payload
 * and the request bodies.
 *
 * The send timestamp is CLOCK_MONOTONIC in microseconds (process.hrtime):
 * one clock shared by every process on the machine, finer than Date.now()
 * and immune to wall-clock steps, so `receive - ts` in a client process is
 * the end-to-end latency.
 */

export function nowUs(): number {
  const [seconds, nanos] = process.hrtime();
  return seconds * 1e6 + Math.floor(nanos / 1e3);
}

/** Size of the notification payload's JSON, `{"ts":…,"pad":"…"}`. */
export const PAYLOAD_BYTES = 256;
export const CHANNEL = 'bench';
export const EVENT_TYPE = 'bench.tick';

const pads = new Map<number, string>();

export function payloadJson(ts: number): string {
  const head = `{"ts":${ts},"pad":"`;
  const padLength = Math.max(0, PAYLOAD_BYTES - head.length - 2);
  let pad = pads.get(padLength);
  if (pad === undefined) pads.set(padLength, (pad = 'x'.repeat(padLength)));
  return `${head}${pad}"}`;
}

/** Body of a channel send: the same shape for our API and for the peers' `POST /channel`. */
export function channelBody(ts: number): string {
  return `{"channel":"${CHANNEL}","event_type":"${EVENT_TYPE}","payload":${payloadJson(ts)}}`;
}

/** Body of a user-targeted send: our `POST /api/v1/notifications/send`, the peers' `POST /user`. */
export function userBody(userId: string, ts: number): string {
  return `{"target_user_id":"${userId}","event_type":"${EVENT_TYPE}","payload":${payloadJson(ts)}}`;
}

export function userId(index: number): string {
  return `u${index}`;
}

export type ServerKind = 'service' | 'limit' | 'socketio';

export const SEND_PATHS: Record<ServerKind, { channel: string; user: string }> = {
  service: { channel: '/api/v1/notifications/channel', user: '/api/v1/notifications/send' },
  limit: { channel: '/channel', user: '/user' },
  socketio: { channel: '/channel', user: '/user' },
};

export const JWT_SECRET = 'bench-jwt-secret-0123456789-0123456789-abcdef';
export const API_KEY = 'bench-operator-key-0123456789';
