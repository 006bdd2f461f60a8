/**
 * PostgreSQL for tests: each test file works in its own freshly created
 * schema (random name), chosen through the URL's search_path, and drops
 * it when done. TEST_DATABASE_URL overrides the local default.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestSchema {
  name: string;
  /** DATABASE_URL whose connections create and find their tables in this schema. */
  url: string;
  drop(): Promise<void>;
}

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

export async function createTestSchema(prefix = 'ara_test'): Promise<TestSchema> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  await admin((client) => client.query(`CREATE SCHEMA ${name}`));
  const separator = TEST_DATABASE_URL.includes('?') ? '&' : '?';
  return {
    name,
    url: `${TEST_DATABASE_URL}${separator}options=${encodeURIComponent(`-c search_path=${name}`)}`,
    drop: () => admin(async (client) => void (await client.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`))),
  };
}
