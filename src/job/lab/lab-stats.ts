/*
 * The figures of `efa-emu lab`: latency histograms that ranks can merge, exact percentiles,
 * throughput bins and Jain's fairness index. Pure functions, shared by the rank programs and
 * the runner.
 */

/** Histogram buckets per decade: neighbouring bucket edges differ by about 4.7 %. */
export const BUCKETS_PER_DECADE = 50;
/** The lower edge of bucket 0, in ms (1 us): anything faster lands there. */
const HIST_FLOOR_MS = 0.001;

/**
 * A latency histogram on a log scale (sparse: bucket index -> count), so ranks can send theirs
 * to the runner and the runner can merge senders without shipping every sample.
 */
export class LatencyHistogram {
  readonly counts = new Map<number, number>();
  total = 0;

  /** Counts one latency in ms. */
  add(ms: number): void {
    const i = ms <= HIST_FLOOR_MS ? 0 : Math.floor(Math.log10(ms / HIST_FLOOR_MS) * BUCKETS_PER_DECADE);
    this.counts.set(i, (this.counts.get(i) ?? 0) + 1);
    this.total++;
  }

  /** Adds every count of `other` (a histogram or its JSON form). */
  merge(other: LatencyHistogram | HistogramJson): void {
    const entries = other instanceof LatencyHistogram ? [...other.counts] : other.buckets;
    for (const [i, n] of entries) {
      this.counts.set(i, (this.counts.get(i) ?? 0) + n);
      this.total += n;
    }
  }

  /** The upper edge (ms) of the bucket holding quantile `q` (0..1); NaN when empty. */
  quantile(q: number): number {
    if (this.total === 0) return NaN;
    const want = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (const i of [...this.counts.keys()].sort((a, b) => a - b)) {
      seen += this.counts.get(i) as number;
      if (seen >= want) return bucketUpper(i);
    }
    return bucketUpper(Math.max(...this.counts.keys()));
  }

  /** The CDF as (upper bucket edge in ms, fraction of samples at or below it), in order. */
  cdf(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let seen = 0;
    for (const i of [...this.counts.keys()].sort((a, b) => a - b)) {
      seen += this.counts.get(i) as number;
      out.push([round(bucketUpper(i), 4), round(seen / this.total, 6)]);
    }
    return out;
  }

  toJSON(): HistogramJson {
    return { buckets: [...this.counts].sort((a, b) => a[0] - b[0]) };
  }

  static fromJSON(j: HistogramJson): LatencyHistogram {
    const h = new LatencyHistogram();
    h.merge(j);
    return h;
  }
}

/** A histogram as ranks print it: [bucket index, count] pairs. */
export interface HistogramJson {
  buckets: Array<[number, number]>;
}

function bucketUpper(i: number): number {
  return HIST_FLOOR_MS * 10 ** ((i + 1) / BUCKETS_PER_DECADE);
}

/** Rounds to `digits` decimals (figures for tables and JSON, not for further arithmetic). */
export function round(x: number, digits: number): number {
  if (!Number.isFinite(x)) return x;
  const m = 10 ** digits;
  return Math.round(x * m) / m;
}

/** p50 / p99 / p99.9 in ms. */
export interface Percentiles {
  p50: number;
  p99: number;
  'p99.9': number;
}

/**
 * Exact percentiles of `samples` (sorted in place): the nearest-rank value, ceil(q n), so the
 * p99.9 of 1000 samples is the 999th smallest. NaN for no samples.
 */
export function percentiles(samples: Float64Array): Percentiles {
  samples.sort();
  const at = (q: number): number => (samples.length === 0 ? NaN : samples[Math.min(samples.length - 1, Math.max(0, Math.ceil(q * samples.length) - 1))]);
  return { p50: round(at(0.5), 4), p99: round(at(0.99), 4), 'p99.9': round(at(0.999), 4) };
}

/** The same percentiles read from a histogram (to within a bucket, about 5 %). */
export function histogramPercentiles(h: LatencyHistogram): Percentiles {
  return { p50: round(h.quantile(0.5), 4), p99: round(h.quantile(0.99), 4), 'p99.9': round(h.quantile(0.999), 4) };
}

/**
 * Jain's fairness index of `xs`: (sum x)^2 / (n sum x^2), 1 when all are equal, 1/n when one
 * takes everything. 1 for no values or all zero (nobody was treated worse than another).
 */
export function jainIndex(xs: readonly number[]): number {
  const sum = xs.reduce((a, b) => a + b, 0);
  const sq = xs.reduce((a, b) => a + b * b, 0);
  return sq === 0 ? 1 : (sum * sum) / (xs.length * sq);
}

/** Counts per bin of `binMs`, grown as needed; negative times go to bin 0. */
export class Bins {
  counts: number[] = [];

  constructor(readonly binMs: number) {}

  add(tMs: number, n = 1): void {
    const i = Math.max(0, Math.floor(tMs / this.binMs));
    while (this.counts.length <= i) this.counts.push(0);
    this.counts[i] += n;
  }
}

/** Sum of `bins` (each `binMs` wide, bin i covering [i binMs, (i+1) binMs)) over [fromMs, toMs). */
export function sumBins(bins: readonly number[], binMs: number, fromMs: number, toMs: number): number {
  let s = 0;
  const a = Math.max(0, Math.floor(fromMs / binMs));
  const b = Math.min(bins.length, Math.ceil(toMs / binMs));
  for (let i = a; i < b; i++) s += bins[i];
  return s;
}

/** Bins of `binMs` merged into bins `factor` times wider. */
export function coarsen(bins: readonly number[], factor: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < bins.length; i += factor) {
    let s = 0;
    for (let j = i; j < Math.min(bins.length, i + factor); j++) s += bins[j];
    out.push(s);
  }
  return out;
}

/** Wall-clock ms shared by every process on the host (performance's origin plus its clock), with sub-ms resolution. */
export function sharedNowMs(): number {
  return performance.timeOrigin + performance.now();
}

/** A growable array of doubles (latency samples), without boxing each one. */
export class Samples {
  private buf = new Float64Array(4096);
  length = 0;

  push(x: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = x;
  }

  view(): Float64Array {
    return this.buf.subarray(0, this.length);
  }
}
