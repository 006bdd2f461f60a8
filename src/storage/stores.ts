/**
 * Chooses each store's backend from the configuration (SPEC §1 QUEUE_BACKEND,
 * ACK_BACKEND, TEMPLATE_BACKEND; history follows the queue) and owns their
 * start (connections, schema migration) and close. One PostgreSQL pool and
 * one Redis connection are shared by every store that uses them.
 */
import type { Logger } from 'pino';
import type { Config, StoreBackend } from '../config/types.js';
import { MemoryAckTracker } from './acks/memory-acks.js';
import { MemoryHistory } from './history/memory-history.js';
import { MemoryQueue } from './queue/memory-queue.js';
import { MemoryTemplateStore } from './templates/memory-templates.js';
import { PostgresAckTracker } from './acks/postgres-acks.js';
import { PostgresHistory } from './history/postgres-history.js';
import { PostgresConnection } from './postgres/postgres-connection.js';
import { PostgresQueue } from './queue/postgres-queue.js';
import { PostgresTemplateStore } from './templates/postgres-templates.js';
import { RedisAckTracker } from './acks/redis-acks.js';
import { RedisHistory } from './history/redis-history.js';
import { RedisConnection } from './redis/redis-connection.js';
import { RedisQueue } from './queue/redis-queue.js';
import { RedisTemplateStore } from './templates/redis-templates.js';
import type { RedisService } from '../redis/redis-service.js';
import { guardStore } from './guard.js';
import type { AckTracker, HistoryStore, OfflineQueue, TemplateStore } from './types.js';

export interface StoreSet {
  queue: OfflineQueue | null;
  history: HistoryStore | null;
  acks: AckTracker | null;
  templates: TemplateStore;
  /** Connects and migrates what needs it; throws when a backend is unreachable. */
  start(): Promise<void>;
  close(): Promise<void>;
}

/** The backends each store uses in this configuration. */
export function backendsInUse(config: Config): Set<StoreBackend> {
  const used = new Set<StoreBackend>([config.templates.backend]);
  if (config.queue.enabled) used.add(config.queue.backend);
  if (config.ack.enabled) used.add(config.ack.backend);
  return used;
}

/**
 * `redis`: the node's shared Redis link, when REDIS_URL is set; stores on
 * Redis use its connection and breaker.
 */
export function createStores(config: Config, log: Logger, redisService: RedisService | null = null): StoreSet {
  // One pool for every store on PostgreSQL (config checked DATABASE_URL is set).
  const postgres = backendsInUse(config).has('postgres')
    ? new PostgresConnection({
        url: config.database.url ?? '',
        poolSize: config.database.poolSize,
        log: log.child({ component: 'postgres-stores' }),
      })
    : null;
  // Stores on Redis share the node's connection; without one they get their own.
  const ownRedis =
    backendsInUse(config).has('redis') && redisService === null
      ? new RedisConnection({
          url: config.redis.url ?? '',
          keyPrefix: config.redis.keyPrefix,
          backoff: config.redis.backoff,
          log: log.child({ component: 'redis-stores' }),
        })
      : null;
  const redis = redisService?.connection ?? ownRedis;
  const guard = <T extends object>(store: T | null, backend: StoreBackend): T | null => {
    if (store === null || backend === 'memory') return store;
    return backend === 'redis'
      ? guardStore(store, 'redis', redisService ? (call) => redisService.guarded(call) : undefined)
      : guardStore(store, 'postgres');
  };
  const { backend: queueBackend } = config.queue;
  const queue = guard(config.queue.enabled ? queueFor(queueBackend, postgres, redis) : null, queueBackend);
  const history = guard(config.queue.enabled ? historyFor(queueBackend, postgres, redis) : null, queueBackend);
  const acks = guard(config.ack.enabled ? acksFor(config.ack.backend, postgres, redis) : null, config.ack.backend);
  const templates = guard(templatesFor(config.templates.backend, postgres, redis), config.templates.backend)!;
  const all = [queue, history, acks, templates].filter((store) => store !== null);
  return {
    queue,
    history,
    acks,
    templates,
    async start() {
      await postgres?.start();
      await ownRedis?.start();
    },
    async close() {
      await Promise.allSettled(all.map((store) => store.close()));
      await postgres?.close();
      await ownRedis?.close();
    },
  };
}

function queueFor(backend: StoreBackend, postgres: PostgresConnection | null, redis: RedisConnection | null): OfflineQueue {
  if (backend === 'memory') return new MemoryQueue();
  if (backend === 'redis' && redis) return new RedisQueue(redis);
  if (backend === 'postgres' && postgres) return new PostgresQueue(postgres);
  throw new Error(`QUEUE_BACKEND=${backend} is not available in this build`);
}

function historyFor(backend: StoreBackend, postgres: PostgresConnection | null, redis: RedisConnection | null): HistoryStore {
  if (backend === 'memory') return new MemoryHistory();
  if (backend === 'redis' && redis) return new RedisHistory(redis);
  if (backend === 'postgres' && postgres) return new PostgresHistory(postgres);
  throw new Error(`history on ${backend} is not available in this build`);
}

function acksFor(backend: StoreBackend, postgres: PostgresConnection | null, redis: RedisConnection | null): AckTracker {
  if (backend === 'memory') return new MemoryAckTracker();
  if (backend === 'redis' && redis) return new RedisAckTracker(redis);
  if (backend === 'postgres' && postgres) return new PostgresAckTracker(postgres);
  throw new Error(`ACK_BACKEND=${backend} is not available in this build`);
}

function templatesFor(backend: StoreBackend, postgres: PostgresConnection | null, redis: RedisConnection | null): TemplateStore {
  if (backend === 'memory') return new MemoryTemplateStore();
  if (backend === 'redis' && redis) return new RedisTemplateStore(redis);
  if (backend === 'postgres' && postgres) return new PostgresTemplateStore(postgres);
  throw new Error(`TEMPLATE_BACKEND=${backend} is not available in this build`);
}
