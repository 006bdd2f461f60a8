/**
 * The CLI as a real child process (`ara-notify serve|token`): building
 * dist/ when it is missing or older than src/, free ports, spawning with a
 * chosen environment and working directory, captured output, and a kill
 * that `after` hooks can always call.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DIST_CLI = join(REPO_ROOT, 'dist', 'cli.js');
export const SRC_CLI = join(REPO_ROOT, 'src', 'cli.ts');
/** `--import` target that loads TypeScript, usable from any working directory. */
export const TSX_IMPORT = import.meta.resolve('tsx');

function newestMtimeMs(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    const mtime = entry.isDirectory() ? newestMtimeMs(path) : statSync(path).mtimeMs;
    if (mtime > newest) newest = mtime;
  }
  return newest;
}

function distIsCurrent(): boolean {
  try {
    return statSync(DIST_CLI).mtimeMs >= newestMtimeMs(join(REPO_ROOT, 'src'));
  } catch {
    return false;
  }
}

/**
 * Builds dist/ (`tsc -p tsconfig.build.json`) unless it is newer than every
 * file of src/. Test files run in parallel, so the build is serialised with
 * a lock directory; a lock older than two minutes is taken as abandoned.
 */
export async function ensureBuilt(): Promise<void> {
  if (distIsCurrent()) return;
  const lock = join(tmpdir(), `ara-notify-build-${Buffer.from(REPO_ROOT).toString('base64url').slice(-40)}.lock`);
  const deadline = Date.now() + 120_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      try {
        if (Date.now() - statSync(lock).mtimeMs > 120_000) rmSync(lock, { recursive: true, force: true });
      } catch {
        // The holder released it meanwhile.
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for the build lock ${lock}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    if (distIsCurrent()) return;
    const tsc = join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (result.status !== 0) {
      throw new Error(`npm run build failed (exit ${result.status}):\n${result.stdout}${result.stderr}`);
    }
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/** A port that was free a moment ago (listen on 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A fresh empty directory (no `.env` in it unless a test writes one). */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `ara-${prefix}-`));
}

/**
 * An environment with nothing of the service's configuration in it: only
 * what a process needs to run, plus `extra`.
 */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'SYSTEMROOT']) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return { ...env, ...extra };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() when the process exited. */
  atMs: number;
}

export class CliProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<Exit>;
  stdout = '';
  stderr = '';
  #exit: Exit | null = null;

  constructor(args: string[], options: { cwd: string; env: Record<string, string> }) {
    this.child = spawn(process.execPath, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (this.stdout += chunk));
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code, signal) => {
        this.#exit = { code, signal, atMs: Date.now() };
        resolve(this.#exit);
      });
    });
  }

  /** `node dist/cli.js <args>` */
  static dist(args: string[], options: { cwd: string; env: Record<string, string> }): CliProcess {
    return new CliProcess([DIST_CLI, ...args], options);
  }

  /** `node --import tsx src/cli.ts <args>` */
  static source(args: string[], options: { cwd: string; env: Record<string, string> }): CliProcess {
    return new CliProcess(['--import', TSX_IMPORT, SRC_CLI, ...args], options);
  }

  get running(): boolean {
    return this.#exit === null;
  }

  signal(signal: NodeJS.Signals): void {
    if (this.running) this.child.kill(signal);
  }

  /** Resolves with the exit, or rejects after `timeoutMs` saying what the process printed. */
  async waitForExit(timeoutMs: number): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () => reject(new Error(`process still running after ${timeoutMs} ms\n${this.output()}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** For `after` hooks: SIGKILL if still running, then wait for it. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }

  output(): string {
    return `--- stdout ---\n${this.stdout}\n--- stderr ---\n${this.stderr}`;
  }

  /**
   * Polls `GET /health` until the node answers at all; returns its status.
   * Fails early (with the output) if the process exits first.
   */
  async waitForHealth(port: number, timeoutMs = 15_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.running) throw new Error(`process exited before answering /health\n${this.output()}`);
      try {
        const response = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
        await response.arrayBuffer();
        return response.status;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    throw new Error(`no /health answer on port ${port} within ${timeoutMs} ms\n${this.output()}`);
  }
}

/**
 * Runs `ara-notify <args>` from source once, in an empty temporary working
 * directory (so no .env is read) with exactly `env` plus PATH, and waits for
 * it to exit; it is killed after 20 s. For start-up refusals.
 */
export async function runCliOnce(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const cwd = tempDir('cli-once');
  try {
    return await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', TSX_IMPORT, SRC_CLI, ...args], {
        cwd,
        env: { PATH: process.env.PATH ?? '', ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
}
