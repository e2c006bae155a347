// The ring allreduce example with real processes on 127.0.0.1: every element of every rank's
// result is the exact sum, on a clean network, under loss and reordering, and for sizes whose
// chunks are uneven or empty; rank 0 prints the nccl-tests table and its trailer.
import t, { type Test } from 'tap';
import { runCli, type CliRun } from './helpers/run-cli';

const TIMEOUT_MS = 60_000;
const PROGRAM = 'dist/examples/allreduce.js';

interface Row {
  bytes: number;
  count: number;
  type: string;
  redop: string;
  root: number;
  /** time (us), algbw, busbw, #wrong: out of place, then in place. */
  parts: Array<{ us: number; algbw: number; busbw: number; wrong: string }>;
}

/** Rank 0's lines, without the launcher's prefix. */
function rank0(stdout: string): string[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('[0] '))
    .map((l) => l.slice(4));
}

function rows(lines: string[]): Row[] {
  return lines
    .filter((l) => !l.startsWith('#'))
    .map((l) => {
      const f = l.trim().split(/\s+/);
      const part = (i: number) => ({ us: Number(f[i]), algbw: Number(f[i + 1]), busbw: Number(f[i + 2]), wrong: f[i + 3] });
      return { bytes: Number(f[0]), count: Number(f[1]), type: f[2], redop: f[3], root: Number(f[4]), parts: [part(5), part(9)] };
    });
}

/** What every run must show: the header, rows of exact results, the trailer, exit 0. */
function checkTable(t: Test, run: CliRun, n: number, sizes: number[]): void {
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const lines = rank0(run.stdout);
  t.ok(lines.some((l) => /^#\s+out-of-place\s+in-place$/.test(l)), 'group line');
  t.ok(lines.some((l) => /^#\s+size\s+count\s+type\s+redop\s+root\s+time\s+algbw\s+busbw\s+#wrong\s+time\s+algbw\s+busbw\s+#wrong$/.test(l)), 'column line');
  t.ok(lines.some((l) => /^#\s+\(B\)\s+\(elements\)\s+\(us\)\s+\(GB\/s\)\s+\(GB\/s\)\s+\(us\)\s+\(GB\/s\)\s+\(GB\/s\)$/.test(l)), 'units line');
  const rs = rows(lines);
  t.same(
    rs.map((r) => [r.bytes, r.count, r.type, r.redop, r.root]),
    sizes.map((b) => [b, b / 4, 'float', 'sum', -1]),
    'one row per size',
  );
  for (const r of rs) {
    for (const [i, p] of r.parts.entries()) {
      const what = `${r.bytes} B ${i === 0 ? 'out of place' : 'in place'}`;
      t.equal(p.wrong, '0', `${what}: #wrong 0`);
      t.ok(p.us > 0, `${what}: a time`);
      // The printed bandwidths follow from the printed time (2 decimals), busbw = algbw 2(n-1)/n.
      const algbw = r.bytes / 1e9 / (p.us / 1e6);
      t.ok(Math.abs(p.algbw - algbw) <= 0.006, `${what}: algbw ${p.algbw} is bytes/time (${algbw})`);
      t.ok(Math.abs(p.busbw - (algbw * 2 * (n - 1)) / n) <= 0.006, `${what}: busbw ${p.busbw} is algbw * 2(n-1)/n`);
    }
  }
  t.ok(lines.includes('# Out of bounds values : 0 OK'), 'out of bounds trailer');
  t.ok(lines.some((l) => /^# Avg bus bandwidth    : \S+$/.test(l)), 'average bus bandwidth trailer');
}

t.test('4 ranks, 1 MiB: exact sums out of place and in place, nccl-tests table', async (t) => {
  const run = await runCli(['launch', '-n', '4', PROGRAM, '--', '--size', '1048576', '--iters', '2'], { timeoutMs: TIMEOUT_MS });
  checkTable(t, run, 4, [1048576]);
});

t.test('4 ranks, 1 MiB under loss=2%,reorder=10%: still exact, and SRD did resend', async (t) => {
  const run = await runCli(['launch', '-n', '4', '--fault', 'loss=2%,reorder=10%', PROGRAM, '--', '--size', '1048576', '--iters', '2', '--stats'], { timeoutMs: TIMEOUT_MS });
  checkTable(t, run, 4, [1048576]);
  const srd = rank0(run.stdout).find((l) => l.startsWith('# rank 0 srd: '));
  const retrans = Number(/retrans_pkts=(\d+)/.exec(srd ?? '')?.[1] ?? 0);
  t.ok(retrans > 0, `losses were recovered by retransmission (${srd})`);
});

t.test('uneven and empty chunks, several slices per chunk: 12, 108 and 972 bytes over 4 ranks', async (t) => {
  // 3 elements (a chunk of none), 27 and 243 (chunks of 7/7/7/6 and 61/61/61/60); 40-byte
  // slices cut 61 elements into 7 slices of 8 or 9.
  const run = await runCli(['launch', '-n', '4', PROGRAM, '--', '-b', '12', '-e', '972', '-f', '9', '--slice', '40', '--iters', '2'], { timeoutMs: TIMEOUT_MS });
  checkTable(t, run, 4, [12, 108, 972]);
});
