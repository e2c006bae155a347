import t from 'tap';
import { lastJsonLine, runCli } from './helpers/run-cli';
import { addRatios, formatTables, type BenchResult } from '../src/cli/bench/bench-table';
import { bandwidthFigures, latencyFigures } from '../src/job/bench/bench-stats';

// These check that the bench runs and reports well-formed figures, never how fast it is.

t.test('bench --test lat --type all --json: raw, ud and srd with ratio_to_raw', async (t) => {
  const run = await runCli(['bench', '--test', 'lat', '--type', 'all', '--size', '64', '--iters', '300', '--json'], { timeoutMs: 120_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { results: BenchResult[] };
  t.same(out.results.map((r) => r.type), ['raw', 'ud', 'srd']);
  for (const r of out.results) {
    t.match(r, { test: 'lat', size: 64, iters: 300 });
    for (const k of ['t_min_usec', 't_typical_usec', 't_avg_usec', 't_p99_usec', 't_max_usec', 'ratio_to_raw'] as const) {
      t.type(r[k], 'number', `${r.type} ${k}`);
      t.ok((r[k] as number) > 0, `${r.type} ${k} > 0`);
    }
    t.ok((r.t_min_usec as number) <= (r.t_typical_usec as number) && (r.t_typical_usec as number) <= (r.t_max_usec as number), 'min <= typical <= max');
  }
  t.equal(out.results[0].ratio_to_raw, 1);
  t.match(run.stdout, /#bytes\s+#iterations\s+t_min\[usec\]\s+t_max\[usec\]\s+t_typical\[usec\]\s+t_avg\[usec\]\s+t_stdev\[usec\]\s+99% percentile\[usec\]/);
});

t.test('bench --test bw --type srd --poll busy under loss reports bandwidth and retransmits', async (t) => {
  const run = await runCli(['bench', '--test', 'bw', '--type', 'srd', '--size', '1024,8192', '--iters', '2000', '--poll', 'busy', '--fault', 'loss=2%,seed=5', '--json'], {
    timeoutMs: 120_000,
  });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { results: BenchResult[] };
  t.same(out.results.map((r) => [r.type, r.size]), [['srd', 1024], ['srd', 8192]]);
  for (const r of out.results) {
    t.ok((r.bw_avg_mbps as number) > 0 && (r.msg_rate_mpps as number) > 0 && (r.bw_peak_mbps as number) >= (r.bw_avg_mbps as number));
    t.ok((r.retransmits as number) > 0, 'loss was recovered by retransmission');
    t.equal(r.delivered, 2000, 'every message delivered');
    t.equal(r.send_errors, 0, 'no send failed');
    t.equal(r.ratio_to_raw, undefined, 'no ratio without raw in the run');
  }
  t.match(run.stdout, /#bytes\s+#iterations\s+BW peak\[MB\/sec\]\s+BW average\[MB\/sec\]\s+MsgRate\[Mpps\]/);
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

t.test('latency and bandwidth figures', async (t) => {
  const lat = latencyFigures(Float64Array.from([5, 1, 3, 2, 4]));
  t.same(lat, { t_min_usec: 1, t_max_usec: 5, t_typical_usec: 3, t_avg_usec: 3, t_stdev_usec: 1.41, t_p99_usec: 5 });
  const bw = bandwidthFigures(1024 * 1024, 10, 0, 1000, [100, 1000], 5);
  t.equal(bw.bw_avg_mbps, 10);
  t.equal(bw.bw_peak_mbps, 50, 'the best step: 5 MB in 100 ms');
  t.equal(bw.msg_rate_mpps, 0.00001);
  // One batch of completions marks several steps microseconds apart: the peak is measured over
  // at least PEAK_MIN_SPAN_MS, so it cannot read thousands of times the real rate.
  const burst = bandwidthFigures(64, 200_000, 0, 1000, [500, 500.001, 500.002, 500.003, 1000], 40_000);
  t.ok(burst.bw_peak_mbps <= 2 * burst.bw_avg_mbps, `a burst of marks does not inflate the peak (${burst.bw_peak_mbps} vs avg ${burst.bw_avg_mbps} MB/s)`);
  t.equal(burst.bw_peak_mbps, Math.round(((4 * 40_000 * 64) / ((1000 - 500.003) / 1000) / 2 ** 20) * 100) / 100, 'the four steps of the batch, over the time they took');
  const results: BenchResult[] = [
    { type: 'raw', test: 'lat', size: 64, iters: 1, t_typical_usec: 20 },
    { type: 'srd', test: 'lat', size: 64, iters: 1, t_typical_usec: 25 },
    { type: 'raw', test: 'bw', size: 64, iters: 1, msg_rate_mpps: 0.2 },
    { type: 'srd', test: 'bw', size: 64, iters: 1, msg_rate_mpps: 0.15 },
  ];
  addRatios(results);
  t.same(results.map((r) => r.ratio_to_raw), [1, 1.25, 1, 0.75]);
  t.match(formatTables(results), /ratio_to_raw/);
});
