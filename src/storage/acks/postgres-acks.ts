/**
 * Acknowledgements in PostgreSQL: pending records survive a restart and
 * any node may take the ack. See AckTracker for the contract and
 * postgres/migrations.ts for the tables.
 *
 * Settling a record is deleting its row, and each counter changes in the
 * same statement as that delete: when two nodes ack or expire the same
 * record at once, one delete wins, and only the winner counts it.
 */
import { randomInt } from 'node:crypto';
import type { AckStats, AckTracker, ExpiredAck } from '../types.js';
import { fromSqlKey, sqlKey, toNumber, type PostgresConnection } from '../postgres/postgres-connection.js';

/** Counter rows per tenant (see ara_ack_stats). */
const STAT_SHARDS = 8;
/** Records settled by one expiry statement; `expire` repeats until done. */
const EXPIRE_BATCH = 5_000;

interface ExpiredRow {
  tenant_id: string;
  user_id: string;
  notification_id: string;
  body: string | null;
  lane: number;
}

interface StatsRow {
  acked: string | null;
  expired: string | null;
  latency: string | null;
  pending: string | null;
}

export class PostgresAckTracker implements AckTracker {
  readonly backend = 'postgres' as const;
  readonly #db: PostgresConnection;

  constructor(db: PostgresConnection) {
    this.#db = db;
  }

  async track(
    tenantId: string,
    userId: string,
    notification: { id: string; json: string | null; lane: number },
    sentAtMs: number,
    deadlineMs: number,
  ) {
    // ON CONFLICT DO NOTHING: rowCount is 1 only when this call added the record.
    const inserted = await this.#db.query(
      `INSERT INTO ara_acks (tenant_id, notification_id, user_id, sent_at, deadline, body, lane)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT DO NOTHING`,
      [
        sqlKey(tenantId),
        sqlKey(notification.id),
        sqlKey(userId),
        new Date(sentAtMs),
        new Date(deadlineMs),
        notification.json,
        notification.lane,
      ],
    );
    return inserted.rowCount === 1;
  }

  async acknowledge(tenantId: string, userId: string, notificationId: string, nowMs: number) {
    const { rows } = await this.#db.query<{ latency: string }>(
      `WITH settled AS (
         DELETE FROM ara_acks
          WHERE tenant_id = $1 AND notification_id = $2 AND user_id = $3 AND deadline >= $4
          RETURNING greatest(0, round(extract(epoch FROM $4::timestamptz - sent_at) * 1000))::bigint
                    AS latency),
       counted AS (
         INSERT INTO ara_ack_stats (tenant_id, shard, acked, latency_ms_total)
         SELECT $1, $5, 1, latency FROM settled
         ON CONFLICT (tenant_id, shard) DO UPDATE
           SET acked = ara_ack_stats.acked + 1,
               latency_ms_total = ara_ack_stats.latency_ms_total + EXCLUDED.latency_ms_total)
       SELECT latency FROM settled`,
      [sqlKey(tenantId), sqlKey(notificationId), sqlKey(userId), new Date(nowMs), randomInt(STAT_SHARDS)],
    );
    return rows[0] ? { latencyMs: toNumber(rows[0].latency) } : null;
  }

  /**
   * In deadline order. Rows another node is settling right now are skipped
   * (SKIP LOCKED): that node counts them, and expiry never waits behind it.
   */
  async expire(nowMs: number) {
    const expired: ExpiredAck[] = [];
    for (;;) {
      const { rows } = await this.#db.query<ExpiredRow>(
        `WITH due AS (
           SELECT tenant_id, notification_id, user_id FROM ara_acks
            WHERE deadline < $1
            ORDER BY deadline, seq LIMIT $2
            FOR UPDATE SKIP LOCKED),
         settled AS (
           DELETE FROM ara_acks a USING due
            WHERE a.tenant_id = due.tenant_id AND a.notification_id = due.notification_id
              AND a.user_id = due.user_id
            RETURNING a.tenant_id, a.user_id, a.notification_id, a.body, a.lane, a.deadline, a.seq),
         counted AS (
           INSERT INTO ara_ack_stats (tenant_id, shard, expired)
           SELECT tenant_id, $3, count(*) FROM settled GROUP BY tenant_id ORDER BY tenant_id
           ON CONFLICT (tenant_id, shard) DO UPDATE SET expired = ara_ack_stats.expired + EXCLUDED.expired)
         SELECT tenant_id, user_id, notification_id, body, lane FROM settled
          ORDER BY deadline, seq`,
        [new Date(nowMs), EXPIRE_BATCH, randomInt(STAT_SHARDS)],
      );
      for (const row of rows) {
        expired.push({
          tenantId: fromSqlKey(row.tenant_id),
          userId: fromSqlKey(row.user_id),
          notificationId: fromSqlKey(row.notification_id),
          json: row.body,
          lane: row.lane,
        });
      }
      if (rows.length < EXPIRE_BATCH) return expired;
    }
  }

  async stats(tenantId: string | null): Promise<AckStats> {
    const tenant = tenantId === null ? null : sqlKey(tenantId);
    const { rows } = await this.#db.query<StatsRow>(
      `SELECT s.acked, s.expired, s.latency,
              (SELECT count(*) FROM ara_acks WHERE $1::text IS NULL OR tenant_id = $1) AS pending
         FROM (SELECT sum(acked) AS acked, sum(expired) AS expired, sum(latency_ms_total) AS latency
                 FROM ara_ack_stats WHERE $1::text IS NULL OR tenant_id = $1) AS s`,
      [tenant],
    );
    const row = rows[0];
    const totalAcked = toNumber(row?.acked);
    const totalExpired = toNumber(row?.expired);
    const pendingCount = toNumber(row?.pending);
    return {
      // Every tracked record is pending, acked or expired.
      totalTracked: pendingCount + totalAcked + totalExpired,
      totalAcked,
      totalExpired,
      pendingCount,
      totalLatencyMs: toNumber(row?.latency),
    };
  }

  /** The pool belongs to the store set, which closes it after every store. */
  async close() {}
}
