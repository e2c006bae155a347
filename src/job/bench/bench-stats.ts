/** Latency figures as perftest's ib_send_lat reports them, in microseconds. */
export interface LatencyFigures {
  t_min_usec: number;
  t_max_usec: number;
  t_typical_usec: number;
  t_avg_usec: number;
  t_stdev_usec: number;
  t_p99_usec: number;
  t_p999_usec: number;
}

/** Bandwidth figures as perftest's ib_send_bw reports them (MiB = 2^20 bytes, as perftest). */
export interface BandwidthFigures {
  bw_peak_mbps: number;
  bw_avg_mbps: number;
  msg_rate_mpps: number;
}

/** perftest's unit for `BW peak[MiB/sec]` and `BW average[MiB/sec]` (without --report_gbits). */
export const MIB = 1024 * 1024;

/**
 * The largest samples perftest leaves out of its latency figures (its LAT_MEASURE_TAIL): two
 * out of the median, average and deviation, one out of the maximum.
 */
export const LAT_MEASURE_TAIL = 2;

/**
 * Summarises latency samples (µs; one-way, or a whole read) as perftest's print_report_lat
 * does, so the figures can be set beside perftest's: sort; drop the LAT_MEASURE_TAIL largest;
 * of the `m` left, t_typical is the median (the mean of the middle two when `m` is even),
 * t_avg and t_stdev (population) are over those `m`; t_max is the sorted sample at index `m`
 * (the smaller of the two dropped), the percentiles those at `ceil(m * 0.99)` and
 * `ceil(m * 0.999)`. Fewer than three samples keep them all (perftest would read past them).
 *
 * One known difference: perftest truncates each deviation to a whole microsecond before
 * squaring it (an int), which reads sub-microsecond spreads as 0; t_stdev here is exact.
 * Sorts `samples` in place.
 */
export function latencyFigures(samples: Float64Array): LatencyFigures {
  samples.sort();
  const n = samples.length;
  if (n === 0) return { t_min_usec: 0, t_max_usec: 0, t_typical_usec: 0, t_avg_usec: 0, t_stdev_usec: 0, t_p99_usec: 0, t_p999_usec: 0 };
  const m = n > LAT_MEASURE_TAIL ? n - LAT_MEASURE_TAIL : n;
  const at = (i: number): number => samples[Math.min(i, n - 1)];
  let sum = 0;
  for (let i = 0; i < m; i++) sum += samples[i];
  const avg = sum / m;
  let sq = 0;
  for (let i = 0; i < m; i++) sq += (samples[i] - avg) ** 2;
  const median = m % 2 === 0 ? (samples[m / 2] + samples[m / 2 - 1]) / 2 : samples[(m - 1) / 2];
  return {
    t_min_usec: round(samples[0]),
    t_max_usec: round(at(m)),
    t_typical_usec: round(median),
    t_avg_usec: round(avg),
    t_stdev_usec: round(Math.sqrt(sq / m)),
    // The same double arithmetic as perftest's ceil(m * 0.99), so the same index.
    t_p99_usec: round(at(Math.ceil(m * 0.99))),
    t_p999_usec: round(at(Math.ceil(m * 0.999))),
  };
}

/**
 * perftest's BW peak, kept as a stream runs: the shortest time per message over any run of
 * messages i..j, from the post of message i to the completion that brought the count to
 * j + 1: min over i <= j of (C_j - P_i) / (j - i + 1). That is perftest's print_report_bw
 * (tposted / tcompleted, every post against every signalled completion).
 *
 * perftest tries every pair, O(posts x completions); a run here may have 10^8 messages, so
 * only what can win is kept. Seen as points (i, P_i) and (j + 1, C_j), the figure is the
 * smallest slope from a post point to a later completion point, and for a given completion
 * the best post lies on the upper convex hull of the posts before it: the hull is kept as
 * posts are added and searched once per completion, and posts the completions have not yet
 * reached (at most the window) wait in a queue, so memory stays small.
 *
 * Batched completions do not inflate this peak (the old completion-to-completion peak needed
 * a minimum span for that): every interval starts at a post, so no run of messages can read
 * faster than they were posted.
 */
export class BwPeak {
  private readonly hullX: number[] = [];
  private readonly hullY: number[] = [];
  private readonly pendingT: number[] = [];
  private pendingHead = 0;
  private posted = 0;
  private inHull = 0;
  private best = Infinity;
  /** When the first message was posted (ms), NaN before; perftest's tposted[0]. */
  firstPostMs = NaN;
  /** When the last completion was reported (ms), NaN before. */
  lastCompletionMs = NaN;

  /** Message `posted` (counting from 0, in order) was posted at `t` ms. */
  post(t: number): void {
    if (this.posted === 0) this.firstPostMs = t;
    this.posted++;
    this.pendingT.push(t);
  }

  /** `count` messages have completed by `t` ms (a count past the posts is taken as all of them). */
  complete(count: number, t: number): void {
    const n = Math.min(count, this.posted);
    if (n <= 0) return;
    this.lastCompletionMs = t;
    while (this.inHull < n) this.addToHull(this.inHull++, this.pendingT[this.pendingHead++]);
    if (this.pendingHead > 4096 && this.pendingHead * 2 > this.pendingT.length) {
      this.pendingT.splice(0, this.pendingHead);
      this.pendingHead = 0;
    }
    const v = this.bestSlopeTo(n, t);
    if (v < this.best) this.best = v;
  }

  /** The shortest time per message found (ms), Infinity before any completion. */
  bestMsPerMessage(): number {
    return this.best;
  }

  private addToHull(x: number, y: number): void {
    const hx = this.hullX;
    const hy = this.hullY;
    // Keep strict right turns only: collinear points would make the search's order ambiguous.
    while (hx.length >= 2) {
      const k = hx.length - 1;
      const cross = (hx[k] - hx[k - 1]) * (y - hy[k - 1]) - (hy[k] - hy[k - 1]) * (x - hx[k - 1]);
      if (cross < 0) break;
      hx.pop();
      hy.pop();
    }
    hx.push(x);
    hy.push(y);
  }

  /**
   * Smallest slope from a hull point to (x, y), x past every hull point. Along a concave chain
   * that slope falls, then rises: the first vertex whose successor is no better is the minimum.
   */
  private bestSlopeTo(x: number, y: number): number {
    const hx = this.hullX;
    const hy = this.hullY;
    const slope = (k: number): number => (y - hy[k]) / (x - hx[k]);
    let lo = 0;
    let hi = hx.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (slope(mid + 1) >= slope(mid)) hi = mid;
      else lo = mid + 1;
    }
    return slope(lo);
  }
}

/**
 * Bandwidth as perftest reports it: the average over the whole stream, `startMs` (the first
 * post) to `endMs` (the last completion), of the `messages` that arrived; the peak from
 * `bestMsPerMessage` (see {@link BwPeak}). MiB/sec as perftest's default, MsgRate in Mpps.
 * Without a usable peak (no completion was seen) the peak reads as the average.
 */
export function bandwidthFigures(size: number, messages: number, startMs: number, endMs: number, bestMsPerMessage: number): BandwidthFigures {
  const seconds = Math.max(1e-9, (endMs - startMs) / 1000);
  const avg = (messages * size) / seconds / MIB;
  const peak = Number.isFinite(bestMsPerMessage) && bestMsPerMessage > 0 ? size / (bestMsPerMessage / 1000) / MIB : avg;
  return { bw_peak_mbps: round(peak), bw_avg_mbps: round(avg), msg_rate_mpps: round(messages / seconds / 1e6, 6) };
}

/** Rounds to `digits` decimals, the precision perftest prints (2, and 6 for MsgRate). */
export function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
