/**
 * The cluster bus log (docs/scaling.md "How a send travels"): a Redis
 * stream of recent bus messages, so a node whose pub/sub link dropped can
 * read what it missed. Appending happens inside the script that publishes,
 * so a reader that resubscribed either heard a message live or finds it in
 * the log.
 *
 * The log is bounded three ways, exactly, on every append: entries, bytes
 * (of messages, kept in a counter beside the stream) and age. Trimming
 * removes from the oldest end, one entry per step, each entry once: the
 * cost is O(1) per append on average.
 *
 * Entry fields: `m` the bus message; `c`, for messages whose target comes
 * from the channel they were published on (users), those bus channels as
 * a JSON array.
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
 * Lua: `bus_log_append(logKey, bytesKey, maxEntries, maxBytes, windowMs,
 * message, channels)`; `channels` the `c` field, or '' for none. `#message`
 * is its length in bytes.
 */
export const BUS_LOG_LUA = `
local function bus_log_append(logKey, bytesKey, maxEntries, maxBytes, windowMs, message, channels)
  if channels ~= '' then
    redis.call('XADD', logKey, '*', 'm', message, 'c', channels)
  else
    redis.call('XADD', logKey, '*', 'm', message)
  end
  local bytes = tonumber(redis.call('INCRBY', bytesKey, #message))
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - windowMs
  local count = redis.call('XLEN', logKey)
  while count > 0 do
    local first = redis.call('XRANGE', logKey, '-', '+', 'COUNT', 1)[1]
    local ms = tonumber(string.match(first[1], '^(%d+)'))
    if count <= maxEntries and bytes <= maxBytes and ms >= oldest then break end
    bytes = bytes - #first[2][2]
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
