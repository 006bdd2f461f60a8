/**
 * The offline queue on Redis (SPEC §7, QUEUE_BACKEND=redis): survives
 * restarts and is shared by every node. See OfflineQueue for the contract.
 *
 * Keys (tenant its own segment, user id last, see RedisConnection):
 * - `<p>:queue:<tenant>:<user>`     ZSET score = seq, member = encoded entry
 *                                   (`seq|expiresAtMs|lane|encodedId|json`)
 * - `<p>:queue-exp:<tenant>:<user>` ZSET score = expiresAtMs, member = seq:
 *                                   finds expired entries without reading them
 * - `<p>:queue-seq:<tenant>`        INCR counter: seq grows with send order
 * Both per-user keys expire a day (KEY_GRACE_MS) after their last entry
 * does, so abandoned queues vanish by themselves.
 *
 * Every write is one Lua script, so each is atomic: enqueue appends, trims
 * to the cap and counts what it dropped; remove deletes by seq, so an
 * entry enqueued after the caller's peek (a higher seq) stays queued.
 *
 * Cost: enqueue, peek and remove are O(log n + k) per user queue.
 * `purgeExpired` and `stats` walk the queue keys with SCAN (O(keys in the
 * Redis database) per full walk, one round trip per 500 keys scanned);
 * purge resumes its walk across calls after a bounded number of steps.
 */
import type { OfflineQueue, SequencedNotification, StoredNotification } from '../types.js';
import { BUS_LOG_LUA, busLogChannels, busLogLimitArgs, type BusLogLimits } from '../redis/bus-log.js';
import { escapeField, globEscape, keySegment, pipelineResults, unescapeField, type RedisConnection, type RedisScript } from '../redis/redis-connection.js';

// KEYS: queue, expiry index, seq counter. ARGV: expiresAtMs, lane, escaped id, json, maxSize, grace ms.
// Returns how many of the oldest entries were dropped to keep maxSize.
const ENQUEUE = `
local seq = tostring(redis.call('INCR', KEYS[3]))
redis.call('ZADD', KEYS[1], seq, seq .. '|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[1], seq)
local dropped = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if dropped > 0 then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, dropped - 1, 'WITHSCORES')
  for i = 2, #oldest, 2 do redis.call('ZREM', KEYS[2], oldest[i]) end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, dropped - 1)
else
  dropped = 0
end
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] then
  local at = math.ceil(tonumber(last[2])) + tonumber(ARGV[6])
  if at < 1e15 then
    redis.call('PEXPIREAT', KEYS[1], at)
    redis.call('PEXPIREAT', KEYS[2], at)
  else
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  end
end
return dropped
`;

// KEYS: queue. ARGV: nowMs, limit. The oldest `limit` unexpired members, in seq order.
const PEEK = `
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local out = {}
local start = 0
while #out < limit do
  local batch = redis.call('ZRANGE', KEYS[1], start, start + limit - 1)
  if #batch == 0 then break end
  for _, member in ipairs(batch) do
    if tonumber(string.match(member, '^[^|]*|([^|]*)|')) > now then
      out[#out + 1] = member
      if #out == limit then break end
    end
  end
  start = start + limit
end
return out
`;

// KEYS: queue, expiry index. ARGV: uptoSeq, nowMs.
// Deletes entries with seq <= uptoSeq and entries expired at nowMs; returns how many.
const REMOVE = `
local removed = 0
if tonumber(ARGV[1]) > 0 then
  local done = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'WITHSCORES')
  for i = 2, #done, 2 do redis.call('ZREM', KEYS[2], done[i]) end
  removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
end
local expired = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[2], 'BYSCORE')
for _, seq in ipairs(expired) do
  removed = removed + redis.call('ZREMRANGEBYSCORE', KEYS[1], seq, seq)
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2]) end
return removed
`;

// The enqueue above as a function, for the cluster scripts below (same KEYS[1..3], ARGV[1..6]).
const ENQUEUE_FUNCTION = `local function enqueue()\n${ENQUEUE}\nend\n`;

// Cluster delivery (SPEC §8). KEYS[4] bus log, KEYS[5] its byte counter. ARGV[7] bus channel,
// ARGV[8] bus message, ARGV[9..11] bus log limits (entries, bytes, window ms), ARGV[12] the
// log entry's channel field.
// Publishes (behind its bus log entry id); when no node heard it, queues it in the same script
// and takes the entry back, otherwise keeps it in the bus log (another node holding the user may
// be resubscribing). Returns {receivers, dropped or -1}.
const PUBLISH_OR_ENQUEUE = `${ENQUEUE_FUNCTION}${BUS_LOG_LUA}
local entry = bus_log_add(KEYS[4], ARGV[8], ARGV[12])
local receivers = redis.call('PUBLISH', ARGV[7], entry .. '\\n' .. ARGV[8])
if receivers > 0 then
  bus_log_trim(KEYS[4], KEYS[5], tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]), #ARGV[8] + #ARGV[12])
  return {receivers, -1}
end
redis.call('XDEL', KEYS[4], entry)
return {0, enqueue()}
`;

// Trigger messages reach every node (SPEC §8). KEYS[4] dedupe key. ARGV[7] the user's
// bus channel, ARGV[8] dedupe lifetime ms. Queues only when no node listens for the
// user and no other node queued this notification for them. Returns dropped, -1 (online) or -2 (done elsewhere).
const ENQUEUE_IF_OFFLINE = `${ENQUEUE_FUNCTION}
if redis.call('PUBSUB', 'NUMSUB', ARGV[7])[2] > 0 then return -1 end
if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[8]) then return -2 end
return enqueue()
`;

/**
 * How long a queue key outlives its longest-lived entry: expired entries
 * stay for purgeExpired to count, and a queue nobody drains or purges
 * (no node running) still vanishes by itself.
 */
export const KEY_GRACE_MS = 86_400_000;

/** SCAN steps per purge call; a longer walk resumes on the next call. */
const PURGE_SCAN_STEPS = 200;

export class RedisQueue implements OfflineQueue {
  readonly backend = 'redis' as const;
  readonly #redis: RedisConnection;
  readonly #enqueue: RedisScript;
  readonly #peek: RedisScript;
  readonly #remove: RedisScript;
  readonly #publishOrEnqueue: RedisScript;
  readonly #enqueueIfOffline: RedisScript;
  #purgeCursor = '0';

  constructor(redis: RedisConnection) {
    this.#redis = redis;
    this.#enqueue = redis.defineScript('araQueueEnqueue', 3, ENQUEUE);
    this.#peek = redis.defineScript('araQueuePeek', 1, PEEK);
    this.#remove = redis.defineScript('araQueueRemove', 2, REMOVE);
    this.#publishOrEnqueue = redis.defineScript('araQueuePublishOrEnqueue', 5, PUBLISH_OR_ENQUEUE);
    this.#enqueueIfOffline = redis.defineScript('araQueueEnqueueIfOffline', 4, ENQUEUE_IF_OFFLINE);
  }

  /**
   * Cluster delivery to a user with no connection on this node: publishes
   * on the user's bus channel and, when no node is listening, queues the
   * entry in the same script — so a user connecting at that instant either
   * hears it live (their node subscribed first) or finds it queued. Heard
   * by some node, it also goes to the bus log, for the user's other nodes.
   */
  async publishOrEnqueue(
    tenantId: string,
    userId: string,
    entry: StoredNotification,
    maxSize: number,
    bus: { channel: string; message: string; log: BusLogLimits },
  ): Promise<{ receivers: number; queued: boolean; dropped: number }> {
    const [receivers, dropped] = (await this.#publishOrEnqueue.run([...this.#enqueueKeys(tenantId, userId), bus.log.key, bus.log.bytesKey], [
      ...this.#enqueueArgs(entry, maxSize),
      bus.channel,
      bus.message,
      ...busLogLimitArgs(bus.log),
      busLogChannels([bus.channel]),
    ])) as [number, number];
    return { receivers: Number(receivers), queued: dropped >= 0, dropped: Math.max(0, Number(dropped)) };
  }

  /**
   * For trigger messages, which every node receives: queues only when no
   * node listens on the user's bus channel and no other node queued the
   * same message (`dedupe.name`) for the user within `dedupe.ttlMs`.
   */
  async enqueueIfOffline(
    tenantId: string,
    userId: string,
    entry: StoredNotification,
    maxSize: number,
    busChannel: string,
    dedupe: { name: string; ttlMs: number },
  ): Promise<{ queued: boolean; dropped: number }> {
    const dedupeKey = this.#redis.key('queue-once', tenantId, `${dedupe.name}:${userId}`);
    const result = Number(
      await this.#enqueueIfOffline.run([...this.#enqueueKeys(tenantId, userId), dedupeKey], [
        ...this.#enqueueArgs(entry, maxSize),
        busChannel,
        dedupe.ttlMs,
      ]),
    );
    return { queued: result >= 0, dropped: Math.max(0, result) };
  }

  #enqueueKeys(tenantId: string, userId: string): string[] {
    return [this.#queueKey(tenantId, userId), this.#expiryKey(tenantId, userId), this.#redis.key('queue-seq', tenantId)];
  }

  #enqueueArgs(entry: StoredNotification, maxSize: number): (string | number)[] {
    return [entry.expiresAtMs, entry.lane, escapeField(entry.id), entry.json, Math.max(0, Math.floor(maxSize)), KEY_GRACE_MS];
  }

  async enqueue(tenantId: string, userId: string, entry: StoredNotification, maxSize: number) {
    const dropped = await this.#enqueue.run(this.#enqueueKeys(tenantId, userId), this.#enqueueArgs(entry, maxSize));
    return { dropped: Number(dropped) };
  }

  async peek(tenantId: string, userId: string, nowMs: number, limit: number) {
    if (limit <= 0) return [];
    const members = (await this.#peek.run([this.#queueKey(tenantId, userId)], [nowMs, Math.floor(limit)])) as string[];
    return members.map(decodeEntry);
  }

  async remove(tenantId: string, userId: string, uptoSeq: number) {
    const keys = [this.#queueKey(tenantId, userId), this.#expiryKey(tenantId, userId)];
    return Number(await this.#remove.run(keys, [uptoSeq, Date.now()]));
  }

  async purgeExpired(nowMs: number) {
    const expiryPrefix = `${this.#redis.keyPrefix}:queue-exp:`;
    const queuePrefix = `${this.#redis.keyPrefix}:queue:`;
    let removed = 0;
    this.#purgeCursor = await this.#redis.scan(
      `${globEscape(expiryPrefix)}*`,
      async (expiryKeys) => {
        const pipeline = this.#redis.client.pipeline();
        for (const expiryKey of expiryKeys) {
          const queueKey = queuePrefix + expiryKey.slice(expiryPrefix.length);
          this.#remove.queue(pipeline, [queueKey, expiryKey], [0, nowMs]);
        }
        for (const count of pipelineResults(await pipeline.exec())) removed += Number(count);
      },
      { cursor: this.#purgeCursor, maxSteps: PURGE_SCAN_STEPS },
    );
    return removed;
  }

  /** Walks the tenant's (or every) queue key: see the cost note above. */
  async stats(tenantId: string | null) {
    const base = `${this.#redis.keyPrefix}:queue:`;
    const pattern = globEscape(tenantId === null ? base : `${base}${keySegment(tenantId)}:`) + '*';
    const seen = new Set<string>();
    let messages = 0;
    await this.#redis.scan(pattern, async (keys) => {
      const fresh = keys.filter((key) => !seen.has(key));
      if (fresh.length === 0) return;
      const pipeline = this.#redis.client.pipeline();
      for (const key of fresh) {
        seen.add(key);
        pipeline.zcard(key);
      }
      for (const count of pipelineResults(await pipeline.exec())) messages += Number(count);
    });
    return { messages, users: seen.size };
  }

  /** The connection is shared and closed by the store set. */
  async close() {}

  #queueKey(tenantId: string, userId: string): string {
    return this.#redis.key('queue', tenantId, userId);
  }

  #expiryKey(tenantId: string, userId: string): string {
    return this.#redis.key('queue-exp', tenantId, userId);
  }
}

// ---------------------------------------------------------------------------
// Entry encoding, shared with the Redis history: `seq|expiresAtMs|lane|id|json`.
// The id is escaped (escapeField) so it never holds `|`; the json comes last
// and may hold anything. Lua reads the fields it needs with one string.match.

export function decodeEntry(member: string): SequencedNotification {
  const a = member.indexOf('|');
  const b = member.indexOf('|', a + 1);
  const c = member.indexOf('|', b + 1);
  const d = member.indexOf('|', c + 1);
  if (a < 0 || b < 0 || c < 0 || d < 0) throw new Error('malformed stored notification in Redis');
  const id = member.slice(c + 1, d);
  return {
    seq: Number(member.slice(0, a)),
    expiresAtMs: Number(member.slice(a + 1, b)),
    lane: Number(member.slice(b + 1, c)),
    id: unescapeField(id),
    json: member.slice(d + 1),
  };
}
