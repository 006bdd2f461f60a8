/**
 * The four store contracts on the memory backends (the embedded default).
 */
import { MemoryAckTracker } from '../../src/storage/acks/memory-acks.ts';
import { MemoryHistory } from '../../src/storage/history/memory-history.ts';
import { MemoryQueue } from '../../src/storage/queue/memory-queue.ts';
import { MemoryTemplateStore } from '../../src/storage/templates/memory-templates.ts';
import { runAckContract } from './acks.contract.ts';
import { runHistoryContract } from './history.contract.ts';
import { runQueueContract } from './queue.contract.ts';
import { runTemplateContract } from './templates.contract.ts';

/** A fresh store per test; nothing outlives it. */
function fresh<T extends { close(): Promise<void> }>(create: () => T) {
  return async () => {
    const store = create();
    return { store, cleanup: () => store.close() };
  };
}

runQueueContract('memory', fresh(() => new MemoryQueue()));
runHistoryContract('memory', fresh(() => new MemoryHistory()));
runAckContract('memory', fresh(() => new MemoryAckTracker()));
runTemplateContract('memory', fresh(() => new MemoryTemplateStore()));
