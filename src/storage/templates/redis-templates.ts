/**
 * Templates on Redis (SPEC §6.2, TEMPLATE_BACKEND=redis): kept across
 * restarts and shared by every node.
 *
 * Key: `<p>:templates:<tenant>` HASH template id → the record's JSON text.
 * The text keeps `payload_template`'s key order exactly as stored. Create
 * is HSETNX and replace a small Lua check-and-set, so two nodes racing on
 * one id never both win. Cost: get O(1); list O(templates of the tenant).
 */
import type { TemplateRecord, TemplateStore } from '../types.js';
import { keyTail, type RedisConnection, type RedisScript } from '../redis/redis-connection.js';

// KEYS: tenant hash. ARGV: id, record JSON. Replaces only an existing record.
const REPLACE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
`;

export class RedisTemplateStore implements TemplateStore {
  readonly backend = 'redis' as const;
  readonly #redis: RedisConnection;
  readonly #replace: RedisScript;

  constructor(redis: RedisConnection) {
    this.#redis = redis;
    this.#replace = redis.defineScript('araTemplateReplace', 1, REPLACE);
  }

  async create(tenantId: string, template: TemplateRecord) {
    return (await this.#redis.client.hsetnx(this.#key(tenantId), keyTail(template.id), JSON.stringify(template))) === 1;
  }

  async get(tenantId: string, id: string) {
    const text = await this.#redis.client.hget(this.#key(tenantId), keyTail(id));
    return text === null ? undefined : (JSON.parse(text) as TemplateRecord);
  }

  async list(tenantId: string) {
    const texts = await this.#redis.client.hvals(this.#key(tenantId));
    return texts.map((text) => JSON.parse(text) as TemplateRecord).sort(byId);
  }

  async replace(tenantId: string, template: TemplateRecord) {
    return Number(await this.#replace.run([this.#key(tenantId)], [keyTail(template.id), JSON.stringify(template)])) === 1;
  }

  async delete(tenantId: string, id: string) {
    return (await this.#redis.client.hdel(this.#key(tenantId), keyTail(id))) === 1;
  }

  /** The connection is shared and closed by the store set. */
  async close() {}

  #key(tenantId: string): string {
    return this.#redis.key('templates', tenantId);
  }
}

function byId(a: TemplateRecord, b: TemplateRecord): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
