/**
 * A last resort for shutdown (SPEC §10: the process exits within
 * SHUTDOWN_GRACE_SECONDS). Once shutdown starts, a small worker thread kills
 * the process if it is still alive at the deadline. It has to be a thread:
 * what it guards against is the main thread blocked for good, e.g. in the
 * logger's exit-time flush, which retries a write to a closed pipe forever
 * (sonic-boom 4 treats EPIPE there like EAGAIN), so no timer of the main
 * thread would ever run. The worker is unref'd and dies with a process that
 * exits on its own.
 *
 * A process that is PID 1 of its namespace (a container started without an
 * init such as `docker run --init`) cannot kill itself: the kernel drops the
 * signal. There the container runtime's own stop timeout ends it.
 */
import { Worker } from 'node:worker_threads';

const KILL_AT_DEADLINE = `
const { workerData } = require('node:worker_threads');
setTimeout(() => process.kill(workerData.pid, 'SIGKILL'), workerData.ms);
`;

/** Returns false when no thread could be started; the shutdown runs the same without it. */
export function armExitWatchdog(deadlineMs: number): boolean {
  try {
    const worker = new Worker(KILL_AT_DEADLINE, {
      eval: true,
      workerData: { pid: process.pid, ms: Math.max(0, deadlineMs - Date.now()) },
      // Nothing to say: no stdio of its own that could block.
      stdout: true,
      stderr: true,
    });
    // A worker that fails to start must not become an uncaught error in the middle of a shutdown.
    worker.on('error', () => {});
    worker.unref();
    return true;
  } catch {
    return false;
  }
}
