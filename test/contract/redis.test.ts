/**
 * The four store contracts on the Redis backends (SPEC §1 QUEUE_BACKEND,
 * ACK_BACKEND, TEMPLATE_BACKEND = redis), against the Redis on
 * 127.0.0.1:6379. Each test gets its own REDIS_KEY_PREFIX, so tests running
 * in parallel never see each other's keys, and deletes its keys afterwards.
 */
import { randomBytes } from 'node:crypto';
import { RedisAckTracker } from '../../src/storage/acks/redis-acks.ts';
import { RedisHistory } from '../../src/storage/history/redis-history.ts';
import { RedisQueue } from '../../src/storage/queue/redis-queue.ts';
import { RedisConnection } from '../../src/storage/redis/redis-connection.ts';
import { RedisTemplateStore } from '../../src/storage/templates/redis-templates.ts';
import { runAckContract } from './acks.contract.ts';
import { runHistoryContract } from './history.contract.ts';
import { runQueueContract } from './queue.contract.ts';
import { runTemplateContract } from './templates.contract.ts';

const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Deletes every key under `prefix:` (SCAN, never KEYS). */
async function deleteKeys(redis: RedisConnection): Promise<void> {
  await redis.scan(`${redis.keyPrefix}:*`, async (keys) => {
    await redis.client.unlink(...keys);
  });
}

function onRedis<T extends { close(): Promise<void> }>(create: (redis: RedisConnection) => T) {
  return async () => {
    const redis = new RedisConnection({ url: REDIS_URL, keyPrefix: `test-contract-${randomBytes(6).toString('hex')}` });
    await redis.start();
    const store = create(redis);
    return {
      store,
      async cleanup() {
        try {
          await store.close();
          await deleteKeys(redis);
        } finally {
          await redis.close();
        }
      },
    };
  };
}

runQueueContract('redis', onRedis((redis) => new RedisQueue(redis)));
runHistoryContract('redis', onRedis((redis) => new RedisHistory(redis)));
runAckContract('redis', onRedis((redis) => new RedisAckTracker(redis)));
runTemplateContract('redis', onRedis((redis) => new RedisTemplateStore(redis)));
