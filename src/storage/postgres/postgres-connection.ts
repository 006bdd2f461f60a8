/**
 * The one PostgreSQL pool of a node (SPEC §1 DATABASE_URL,
 * DATABASE_POOL_SIZE), shared by every store on the postgres backend.
 * `start` connects and brings the schema up to date; every call has a
 * bounded wait (connect, statement, client-side query timeout), so a
 * database that stops answering fails calls instead of hanging them.
 *
 * Tables are created in the connection's current schema, so a deployment
 * (or a test) picks its schema with the URL, e.g.
 * `postgres://host/db?options=-c%20search_path%3Dara`.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { MIGRATIONS, type Migration } from './migrations.js';

export interface PostgresOptions {
  url: string;
  poolSize: number;
  log?: Logger;
  /** Longest wait for a connection from the server; default 5 s. */
  connectTimeoutMs?: number;
  /** Longest a statement may run (server side, client side a bit later); default 10 s. */
  statementTimeoutMs?: number;
  migrations?: readonly Migration[];
}

/**
 * First key of the migration lock; the second is the schema's hash, so
 * nodes migrating different schemas of one database do not wait for
 * each other.
 */
const MIGRATION_LOCK = 0x41726101;

export class PostgresConnection {
  readonly pool: pg.Pool;
  readonly #migrations: readonly Migration[];
  #closing: Promise<void> | null = null;

  constructor(options: PostgresOptions) {
    const statementTimeoutMs = options.statementTimeoutMs ?? 10_000;
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
      statement_timeout: statementTimeoutMs,
      query_timeout: statementTimeoutMs + 2_000,
      idle_in_transaction_session_timeout: statementTimeoutMs * 3,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: 'ara-notify',
    });
    this.#migrations = options.migrations ?? MIGRATIONS;
    // An idle client losing its server (restart, network) must not end
    // the process; the pool replaces it on the next checkout.
    this.pool.on('error', (error) => options.log?.warn({ err: error }, 'postgres idle connection lost'));
  }

  /** Connects and applies the migrations not yet applied; throws when unreachable. */
  async start(): Promise<void> {
    await this.transaction(async (client) => {
      const { rows } = await client.query<{ schema: string | null }>('SELECT current_schema() AS schema');
      if (!rows[0]?.schema) {
        throw new Error('PostgreSQL: no schema to create tables in (search_path names no existing schema)');
      }
      // Serialises nodes starting together: the second one finds the work done.
      await client.query('SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))', [MIGRATION_LOCK]);
      await client.query(`CREATE TABLE IF NOT EXISTS ara_schema_migrations (
        version    integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
      const applied = await client.query<{ version: number }>('SELECT version FROM ara_schema_migrations');
      const done = new Set(applied.rows.map((row) => row.version));
      for (const migration of [...this.#migrations].sort((a, b) => a.version - b.version)) {
        if (done.has(migration.version)) continue;
        await client.query(migration.sql);
        await client.query('INSERT INTO ara_schema_migrations (version) VALUES ($1)', [migration.version]);
      }
    });
  }

  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values: unknown[] = []) {
    return this.pool.query<R>(text, values);
  }

  /**
   * Runs `work` in a transaction on one client: committed when it
   * resolves, rolled back when it throws. A client whose rollback fails
   * is discarded rather than returned to the pool.
   */
  async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      client.release();
      return result;
    } catch (error) {
      const rolledBack = await client.query('ROLLBACK').then(
        () => true,
        () => false,
      );
      client.release(!rolledBack);
      throw error;
    }
  }

  /** True when the server answers a trivial query. */
  async ping(): Promise<boolean> {
    try {
      await this.pool.query('SELECT 1');
      return true;
    } catch {
      return false;
    }
  }

  /** Ends every client of the pool; calling it again does nothing more. */
  close(): Promise<void> {
    this.#closing ??= this.pool.end();
    return this.#closing;
  }
}

// -----------------------------------------------------------------------------
// Key values

/**
 * PostgreSQL text holds neither NUL nor unpaired UTF-16 surrogates (the
 * driver would turn those into U+FFFD, making "\uD800" and "\uFFFD" one
 * user). Keys are therefore stored escaped: `\` → `\\`, NUL → `\0`, an
 * unpaired surrogate → `\uXXXX`. Any other string is stored as it is, and
 * the mapping is one-to-one, so no two ids share a row.
 */
export function sqlKey(value: string): string {
  if (!needsEscape(value)) return value;
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code === 0x5c) out += '\\\\';
    else if (code === 0) out += '\\0';
    else if (isHighSurrogate(code) && isLowSurrogate(value.charCodeAt(i + 1))) out += value[i]! + value[++i]!;
    else if (code >= 0xd800 && code <= 0xdfff) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += value[i]!;
  }
  return out;
}

/** The inverse of `sqlKey`. */
export function fromSqlKey(stored: string): string {
  if (!stored.includes('\\')) return stored;
  return stored.replace(/\\(\\|0|u[0-9a-f]{4})/g, (_match, escape: string) => {
    if (escape === '\\') return '\\';
    if (escape === '0') return '\u0000';
    return String.fromCharCode(Number.parseInt(escape.slice(1), 16));
  });
}

function needsEscape(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code === 0 || code === 0x5c || (code >= 0xd800 && code <= 0xdfff)) return true;
  }
  return false;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

/** bigint and count(*) arrive as strings; every value here fits a double. */
export function toNumber(value: string | number | null | undefined): number {
  return value === null || value === undefined ? 0 : Number(value);
}
