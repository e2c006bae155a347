/** Latency figures as perftest's ib_send_lat reports them, in microseconds. */
export interface LatencyFigures {
  t_min_usec: number;
  t_max_usec: number;
  t_typical_usec: number;
  t_avg_usec: number;
  t_stdev_usec: number;
  t_p99_usec: number;
}

/** Bandwidth figures as perftest's ib_send_bw reports them (MB = 2^20 bytes, as perftest). */
export interface BandwidthFigures {
  bw_peak_mbps: number;
  bw_avg_mbps: number;
  msg_rate_mpps: number;
}

const MB = 1024 * 1024;

/** Summarises one-way latencies (half round trips, µs); sorts `samples` in place. */
export function latencyFigures(samples: Float64Array): LatencyFigures {
  samples.sort();
  const n = samples.length;
  if (n === 0) return { t_min_usec: 0, t_max_usec: 0, t_typical_usec: 0, t_avg_usec: 0, t_stdev_usec: 0, t_p99_usec: 0 };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += samples[i];
  const avg = sum / n;
  let sq = 0;
  for (let i = 0; i < n; i++) sq += (samples[i] - avg) ** 2;
  return {
    t_min_usec: round(samples[0]),
    t_max_usec: round(samples[n - 1]),
    // perftest's "typical" is the median.
    t_typical_usec: round(samples[Math.floor(n / 2)]),
    t_avg_usec: round(avg),
    t_stdev_usec: round(Math.sqrt(sq / n)),
    t_p99_usec: round(samples[Math.min(n - 1, Math.ceil(n * 0.99) - 1)]),
  };
}

/** The shortest span a peak is measured over: completions handled in one batch are marked microseconds apart. */
export const PEAK_MIN_SPAN_MS = 1;

/**
 * Bandwidth from completion times: `marks[i]` is when message `(i + 1) * step` completed
 * (ms), `startMs` when the first was posted. The peak is the best rate over a span of at least
 * PEAK_MIN_SPAN_MS (and one step): marks closer together than that are taken together, since
 * one poll (or one ack) that completes many messages marks them all in the same instant.
 */
export function bandwidthFigures(size: number, messages: number, startMs: number, endMs: number, marks: number[], step: number): BandwidthFigures {
  const seconds = Math.max(1e-9, (endMs - startMs) / 1000);
  let peak = 0;
  let from = startMs;
  let steps = 0;
  for (const m of marks) {
    steps++;
    const dt = m - from;
    if (dt < PEAK_MIN_SPAN_MS) continue;
    peak = Math.max(peak, (steps * step * size) / (dt / 1000) / MB);
    from = m;
    steps = 0;
  }
  const avg = (messages * size) / seconds / MB;
  return { bw_peak_mbps: round(Math.max(peak, avg)), bw_avg_mbps: round(avg), msg_rate_mpps: round(messages / seconds / 1e6, 6) };
}

export function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
