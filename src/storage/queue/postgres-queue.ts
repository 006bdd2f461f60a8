/**
 * The offline queue in PostgreSQL: durable across restarts and shared by
 * every node on the same database. See OfflineQueue for the contract and
 * postgres/migrations.ts for the table.
 *
 * Order is the send order the node gave each entry (StoredNotification
 * .order, column send_order, migration 2), never the time or the order
 * the enqueues reached the server: concurrent enqueues run on different
 * pool connections and may commit in any order. The `seq` this store
 * returns is that send order, so `peek` lists by it and `remove(uptoSeq)`
 * deletes send_order ≤ uptoSeq. An enqueue (ara_queue_push) still holds a
 * per-(tenant, user) advisory lock, which keeps the cap exact.
 *
 * Why `remove` cannot delete an entry the peek did not see: that would
 * take an enqueue with a lower order committing after the peek. A node
 * assigns orders increasing and the Delivery waits for its own enqueues
 * in flight for the user before it peeks (Delivery #inflight); once the
 * user's connection is registered, new sends reach it live instead of the
 * queue, and the only later enqueues (ack redelivery) take fresh, higher
 * orders. Enqueues of another node would not be covered, but
 * QUEUE_BACKEND=postgres is refused in cluster mode (config.ts).
 */
import type { OfflineQueue, SequencedNotification, StoredNotification } from '../types.js';
import { fromSqlKey, sqlKey, toNumber, type PostgresConnection } from '../postgres/postgres-connection.js';

interface QueueRow {
  /** send_order (bigint, as text). */
  seq: string;
  notification_id: string;
  body: string;
  lane: number;
  expires_at: Date;
}

export class PostgresQueue implements OfflineQueue {
  readonly backend = 'postgres' as const;
  readonly #db: PostgresConnection;

  constructor(db: PostgresConnection) {
    this.#db = db;
  }

  /** Lock, insert and trim in one transaction (ara_queue_push): the cap holds whatever runs alongside. */
  async enqueue(tenantId: string, userId: string, entry: StoredNotification, maxSize: number) {
    const { rows } = await this.#db.query<{ dropped: string }>(
      'SELECT ara_queue_push($1, $2, $3, $4, $5, $6, $7, $8) AS dropped',
      [
        sqlKey(tenantId),
        sqlKey(userId),
        sqlKey(entry.id),
        entry.json,
        entry.lane,
        new Date(entry.expiresAtMs),
        maxSize,
        entry.order,
      ],
    );
    return { dropped: toNumber(rows[0]?.dropped) };
  }

  async peek(tenantId: string, userId: string, nowMs: number, limit: number) {
    const { rows } = await this.#db.query<QueueRow>(
      `SELECT send_order AS seq, notification_id, body, lane, expires_at FROM ara_queue
        WHERE tenant_id = $1 AND user_id = $2 AND expires_at > $3
        ORDER BY send_order, seq LIMIT $4`,
      [sqlKey(tenantId), sqlKey(userId), new Date(nowMs), Math.max(0, limit)],
    );
    return rows.map(toSequenced);
  }

  /** One statement: entries enqueued after the peek have a higher send order and stay (see above). */
  async remove(tenantId: string, userId: string, uptoSeq: number) {
    const removed = await this.#db.query(
      `DELETE FROM ara_queue
        WHERE tenant_id = $1 AND user_id = $2 AND (send_order <= $3 OR expires_at <= $4)`,
      [sqlKey(tenantId), sqlKey(userId), uptoSeq, new Date()],
    );
    return removed.rowCount ?? 0;
  }

  async purgeExpired(nowMs: number) {
    const purged = await this.#db.query('DELETE FROM ara_queue WHERE expires_at <= $1', [new Date(nowMs)]);
    return purged.rowCount ?? 0;
  }

  async stats(tenantId: string | null) {
    const { rows } = await (tenantId === null
      ? this.#db.query<{ messages: string; users: string }>(
          `SELECT count(*) AS messages,
                  count(DISTINCT (tenant_id, user_id)) AS users
             FROM ara_queue`,
        )
      : this.#db.query<{ messages: string; users: string }>(
          `SELECT count(*) AS messages, count(DISTINCT user_id) AS users
             FROM ara_queue WHERE tenant_id = $1`,
          [sqlKey(tenantId)],
        ));
    return { messages: toNumber(rows[0]?.messages), users: toNumber(rows[0]?.users) };
  }

  /** The pool belongs to the store set, which closes it after every store. */
  async close() {}
}

function toSequenced(row: QueueRow): SequencedNotification {
  return {
    seq: Number(row.seq),
    id: fromSqlKey(row.notification_id),
    json: row.body,
    lane: row.lane,
    expiresAtMs: row.expires_at.getTime(),
  };
}
