/**
 * The cluster bus log (docs/scaling.md "How a send travels"): a Redis
 * stream of recent bus messages, so a node whose pub/sub link dropped can
 * read what it missed. Appending happens inside the script that publishes,
 * so a reader that resubscribed either heard a message live or finds it in
 * the log.
 *
 * The log is bounded three ways, exactly, on every append: entries, bytes
 * (of messages and channel lists, kept in a counter beside the stream) and
 * age. Trimming
 * removes from the oldest end, one entry per step, each entry once: the
 * cost is O(1) per append on average.
 *
 * Entry fields: `m` the bus message; `c`, for messages whose target comes
 * from the channel they were published on (users), those bus channels as
 * a JSON array. The entry id is published with the message, so a reader
 * knows exactly which entries it received live (`compareEntryIds`).
 */

export interface BusLogLimits {
  /** The stream. */
  key: string;
  /** The byte counter beside it. */
  bytesKey: string;
  maxEntries: number;
  maxBytes: number;
  windowMs: number;
}

/**
 * Lua functions:
 * - `bus_log_add(logKey, message, channels)` appends an entry (`channels`
 *   the `c` field, or '' for none) and returns its id, which the caller
 *   puts in front of the message it publishes;
 * - `bus_log_trim(logKey, bytesKey, maxEntries, maxBytes, windowMs, added)`
 *   counts `added` bytes and trims from the oldest end.
 * Scripts add, publish, then trim (or take the entry back with XDEL).
 * An entry's size is the bytes of its message and channels (`#` counts bytes).
 */
export const BUS_LOG_LUA = `
local function bus_log_add(logKey, message, channels)
  if channels ~= '' then return redis.call('XADD', logKey, '*', 'm', message, 'c', channels) end
  return redis.call('XADD', logKey, '*', 'm', message)
end
local function bus_log_trim(logKey, bytesKey, maxEntries, maxBytes, windowMs, added)
  local bytes = tonumber(redis.call('INCRBY', bytesKey, added))
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - windowMs
  local count = redis.call('XLEN', logKey)
  while count > 0 do
    local first = redis.call('XRANGE', logKey, '-', '+', 'COUNT', 1)[1]
    local ms = tonumber(string.match(first[1], '^(%d+)'))
    if count <= maxEntries and bytes <= maxBytes and ms >= oldest then break end
    local fields = first[2]
    bytes = bytes - #fields[2] - (fields[4] and #fields[4] or 0)
    redis.call('XDEL', logKey, first[1])
    count = count - 1
  end
  if count == 0 then bytes = 0 end
  redis.call('SET', bytesKey, bytes)
end
`;

/** The `c` field of an entry: the bus channels its target comes from. */
export function busLogChannels(busChannels: readonly string[]): string {
  return JSON.stringify(busChannels);
}

/** The script arguments for the limits, in the order the scripts read them. */
export function busLogLimitArgs(limits: BusLogLimits): number[] {
  return [limits.maxEntries, limits.maxBytes, limits.windowMs];
}

/** Orders stream entry ids (`<ms>-<seq>`) as Redis does. */
export function compareEntryIds(a: string, b: string): number {
  const cutA = a.indexOf('-');
  const cutB = b.indexOf('-');
  const msA = Number(a.slice(0, cutA));
  const msB = Number(b.slice(0, cutB));
  if (msA !== msB) return msA < msB ? -1 : 1;
  const seqA = Number(a.slice(cutA + 1));
  const seqB = Number(b.slice(cutB + 1));
  return seqA === seqB ? 0 : seqA < seqB ? -1 : 1;
}
