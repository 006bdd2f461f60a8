/**
 * Runs the same tests against each store backend of SPEC §1 (QUEUE_BACKEND,
 * ACK_BACKEND, TEMPLATE_BACKEND): `memory`, `postgres` and `redis`.
 *
 * Every node started through a BackendScope gets storage of its own, so
 * counts (stats, queue sizes) start from zero and nothing leaks between
 * nodes or test files: PostgreSQL a fresh schema (helpers/postgres.ts,
 * DATABASE_URL with `search_path`), Redis a fresh REDIS_KEY_PREFIX.
 * `cleanup()` stops the nodes, drops the schemas and deletes the keys;
 * call it in `after`.
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startTestNode, type TestNode } from './node.ts';
import { createTestSchema, type TestSchema } from './postgres.ts';

export type StoreBackendName = 'memory' | 'postgres' | 'redis';
const ALL_BACKENDS: readonly StoreBackendName[] = ['memory', 'postgres', 'redis'];

/** Every backend, or those listed in ARA_TEST_BACKENDS (e.g. `memory,redis`) while developing. */
export const STORE_BACKENDS: readonly StoreBackendName[] = process.env.ARA_TEST_BACKENDS
  ? ALL_BACKENDS.filter((name) => process.env.ARA_TEST_BACKENDS!.split(',').includes(name))
  : ALL_BACKENDS;

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export class BackendScope {
  readonly backend: StoreBackendName;
  readonly #label: string;
  readonly #schemas: TestSchema[] = [];
  readonly #prefixes: string[] = [];
  readonly #nodes: TestNode[] = [];

  /** `label`: a short name of the test file, part of schema and key names. */
  constructor(backend: StoreBackendName, label: string) {
    this.backend = backend;
    this.#label = label.replace(/[^a-z0-9]/gi, '_').toLowerCase();
  }

  /** The environment selecting this backend for every store, with storage nobody else uses. */
  async env(): Promise<Record<string, string>> {
    const suffix = randomBytes(5).toString('hex');
    const stores = { QUEUE_BACKEND: this.backend, ACK_BACKEND: this.backend, TEMPLATE_BACKEND: this.backend };
    if (this.backend === 'postgres') {
      const schema = await createTestSchema(`ara_t_${this.#label}`);
      this.#schemas.push(schema);
      return { ...stores, DATABASE_URL: schema.url };
    }
    if (this.backend === 'redis') {
      const prefix = `ara-t-${this.#label}-${suffix}`;
      this.#prefixes.push(prefix);
      return { ...stores, REDIS_URL, REDIS_KEY_PREFIX: prefix, REDIS_TRIGGER_ENABLED: 'false' };
    }
    return stores;
  }

  /** Starts a node on this backend (fresh storage) with the given overrides. */
  async start(env: Record<string, string> = {}): Promise<TestNode> {
    const node = await startTestNode({ ...(await this.env()), ...env });
    this.#nodes.push(node);
    return node;
  }

  /** Stops every node it started, then drops their schemas / deletes their keys. */
  async cleanup(): Promise<void> {
    await Promise.allSettled(this.#nodes.splice(0).map((node) => node.stop()));
    for (const schema of this.#schemas.splice(0)) await schema.drop();
    await deleteRedisKeys(this.#prefixes.splice(0));
  }
}

/** Deletes every key under each REDIS_KEY_PREFIX given (SCAN, never KEYS). */
export async function deleteRedisKeys(prefixes: readonly string[]): Promise<void> {
  if (prefixes.length === 0) return;
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  await redis.connect();
  try {
    for (const prefix of prefixes) {
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) await redis.del(...keys);
      } while (cursor !== '0');
    }
  } finally {
    redis.disconnect();
  }
}
