// RDMA with real processes on 127.0.0.1: the bench's RDMA tests run and report; the example
// writes with immediate into a QP with no receives and reads everything back, byte for byte,
// also under loss, duplication and reordering; the seed's generation refuses RDMA up front.
import t from 'tap';
import { lastJsonLine, runCli } from './helpers/run-cli';
import type { BenchResult } from '../src/cli/bench/bench-table';

const TIMEOUT_MS = 120_000;

t.test('bench --test write_bw --type srd --size 65536,1048576 --json reports bandwidth, every write completed', async (t) => {
  const run = await runCli(['bench', '--test', 'write_bw', '--type', 'srd', '--size', '65536,1048576', '--iters', '100', '--json'], { timeoutMs: TIMEOUT_MS });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { test: string; results: BenchResult[] };
  t.equal(out.test, 'write_bw');
  t.same(out.results.map((r) => [r.type, r.test, r.size]), [
    ['srd', 'write_bw', 65536],
    ['srd', 'write_bw', 1048576],
  ]);
  for (const r of out.results) {
    t.ok((r.bw_avg_mbps as number) > 0 && (r.msg_rate_mpps as number) > 0, `${r.size} B: bandwidth reported`);
    t.equal(r.delivered, 100, 'every write completed');
    t.equal(r.send_errors, 0, 'none failed');
  }
  // perftest's title and header, exactly; the row in its order: #bytes #iterations peak average rate.
  const lines = run.stdout.split('\n');
  t.ok(lines.includes('                    RDMA_Write BW Test'), "perftest's title");
  const h = lines.indexOf(' #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]');
  t.ok(h > 0, "perftest's header");
  const json = out.results as unknown as Array<{ results: Record<string, number> }>;
  t.same(
    lines.slice(h + 1, h + 3).map((l) => l.trim().split(/\s+/).map(Number)),
    json.map((r) => [r.results.MsgSize, r.results.n_iterations, r.results.BW_peak, r.results.BW_average, r.results.MsgRate]),
    "the rows are the JSON's perftest fields",
  );
  t.equal(lines[h + 3], '-'.repeat(87), "the table ends with perftest's dashes line");
});

t.test('bench --test read_lat (all: SRD beside raw UDP) reports latency and a ratio', async (t) => {
  const run = await runCli(['bench', '--test', 'read_lat', '--size', '64,100000', '--iters', '200', '--json'], { timeoutMs: TIMEOUT_MS });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { results: BenchResult[] };
  t.same(out.results.map((r) => [r.type, r.size]), [
    ['raw', 64],
    ['srd', 64],
    ['raw', 100000],
    ['srd', 100000],
  ]);
  for (const r of out.results) {
    t.ok((r.t_min_usec as number) > 0 && (r.t_min_usec as number) <= (r.t_typical_usec as number) && (r.t_typical_usec as number) <= (r.t_max_usec as number), `${r.type} ${r.size}: min <= typical <= max`);
    t.ok((r.ratio_to_raw as number) > 0, `${r.type} ${r.size}: ratio_to_raw`);
  }
  t.equal(out.results[2].raw_size, 65000, 'the raw row says it ping-ponged the largest datagram instead');
  t.match(run.stdout, /\n {20}Send Latency Test\n[^]*\n {20}RDMA_Read Latency Test\n/, 'raw UDP\'s Send table, then the RDMA_Read one');
  t.match(run.stdout, /\n 65000 +200 /, 'the raw table shows the datagram it sent');
  t.match(run.stdout, /Latency unit {4}: usec, a whole RDMA read \(one round trip\)/, 'a read is timed whole, and says so');
  t.match(run.stdout, /srd 100000 B: t_typical [0-9.]+ usec \(a whole read, one round trip\) = [0-9.]+ x raw UDP's round trip [0-9.]+ usec \(2 x [0-9.]+ usec one-way\) \(65000 B datagrams\)/);
});

t.test('bench --test write_lat and read_bw run', async (t) => {
  for (const test of ['write_lat', 'read_bw']) {
    const run = await runCli(['bench', '--test', test, '--type', 'srd', '--size', '4096', '--iters', '200', '--json'], { timeoutMs: TIMEOUT_MS });
    t.equal(run.code, 0, `${test}: exit 0 (stderr: ${run.stderr.slice(-2000)})`);
    const [r] = (lastJsonLine(run.stdout) as { results: BenchResult[] }).results;
    t.equal(r.test, test);
    t.ok(test.endsWith('lat') ? (r.t_typical_usec as number) > 0 : (r.bw_avg_mbps as number) > 0, `${test}: a figure`);
  }
});

t.test('--generation efa0: RDMA tests are refused before any rank starts', async (t) => {
  const run = await runCli(['bench', '--test', 'read_bw', '--generation', 'efa0', '--iters', '10'], { timeoutMs: TIMEOUT_MS });
  t.not(run.code, 0, 'fails');
  t.match(run.stderr, /EOPNOTSUPP: --test read_bw: the efa0 device has no RDMA read/);
  t.notMatch(run.stderr, /^\s+at /m, 'one line, no stack');
  const bad = await runCli(['bench', '--test', 'lat', '--generation', 'efa9', '--iters', '10'], { timeoutMs: TIMEOUT_MS });
  t.not(bad.code, 0);
  t.match(bad.stderr, /--generation: unknown EFA generation "efa9"/);
});

for (const fault of [null, 'loss=5%,dup=5%,reorder=20%']) {
  t.test(`examples/rdma-write-imm.ts${fault === null ? '' : ` under ${fault}`}: written, completed unsolicited, read back identical`, async (t) => {
    const args = ['launch', '-n', '2', ...(fault === null ? [] : ['--fault', fault]), 'examples/rdma-write-imm.ts', '--', '--size', '200000', '--count', '4'];
    const run = await runCli(args, { timeoutMs: TIMEOUT_MS });
    t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
    t.match(run.stdout, /\[1\] rank 1 got 4 unsolicited writes with immediate, 800000 B verified, no receive posted/);
    t.match(run.stdout, /\[0\] rank 0 read 4 x 200000 B back with RDMA read: identical/);
  });
}

t.test('the example on efa2 (no unsolicited write receive) fails with a one-line EOPNOTSUPP', async (t) => {
  const run = await runCli(['launch', '-n', '2', '--generation', 'efa2', 'examples/rdma-write-imm.ts'], { timeoutMs: TIMEOUT_MS });
  t.not(run.code, 0);
  t.match(run.stderr, /rdma-write-imm: EOPNOTSUPP: CREATE_CQ \(opcode 9\) failed: status 3, EOPNOTSUPP: efadv\.wcFlags WITH_IS_UNSOLICITED/);
});
