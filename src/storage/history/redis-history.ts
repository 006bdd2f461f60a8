/**
 * Resume history on Redis (SPEC §7 "beyond — resume", QUEUE_BACKEND=redis):
 * shared by every node and kept across restarts. See HistoryStore for the
 * contract.
 *
 * Keys (tenant its own segment; `u`/`c` keep user and channel scopes apart
 * whatever the id, which comes last):
 * - `<p>:history:<tenant>:u:<userId>` and `<p>:history:<tenant>:c:<channel>`
 *     ZSET score = seq, member = encoded entry (same encoding as the queue)
 * - `<p>:history-seq:<tenant>`  one INCR sequence for all of a tenant's
 *     scopes, so a merge of scopes follows send order
 * A scope key expires a day after its longest-lived entry (KEY_GRACE_MS).
 *
 * `append` is one Lua script (one seq, every scope, caps) and `since` one
 * read-only script that merges in Redis and returns only what follows.
 * Cost: append O(scopes · log n); since O(entries in the given scopes);
 * purgeExpired walks the history keys with SCAN (bounded per call,
 * resumed on the next) and reads each scope's entries.
 */
import type { HistoryScope, HistoryStore, StoredNotification } from '../types.js';
import { escapeField, globEscape, pipelineResults, type RedisConnection, type RedisScript } from '../redis/redis-connection.js';
import { decodeEntry, KEY_GRACE_MS } from '../queue/redis-queue.js';

// KEYS: seq counter, then each scope. ARGV: expiresAtMs, lane, encoded id, json, then each scope's cap.
const APPEND = `
local seq = tostring(redis.call('INCR', KEYS[1]))
local member = seq .. '|' .. ARGV[1] .. '|' .. ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4]
local at = math.ceil(tonumber(ARGV[1])) + ${KEY_GRACE_MS}
for i = 2, #KEYS do
  local key = KEYS[i]
  local existed = redis.call('EXISTS', key)
  redis.call('ZADD', key, seq, member)
  local extra = redis.call('ZCARD', key) - tonumber(ARGV[i + 3])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', key, 0, extra - 1) end
  if at >= 1e15 then
    redis.call('PERSIST', key)
  else
    -- the key outlives its longest-lived entry (-1: kept forever by an earlier entry)
    local current = redis.call('PEXPIRETIME', key)
    if existed == 0 or (current >= 0 and current < at) then redis.call('PEXPIREAT', key, at) end
  end
end
return seq
`;

// KEYS: the scopes. ARGV: encoded since id, nowMs.
// Returns {found (1/0), members after the since entry (or all), unexpired, each id once, by seq}.
const SINCE = `
local now = tonumber(ARGV[2])
local scopes = {}
local after = nil
for i = 1, #KEYS do
  scopes[i] = redis.call('ZRANGE', KEYS[i], 0, -1)
  if after == nil then
    for _, member in ipairs(scopes[i]) do
      local seq, id = string.match(member, '^(%d+)|[^|]*|[^|]*|([^|]*)|')
      if id == ARGV[1] then
        after = tonumber(seq)
        break
      end
    end
  end
end
local found = 1
if after == nil then
  found = 0
  after = -1
end
local byId = {}
local picked = {}
for i = 1, #KEYS do
  for _, member in ipairs(scopes[i]) do
    local seq, expires, id = string.match(member, '^(%d+)|([^|]*)|[^|]*|([^|]*)|')
    seq = tonumber(seq)
    if seq > after and tonumber(expires) > now then
      local known = byId[id]
      if known == nil then
        byId[id] = #picked + 1
        picked[#picked + 1] = { seq, member }
      elseif picked[known][1] < seq then
        picked[known] = { seq, member }
      end
    end
  end
end
table.sort(picked, function(a, b) return a[1] < b[1] end)
local out = { found }
for i = 1, #picked do out[i + 1] = picked[i][2] end
return out
`;

// KEYS: one scope. ARGV: nowMs. Deletes the scope's expired entries; returns how many.
const PURGE = `
local now = tonumber(ARGV[1])
local removed = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if tonumber(string.match(member, '^[^|]*|([^|]*)|')) <= now then
    removed = removed + redis.call('ZREM', KEYS[1], member)
  end
end
return removed
`;

const PURGE_SCAN_STEPS = 200;

export class RedisHistory implements HistoryStore {
  readonly #redis: RedisConnection;
  readonly #append: RedisScript;
  readonly #since: RedisScript;
  readonly #purge: RedisScript;
  #purgeCursor = '0';

  constructor(redis: RedisConnection) {
    this.#redis = redis;
    this.#append = redis.defineScript('araHistoryAppend', null, APPEND);
    this.#since = redis.defineScript('araHistorySince', null, SINCE);
    this.#purge = redis.defineScript('araHistoryPurge', 1, PURGE);
  }

  async append(
    tenantId: string,
    scopes: readonly HistoryScope[],
    entry: StoredNotification,
    maxSizes: { user: number; channel: number },
  ) {
    if (scopes.length === 0) return;
    const keys = [this.#redis.key('history-seq', tenantId), ...scopes.map((scope) => this.#scopeKey(tenantId, scope))];
    const caps = scopes.map((scope) => Math.max(0, Math.floor(scope.kind === 'user' ? maxSizes.user : maxSizes.channel)));
    await this.#append.run(keys, [entry.expiresAtMs, entry.lane, escapeField(entry.id), entry.json, ...caps]);
  }

  async since(tenantId: string, scopes: readonly HistoryScope[], sinceId: string, nowMs: number) {
    if (scopes.length === 0) return { found: false, entries: [] };
    const keys = scopes.map((scope) => this.#scopeKey(tenantId, scope));
    const [found, ...members] = (await this.#since.run(keys, [escapeField(sinceId), nowMs])) as [number, ...string[]];
    return { found: found === 1, entries: members.map(decodeEntry) };
  }

  async purgeExpired(nowMs: number) {
    let removed = 0;
    this.#purgeCursor = await this.#redis.scan(
      `${globEscape(`${this.#redis.keyPrefix}:history:`)}*`,
      async (keys) => {
        const pipeline = this.#redis.client.pipeline();
        for (const key of keys) this.#purge.queue(pipeline, [key], [nowMs]);
        for (const count of pipelineResults(await pipeline.exec())) removed += Number(count);
      },
      { cursor: this.#purgeCursor, maxSteps: PURGE_SCAN_STEPS },
    );
    return removed;
  }

  /** The connection is shared and closed by the store set. */
  async close() {}

  #scopeKey(tenantId: string, scope: HistoryScope): string {
    return this.#redis.key('history', tenantId, scope.kind === 'user' ? 'u' : 'c', scope.id);
  }
}
