import type { BenchResult } from '../../job/bench/bench-result';

export { isRdmaTest, type BenchResult, type BenchTest } from '../../job/bench/bench-result';

/**
 * Adds `ratio_to_raw` to every non-raw result that has a raw result of the same test and size:
 * t_typical / raw's for latency (lower is better), message rate / raw's for bandwidth (higher
 * is better).
 */
export function addRatios(results: BenchResult[]): void {
  for (const r of results) {
    if (r.type === 'raw') {
      r.ratio_to_raw = 1;
      continue;
    }
    const raw = results.find((x) => x.type === 'raw' && x.test === r.test && x.size === r.size);
    if (raw === undefined) continue;
    const lat = r.test.endsWith('lat');
    // RDMA streams move more bytes per operation than a datagram holds: compare bytes per second.
    const bw = r.test === 'bw' ? 'msg_rate_mpps' : 'bw_avg_mbps';
    const mine = lat ? r.t_typical_usec : r[bw];
    // A read's time is a whole round trip; raw latency rows are half of one (perftest's way).
    const base = lat ? (raw.t_typical_usec === undefined ? undefined : raw.t_typical_usec * (r.test === 'read_lat' ? 2 : 1)) : raw[bw];
    if (mine !== undefined && base !== undefined && base > 0) r.ratio_to_raw = Math.round((mine / base) * 1000) / 1000;
  }
}

const LAT_COLUMNS: Array<[string, keyof BenchResult]> = [
  ['#type', 'type'],
  ['#bytes', 'size'],
  ['#iterations', 'iters'],
  ['t_min[usec]', 't_min_usec'],
  ['t_max[usec]', 't_max_usec'],
  ['t_typical[usec]', 't_typical_usec'],
  ['t_avg[usec]', 't_avg_usec'],
  ['t_stdev[usec]', 't_stdev_usec'],
  ['99% percentile[usec]', 't_p99_usec'],
];

const BW_COLUMNS: Array<[string, keyof BenchResult]> = [
  ['#type', 'type'],
  ['#bytes', 'size'],
  ['#iterations', 'iters'],
  ['BW peak[MB/sec]', 'bw_peak_mbps'],
  ['BW average[MB/sec]', 'bw_avg_mbps'],
  ['MsgRate[Mpps]', 'msg_rate_mpps'],
];

/** Formats results as perftest-style tables, one per test, with a ratio column when present. */
export function formatTables(results: BenchResult[]): string {
  const out: string[] = [];
  for (const test of ['lat', 'bw', 'write_lat', 'write_bw', 'read_lat', 'read_bw']) {
    const rows = results.filter((r) => r.test === test);
    if (rows.length === 0) continue;
    const cols = [...(test.endsWith('lat') ? LAT_COLUMNS : BW_COLUMNS)];
    if (rows.some((r) => r.raw_size !== undefined)) cols.push(['raw_size', 'raw_size']);
    if (rows.some((r) => r.ratio_to_raw !== undefined)) cols.push(['ratio_to_raw', 'ratio_to_raw']);
    if (rows.some((r) => (r.retransmits ?? 0) > 0)) cols.push(['retransmits', 'retransmits']);
    const cells = rows.map((r) => cols.map(([, k]) => (r[k] === undefined ? '-' : String(r[k]))));
    const widths = cols.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
    const rule = '-'.repeat(widths.reduce((a, w) => a + w + 2, 0));
    out.push(rule);
    out.push(cols.map(([h], i) => h.padStart(widths[i])).join('  '));
    for (const c of cells) out.push(c.map((v, i) => v.padStart(widths[i])).join('  '));
    out.push(rule);
  }
  return `${out.join('\n')}\n`;
}
