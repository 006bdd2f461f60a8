/**
 * The PostgreSQL schema, as numbered migrations applied in order at start
 * (PostgresConnection.start). A migration, once released, is never edited:
 * a change is a new, higher number.
 *
 * Tables live in the connection's current schema (the first existing one
 * on its search_path). Every row carries the tenant in its own column;
 * key columns are `COLLATE "C"` so comparisons and ordering are by bytes,
 * as in the memory stores, whatever the database's locale. Key values are
 * written through `sqlKey` (postgres-connection.ts), which keeps ids with
 * NUL or unpaired surrogates distinct.
 */

export interface Migration {
  version: number;
  /** Plain SQL, several statements allowed, no parameters. */
  sql: string;
}

const INITIAL_SCHEMA = `
-- Offline queue (OfflineQueue): one row per queued message, oldest first by
-- seq. seq is assigned while the per-user lock of the enqueue is held, so
-- within a queue seq order is commit order and a peek always sees a prefix.
CREATE TABLE ara_queue (
  seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id       text COLLATE "C" NOT NULL,
  user_id         text COLLATE "C" NOT NULL,
  notification_id text COLLATE "C" NOT NULL,
  body            text NOT NULL,
  lane            smallint NOT NULL,
  expires_at      timestamptz NOT NULL
);
CREATE INDEX ara_queue_user_idx ON ara_queue (tenant_id, user_id, seq);
CREATE INDEX ara_queue_expiry_idx ON ara_queue (expires_at);

-- Enqueue as one call (one round trip, one transaction): take the queue's
-- lock, append, drop the oldest beyond p_max; returns how many were dropped.
-- Each statement of a function sees what committed before it started, so
-- the trim counts rows that other enqueues committed while we waited.
CREATE FUNCTION ara_queue_push(p_tenant text, p_user text, p_id text, p_body text,
                               p_lane smallint, p_expires timestamptz, p_max integer)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
  dropped bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_user, hashtext(p_tenant)));
  INSERT INTO ara_queue (tenant_id, user_id, notification_id, body, lane, expires_at)
  VALUES (p_tenant, p_user, p_id, p_body, p_lane, p_expires);
  DELETE FROM ara_queue
   WHERE tenant_id = p_tenant AND user_id = p_user
     AND seq <= (SELECT seq FROM ara_queue WHERE tenant_id = p_tenant AND user_id = p_user
                  ORDER BY seq DESC OFFSET greatest(p_max, 0) LIMIT 1);
  GET DIAGNOSTICS dropped = ROW_COUNT;
  RETURN dropped;
END
$fn$;

-- Resume history (HistoryStore): one row per (scope, notification). One
-- sequence for every scope, so a merge of several scopes follows send order
-- and a notification kept in two scopes has the same seq in both.
CREATE SEQUENCE ara_history_seq AS bigint;
CREATE TABLE ara_history (
  tenant_id       text COLLATE "C" NOT NULL,
  scope_kind      char(1) NOT NULL CHECK (scope_kind IN ('u', 'c')),
  scope_id        text COLLATE "C" NOT NULL,
  seq             bigint NOT NULL,
  notification_id text COLLATE "C" NOT NULL,
  body            text NOT NULL,
  lane            smallint NOT NULL,
  expires_at      timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, scope_kind, scope_id, seq)
);
CREATE INDEX ara_history_expiry_idx ON ara_history (expires_at);

-- Append as one call: one seq for every scope, then per scope drop the rows
-- beyond its cap (p_keep, parallel to p_kinds/p_ids).
CREATE FUNCTION ara_history_push(p_tenant text, p_kinds text[], p_ids text[], p_keep integer[],
                                 p_id text, p_body text, p_lane smallint, p_expires timestamptz)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  next_seq bigint := nextval('ara_history_seq');
BEGIN
  INSERT INTO ara_history (tenant_id, scope_kind, scope_id, seq, notification_id, body, lane, expires_at)
  SELECT p_tenant, s.kind, s.id, next_seq, p_id, p_body, p_lane, p_expires
    FROM unnest(p_kinds, p_ids) AS s(kind, id)
  ON CONFLICT DO NOTHING;
  -- MATERIALIZED: each scope's cut-off is looked up once, not once per row.
  WITH cut AS MATERIALIZED (
    SELECT s.kind::char(1) AS kind, s.id, newest_dropped.seq
      FROM unnest(p_kinds, p_ids, p_keep) AS s(kind, id, keep)
      CROSS JOIN LATERAL (
        SELECT seq FROM ara_history
         WHERE tenant_id = p_tenant AND scope_kind = s.kind::char(1) AND scope_id = s.id
         ORDER BY seq DESC OFFSET greatest(s.keep, 0) LIMIT 1) AS newest_dropped)
  DELETE FROM ara_history h
   USING cut
   WHERE h.tenant_id = p_tenant AND h.scope_kind = cut.kind AND h.scope_id = cut.id
     AND h.seq <= cut.seq;
END
$fn$;

-- Pending acknowledgements (AckTracker): one row per recipient until it is
-- acked or expires. body is kept only when redelivery is on.
CREATE TABLE ara_acks (
  tenant_id       text COLLATE "C" NOT NULL,
  notification_id text COLLATE "C" NOT NULL,
  user_id         text COLLATE "C" NOT NULL,
  sent_at         timestamptz NOT NULL,
  deadline        timestamptz NOT NULL,
  body            text,
  lane            smallint NOT NULL,
  -- Tracking order: breaks deadline ties, so redelivery keeps send order.
  seq             bigint GENERATED ALWAYS AS IDENTITY,
  PRIMARY KEY (tenant_id, notification_id, user_id)
);
CREATE INDEX ara_acks_deadline_idx ON ara_acks (deadline, seq);

-- Ack counters, changed by the same statement as the row they count. Each
-- tenant has a few shard rows (summed on read) so concurrent acks do not
-- all wait for one row lock. "tracked" is not stored: every tracked record
-- is pending, acked or expired, so it is their sum.
CREATE TABLE ara_ack_stats (
  tenant_id        text COLLATE "C" NOT NULL,
  shard            smallint NOT NULL,
  acked            bigint NOT NULL DEFAULT 0,
  expired          bigint NOT NULL DEFAULT 0,
  latency_ms_total bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, shard)
);

-- Templates (TemplateStore). The record is JSON text, not jsonb: jsonb
-- reorders object keys and SPEC §6.2 keeps payload_template as written.
CREATE TABLE ara_templates (
  tenant_id   text COLLATE "C" NOT NULL,
  id          text COLLATE "C" NOT NULL,
  record      text NOT NULL,
  PRIMARY KEY (tenant_id, id)
);
`;

/**
 * Send order (StoredNotification.order). Enqueues and appends run on
 * whichever pool connection is free, so the identity / sequence `seq` they
 * take follows the order the calls reached the server, not the order the
 * node dispatched them in. The node now numbers each notification as it
 * dispatches it; the rows keep that number in `send_order`, and every
 * ordering (peek, trims, since, remove) goes by (send_order, seq): the
 * `seq` the stores return is send_order. `seq` stays as the tie-break and
 * the key. Rows written before this migration get send_order = seq, which
 * keeps their order and puts them before every newer row (a node's orders
 * are epoch microseconds, far above any seq).
 *
 * Written to be safe to run again (IF [NOT] EXISTS, CREATE OR REPLACE).
 */
const SEND_ORDER = `
ALTER TABLE ara_queue ADD COLUMN IF NOT EXISTS send_order bigint;
UPDATE ara_queue SET send_order = seq WHERE send_order IS NULL;
ALTER TABLE ara_queue ALTER COLUMN send_order SET NOT NULL;
DROP INDEX IF EXISTS ara_queue_user_idx;
CREATE INDEX IF NOT EXISTS ara_queue_user_order_idx ON ara_queue (tenant_id, user_id, send_order, seq);

ALTER TABLE ara_history ADD COLUMN IF NOT EXISTS send_order bigint;
UPDATE ara_history SET send_order = seq WHERE send_order IS NULL;
ALTER TABLE ara_history ALTER COLUMN send_order SET NOT NULL;
-- The primary key (…, seq) stays for uniqueness; reads and trims use this one.
CREATE INDEX IF NOT EXISTS ara_history_scope_order_idx
  ON ara_history (tenant_id, scope_kind, scope_id, send_order, seq);

-- The functions take the order as a new last parameter: the old signatures go.
DROP FUNCTION IF EXISTS ara_queue_push(text, text, text, text, smallint, timestamptz, integer);
DROP FUNCTION IF EXISTS ara_history_push(text, text[], text[], integer[], text, text, smallint, timestamptz);

-- Enqueue: as in migration 1, under the queue's lock (which keeps the cap
-- exact), but the oldest are the lowest send_order. A row may arrive
-- already beyond the cap (a lower order committing after higher ones):
-- it is then dropped at once and counted.
CREATE OR REPLACE FUNCTION ara_queue_push(p_tenant text, p_user text, p_id text, p_body text,
                                          p_lane smallint, p_expires timestamptz, p_max integer,
                                          p_order bigint)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
  dropped bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(p_user, hashtext(p_tenant)));
  INSERT INTO ara_queue (tenant_id, user_id, notification_id, body, lane, expires_at, send_order)
  VALUES (p_tenant, p_user, p_id, p_body, p_lane, p_expires, p_order);
  DELETE FROM ara_queue q
   USING (SELECT send_order, seq FROM ara_queue
           WHERE tenant_id = p_tenant AND user_id = p_user
           ORDER BY send_order DESC, seq DESC OFFSET greatest(p_max, 0) LIMIT 1) AS newest_dropped
   WHERE q.tenant_id = p_tenant AND q.user_id = p_user
     AND (q.send_order, q.seq) <= (newest_dropped.send_order, newest_dropped.seq);
  GET DIAGNOSTICS dropped = ROW_COUNT;
  RETURN dropped;
END
$fn$;

-- Append: one seq and the node's order for every scope; per scope, drop
-- the rows lowest in send order beyond its cap.
CREATE OR REPLACE FUNCTION ara_history_push(p_tenant text, p_kinds text[], p_ids text[], p_keep integer[],
                                            p_id text, p_body text, p_lane smallint, p_expires timestamptz,
                                            p_order bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  next_seq bigint := nextval('ara_history_seq');
BEGIN
  INSERT INTO ara_history (tenant_id, scope_kind, scope_id, seq, notification_id, body, lane, expires_at, send_order)
  SELECT p_tenant, s.kind, s.id, next_seq, p_id, p_body, p_lane, p_expires, p_order
    FROM unnest(p_kinds, p_ids) AS s(kind, id)
  ON CONFLICT DO NOTHING;
  -- MATERIALIZED: each scope's cut-off is looked up once, not once per row.
  WITH cut AS MATERIALIZED (
    SELECT s.kind::char(1) AS kind, s.id, newest_dropped.send_order, newest_dropped.seq
      FROM unnest(p_kinds, p_ids, p_keep) AS s(kind, id, keep)
      CROSS JOIN LATERAL (
        SELECT send_order, seq FROM ara_history
         WHERE tenant_id = p_tenant AND scope_kind = s.kind::char(1) AND scope_id = s.id
         ORDER BY send_order DESC, seq DESC OFFSET greatest(s.keep, 0) LIMIT 1) AS newest_dropped)
  DELETE FROM ara_history h
   USING cut
   WHERE h.tenant_id = p_tenant AND h.scope_kind = cut.kind AND h.scope_id = cut.id
     AND (h.send_order, h.seq) <= (cut.send_order, cut.seq);
END
$fn$;
`;

export const MIGRATIONS: readonly Migration[] = [
  { version: 1, sql: INITIAL_SCHEMA },
  { version: 2, sql: SEND_ORDER },
];
