/**
 * Writes the bench's results: bench/results/latest.json (everything
 * measured, every repetition), latest.md (the judged figures with the
 * ratios service ÷ limit and service ÷ peer, then every other figure) and
 * latency.svg (latency percentile curves, drawn by hand: no chart library).
 * Files are written to a .tmp name and renamed, so a reader never sees half
 * a report.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SERVER_LABELS, type LatencyCurve, type MaxRep, type Results, type Series, type ServerName } from './lib/results.ts';

const SERVERS: ServerName[] = ['service', 'limit', 'socketio'];

export function writeReport(results: Results, directory: string): { json: string; md: string; svg: string } {
  mkdirSync(directory, { recursive: true });
  const paths = { json: join(directory, 'latest.json'), md: join(directory, 'latest.md'), svg: join(directory, 'latency.svg') };
  writeAtomically(paths.json, `${JSON.stringify(results, null, 2)}\n`);
  writeAtomically(paths.md, renderMarkdown(results));
  writeAtomically(paths.svg, renderSvg(results));
  return paths;
}

function writeAtomically(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

// ---------------------------------------------------------------- numbers

function fmt(value: number | undefined, digits = 0): string {
  if (value === undefined || !Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Three significant digits, for latencies and small costs. */
function sig(value: number | undefined): string {
  if (value === undefined || !Number.isFinite(value)) return '—';
  if (value === 0) return '0';
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(value))));
  return fmt(value, Math.min(digits, 3));
}

function kib(bytes: number | undefined): string {
  return bytes === undefined || !Number.isFinite(bytes) ? '—' : sig(bytes / 1024);
}

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '—';
  return `${sig(a / b)}×`;
}

// ---------------------------------------------------------------- markdown

interface JudgedRow {
  figure: string;
  better: 'lower' | 'higher';
  values: Partial<Record<ServerName, number>>;
  show: (value: number | undefined) => string;
  peer: boolean;
}

function pick<T>(set: Partial<Record<ServerName, Series<T>>>, key: keyof T): Partial<Record<ServerName, number>> {
  const out: Partial<Record<ServerName, number>> = {};
  for (const server of SERVERS) {
    const value = set[server]?.median[key];
    if (value !== undefined) out[server] = value;
  }
  return out;
}

export function judgedRows(results: Results): JudgedRow[] {
  const o = results.options as { fanout?: number; rate?: number; idle?: number };
  return [
    {
      figure: `Server CPU per fan-out delivery, µs (${fmt(o.fanout)} connections, highest sustained rate)`,
      better: 'lower',
      values: pick(results.fanout_max, 'server_cpu_us_per_delivery'),
      show: sig,
      peer: true,
    },
    {
      figure: `Fan-out deliveries/s (${fmt(o.fanout)} connections on one channel)`,
      better: 'higher',
      values: pick(results.fanout_max, 'deliveries_per_s'),
      show: (v) => fmt(v),
      peer: true,
    },
    {
      figure: `Fan-out p99 latency, ms, at ${fmt(o.rate)} notifications/s × ${fmt(o.fanout)} connections`,
      better: 'lower',
      values: pick(results.fanout_fixed, 'p99_ms'),
      show: sig,
      peer: true,
    },
    {
      figure: 'HTTP send requests/s (`POST /api/v1/notifications/send`; limit: bare Fastify route)',
      better: 'higher',
      values: pick(results.http, 'requests_per_s'),
      show: (v) => fmt(v),
      peer: false,
    },
    {
      figure: `Memory per idle connection, RSS, KiB (${fmt(o.idle)} connections)`,
      better: 'lower',
      values: pick(results.memory, 'rss_per_connection_bytes'),
      show: kib,
      peer: true,
    },
    {
      figure: `Memory per idle connection, JS heap, KiB (${fmt(o.idle)} connections)`,
      better: 'lower',
      values: pick(results.memory, 'heap_per_connection_bytes'),
      show: kib,
      peer: true,
    },
    {
      figure: 'WebSocket connects/s (service: JWT verified; limit and peer: no auth)',
      better: 'higher',
      values: pick(results.connect, 'connects_per_s'),
      show: (v) => fmt(v),
      peer: true,
    },
  ];
}

function table(header: string[], rows: string[][]): string {
  const lines = [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i === 0 ? '---' : '--:')).join('|')}|`];
  for (const row of rows) lines.push(`| ${row.join(' | ')} |`);
  return lines.join('\n');
}

export function judgedTables(results: Results): string {
  const rows = judgedRows(results).map((row) => [
    row.figure,
    row.better,
    row.show(row.values.service),
    row.show(row.values.limit),
    row.peer ? row.show(row.values.socketio) : '—',
    ratio(row.values.service, row.values.limit),
    row.peer ? ratio(row.values.service, row.values.socketio) : '—',
  ]);
  const main = table(['Figure', 'Better', 'Service', 'Limit (raw ws)', 'Peer (Socket.IO 4)', 'Service ÷ limit', 'Service ÷ peer'], rows);
  const single = results.fanout_max.service?.median;
  const cluster = results.cluster.fanout_max?.median;
  const singlePersonal = results.personal.service?.median;
  const clusterPersonal = results.cluster.personal?.median;
  let clusterTable: string;
  if (results.cluster.skipped !== undefined && cluster === undefined) {
    clusterTable = `3-node cluster: not measured (${results.cluster.skipped}).`;
  } else {
    clusterTable = table(
      ['Figure (service)', 'Better', '1 node', '3 nodes', '3 nodes ÷ 1 node'],
      [
        [
          `Fan-out deliveries/s (${fmt((results.options as { fanout?: number }).fanout)} connections)`,
          'higher',
          fmt(single?.deliveries_per_s),
          fmt(cluster?.deliveries_per_s),
          ratio(cluster?.deliveries_per_s, single?.deliveries_per_s),
        ],
        [
          'Server CPU per fan-out delivery, µs (3 nodes: sum of the nodes, Redis apart)',
          'lower',
          sig(single?.server_cpu_us_per_delivery),
          sig(cluster?.server_cpu_us_per_delivery),
          ratio(cluster?.server_cpu_us_per_delivery, single?.server_cpu_us_per_delivery),
        ],
        [
          'Personal-message deliveries/s',
          'higher',
          fmt(singlePersonal?.deliveries_per_s),
          fmt(clusterPersonal?.deliveries_per_s),
          ratio(clusterPersonal?.deliveries_per_s, singlePersonal?.deliveries_per_s),
        ],
      ],
    );
  }
  return `${main}\n\n${clusterTable}\n`;
}

function perServerTable<T>(title: string, set: Partial<Record<ServerName, Series<T>>>, fields: Array<[keyof T, string, (v: number | undefined) => string]>): string {
  const present = SERVERS.filter((server) => set[server] !== undefined);
  if (present.length === 0) return '';
  const rows = fields.map(([key, label, show]) => [label, ...present.map((server) => show(set[server]!.median[key]))]);
  const notes = present.flatMap((server) => (set[server]!.notes ?? []).map((note) => `- ${SERVER_LABELS[server]}: ${note}`));
  return `### ${title}\n\n${table(['', ...present.map((server) => SERVER_LABELS[server])], rows)}\n${notes.length > 0 ? `\n${notes.join('\n')}\n` : ''}\n`;
}

function repsOf<T>(set: Partial<Record<ServerName, Series<T>>>): number {
  return Math.max(0, ...Object.values(set).map((s) => (s as Series<T>).reps.length));
}

export function renderMarkdown(results: Results): string {
  const m = results.machine;
  const o = results.options as Record<string, any>;
  const parts: string[] = [];
  parts.push('# Benchmark results\n');
  parts.push(
    `Generated ${results.generated_at} by \`${results.command}\` at revision ${results.revision ?? 'unknown'} in ${fmt(results.duration_seconds)} s` +
      `${results.complete ? '' : ' — **incomplete: see Failures**'}.\n`,
  );
  parts.push(
    `Machine: ${m.cores} cores (${m.cpu_model}), ${fmt(m.memory_bytes / 2 ** 30, 1)} GiB memory, Node ${m.node}, ${m.os}, ` +
      `fd limit ${m.fd_limit}; load average at start ${m.load_average_at_start.join(' / ')}` +
      `${m.load_average_at_end ? `, at end ${m.load_average_at_end.join(' / ')}` : ''}.\n`,
  );
  parts.push(
    `Sizes: ${fmt(o.fanout)} fan-out connections, ${fmt(o.users)} users, fixed rate ${fmt(o.rate)} notifications/s, ` +
      `${fmt(o.idle)} idle connections, ${o.duration} s per measuring window after ${o.warmup} s warm-up, ` +
      `${o.reps} repetition(s) (figures are medians), ${fmt(o.window)} fan-out notifications outstanding and ` +
      `${fmt(o.concurrency)} HTTP requests in flight at the highest rate. Payload ${o.payload_bytes} bytes.\n`,
  );
  const others = [results.fanout_max, results.personal]
    .flatMap((set) => Object.values(set))
    .flatMap((s) => (s as Series<MaxRep>).reps.map((rep) => rep.other_cpu_percent))
    .filter((v) => Number.isFinite(v))
    .sort((a, b) => a - b);
  if (others.length > 0) {
    const middle = others[Math.floor(others.length / 2)]!;
    parts.push(
      `Other work on the machine during the measuring windows (CPU not used by the bench's processes): median ${fmt(middle)} %, ` +
        `max ${fmt(others[others.length - 1])} % of a core.${middle > 25 ? ' **The machine was busy with other work: figures are noisier than on an idle machine; CPU per delivery is the least affected.**' : ''}\n`,
    );
  }
  parts.push('## Judged figures\n');
  parts.push(judgedTables(results));
  parts.push(
    '\nRatios are service ÷ other: above 1 means the service has more of it (better for "higher", worse for "lower"). ' +
      'CPU figures are the server process\'s own user+system time from /proc over the measuring window, divided by the ' +
      'deliveries the clients counted in it. Latency: send timestamp in the payload to the client\'s read of the frame.\n',
  );
  parts.push('## All figures (medians)\n');
  parts.push(
    perServerTable('Fan-out at a fixed rate', results.fanout_fixed, [
      ['rate_achieved', 'notifications/s sent', (v) => fmt(v, 1)],
      ['p50_ms', 'latency p50, ms', sig],
      ['p99_ms', 'latency p99, ms', sig],
      ['p999_ms', 'latency p99.9, ms', sig],
      ['max_ms', 'latency max, ms', sig],
      ['lost', 'deliveries missing', (v) => fmt(v)],
      ['drain_ms', 'last send → last delivery, ms', sig],
      ['server_cpu_percent', 'server CPU, % of a core', (v) => fmt(v)],
      ['server_cpu_us_per_delivery', 'server CPU per delivery, µs', sig],
    ]),
  );
  const maxFields: Array<[keyof MaxRep, string, (v: number | undefined) => string]> = [
    ['deliveries_per_s', 'deliveries/s', (v) => fmt(v)],
    ['sends_per_s', 'sends/s (HTTP)', (v) => fmt(v, 1)],
    ['server_cpu_us_per_delivery', 'server CPU per delivery, µs', sig],
    ['server_cpu_percent', 'server CPU, % of a core', (v) => fmt(v)],
    ['clients_cpu_percent', 'client processes CPU, % of a core', (v) => fmt(v)],
    ['sender_cpu_percent', 'sender CPU, % of a core', (v) => fmt(v)],
    ['server_kernel_share_percent', 'share of server CPU in the kernel, %', (v) => fmt(v)],
    ['other_cpu_percent', 'other load on the machine, % of a core', (v) => fmt(v)],
    ['p50_ms', 'latency p50, ms', sig],
    ['p99_ms', 'latency p99, ms', sig],
    ['max_ms', 'latency max, ms', sig],
    ['lost', 'deliveries missing', (v) => fmt(v)],
    ['http_errors', 'HTTP errors', (v) => fmt(v)],
    ['unexpected_closes', 'connections closed by the server', (v) => fmt(v)],
  ];
  parts.push(perServerTable('Fan-out at the highest sustained rate', results.fanout_max, maxFields));
  parts.push(perServerTable('Personal messages at the highest sustained rate', results.personal, maxFields));
  parts.push(
    perServerTable('HTTP API (autocannon)', results.http, [
      ['requests_per_s', 'requests/s', (v) => fmt(v)],
      ['p50_ms', 'latency p50, ms', sig],
      ['p99_ms', 'latency p99, ms', sig],
      ['server_cpu_us_per_request', 'server CPU per request, µs', sig],
      ['server_cpu_percent', 'server CPU, % of a core', (v) => fmt(v)],
      ['response_bytes', 'response body bytes', (v) => fmt(v)],
      ['non2xx', 'non-2xx responses', (v) => fmt(v)],
      ['errors', 'errors', (v) => fmt(v)],
    ]),
  );
  parts.push(
    perServerTable('Idle connections', results.memory, [
      ['connections', 'connections', (v) => fmt(v)],
      ['rss_before_bytes', 'RSS before, MiB', (v) => (v === undefined ? '—' : fmt(v / 2 ** 20, 1))],
      ['rss_after_bytes', 'RSS after, MiB', (v) => (v === undefined ? '—' : fmt(v / 2 ** 20, 1))],
      ['heap_before_bytes', 'heap before, MiB', (v) => (v === undefined ? '—' : fmt(v / 2 ** 20, 1))],
      ['heap_after_bytes', 'heap after, MiB', (v) => (v === undefined ? '—' : fmt(v / 2 ** 20, 1))],
      ['rss_per_connection_bytes', 'RSS per connection, bytes', (v) => fmt(v)],
      ['heap_per_connection_bytes', 'heap per connection, bytes', (v) => fmt(v)],
    ]),
  );
  parts.push(
    perServerTable('Connect rate', results.connect, [
      ['connections', 'connections opened', (v) => fmt(v)],
      ['failed', 'failed', (v) => fmt(v)],
      ['seconds', 'seconds', (v) => fmt(v, 2)],
      ['connects_per_s', 'connects/s', (v) => fmt(v)],
      ['server_cpu_us_per_connect', 'server CPU per connect, µs', sig],
    ]),
  );
  const cluster = results.cluster;
  if (cluster.fanout_max || cluster.personal) {
    const rows = maxFields.map(([key, label, show]) => [label, show(cluster.fanout_max?.median[key]), show(cluster.personal?.median[key])]);
    parts.push(`### Cluster of ${cluster.nodes} nodes (Redis pub/sub)\n\n${table(['', 'fan-out', 'personal'], rows)}\n`);
    if (cluster.redis_cpu_us_per_delivery !== undefined) {
      parts.push(`\nRedis's own CPU per fan-out delivery: ${sig(cluster.redis_cpu_us_per_delivery)} µs (not included above).\n`);
    }
    const notes = [...(cluster.fanout_max?.notes ?? []), ...(cluster.personal?.notes ?? [])];
    if (notes.length > 0) parts.push(`\n${notes.map((n) => `- ${n}`).join('\n')}\n`);
  } else if (cluster.skipped) {
    parts.push(`### Cluster\n\nNot measured: ${cluster.skipped}.\n`);
  }
  parts.push(`\nRepetitions per figure: ${Math.max(repsOf(results.fanout_max), repsOf(results.memory), repsOf(results.http))}; every repetition is in latest.json.\n`);
  parts.push('\n## Latency distributions\n\n![latency percentiles](latency.svg)\n');
  parts.push('\n## Failures\n');
  parts.push(results.failures.length === 0 ? 'None.\n' : `${results.failures.map((f) => `- ${f}`).join('\n')}\n`);
  return parts.join('\n');
}

// ---------------------------------------------------------------- SVG

const COLORS: Record<string, string> = {
  service: '#1f77b4',
  limit: '#2ca02c',
  socketio: '#ff7f0e',
  cluster: '#9467bd',
};

interface Panel {
  title: string;
  curves: Array<{ key: string; label: string; curve: LatencyCurve }>;
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function renderSvg(results: Results): string {
  const o = results.options as { rate?: number; fanout?: number };
  const panels: Panel[] = [];
  const collect = (title: string, sets: Array<[string, string, Series<any> | undefined]>) => {
    const curves = sets.filter(([, , s]) => s?.latency !== undefined).map(([key, label, s]) => ({ key, label, curve: s!.latency! }));
    if (curves.length > 0) panels.push({ title, curves });
  };
  const perServer = (set: Partial<Record<ServerName, Series<any>>>): Array<[string, string, Series<any> | undefined]> =>
    SERVERS.map((server) => [server, SERVER_LABELS[server], set[server]]);
  collect(`Fan-out at ${fmt(o.rate)} notifications/s × ${fmt(o.fanout)} connections`, perServer(results.fanout_fixed));
  collect('Fan-out at the highest sustained rate', [...perServer(results.fanout_max), ['cluster', 'Service, 3 nodes', results.cluster.fanout_max]]);
  collect('Personal messages at the highest sustained rate', [...perServer(results.personal), ['cluster', 'Service, 3 nodes', results.cluster.personal]]);

  const width = 900;
  const panelHeight = 300;
  const margin = { left: 75, right: 250, top: 40, bottom: 45 };
  const height = Math.max(1, panels.length) * panelHeight + 30;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">End-to-end latency by percentile (log scale; all repetitions merged)</text>`);
  if (panels.length === 0) {
    out.push(`<text x="${width / 2}" y="60" text-anchor="middle">No latency was measured.</text>`);
  }
  panels.forEach((panel, index) => {
    const top = 30 + index * panelHeight + margin.top;
    const plotW = width - margin.left - margin.right;
    const plotH = panelHeight - margin.top - margin.bottom;
    const xMax = Math.max(4, ...panel.curves.map((c) => c.curve[c.curve.length - 1]![0]));
    const values = panel.curves.flatMap((c) => c.curve.map(([, ms]) => Math.max(ms, 0.01)));
    const yLow = 10 ** Math.floor(Math.log10(Math.min(...values)));
    const yHigh = 10 ** Math.ceil(Math.log10(Math.max(...values) * 1.0001));
    const x = (v: number) => margin.left + (v / xMax) * plotW;
    const y = (ms: number) => top + plotH - ((Math.log10(Math.max(ms, yLow)) - Math.log10(yLow)) / (Math.log10(yHigh) - Math.log10(yLow))) * plotH;
    out.push(`<text x="${margin.left}" y="${top - 10}" font-size="13" font-weight="bold">${escapeXml(panel.title)}</text>`);
    out.push(`<rect x="${margin.left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`);
    for (let decade = Math.log10(yLow); decade <= Math.log10(yHigh) + 1e-9; decade++) {
      const ms = 10 ** decade;
      const yy = y(ms).toFixed(1);
      out.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`);
      out.push(`<text x="${margin.left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${ms >= 1 ? fmt(ms) : String(+ms.toPrecision(1))} ms</text>`);
    }
    const ticks: Array<[number, string]> = [
      [0, 'min'],
      [0.301, 'p50'],
      [1, 'p90'],
      [2, 'p99'],
      [3, 'p99.9'],
      [4, 'p99.99'],
    ];
    for (const [v, label] of ticks) {
      if (v > xMax) continue;
      const xx = x(v).toFixed(1);
      out.push(`<line x1="${xx}" x2="${xx}" y1="${top}" y2="${top + plotH}" stroke="#eee"/>`);
      out.push(`<text x="${xx}" y="${top + plotH + 16}" text-anchor="middle">${label}</text>`);
    }
    out.push(`<text x="${margin.left + plotW / 2}" y="${top + plotH + 34}" text-anchor="middle" fill="#555">percentile (the last point of each line is the maximum)</text>`);
    panel.curves.forEach((c, i) => {
      const color = COLORS[c.key] ?? '#333';
      const points = c.curve.map(([v, ms]) => `${x(v).toFixed(1)},${y(Math.max(ms, yLow)).toFixed(1)}`).join(' ');
      out.push(`<polyline points="${points}" fill="none" stroke="${color}" stroke-width="2"/>`);
      const ly = top + 16 + i * 36;
      const lx = margin.left + plotW + 14;
      out.push(`<line x1="${lx}" x2="${lx + 20}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="3"/>`);
      const p50 = c.curve.find(([v]) => v >= 0.3)?.[1];
      const p99 = c.curve.find(([v]) => v >= 2)?.[1];
      out.push(`<text x="${lx + 26}" y="${ly}" dominant-baseline="middle">${escapeXml(c.label)}</text>`);
      out.push(
        `<text x="${lx + 26}" y="${ly + 15}" dominant-baseline="middle" fill="#555" font-size="11">p50 ${sig(p50)} ms, p99 ${sig(p99)} ms, max ${sig(c.curve[c.curve.length - 1]![1])} ms</text>`,
      );
    });
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
