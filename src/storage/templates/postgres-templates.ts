/**
 * Templates in PostgreSQL: they survive restarts and every node on the
 * same database sees the same set. See TemplateStore for the contract.
 *
 * The record is stored as JSON text, so payload_template keeps its key
 * order (jsonb would sort the keys).
 */
import type { TemplateRecord, TemplateStore } from '../types.js';
import { sqlKey, type PostgresConnection } from '../postgres/postgres-connection.js';

export class PostgresTemplateStore implements TemplateStore {
  readonly backend = 'postgres' as const;
  readonly #db: PostgresConnection;

  constructor(db: PostgresConnection) {
    this.#db = db;
  }

  async create(tenantId: string, template: TemplateRecord) {
    const inserted = await this.#db.query(
      `INSERT INTO ara_templates (tenant_id, id, record) VALUES ($1, $2, $3)
       ON CONFLICT (tenant_id, id) DO NOTHING`,
      [sqlKey(tenantId), sqlKey(template.id), JSON.stringify(template)],
    );
    return inserted.rowCount === 1;
  }

  async get(tenantId: string, id: string) {
    const { rows } = await this.#db.query<{ record: string }>(
      'SELECT record FROM ara_templates WHERE tenant_id = $1 AND id = $2',
      [sqlKey(tenantId), sqlKey(id)],
    );
    return rows[0] ? (JSON.parse(rows[0].record) as TemplateRecord) : undefined;
  }

  /** Sorted by id, byte order (the columns are COLLATE "C"), as the memory store sorts. */
  async list(tenantId: string) {
    const { rows } = await this.#db.query<{ record: string }>(
      'SELECT record FROM ara_templates WHERE tenant_id = $1 ORDER BY id',
      [sqlKey(tenantId)],
    );
    return rows.map((row) => JSON.parse(row.record) as TemplateRecord);
  }

  async replace(tenantId: string, template: TemplateRecord) {
    const updated = await this.#db.query(
      'UPDATE ara_templates SET record = $3 WHERE tenant_id = $1 AND id = $2',
      [sqlKey(tenantId), sqlKey(template.id), JSON.stringify(template)],
    );
    return updated.rowCount === 1;
  }

  async delete(tenantId: string, id: string) {
    const deleted = await this.#db.query('DELETE FROM ara_templates WHERE tenant_id = $1 AND id = $2', [
      sqlKey(tenantId),
      sqlKey(id),
    ]);
    return deleted.rowCount === 1;
  }

  /** The pool belongs to the store set, which closes it after every store. */
  async close() {}
}
