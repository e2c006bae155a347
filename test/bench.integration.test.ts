import t from 'tap';
import { parseFiPingpong, rxdProblem, type RxdResult } from '../src/job/bench/rxd-baseline';
import { lastJsonLine, runCli } from './helpers/run-cli';
import type { BenchJsonEntry, BenchResult } from '../src/cli/bench/bench-table';

// These check that the bench runs and reports well-formed figures, never how fast it is, and
// that what it prints reads as perftest's output (the format itself: bench-perftest-format).

const RESULT_LINE = '-'.repeat(87);
const LAT_HEADER = ' #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ';
const BW_HEADER = ' #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]';

/** perftest's tables in a log, as a script that parses perftest would read them: title, then rows of numbers. */
function perftestTables(text: string): Array<{ title: string; connection: string | undefined; rows: number[][] }> {
  const lines = text.split('\n');
  const out: Array<{ title: string; connection: string | undefined; rows: number[][] }> = [];
  lines.forEach((line, i) => {
    if (line !== LAT_HEADER && line !== BW_HEADER) return;
    let ti = i;
    while (ti > 0 && !/^ {20}\S.* Test$/.test(lines[ti])) ti--;
    const conn = lines.slice(ti, i).find((l) => l.startsWith(' Connection type :'));
    const rows: number[][] = [];
    for (let j = i + 1; lines[j] !== RESULT_LINE; j++) rows.push(lines[j].trim().split(/\s+/).map(Number));
    out.push({ title: lines[ti].trim(), connection: conn?.split(':')[1].split('\t')[0].trim(), rows });
  });
  return out;
}

t.test('bench --test lat --type all --json: raw, raw-batched, ud and srd with ratio_to_raw', async (t) => {
  const run = await runCli(['bench', '--test', 'lat', '--type', 'all', '--size', '64', '--iters', '300', '--json'], { timeoutMs: 120_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { results: Array<BenchResult & BenchJsonEntry> };
  t.same(out.results.map((r) => r.type), ['raw', 'raw-batched', 'ud', 'srd']);
  const tables = perftestTables(run.stdout);
  t.same(tables.map((x) => [x.title, x.connection]), [['Send Latency Test', 'UDP'], ['Send Latency Test', 'UDP'], ['Send Latency Test', 'UD'], ['Send Latency Test', 'SRD']], 'a perftest table per transport');
  for (const [idx, r] of out.results.entries()) {
    const p = r.results as Record<string, number>;
    t.same(tables[idx].rows, [[64, 300, p.t_min, p.t_max, p.t_typical, p.t_avg, p.t_stdev, p.percentile_99, p['percentile_99.9']]], `${r.type}: the table row is the JSON's perftest fields`);
    t.ok(p.t_min <= p.t_typical && p.t_typical <= p.percentile_99 && p.percentile_99 <= p['percentile_99.9'] && p['percentile_99.9'] <= p.t_max, `${r.type}: min <= typical <= p99 <= p99.9 <= max`);
    t.match(r.test_info, { test: 'Send_Latency_Test', Connection_type: ['UDP', 'UDP', 'UD', 'SRD'][idx], latency_unit: /one-way/ });
    t.match(r, { test: 'lat', size: 64, iters: 300 });
    for (const k of ['t_min_usec', 't_typical_usec', 't_avg_usec', 't_p99_usec', 't_max_usec', 'ratio_to_raw'] as const) {
      t.type(r[k], 'number', `${r.type} ${k}`);
      t.ok((r[k] as number) > 0, `${r.type} ${k} > 0`);
    }
    t.ok((r.t_min_usec as number) <= (r.t_typical_usec as number) && (r.t_typical_usec as number) <= (r.t_max_usec as number), 'min <= typical <= max');
  }
  t.equal(out.results[0].ratio_to_raw, 1);
  t.notMatch(run.stdout, /#type/, 'no column of ours in front of perftest\'s');
  t.match(run.stdout, /ratio to raw UDP[^\n]*\n {3}raw-batched 64 B: t_typical [0-9.]+ usec one-way = [0-9.]+ x raw UDP's [0-9.]+ usec one-way\n {3}ud 64 B: t_typical [0-9.]+ usec one-way = [0-9.]+ x raw UDP's [0-9.]+ usec one-way; [0-9.]+ x raw-batched\n/, 'the ratios, after the tables, with their units, the protocols also against the batched harness');
  t.match(run.stdout, /Transport type : raw UDP \(node:dgram\), batched as the devices batch/, 'the batched harness says what it is');
});

t.test('bench --test bw --type srd --poll busy under loss reports bandwidth and retransmits', async (t) => {
  const run = await runCli(['bench', '--test', 'bw', '--type', 'srd', '--size', '1024,8192', '--iters', '2000', '--poll', 'busy', '--fault', 'loss=2%,seed=5', '--json'], {
    timeoutMs: 120_000,
  });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { results: Array<BenchResult & BenchJsonEntry> };
  t.same(out.results.map((r) => [r.type, r.size]), [['srd', 1024], ['srd', 8192]]);
  const tables = perftestTables(run.stdout);
  t.same(tables.map((x) => [x.title, x.connection]), [['Send BW Test', 'SRD']], 'one table, both sizes');
  t.same(
    tables[0].rows,
    out.results.map((r) => [r.results.MsgSize, r.results.n_iterations, r.results.BW_peak, r.results.BW_average, r.results.MsgRate]),
    "the rows are the JSON's perftest fields",
  );
  for (const r of out.results) {
    t.ok((r.bw_avg_mbps as number) > 0 && (r.msg_rate_mpps as number) > 0 && (r.bw_peak_mbps as number) >= (r.bw_avg_mbps as number));
    t.ok((r.retransmits as number) > 0, 'loss was recovered by retransmission');
    t.equal(r.delivered, 2000, 'every message delivered');
    t.equal(r.send_errors, 0, 'no send failed');
    t.equal(r.ratio_to_raw, undefined, 'no ratio without raw in the run');
  }
  t.match(run.stdout, /transport events:\n {3}srd 1024 B: retransmitted packets: [1-9]/);
});

t.test('an SRD stream under 1% loss at every size ends with every message delivered (the last one may come first)', async (t) => {
  // SRD delivers out of order: a receiver that stopped at the last message's tag left the
  // stragglers to RNR for ever, and the bench hung (issue 9).
  const run = await runCli(['bench', '--test', 'bw', '--type', 'srd', '--size', '64,256,1024,4096,8192', '--iters', '3000', '--fault', 'loss=1%,seed=1', '--json'], { timeoutMs: 120_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { results: BenchResult[] };
  t.same(out.results.map((r) => r.size), [64, 256, 1024, 4096, 8192], 'every size reported');
  for (const r of out.results) {
    t.equal(r.delivered, 3000, `${r.size} B: every message delivered`);
    t.equal(r.send_errors, 0, `${r.size} B: no send failed`);
  }
});

t.test("bench --test lat measures libfabric's udp;ofi_rxd in the same run when fi_pingpong is installed", { skip: rxdProblem() ?? false }, async (t) => {
  const run = await runCli(['bench', '--test', 'lat', '--type', 'srd', '--size', '64', '--iters', '300', '--json'], { timeoutMs: 180_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { rxd?: { results: RxdResult[]; errors: string[] } };
  t.equal(out.rxd?.results.length, 1, 'one rxd figure', { rxd: out.rxd });
  t.match(out.rxd?.results[0], { size: 64, iters: 5000 });
  t.ok((out.rxd?.results[0].usec_per_xfer ?? 0) > 0, 'a positive one-way time');
  t.match(run.stdout, /libfabric udp;ofi_rxd \(fi_pingpong[^\n]*\n {3}64 B: [0-9.]+ usec\/xfer over 5000 iterations; srd t_avg [0-9.]+ usec = [0-9.]+ x rxd\n/, 'after the tables, with SRD as a multiple of it');
});

t.test('without libfabric the rxd figures are named as not measured, and --no-rxd leaves them out', async (t) => {
  // A PATH with no fi_info/fi_pingpong on it; the ranks are started with node's own path.
  const bare = await runCli(['bench', '--test', 'lat', '--type', 'srd', '--size', '64', '--iters', '100'], { timeoutMs: 120_000, env: { PATH: '/nonexistent-efa-emu-path' } });
  t.equal(bare.code, 0, `exit 0 (stderr: ${bare.stderr.slice(-2000)})`);
  t.match(bare.stdout, /libfabric udp;ofi_rxd[^\n]*\n {3}not measured: fi_info not installed \(apt-get install libfabric-bin\)\n/);
  const off = await runCli(['bench', '--test', 'lat', '--type', 'srd', '--size', '64', '--iters', '100', '--no-rxd'], { timeoutMs: 120_000 });
  t.equal(off.code, 0);
  t.notMatch(off.stdout, /ofi_rxd/, 'no rxd line with --no-rxd');
});

t.test("fi_pingpong's result rows are read with fabtests' size labels", async (t) => {
  const text = ['bytes   #sent   #ack     total       time     MB/sec    usec/xfer   Mxfers/sec', '64      10k     =10k     1.2m        2.70s      0.47     135.14       0.01', '1k      1k      =1k      1.9m        0.44s      4.61     222.04       0.00'].join('\n');
  t.equal(parseFiPingpong(text, 64), 135.14);
  t.equal(parseFiPingpong(text, 1024), 222.04, "'1k' is 1024 bytes");
  t.equal(parseFiPingpong(text, 4096), null, 'a size that is not there');
  t.equal(parseFiPingpong('bytes #sent\n', 64), null, 'a header alone');
});
