/**
 * Resume history in PostgreSQL: durable and shared by every node on the
 * same database, so a client resumes whichever node it reconnects to. See
 * HistoryStore for the contract and postgres/migrations.ts for the table.
 *
 * Order is the send order the node gave each notification (StoredNotification
 * .order, column send_order, migration 2), not the order the appends reached
 * the server: concurrent appends run on different pool connections, and a
 * resume must follow the order the notifications went out live. One
 * sequence still numbers every append, whatever its scopes, as the
 * tie-break: merging a user's history with its channels' is an ORDER BY
 * (send_order, seq), and a notification kept in two scopes has the same
 * pair in both, so DISTINCT ON keeps it once. The `seq` returned is the
 * send order.
 */
import type { HistoryScope, HistoryStore, SequencedNotification, StoredNotification } from '../types.js';
import { fromSqlKey, sqlKey, type PostgresConnection } from '../postgres/postgres-connection.js';

interface HistoryRow {
  mark: string | null;
  seq: string | null;
  notification_id: string | null;
  body: string | null;
  lane: number | null;
  expires_at: Date | null;
}

/** Scopes as two parallel arrays, deduplicated and sorted so concurrent trims lock rows in one order. */
function scopeArrays(scopes: readonly HistoryScope[]): { kinds: string[]; ids: string[] } {
  const keyed = new Map<string, [string, string]>();
  for (const scope of scopes) {
    const kind = scope.kind === 'user' ? 'u' : 'c';
    const id = sqlKey(scope.id);
    keyed.set(`${kind}${id}`, [kind, id]);
  }
  const sorted = [...keyed.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, pair]) => pair);
  return { kinds: sorted.map(([kind]) => kind), ids: sorted.map(([, id]) => id) };
}

export class PostgresHistory implements HistoryStore {
  readonly #db: PostgresConnection;

  constructor(db: PostgresConnection) {
    this.#db = db;
  }

  async append(
    tenantId: string,
    scopes: readonly HistoryScope[],
    entry: StoredNotification,
    maxSizes: { user: number; channel: number },
  ) {
    const { kinds, ids } = scopeArrays(scopes);
    if (kinds.length === 0) return;
    const keep = kinds.map((kind) => Math.max(0, kind === 'u' ? maxSizes.user : maxSizes.channel));
    // One call (ara_history_push): the new rows and the trim commit together.
    await this.#db.query('SELECT ara_history_push($1, $2, $3, $4, $5, $6, $7, $8, $9)', [
      sqlKey(tenantId),
      kinds,
      ids,
      keep,
      sqlKey(entry.id),
      entry.json,
      entry.lane,
      new Date(entry.expiresAtMs),
      entry.order,
    ]);
  }

  /**
   * One statement, so the mark and the entries after it come from one
   * snapshot. The mark is looked up in expired rows too: an id still held
   * is found even if its own entry may no longer be delivered.
   */
  async since(tenantId: string, scopes: readonly HistoryScope[], sinceId: string, nowMs: number) {
    const { kinds, ids } = scopeArrays(scopes);
    const { rows } = await this.#db.query<HistoryRow>(
      `WITH scopes AS (
         SELECT kind::char(1) AS kind, id FROM unnest($2::text[], $3::text[]) AS s(kind, id)),
       held AS (
         SELECT h.* FROM scopes s CROSS JOIN LATERAL (
           SELECT send_order, seq, notification_id, body, lane, expires_at FROM ara_history
            WHERE tenant_id = $1 AND scope_kind = s.kind AND scope_id = s.id) AS h),
       mark AS (
         SELECT found.send_order, found.seq FROM (VALUES (1)) AS one(x) LEFT JOIN LATERAL (
           SELECT send_order, seq FROM held WHERE notification_id = $4
            ORDER BY send_order DESC, seq DESC LIMIT 1) AS found ON true)
       SELECT mark.send_order AS mark, after.send_order AS seq, after.notification_id, after.body,
              after.lane, after.expires_at
         FROM mark LEFT JOIN LATERAL (
           SELECT DISTINCT ON (send_order, seq) * FROM held
            WHERE (mark.send_order IS NULL OR (send_order, seq) > (mark.send_order, mark.seq))
              AND expires_at > $5
            ORDER BY send_order, seq) AS after ON true
        ORDER BY after.send_order, after.seq`,
      [sqlKey(tenantId), kinds, ids, sqlKey(sinceId), new Date(nowMs)],
    );
    const found = rows[0]?.mark !== null && rows[0]?.mark !== undefined;
    const entries: SequencedNotification[] = [];
    for (const row of rows) {
      if (row.seq === null) continue;
      entries.push({
        seq: Number(row.seq),
        id: fromSqlKey(row.notification_id!),
        json: row.body!,
        lane: row.lane!,
        expiresAtMs: row.expires_at!.getTime(),
      });
    }
    return { found, entries };
  }

  async purgeExpired(nowMs: number) {
    const purged = await this.#db.query('DELETE FROM ara_history WHERE expires_at <= $1', [new Date(nowMs)]);
    return purged.rowCount ?? 0;
  }

  /** The pool belongs to the store set, which closes it after every store. */
  async close() {}
}
