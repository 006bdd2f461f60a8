/**
 * The shape of bench/results/latest.json: one record per scenario and
 * server, each with its repetitions and their medians, plus latency curves
 * for the chart. Written by bench/run.ts, rendered by bench/report.ts.
 */
import type { MachineInfo } from '../proc.ts';
import { Histogram, type HistogramData } from './histogram.ts';

export type ServerName = 'service' | 'limit' | 'socketio';
export const SERVER_LABELS: Record<ServerName, string> = {
  service: 'Service',
  limit: 'Limit (raw ws)',
  socketio: 'Peer (Socket.IO 4)',
};

/** Fan-out at a fixed notification rate. */
export interface FixedRep {
  rate_target: number;
  rate_achieved: number;
  sent: number;
  expected_deliveries: number;
  received: number;
  lost: number;
  /** From the last send to the last delivery. */
  drain_ms: number;
  /** Every delivery arrived and the backlog cleared within a second of the last send. */
  sustained: boolean;
  p50_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
  server_cpu_us_per_delivery: number;
  server_cpu_percent: number;
  http_errors: number;
}

/** Fan-out or personal messages at the highest rate the server sustains. */
export interface MaxRep {
  deliveries_per_s: number;
  /** Notifications (fan-out) or requests (personal) accepted per second. */
  sends_per_s: number;
  server_cpu_us_per_delivery: number;
  /** Of one core. */
  server_cpu_percent: number;
  clients_cpu_percent: number;
  sender_cpu_percent: number;
  /** Share of the server's CPU time spent in the kernel (socket writes), %. */
  server_kernel_share_percent: number;
  /** Busy CPU of the machine not used by the bench's own processes (other work on the machine), % of a core. */
  other_cpu_percent: number;
  /** Redis's CPU per delivery in the cluster scenario (NaN elsewhere). */
  extra_cpu_us_per_delivery: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  lost: number;
  http_errors: number;
  unexpected_closes: number;
}

export interface HttpRep {
  requests_per_s: number;
  p50_ms: number;
  p99_ms: number;
  non2xx: number;
  errors: number;
  server_cpu_us_per_request: number;
  server_cpu_percent: number;
  response_bytes: number;
}

export interface MemoryRep {
  connections: number;
  rss_before_bytes: number;
  rss_after_bytes: number;
  heap_before_bytes: number;
  heap_after_bytes: number;
  rss_per_connection_bytes: number;
  heap_per_connection_bytes: number;
}

export interface ConnectRep {
  connections: number;
  failed: number;
  seconds: number;
  connects_per_s: number;
  server_cpu_us_per_connect: number;
}

/** [x, ms] with x = -log10(1 - quantile): 0 = min, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99; the last point is the max. */
export type LatencyCurve = Array<[number, number]>;

export interface Series<T> {
  reps: T[];
  median: Partial<Record<keyof T, number>>;
  /** Merged over the repetitions' measuring windows. */
  latency?: LatencyCurve;
  notes?: string[];
}

export type PerServer<T> = Partial<Record<ServerName, Series<T>>>;

export interface Results {
  generated_at: string;
  command: string;
  options: Record<string, unknown>;
  machine: MachineInfo & { load_average_at_end?: number[] };
  /** `git rev-parse --short HEAD`, with "+modified" when src/ had uncommitted changes. */
  revision: string;
  duration_seconds: number;
  complete: boolean;
  failures: string[];
  fanout_fixed: PerServer<FixedRep>;
  fanout_max: PerServer<MaxRep>;
  personal: PerServer<MaxRep>;
  http: PerServer<HttpRep>;
  memory: PerServer<MemoryRep>;
  connect: PerServer<ConnectRep>;
  cluster: {
    nodes: number;
    skipped?: string;
    fanout_max?: Series<MaxRep>;
    personal?: Series<MaxRep>;
    /** Redis's own CPU per delivery, beside the nodes' summed figure. */
    redis_cpu_us_per_delivery?: number;
  };
}

export function median(values: number[]): number {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return NaN;
  const middle = Math.floor(finite.length / 2);
  return finite.length % 2 === 1 ? finite[middle]! : (finite[middle - 1]! + finite[middle]!) / 2;
}

/** Median of every numeric field over the repetitions. */
export function medianOf<T extends object>(reps: T[]): Partial<Record<keyof T, number>> {
  const out: Partial<Record<keyof T, number>> = {};
  if (reps.length === 0) return out;
  for (const key of Object.keys(reps[0]!) as Array<keyof T>) {
    const values = reps.map((rep) => rep[key]);
    if (values.every((v) => typeof v === 'number')) out[key] = median(values as number[]);
  }
  return out;
}

export function series<T extends object>(reps: T[], histograms: HistogramData[] = [], notes: string[] = []): Series<T> {
  const out: Series<T> = { reps, median: medianOf(reps) };
  if (histograms.length > 0) {
    const merged = new Histogram();
    for (const data of histograms) merged.add(data);
    if (merged.count > 0) out.latency = latencyCurve(merged);
  }
  if (notes.length > 0) out.notes = notes;
  return out;
}

export function latencyCurve(histogram: Histogram): LatencyCurve {
  const points: LatencyCurve = [];
  const top = Math.min(5, Math.log10(histogram.count));
  for (let x = 0; x <= top + 1e-9; x += 0.1) {
    const q = x === 0 ? 0 : 1 - 10 ** -x;
    points.push([+x.toFixed(2), +(histogram.quantile(q) / 1000).toFixed(3)]);
  }
  points.push([+(top + 0.3).toFixed(2), +(histogram.max / 1000).toFixed(3)]);
  return points;
}

export function emptyResults(command: string, options: Record<string, unknown>, machine: MachineInfo): Results {
  return {
    generated_at: new Date().toISOString(),
    command,
    options,
    machine,
    revision: 'unknown',
    duration_seconds: 0,
    complete: false,
    failures: [],
    fanout_fixed: {},
    fanout_max: {},
    personal: {},
    http: {},
    memory: {},
    connect: {},
    cluster: { nodes: 3 },
  };
}
