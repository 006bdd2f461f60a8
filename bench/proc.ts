/**
 * What the bench reads about processes and the machine from /proc:
 *
 * - CPU time of a process: utime + stime of /proc/<pid>/stat (fields 14 and
 *   15, summed over all its threads by the kernel) in clock ticks, turned
 *   into microseconds with the tick rate (`getconf CLK_TCK`, 100 on Linux).
 * - Resident memory: VmRSS of /proc/<pid>/status.
 * - The machine: cores, CPU model, memory, Node version, load average.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';

let ticksPerSecond: number | null = null;

export function clockTicksPerSecond(): number {
  if (ticksPerSecond === null) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** User and system CPU time of a process (all threads), in microseconds. */
export function cpuTimes(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may contain spaces: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const tick = 1e6 / clockTicksPerSecond();
  return { user: Number(fields[11]) * tick, system: Number(fields[12]) * tick };
}

/** User + system CPU time of a process (all threads), in microseconds. */
export function cpuMicros(pid: number): number {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

/** Busy CPU time of the whole machine (all cores, everything but idle and iowait), in microseconds. */
export function machineBusyMicros(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return ((user! + nice! + system! + irq! + softirq! + steal!) * 1e6) / clockTicksPerSecond();
}

/** Sum of cpuMicros over several processes; a process that is gone counts 0. */
export function cpuMicrosOf(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      total += cpuMicros(pid);
    } catch {
      // exited
    }
  }
  return total;
}

/** Resident set size in bytes. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /VmRSS:\s+(\d+) kB/.exec(status);
  if (match === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

export interface MachineInfo {
  cores: number;
  cpu_model: string;
  memory_bytes: number;
  node: string;
  os: string;
  fd_limit: string;
  load_average_at_start: number[];
}

export function machineInfo(): MachineInfo {
  let model = os.cpus()[0]?.model ?? 'unknown';
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) model = line.split(':').slice(1).join(':').trim();
  } catch {
    // keep os.cpus()
  }
  let cores = os.availableParallelism();
  try {
    cores = Number(execFileSync('nproc', { encoding: 'utf8' }).trim()) || cores;
  } catch {
    // keep availableParallelism
  }
  let fdLimit = 'unknown';
  try {
    fdLimit = execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim();
  } catch {
    // unknown
  }
  return {
    cores,
    cpu_model: model,
    memory_bytes: os.totalmem(),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    fd_limit: fdLimit,
    load_average_at_start: os.loadavg().map((x) => +x.toFixed(2)),
  };
}
