/**
 * Notification counters (SPEC §6.2 `/stats`, tenants): one set for the
 * node and one per tenant, kept by the dispatcher. Live connection figures
 * come from the hub instead.
 */
export interface NotificationCounters {
  totalSent: number;
  totalDelivered: number;
  totalFailed: number;
  totalQueued: number;
  userNotifications: number;
  broadcastNotifications: number;
  channelNotifications: number;
}

export function emptyCounters(): NotificationCounters {
  return {
    totalSent: 0,
    totalDelivered: 0,
    totalFailed: 0,
    totalQueued: 0,
    userNotifications: 0,
    broadcastNotifications: 0,
    channelNotifications: 0,
  };
}

export class NotificationStats {
  readonly node = emptyCounters();
  readonly #byTenant = new Map<string, NotificationCounters>();

  /** The tenant's counters, created on first use. */
  forTenant(tenantId: string): NotificationCounters {
    let counters = this.#byTenant.get(tenantId);
    if (!counters) this.#byTenant.set(tenantId, (counters = emptyCounters()));
    return counters;
  }

  peekTenant(tenantId: string): NotificationCounters | undefined {
    return this.#byTenant.get(tenantId);
  }

  tenantIds(): IterableIterator<string> {
    return this.#byTenant.keys();
  }
}
