/**
 * The embedded resume history: lost on restart, this node's sends only.
 * See HistoryStore for the contract.
 */
import type { HistoryScope, HistoryStore, SequencedNotification, StoredNotification } from '../types.js';

/** `u:` and `c:` keep user and channel scopes apart whatever the ids hold. */
function scopeKey(scope: HistoryScope): string {
  return `${scope.kind === 'user' ? 'u' : 'c'}:${scope.id}`;
}

export class MemoryHistory implements HistoryStore {
  readonly #scopes = new Map<string, Map<string, SequencedNotification[]>>();
  #seq = 0;

  async append(
    tenantId: string,
    scopes: readonly HistoryScope[],
    entry: StoredNotification,
    maxSizes: { user: number; channel: number },
  ) {
    let tenant = this.#scopes.get(tenantId);
    if (!tenant) this.#scopes.set(tenantId, (tenant = new Map()));
    const sequenced = { ...entry, seq: ++this.#seq };
    for (const scope of scopes) {
      const key = scopeKey(scope);
      let entries = tenant.get(key);
      if (!entries) tenant.set(key, (entries = []));
      entries.push(sequenced);
      const max = scope.kind === 'user' ? maxSizes.user : maxSizes.channel;
      if (entries.length > max) entries.splice(0, entries.length - max);
    }
  }

  async since(tenantId: string, scopes: readonly HistoryScope[], sinceId: string, nowMs: number) {
    const tenant = this.#scopes.get(tenantId);
    const byId = new Map<string, SequencedNotification>();
    let sinceSeq: number | null = null;
    for (const scope of scopes) {
      for (const entry of tenant?.get(scopeKey(scope)) ?? []) {
        if (entry.id === sinceId) sinceSeq = entry.seq;
        byId.set(entry.id, entry);
      }
    }
    const after = sinceSeq ?? -Infinity;
    const entries = [...byId.values()]
      .filter((entry) => entry.seq > after && entry.expiresAtMs > nowMs)
      .sort((a, b) => a.seq - b.seq);
    return { found: sinceSeq !== null, entries };
  }

  async purgeExpired(nowMs: number) {
    let removed = 0;
    for (const [tenantId, tenant] of this.#scopes) {
      for (const [key, entries] of tenant) {
        const kept = entries.filter((entry) => entry.expiresAtMs > nowMs);
        removed += entries.length - kept.length;
        if (kept.length === 0) tenant.delete(key);
        else if (kept.length !== entries.length) tenant.set(key, kept);
      }
      if (tenant.size === 0) this.#scopes.delete(tenantId);
    }
    return removed;
  }

  async close() {}
}
