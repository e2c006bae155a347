// The bench's output as perftest prints it (linux-rdma/perftest: the header macros of
// src/perftest_parameters.h, print_report_lat / print_report_bw of src/perftest_parameters.c),
// checked on synthetic results with a parser that knows only perftest's format; and the
// figures' arithmetic (percentiles, median, BW peak) on known inputs.
import t from 'tap';
import { addRatios, bandwidthRow, formatTables, latencyRow, toJson, type BenchResult, type BenchSetup } from '../src/cli/bench/bench-table';
import { bandwidthFigures, BwPeak, latencyFigures } from '../src/job/bench/bench-stats';

// perftest's strings, written out here rather than imported, so a change on our side fails.
const PERFTEST_RESULT_LINE = '---------------------------------------------------------------------------------------';
const PERFTEST_LAT_HEADER = ' #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ';
const PERFTEST_BW_HEADER = ' #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]';
const LAT_FIELDS = ['bytes', 'iterations', 't_min', 't_max', 't_typical', 't_avg', 't_stdev', 'p99', 'p999'];
const BW_FIELDS = ['bytes', 'iterations', 'bw_peak', 'bw_avg', 'msg_rate'];

/** One table as a perftest log parser sees it. */
interface ParsedTable {
  title: string;
  banner: Map<string, string>;
  kind: 'lat' | 'bw';
  rows: Array<Record<string, number>>;
}

/**
 * A parser of perftest output that knows nothing of efa-emu: a table is the exact header line
 * and the lines under it up to the next dashes line, each split on white space into numbers;
 * its banner is the `key : value` lines since the title above it.
 */
function parsePerftest(text: string): ParsedTable[] {
  const lines = text.split('\n');
  const tables: ParsedTable[] = [];
  for (let i = 0; i < lines.length; i++) {
    const kind = lines[i] === PERFTEST_LAT_HEADER ? 'lat' : lines[i] === PERFTEST_BW_HEADER ? 'bw' : null;
    if (kind === null) continue;
    let ti = i;
    while (ti >= 0 && !/^ {20}\S.* Test$/.test(lines[ti])) ti--;
    if (ti < 0) throw new Error(`no banner title above the header at line ${i + 1}`);
    const banner = new Map<string, string>();
    for (const line of lines.slice(ti + 1, i)) {
      for (const part of line.split('\t\t')) {
        const c = part.indexOf(':');
        if (c > 0) banner.set(part.slice(0, c).trim(), part.slice(c + 1).trim());
      }
    }
    const fields = kind === 'lat' ? LAT_FIELDS : BW_FIELDS;
    const rows: Array<Record<string, number>> = [];
    let j = i + 1;
    for (; j < lines.length && lines[j] !== PERFTEST_RESULT_LINE; j++) {
      const cells = lines[j].trim().split(/\s+/);
      if (cells.length !== fields.length) throw new Error(`line ${j + 1}: ${cells.length} fields, not ${fields.length}: ${JSON.stringify(lines[j])}`);
      const values = cells.map(Number);
      if (values.some((v) => !Number.isFinite(v))) throw new Error(`line ${j + 1}: not all numbers: ${JSON.stringify(lines[j])}`);
      rows.push(Object.fromEntries(fields.map((f, k) => [f, values[k]])));
    }
    if (j === lines.length) throw new Error(`the table at line ${i + 1} does not end with perftest's dashes line`);
    tables.push({ title: lines[ti].trim(), banner, kind, rows });
  }
  return tables;
}

function setup(type: string, lat: boolean, over: Partial<BenchSetup> = {}): BenchSetup {
  const raw = type === 'raw';
  return {
    device: raw ? null : 'efa0',
    generation: 'efa3',
    mtu: raw ? null : 8192,
    tx_depth: lat ? 1 : 128,
    ...(lat ? {} : { cq_mod: type === 'srd' ? 1 : 64 }),
    wr_api: false,
    poll: 'event',
    warmup: lat ? 100 : 0,
    local: raw ? { host: '127.0.0.1', port: 40000 } : { qpn: 2, psn: 0, gid: 'fe80::1a2b:3c4d:0:1' },
    remote: raw ? { host: '127.0.0.1', port: 40001 } : { qpn: 3, psn: 0, gid: 'fe80::1a2b:3c4d:0:2' },
    ...over,
  };
}

function latResult(type: string, size: number, base: number): BenchResult {
  // Two decimals, as the rank reports them (perftest's %.2f).
  const r2 = (v: number): number => Math.round(v * 100) / 100;
  return {
    type,
    test: 'lat',
    size,
    iters: 1000,
    t_min_usec: base,
    t_max_usec: r2(base * 9.5),
    t_typical_usec: r2(base * 1.25),
    t_avg_usec: r2(base * 1.5),
    t_stdev_usec: 0.33,
    t_p99_usec: r2(base * 4),
    t_p999_usec: r2(base * 8),
    retransmits: type === 'srd' ? 7 : 0,
    setup: setup(type, true),
  };
}

function bwResult(type: string, size: number, rate: number): BenchResult {
  const avg = Math.round(((rate * 1e6 * size) / 2 ** 20) * 100) / 100;
  return { type, test: 'bw', size, iters: 5000, bw_peak_mbps: Math.round(avg * 1.5 * 100) / 100, bw_avg_mbps: avg, msg_rate_mpps: rate, delivered: 5000, send_errors: 0, setup: setup(type, false) };
}

t.test('latency: a banner and a perftest table per transport, parsed back as perftest output', async (t) => {
  const results = [latResult('raw', 64, 20), latResult('ud', 64, 25), latResult('srd', 64, 30), latResult('raw', 4096, 22), latResult('ud', 4096, 27.5), latResult('srd', 4096, 33.25)];
  addRatios(results);
  const text = formatTables(results);
  const tables = parsePerftest(text);
  t.same(tables.map((x) => [x.title, x.kind, x.banner.get('Connection type')]), [
    ['Send Latency Test', 'lat', 'UDP'],
    ['Send Latency Test', 'lat', 'UD'],
    ['Send Latency Test', 'lat', 'SRD'],
  ], 'one table per transport, each with its own banner');
  t.equal(tables[0].banner.get('Transport type'), 'raw UDP (node:dgram)', 'raw says what it is');
  t.equal(tables[1].banner.get('Device'), 'efa0 (efa-emu efa3)', 'the device and its generation');
  t.equal(tables[2].banner.get('TX depth'), '1');
  t.equal(tables[2].banner.get('Mtu'), '8192[B]');
  for (const x of tables) t.match(x.banner.get('Latency unit'), /one-way \(half a round trip\)/, `${x.banner.get('Connection type')}: the unit is in the banner`);
  for (const [k, type] of ['raw', 'ud', 'srd'].entries()) {
    const mine = results.filter((r) => r.type === type);
    t.same(
      tables[k].rows,
      mine.map((r) => ({ bytes: r.size, iterations: r.iters, t_min: r.t_min_usec, t_max: r.t_max_usec, t_typical: r.t_typical_usec, t_avg: r.t_avg_usec, t_stdev: r.t_stdev_usec, p99: r.t_p99_usec, p999: r.t_p999_usec })),
      `${type}: every figure reads back`,
    );
  }
  const lines = text.split('\n');
  t.notOk(lines.some((l) => l.includes('#type')), 'no #type column');
  t.equal(lines.filter((l) => l === PERFTEST_LAT_HEADER).length, 3, 'the header exactly as perftest prints it');
  t.ok(lines.includes(' local address: LID 0000 QPN 0x0002 PSN 000000'), "perftest's address line");
  t.ok(lines.includes(' GID: 254:128:00:00:00:00:00:00:26:43:60:77:00:00:00:01'), "perftest's GID line (decimal bytes)");
  // Ratios and transport events come after the last table, out of perftest's rows.
  const after = lines.slice(lines.lastIndexOf(PERFTEST_RESULT_LINE) + 1).join('\n');
  t.match(after, /ud 64 B: t_typical 31\.25 usec one-way = 1\.250 x raw UDP's 25\.00 usec one-way/);
  t.match(after, /srd 4096 B: retransmitted packets: 7/);
  t.notMatch(lines.slice(0, lines.lastIndexOf(PERFTEST_RESULT_LINE)).join('\n'), /ratio to raw|ratio_to_raw/, 'no ratio inside the tables');
});

t.test('bandwidth: MiB/sec headers, perftest widths, parsed back', async (t) => {
  const results = [bwResult('raw', 64, 0.080765), bwResult('ud', 64, 0.05082), bwResult('srd', 64, 0.033159), bwResult('srd', 8192, 0.045768)];
  addRatios(results);
  const text = formatTables(results);
  const tables = parsePerftest(text);
  t.same(tables.map((x) => [x.title, x.kind, x.rows.length]), [
    ['Send BW Test', 'bw', 1],
    ['Send BW Test', 'bw', 1],
    ['Send BW Test', 'bw', 2],
  ]);
  t.equal(tables[2].banner.get('CQ Moderation'), '1', 'SRD: every send completes');
  t.match(tables[0].banner.get('CQ Moderation'), /^64 /, 'raw: a receiver ack per 64');
  t.same(tables[2].rows[1], { bytes: 8192, iterations: 5000, bw_peak: results[3].bw_peak_mbps, bw_avg: results[3].bw_avg_mbps, msg_rate: 0.045768 });
  t.notMatch(text, /MB\/sec/, 'MiB, as perftest labels it');
  t.match(text, /ud 64 B: MsgRate 0\.050820 Mpps = 0\.629 x raw UDP's 0\.080765 Mpps/);
});

t.test("rows in perftest's printf widths, tabs included", async (t) => {
  const lat: BenchResult = { type: 'srd', test: 'lat', size: 64, iters: 1000, t_min_usec: 1.5, t_max_usec: 20.25, t_typical_usec: 2, t_avg_usec: 2.5, t_stdev_usec: 0.75, t_p99_usec: 10, t_p999_usec: 20 };
  // " %-7lu %lu          %-7.2f        %-7.2f      %-7.2f  \t       %-7.2f     \t%-7.2f\t\t%-7.2f \t\t%-7.2f"
  t.equal(latencyRow(lat), ' 64      1000          1.50           20.25        2.00     \t       2.50        \t0.75   \t\t10.00   \t\t20.00  ');
  const bw: BenchResult = { type: 'srd', test: 'bw', size: 65536, iters: 5000, bw_peak_mbps: 1234.5, bw_avg_mbps: 1000, msg_rate_mpps: 0.016 };
  // " %-7lu    %-10lu       %-7.2lf            %-7.2lf\t\t     %-7.6lf"
  t.equal(bandwidthRow(bw), ' 65536      5000             1234.50            1000.00\t\t     0.016000');
});

t.test('RDMA: titles and units of perftest, the raw baseline as a Send table', async (t) => {
  const rdma = setup('srd', true, { wr_api: true, out_reads: 1, local: { qpn: 2, psn: 0, gid: 'fe80::1', rkey: 0x101, vaddr: 0 }, remote: { qpn: 5, psn: 0, gid: 'fe80::2', rkey: 0x202, vaddr: 0 } });
  const results: BenchResult[] = [
    { ...latResult('raw', 100000, 30), test: 'read_lat', raw_size: 65000 },
    { ...latResult('srd', 100000, 80), test: 'read_lat', setup: rdma },
  ];
  addRatios(results);
  const text = formatTables(results);
  const tables = parsePerftest(text);
  t.same(tables.map((x) => x.title), ['Send Latency Test', 'RDMA_Read Latency Test']);
  t.equal(tables[0].rows[0].bytes, 65000, 'the raw table shows the datagram it sent');
  t.match(tables[1].banner.get('Latency unit'), /a whole RDMA read \(one round trip\)/);
  t.equal(tables[1].banner.get('Outstand reads'), '1');
  t.ok(text.split('\n').includes(' remote address: LID 0000 QPN 0x0005 PSN 000000 OUT 0x01 RKey 0x000202 VAddr 0000000000000000'), "perftest's RDMA address line");
  t.match(text, /srd 100000 B: t_typical 100\.00 usec \(a whole read, one round trip\) = 1\.333 x raw UDP's round trip 75\.00 usec \(2 x 37\.50 usec one-way\) \(65000 B datagrams\)/);
  const titles = ['write_lat', 'write_bw', 'read_bw'].map((test) => parsePerftest(formatTables([{ ...(test.endsWith('lat') ? latResult('srd', 64, 1) : bwResult('srd', 64, 0.1)), test }]))[0].title);
  t.same(titles, ['RDMA_Write_imm Latency Test', 'RDMA_Write BW Test', 'RDMA_Read BW Test'], 'write_lat is a write with immediate, as ib_write_lat --write_with_imm');
});

t.test("--json: perftest's --out_json documents, plus ours and the old flat fields", async (t) => {
  const results = [latResult('raw', 64, 20), latResult('srd', 64, 30)];
  addRatios(results);
  const doc = JSON.parse(JSON.stringify(toJson('lat', 'event', 'loss=1%', results))) as ReturnType<typeof toJson>;
  t.match(doc, { test: 'lat', poll: 'event', fault: 'loss=1%' });
  const srd = doc.results[1];
  t.same(Object.keys(srd.results).slice(0, 9), ['MsgSize', 'n_iterations', 't_min', 't_max', 't_typical', 't_avg', 't_stdev', 'percentile_99', 'percentile_99.9'], "perftest's result names, in its order");
  t.match(srd.results, { MsgSize: 64, n_iterations: 1000, t_typical: 37.5, percentile_99: 120, 'percentile_99.9': 240, type: 'srd', retransmits: 7, ratio_to_raw: 1.5 });
  t.match(srd.test_info, { test: 'Send_Latency_Test', Dual_port: 'OFF', Device: 'efa0', Number_of_qps: 1, Connection_type: 'SRD', Using_SRQ: 'OFF', TX_depth: 1, Mtu: 8192, rdma_cm_QPs: 'OFF', generation: 'efa3', fault: 'loss=1%' });
  t.match(srd.test_info.latency_unit, /one-way/);
  t.equal(doc.results[0].test_info.fault, null, 'raw is the fault-free baseline');
  t.match(srd, { type: 'srd', test: 'lat', size: 64, t_typical_usec: 37.5, ratio_to_raw: 1.5 }, 'the flat fields of earlier versions');
  t.equal((srd as Record<string, unknown>).setup, undefined, 'the banner facts are in test_info only');
  const bw = toJson('bw', 'busy', null, [bwResult('srd', 4096, 0.01)]).results[0];
  t.same(Object.keys(bw.results).slice(0, 5), ['MsgSize', 'n_iterations', 'BW_peak', 'BW_average', 'MsgRate']);
  t.match(bw.test_info, { test: 'Send_BW_Test', CQ_Moderation: 1, TX_depth: 128 });
});

t.test("latency figures as perftest's print_report_lat", async (t) => {
  // Two outliers: perftest leaves both out of the median, average and deviation, and shows the
  // smaller one as t_max.
  const lat = latencyFigures(Float64Array.from([5, 2000, 1, 3, 1000, 2, 4]));
  t.same(lat, { t_min_usec: 1, t_max_usec: 1000, t_typical_usec: 3, t_avg_usec: 3, t_stdev_usec: 1.41, t_p99_usec: 1000, t_p999_usec: 1000 });
  // 1002 samples 1..1002: m = 1000 kept; the median of an even count is the middle two's mean;
  // the percentiles are the sorted samples at ceil(1000 * 0.99) = 990 and ceil(1000 * 0.999) = 999.
  const many = Float64Array.from({ length: 1002 }, (_, i) => 1002 - i);
  const f = latencyFigures(many);
  t.equal(f.t_typical_usec, 500.5);
  t.equal(f.t_p99_usec, 991);
  t.equal(f.t_p999_usec, 1000);
  t.equal(f.t_max_usec, 1001);
  t.equal(f.t_avg_usec, 500.5);
  // 1000 samples: m = 998, ceil(998 * 0.99) = 989 (988.02 rounded up).
  const f998 = latencyFigures(Float64Array.from({ length: 1000 }, (_, i) => i + 1));
  t.equal(f998.t_p99_usec, 990);
  t.equal(f998.t_p999_usec, 999);
  t.same(latencyFigures(Float64Array.from([7])), { t_min_usec: 7, t_max_usec: 7, t_typical_usec: 7, t_avg_usec: 7, t_stdev_usec: 0, t_p99_usec: 7, t_p999_usec: 7 }, 'one sample');
  t.equal(latencyFigures(new Float64Array(0)).t_typical_usec, 0);
});

/** perftest's pairwise search, straight: min over completions k and posts i before them. */
function brutePeak(posts: number[], completions: Array<[number, number]>): number {
  let best = Infinity;
  for (const [count, at] of completions) for (let i = 0; i < count; i++) best = Math.min(best, (at - posts[i]) / (count - i));
  return best;
}

function feed(posts: number[], completions: Array<[number, number]>): BwPeak {
  const peak = new BwPeak();
  let p = 0;
  for (const [count, at] of completions) {
    while (p < posts.length && (p < count || posts[p] <= at)) peak.post(posts[p++]);
    peak.complete(count, at);
  }
  return peak;
}

t.test("BW peak as perftest's print_report_bw: the best run of messages, from a post to a completion", async (t) => {
  // Message 0..2 posted at 0, 1, 2 ms and complete by 11.5 ms: 3 in 11.5 ms beats the stream's
  // average (4 in 30 ms), and beats any single message.
  const posts = [0, 1, 2, 3];
  const completions: Array<[number, number]> = [[1, 10], [2, 11], [3, 11.5], [4, 30]];
  const peak = feed(posts, completions);
  t.equal(peak.bestMsPerMessage(), 11.5 / 3);
  const bw = bandwidthFigures(2 ** 20, 4, 0, 30, peak.bestMsPerMessage());
  t.equal(bw.bw_peak_mbps, 260.87, '1 MiB / (11.5 ms / 3)');
  t.equal(bw.bw_avg_mbps, 133.33, '4 MiB in 30 ms');
  t.equal(bw.msg_rate_mpps, 0.000133);
  t.equal(bandwidthFigures(64, 10, 0, 1, Infinity).bw_peak_mbps, bandwidthFigures(64, 10, 0, 1, Infinity).bw_avg_mbps, 'no completion: the peak reads as the average');

  // A window posted 0.01 ms apart, every completion seen in one poll: the completions are
  // instants apart, but a run is timed from its first post, so the peak stays within the
  // posting rate instead of reading as thousands of times the average.
  const burstPosts = Array.from({ length: 128 }, (_, i) => i * 0.01);
  const burst = Array.from({ length: 128 }, (_, i): [number, number] => [i + 1, 2 + i * 1e-6]);
  const b = feed(burstPosts, burst);
  t.ok(b.bestMsPerMessage() >= 0.01, `no faster than posted (${b.bestMsPerMessage()} ms a message)`);
  t.equal(b.bestMsPerMessage(), brutePeak(burstPosts, burst));
});

t.test('BW peak: the hull search equals the pairwise search on random streams', async (t) => {
  let seed = 12345;
  const rnd = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let run = 0; run < 200; run++) {
    const n = 1 + Math.floor(rnd() * 300);
    const window = 1 + Math.floor(rnd() * 64);
    const step = 1 + Math.floor(rnd() * 8);
    const posts: number[] = [];
    const completions: Array<[number, number]> = [];
    let now = 0;
    let done = 0;
    // A windowed stream: post while the window allows, else complete a random batch.
    while (done < n) {
      if (posts.length < n && posts.length - done < window && rnd() < 0.6) {
        now += rnd() * (rnd() < 0.1 ? 5 : 0.05);
        posts.push(now);
      } else if (posts.length > done) {
        now += rnd() < 0.3 ? 0 : rnd() * 0.5;
        done = Math.min(posts.length, done + 1 + Math.floor(rnd() * step));
        completions.push([done, now]);
      }
    }
    const got = feed(posts, completions).bestMsPerMessage();
    const want = brutePeak(posts, completions);
    if (Math.abs(got - want) > 1e-9 * Math.max(1, want)) {
      t.fail(`run ${run}: hull ${got}, pairwise ${want} (n ${n}, window ${window})`);
      return;
    }
  }
  t.pass('200 random streams agree');
});
