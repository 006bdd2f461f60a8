/**
 * A small log-linear histogram of non-negative numbers (the bench records
 * microseconds). Values below 64 have their own bucket; above that each
 * power of two is split into 32 buckets, so a reported percentile is within
 * about 3 % of the true value. 900 buckets cover up to ~35 minutes, which is
 * far beyond anything a phase can measure. Histograms are merged by adding
 * counts, so client processes can send theirs to the orchestrator over IPC.
 */

const LINEAR = 64;
const SUB = 32;
/** Enough buckets for values below 2^31. */
export const BUCKET_COUNT = LINEAR + 26 * SUB;
const MAX_VALUE = 2 ** 31 - 1;

export function bucketOf(value: number): number {
  if (!(value > 0)) return 0;
  if (value < LINEAR) return Math.floor(value);
  const v = value >= MAX_VALUE ? MAX_VALUE : Math.floor(value);
  const exponent = 31 - Math.clz32(v); // ≥ 6
  const shift = exponent - 5;
  const mantissa = v >>> shift; // 32…63
  return LINEAR + (shift - 1) * SUB + (mantissa - SUB);
}

/** Lowest value of a bucket and its width. */
export function bucketRange(index: number): { low: number; width: number } {
  if (index < LINEAR) return { low: index, width: 1 };
  const k = index - LINEAR;
  const shift = Math.floor(k / SUB) + 1;
  const mantissa = (k % SUB) + SUB;
  return { low: mantissa * 2 ** shift, width: 2 ** shift };
}

/** What a histogram looks like on the wire: sparse [bucket, count] pairs. */
export interface HistogramData {
  buckets: Array<[number, number]>;
  count: number;
  sum: number;
  min: number;
  max: number;
}

export class Histogram {
  counts = new Float64Array(BUCKET_COUNT);
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;

  record(value: number): void {
    this.counts[bucketOf(value)]!++;
    this.count++;
    this.sum += value;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.min = Infinity;
    this.max = 0;
  }

  toData(): HistogramData {
    const buckets: Array<[number, number]> = [];
    for (let i = 0; i < BUCKET_COUNT; i++) if (this.counts[i]! > 0) buckets.push([i, this.counts[i]!]);
    return { buckets, count: this.count, sum: this.sum, min: this.count > 0 ? this.min : 0, max: this.max };
  }

  static fromData(data: HistogramData): Histogram {
    const histogram = new Histogram();
    histogram.add(data);
    return histogram;
  }

  add(data: HistogramData): void {
    if (data.count === 0) return;
    for (const [index, count] of data.buckets) this.counts[index]! += count;
    this.count += data.count;
    this.sum += data.sum;
    if (data.min < this.min) this.min = data.min;
    if (data.max > this.max) this.max = data.max;
  }

  /** Value at quantile q (0…1): the middle of the bucket holding it, clamped to the observed range. */
  quantile(q: number): number {
    if (this.count === 0) return NaN;
    if (q >= 1) return this.max;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKET_COUNT; i++) {
      seen += this.counts[i]!;
      if (seen >= rank) {
        const { low, width } = bucketRange(i);
        const middle = low + (width - 1) / 2;
        return Math.min(this.max, Math.max(this.min, middle));
      }
    }
    return this.max;
  }

  get mean(): number {
    return this.count === 0 ? NaN : this.sum / this.count;
  }
}
