/**
 * A histogram and a counter for the per-request paths, exposed through
 * prom-client's registry exactly as prom-client's own Histogram and Counter
 * are (same series, labels, order and text), but whose label children
 * record with a few additions. prom-client's children re-validate and
 * re-hash their label set on every observe/inc, which cost about a
 * microsecond per sample, several per HTTP send.
 *
 * The registry only needs `name`, `help`, `type`, `aggregator`, `get()`
 * (and `getForPromString()`, which it prefers for the text format) and
 * `reset()`; the values have the shape prom-client's metrics return.
 */
import type { Registry } from 'prom-client';

type Labels = Record<string, string>;

interface MetricConfig {
  name: string;
  help: string;
  labelNames?: readonly string[];
  registers: Registry[];
}

interface Sample {
  labels: Record<string, string | number>;
  sharedLabels?: Labels;
  value: number;
  metricName?: string;
}

interface Collected {
  name: string;
  help: string;
  type: string;
  values: Sample[];
  aggregator: 'sum';
}

function labelsOf(names: readonly string[], values: readonly string[], metric: string): Labels {
  if (values.length !== names.length) throw new Error(`${metric}: expected ${names.length} label values, got ${values.length}`);
  const labels: Labels = {};
  names.forEach((name, index) => (labels[name] = values[index]!));
  return labels;
}

function register(metric: object, registries: Registry[]): void {
  for (const registry of registries) registry.registerMetric(metric as Parameters<Registry['registerMetric']>[0]);
}

/**
 * The series of one metric by label values (joined by NUL), in first-use
 * order as prom-client lists them, and the child handed out for each, so a
 * caller that keeps its child pays the lookup once.
 */
class SeriesIndex<S extends { listed: boolean }, C> {
  readonly #series = new Map<string, S>();
  readonly #children = new Map<string, C>();

  constructor(
    readonly labelNames: readonly string[],
    readonly metric: string,
    readonly newSeries: (labels: Labels) => S,
  ) {
    // prom-client lists an unlabelled metric from the start, at zero.
    if (labelNames.length === 0) this.seriesFor([]).listed = true;
  }

  seriesFor(values: readonly string[]): S {
    const key = values.join('\0');
    let series = this.#series.get(key);
    if (series === undefined) {
      series = this.newSeries(labelsOf(this.labelNames, values, this.metric));
      this.#series.set(key, series);
    }
    return series;
  }

  childFor(values: readonly string[], newChild: (series: S) => C): C {
    const key = values.join('\0');
    let child = this.#children.get(key);
    if (child === undefined) {
      child = newChild(this.seriesFor(values));
      this.#children.set(key, child);
    }
    return child;
  }

  all(): IterableIterator<S> {
    return this.#series.values();
  }
}

class HistogramSeries {
  /** Samples per bucket, not cumulative; the last slot counts values above every bound. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;
  /** Listed in the output from its first sample on, as prom-client does. */
  listed = false;

  constructor(
    readonly labels: Labels,
    bucketCount: number,
  ) {
    this.counts = new Float64Array(bucketCount + 1);
  }
}

export interface HistogramChild {
  observe(value: number): void;
}

export class HotHistogram implements HistogramChild {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum' as const;
  readonly #bounds: readonly number[];
  readonly #index: SeriesIndex<HistogramSeries, HistogramChild>;

  constructor(config: MetricConfig & { buckets: readonly number[] }) {
    this.name = config.name;
    this.help = config.help;
    const bounds = [...config.buckets].sort((a, b) => a - b);
    this.#bounds = bounds;
    this.#index = new SeriesIndex(config.labelNames ?? [], config.name, (labels) => new HistogramSeries(labels, bounds.length));
    register(this, config.registers);
  }

  /** The child for these label values; callers keep it, so its lookup is paid once. */
  labels(...values: string[]): HistogramChild {
    return this.#index.childFor(values, (series) => ({ observe: (value: number) => this.#observe(series, value) }));
  }

  /** Unlabelled histograms only. */
  observe(value: number): void {
    this.#observe(this.#index.seriesFor([]), value);
  }

  /**
   * Zeroes in place: children handed out keep recording into their series.
   * Nothing is listed until the next sample, as prom-client's histogram
   * (unlike its counter) lists nothing after a reset.
   */
  reset(): void {
    for (const series of this.#index.all()) {
      series.counts.fill(0);
      series.sum = 0;
      series.count = 0;
      series.listed = false;
    }
  }

  async get(): Promise<Collected> {
    const collected = await this.getForPromString();
    for (const sample of collected.values) {
      sample.labels = { ...sample.labels, ...sample.sharedLabels };
      delete sample.sharedLabels;
    }
    return collected;
  }

  async getForPromString(): Promise<Collected> {
    const values: Sample[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const series of this.#index.all()) {
      if (!series.listed) continue;
      let cumulative = 0;
      this.#bounds.forEach((bound, index) => {
        cumulative += series.counts[index]!;
        values.push({ labels: { le: bound }, sharedLabels: series.labels, value: cumulative, metricName: bucketName });
      });
      values.push({ labels: { le: '+Inf' }, sharedLabels: series.labels, value: series.count, metricName: bucketName });
      values.push({ labels: {}, sharedLabels: series.labels, value: series.sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: series.labels, value: series.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  #observe(series: HistogramSeries, value: number): void {
    if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
    const bounds = this.#bounds;
    let index = 0;
    while (index < bounds.length && value > bounds[index]!) index++;
    series.counts[index]!++;
    series.sum += value;
    series.count++;
    series.listed = true;
  }
}

export interface CounterChild {
  inc(amount?: number): void;
}

class CounterSeries {
  value = 0;
  listed = false;

  constructor(readonly labels: Labels) {}
}

export class HotCounter implements CounterChild {
  readonly name: string;
  readonly help: string;
  readonly type = 'counter';
  readonly aggregator = 'sum' as const;
  readonly #index: SeriesIndex<CounterSeries, CounterChild>;

  constructor(config: MetricConfig) {
    this.name = config.name;
    this.help = config.help;
    this.#index = new SeriesIndex(config.labelNames ?? [], config.name, (labels) => new CounterSeries(labels));
    register(this, config.registers);
  }

  /** The child for these label values; callers keep it, so its lookup is paid once. */
  labels(...values: string[]): CounterChild {
    return this.#index.childFor(values, (series) => ({ inc: (amount = 1) => this.#inc(series, amount) }));
  }

  /** Unlabelled counters only. */
  inc(amount = 1): void {
    this.#inc(this.#index.seriesFor([]), amount);
  }

  /** Zeroes in place: children handed out keep counting into their series. An unlabelled counter stays listed, at 0, as in prom-client. */
  reset(): void {
    for (const series of this.#index.all()) {
      series.value = 0;
      series.listed = this.#index.labelNames.length === 0;
    }
  }

  async get(): Promise<Collected> {
    const values: Sample[] = [];
    for (const series of this.#index.all()) if (series.listed) values.push({ value: series.value, labels: series.labels });
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  #inc(series: CounterSeries, amount: number): void {
    if (!Number.isFinite(amount)) throw new TypeError(`Value is not a valid number: ${amount}`);
    if (amount < 0) throw new Error('It is not possible to decrease a counter');
    series.value += amount;
    series.listed = true;
  }
}
