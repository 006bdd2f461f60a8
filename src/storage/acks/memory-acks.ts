/**
 * The embedded ack tracker: lost on restart, single node. Records are kept
 * in deadline order (every record gets the same timeout), so expiry pops
 * from the front instead of scanning. See AckTracker for the contract.
 */
import type { AckStats, AckTracker, ExpiredAck } from '../types.js';

interface PendingAck extends ExpiredAck {
  sentAtMs: number;
  deadlineMs: number;
  settled: boolean;
}

function emptyStats(): Omit<AckStats, 'pendingCount'> {
  return { totalTracked: 0, totalAcked: 0, totalExpired: 0, totalLatencyMs: 0 };
}

export class MemoryAckTracker implements AckTracker {
  readonly backend = 'memory' as const;
  /** tenant → notification id → user id → record. */
  readonly #pending = new Map<string, Map<string, Map<string, PendingAck>>>();
  #byDeadline: PendingAck[] = [];
  #head = 0;
  readonly #stats = new Map<string, Omit<AckStats, 'pendingCount'>>();
  readonly #pendingCount = new Map<string, number>();

  async track(
    tenantId: string,
    userId: string,
    notification: { id: string; json: string | null; lane: number },
    sentAtMs: number,
    deadlineMs: number,
  ) {
    let byId = this.#pending.get(tenantId);
    if (!byId) this.#pending.set(tenantId, (byId = new Map()));
    let byUser = byId.get(notification.id);
    if (!byUser) byId.set(notification.id, (byUser = new Map()));
    if (byUser.has(userId)) return false;
    const record: PendingAck = {
      tenantId,
      userId,
      notificationId: notification.id,
      json: notification.json,
      lane: notification.lane,
      sentAtMs,
      deadlineMs,
      settled: false,
    };
    byUser.set(userId, record);
    this.#byDeadline.push(record);
    this.#statsOf(tenantId).totalTracked++;
    this.#pendingCount.set(tenantId, (this.#pendingCount.get(tenantId) ?? 0) + 1);
    return true;
  }

  async acknowledge(tenantId: string, userId: string, notificationId: string, nowMs: number) {
    const record = this.#pending.get(tenantId)?.get(notificationId)?.get(userId);
    if (!record || record.settled || nowMs > record.deadlineMs) return null;
    this.#settle(record);
    const latencyMs = Math.max(0, nowMs - record.sentAtMs);
    const stats = this.#statsOf(tenantId);
    stats.totalAcked++;
    stats.totalLatencyMs += latencyMs;
    return { latencyMs };
  }

  async expire(nowMs: number) {
    const expired: ExpiredAck[] = [];
    while (this.#head < this.#byDeadline.length) {
      const record = this.#byDeadline[this.#head]!;
      if (!record.settled && record.deadlineMs >= nowMs) break;
      this.#head++;
      if (record.settled) continue;
      this.#settle(record);
      this.#statsOf(record.tenantId).totalExpired++;
      const { tenantId, userId, notificationId, json, lane } = record;
      expired.push({ tenantId, userId, notificationId, json, lane });
    }
    if (this.#head > 1024 && this.#head * 2 > this.#byDeadline.length) {
      this.#byDeadline = this.#byDeadline.slice(this.#head);
      this.#head = 0;
    }
    return expired;
  }

  async stats(tenantId: string | null) {
    const total = { ...emptyStats(), pendingCount: 0 };
    for (const [id, stats] of this.#stats) {
      if (tenantId !== null && id !== tenantId) continue;
      total.totalTracked += stats.totalTracked;
      total.totalAcked += stats.totalAcked;
      total.totalExpired += stats.totalExpired;
      total.totalLatencyMs += stats.totalLatencyMs;
      total.pendingCount += this.#pendingCount.get(id) ?? 0;
    }
    return total;
  }

  async close() {}

  #settle(record: PendingAck): void {
    record.settled = true;
    const byId = this.#pending.get(record.tenantId);
    const byUser = byId?.get(record.notificationId);
    byUser?.delete(record.userId);
    if (byUser?.size === 0) byId!.delete(record.notificationId);
    if (byId?.size === 0) this.#pending.delete(record.tenantId);
    this.#pendingCount.set(record.tenantId, (this.#pendingCount.get(record.tenantId) ?? 1) - 1);
  }

  #statsOf(tenantId: string): Omit<AckStats, 'pendingCount'> {
    let stats = this.#stats.get(tenantId);
    if (!stats) this.#stats.set(tenantId, (stats = emptyStats()));
    return stats;
  }
}
