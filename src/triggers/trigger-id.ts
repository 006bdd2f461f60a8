/**
 * Notification ids for trigger messages in cluster mode. Every node receives
 * each trigger message and builds the notification itself; for a user who
 * is connecting at that moment one node may queue it while another delivers
 * it live, and the replay recognises the two as one only if they share an
 * id. So the id is a name-based UUID (RFC 4122 version 5) of the Redis
 * channel, the message and a ten-second window of arrival: the same on every
 * node. Two byte-identical messages on one channel within a window share an
 * id — a documented limit of a format that carries no id of its own.
 */
import { createHash } from 'node:crypto';

/** A fixed namespace for these ids (random, generated once for this project). */
const NAMESPACE = Buffer.from('6f0b1c3ae1d94c5a8f3e2b7d9a4c1e05', 'hex');
export const TRIGGER_ID_WINDOW_MS = 10_000;

/**
 * What identifies one published message for "once per cluster" decisions
 * (queue once, history once): the channel and the bytes, without the
 * arrival window, so nodes on either side of a window boundary still agree.
 */
export function triggerKey(channel: string, message: string): string {
  return createHash('sha1').update(`${channel}\n${message}`).digest('hex');
}

export function triggerNotificationId(channel: string, message: string, receivedAtMs: number): string {
  const window = Math.floor(receivedAtMs / TRIGGER_ID_WINDOW_MS);
  const hash = createHash('sha1').update(NAMESPACE).update(`${window}\n${channel}\n${message}`).digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
