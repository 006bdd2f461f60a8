/**
 * The embedded offline queue: lost on restart, single node only (a user
 * online on another node is unknown here). See OfflineQueue for the contract.
 */
import type { OfflineQueue, SequencedNotification, StoredNotification } from '../types.js';

export class MemoryQueue implements OfflineQueue {
  readonly backend = 'memory' as const;
  readonly #queues = new Map<string, Map<string, SequencedNotification[]>>();
  #seq = 0;

  async enqueue(tenantId: string, userId: string, entry: StoredNotification, maxSize: number) {
    let users = this.#queues.get(tenantId);
    if (!users) this.#queues.set(tenantId, (users = new Map()));
    let queue = users.get(userId);
    if (!queue) users.set(userId, (queue = []));
    queue.push({ ...entry, seq: ++this.#seq });
    const dropped = Math.max(0, queue.length - maxSize);
    if (dropped > 0) queue.splice(0, dropped);
    return { dropped };
  }

  async peek(tenantId: string, userId: string, nowMs: number, limit: number) {
    const queue = this.#queues.get(tenantId)?.get(userId) ?? [];
    const unexpired: SequencedNotification[] = [];
    for (const entry of queue) {
      if (unexpired.length === limit) break;
      if (entry.expiresAtMs > nowMs) unexpired.push(entry);
    }
    return unexpired;
  }

  async remove(tenantId: string, userId: string, uptoSeq: number) {
    const users = this.#queues.get(tenantId);
    const queue = users?.get(userId);
    if (!users || !queue) return 0;
    const now = Date.now();
    const kept = queue.filter((entry) => entry.seq > uptoSeq && entry.expiresAtMs > now);
    if (kept.length === 0) this.#forget(tenantId, userId);
    else users.set(userId, kept);
    return queue.length - kept.length;
  }

  async purgeExpired(nowMs: number) {
    let removed = 0;
    for (const [tenantId, users] of this.#queues) {
      for (const [userId, queue] of users) {
        const kept = queue.filter((entry) => entry.expiresAtMs > nowMs);
        removed += queue.length - kept.length;
        if (kept.length === 0) this.#forget(tenantId, userId);
        else if (kept.length !== queue.length) users.set(userId, kept);
      }
    }
    return removed;
  }

  async stats(tenantId: string | null) {
    let messages = 0;
    let users = 0;
    for (const [id, queues] of this.#queues) {
      if (tenantId !== null && id !== tenantId) continue;
      users += queues.size;
      for (const queue of queues.values()) messages += queue.length;
    }
    return { messages, users };
  }

  async close() {}

  #forget(tenantId: string, userId: string): void {
    const users = this.#queues.get(tenantId);
    users?.delete(userId);
    if (users?.size === 0) this.#queues.delete(tenantId);
  }
}
