/**
 * Acknowledgements on Redis (SPEC §7, ACK_BACKEND=redis): any node may
 * take the ack of a delivery another node made, and each record is
 * settled exactly once — acked or expired — however many nodes race.
 * See AckTracker for the contract.
 *
 * Keys (tenant its own segment, user id last):
 * - `<p>:ack:<tenant>:<userId>`  HASH notification id (keyTail) → record
 *     `sentAtMs|deadlineMs|lane|order|<0 | 1json>`; outlives its latest
 *     deadline by a day in case no node runs expiry
 * - `<p>:ack-deadlines`          ZSET score = deadline, member =
 *     `order|` + JSON [tenant, user, notification id]: what expiry takes.
 *     `order` is a zero-padded tracking sequence, so records with the same
 *     deadline expire (and are redelivered) in the order they were tracked.
 * - `<p>:ack-order`              INCR counter for `order`
 * - `<p>:ack-stats:<tenant>`     HASH tracked, acked, expired, pending, latency
 * - `<p>:ack-tenants`            SET of tenants with stats (JSON text)
 *
 * Each state change is one Lua script, so it is atomic: track adds only
 * when absent; acknowledge and expire both delete the record and count in
 * the same script, and expiry claims a record by removing its deadline
 * entry (ZREM returns 1 to exactly one caller).
 */
import type { AckStats, AckTracker, ExpiredAck } from '../types.js';
import { keyTail, pipelineResults, type RedisConnection, type RedisScript } from '../redis/redis-connection.js';

const DAY_MS = 86_400_000;

// KEYS: record hash, deadlines, stats, tenants, order counter.
// ARGV: notification id, record head (sentAt|deadline|lane), record body (0 | 1json), deadline, triple, tenant.
const TRACK = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local order = string.format('%016d', redis.call('INCR', KEYS[5]))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. order .. '|' .. ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], order .. '|' .. ARGV[5])
redis.call('HINCRBY', KEYS[3], 'tracked', 1)
redis.call('HINCRBY', KEYS[3], 'pending', 1)
redis.call('SADD', KEYS[4], ARGV[6])
local at = math.ceil(tonumber(ARGV[4])) + ${DAY_MS}
if at < 1e15 then
  local current = redis.call('PEXPIRETIME', KEYS[1])
  if current < at then redis.call('PEXPIREAT', KEYS[1], at) end
end
return 1
`;

// KEYS: record hash, deadlines, stats. ARGV: notification id, nowMs, triple.
// Returns the latency in ms (as text), or nil when there is nothing to ack.
const ACKNOWLEDGE = `
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return false end
local sent, deadline, order = string.match(record, '^([^|]*)|([^|]*)|[^|]*|([^|]*)|')
local now = tonumber(ARGV[2])
if now > tonumber(deadline) then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], order .. '|' .. ARGV[3])
local latency = now - tonumber(sent)
if latency < 0 then latency = 0 end
redis.call('HINCRBY', KEYS[3], 'acked', 1)
redis.call('HINCRBY', KEYS[3], 'pending', -1)
redis.call('HINCRBYFLOAT', KEYS[3], 'latency', latency)
return tostring(latency)
`;

// KEYS: deadlines, record hash, stats. ARGV: member, notification id, nowMs.
// Claims one record whose deadline passed: nil when another caller settled it first,
// else the record ('' when its hash is gone).
const CLAIM_EXPIRED = `
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline or tonumber(deadline) >= tonumber(ARGV[3]) then return false end
redis.call('ZREM', KEYS[1], ARGV[1])
local record = redis.call('HGET', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'expired', 1)
redis.call('HINCRBY', KEYS[3], 'pending', -1)
return record or ''
`;

/** Records claimed per round trip, and round trips per `expire` call. */
const EXPIRE_BATCH = 500;
const EXPIRE_ROUNDS = 20;

export class RedisAckTracker implements AckTracker {
  readonly backend = 'redis' as const;
  readonly #redis: RedisConnection;
  readonly #track: RedisScript;
  readonly #acknowledge: RedisScript;
  readonly #claim: RedisScript;

  constructor(redis: RedisConnection) {
    this.#redis = redis;
    this.#track = redis.defineScript('araAckTrack', 5, TRACK);
    this.#acknowledge = redis.defineScript('araAckAcknowledge', 3, ACKNOWLEDGE);
    this.#claim = redis.defineScript('araAckClaimExpired', 3, CLAIM_EXPIRED);
  }

  async track(
    tenantId: string,
    userId: string,
    notification: { id: string; json: string | null; lane: number },
    sentAtMs: number,
    deadlineMs: number,
  ) {
    const head = `${sentAtMs}|${deadlineMs}|${notification.lane}`;
    const body = notification.json === null ? '0' : `1${notification.json}`;
    const keys = [this.#recordKey(tenantId, userId), this.#deadlinesKey, this.#statsKey(tenantId), this.#tenantsKey, this.#orderKey];
    const args = [keyTail(notification.id), head, body, deadlineMs, triple(tenantId, userId, notification.id), JSON.stringify(tenantId)];
    // TRACK returns 1 when it added the record, 0 when it was there already.
    return Number(await this.#track.run(keys, args)) === 1;
  }

  async acknowledge(tenantId: string, userId: string, notificationId: string, nowMs: number) {
    const keys = [this.#recordKey(tenantId, userId), this.#deadlinesKey, this.#statsKey(tenantId)];
    const latency = await this.#acknowledge.run(keys, [keyTail(notificationId), nowMs, triple(tenantId, userId, notificationId)]);
    return latency === null ? null : { latencyMs: Number(latency) };
  }

  async expire(nowMs: number) {
    const expired: ExpiredAck[] = [];
    for (let round = 0; round < EXPIRE_ROUNDS; round++) {
      const due = await this.#redis.client.zrange(this.#deadlinesKey, '-inf', `(${nowMs}`, 'BYSCORE', 'LIMIT', 0, EXPIRE_BATCH);
      if (due.length === 0) break;
      const claims: { tenantId: string; userId: string; notificationId: string }[] = [];
      const pipeline = this.#redis.client.pipeline();
      for (const entry of due) {
        const triple = parseMember(entry);
        if (triple === null) continue;
        claims.push(triple);
        const keys = [this.#deadlinesKey, this.#recordKey(triple.tenantId, triple.userId), this.#statsKey(triple.tenantId)];
        this.#claim.queue(pipeline, keys, [entry, keyTail(triple.notificationId), nowMs]);
      }
      // Entries that are not ours would come back every time: drop them.
      const foreign = due.filter((entry) => parseMember(entry) === null);
      if (foreign.length > 0) pipeline.zrem(this.#deadlinesKey, ...foreign);
      const results = pipelineResults(await pipeline.exec()).slice(0, claims.length);
      results.forEach((record, index) => {
        if (record === null) return;
        const { tenantId, userId, notificationId } = claims[index]!;
        expired.push({ tenantId, userId, notificationId, ...parseRecord(record as string) });
      });
      if (due.length < EXPIRE_BATCH) break;
    }
    return expired;
  }

  async stats(tenantId: string | null) {
    const tenants =
      tenantId === null ? (await this.#redis.client.smembers(this.#tenantsKey)).map((id) => JSON.parse(id) as string) : [tenantId];
    const total: AckStats = { totalTracked: 0, totalAcked: 0, totalExpired: 0, pendingCount: 0, totalLatencyMs: 0 };
    if (tenants.length === 0) return total;
    const pipeline = this.#redis.client.pipeline();
    for (const id of tenants) pipeline.hgetall(this.#statsKey(id));
    for (const counters of pipelineResults(await pipeline.exec()) as Record<string, string>[]) {
      total.totalTracked += Number(counters.tracked ?? 0);
      total.totalAcked += Number(counters.acked ?? 0);
      total.totalExpired += Number(counters.expired ?? 0);
      total.pendingCount += Number(counters.pending ?? 0);
      total.totalLatencyMs += Number(counters.latency ?? 0);
    }
    return total;
  }

  /** The connection is shared and closed by the store set. */
  async close() {}

  #recordKey(tenantId: string, userId: string): string {
    return this.#redis.key('ack', tenantId, userId);
  }

  #statsKey(tenantId: string): string {
    return this.#redis.key('ack-stats', tenantId);
  }

  get #deadlinesKey(): string {
    return this.#redis.globalKey('ack-deadlines');
  }

  get #tenantsKey(): string {
    return this.#redis.globalKey('ack-tenants');
  }

  get #orderKey(): string {
    return this.#redis.globalKey('ack-order');
  }
}

/** The record's identity in its deadline entry; JSON keeps the three parts apart whatever they hold. */
function triple(tenantId: string, userId: string, notificationId: string): string {
  return JSON.stringify([tenantId, userId, notificationId]);
}

/** A deadline entry is `order|triple`. */
function parseMember(text: string): { tenantId: string; userId: string; notificationId: string } | null {
  const bar = text.indexOf('|');
  if (bar < 0) return null;
  try {
    const parts: unknown = JSON.parse(text.slice(bar + 1));
    if (Array.isArray(parts) && parts.length === 3 && parts.every((part) => typeof part === 'string')) {
      const [tenantId, userId, notificationId] = parts as [string, string, string];
      return { tenantId, userId, notificationId };
    }
  } catch {
    // not one of ours: dropped below
  }
  return null;
}

/** `sentAtMs|deadlineMs|lane|order|<0 | 1json>`; '' when the record hash expired meanwhile. */
function parseRecord(record: string): { json: string | null; lane: number } {
  const a = record.indexOf('|');
  const b = record.indexOf('|', a + 1);
  const c = record.indexOf('|', b + 1);
  const d = record.indexOf('|', c + 1);
  if (a < 0 || b < 0 || c < 0 || d < 0) return { json: null, lane: 0 };
  return { lane: Number(record.slice(b + 1, c)), json: record[d + 1] === '1' ? record.slice(d + 2) : null };
}
