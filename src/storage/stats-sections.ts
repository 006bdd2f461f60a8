/**
 * The `queue` and `ack` sections of `/stats` and `/api/v1/stats/acks`
 * (SPEC §6.2), read from the stores for one tenant or all.
 */
import type { Config } from '../config/types.js';
import type { StoreSet } from './stores.js';

export async function queueSection(config: Config, stores: StoreSet, tenantId: string | null): Promise<object> {
  const base = { enabled: config.queue.enabled, backend: config.queue.backend };
  if (stores.queue === null) return { ...base, total_messages: 0, users_with_queue: 0 };
  const { messages, users } = await stores.queue.stats(tenantId);
  return { ...base, total_messages: messages, users_with_queue: users };
}

export async function ackSection(stores: StoreSet, tenantId: string | null): Promise<object> {
  const stats = stores.acks
    ? await stores.acks.stats(tenantId)
    : { totalTracked: 0, totalAcked: 0, totalExpired: 0, pendingCount: 0, totalLatencyMs: 0 };
  const settled = stats.totalAcked + stats.totalExpired;
  return {
    enabled: stores.acks !== null,
    total_tracked: stats.totalTracked,
    total_acked: stats.totalAcked,
    total_expired: stats.totalExpired,
    pending_count: stats.pendingCount,
    // Share of settled deliveries that were acked; 1 while nothing has settled.
    ack_rate: settled === 0 ? 1 : stats.totalAcked / settled,
    avg_latency_ms: stats.totalAcked === 0 ? 0 : Math.round(stats.totalLatencyMs / stats.totalAcked),
  };
}
