/*
 * `efa-emu fi-pingpong` and `fi-bw` (fabtests-style tools over the RDM endpoint): the table is
 * fabtests' character for character, each size takes the protocol its size names, every data
 * message is checked, and bad flags fail before anything starts. Timing figures are only
 * checked for consistency with each other, never for speed.
 */
import t, { type Test } from 'tap';
import { runCli } from './helpers/run-cli';
import { cFixed, cntStr, machineHeader, machineRow, perfFigures, perfRow, sizeStr } from '../src/cli/fi/fi-format';
import { DEF_TEST_SIZES, DEFAULT_SIZES, defaultIterations, effectiveWindow, parseSizeSpec, sizeToCount } from '../src/cli/fi/fi-sizes';
import { DataCheckError, makePattern, MessageCheck, PATTERN_SLIDE } from '../src/job/fi/fi-check';
import { buildPlan } from '../src/cli/fi/fi-command';

/** fabtests' header, written out rather than built, so a change to the formatter shows. */
const HEADER = 'bytes   iters   total       time     MB/sec    usec/xfer   Mxfers/sec';
const SIZES = [1, 4096, 70000, 1100000];

interface Row {
  bytes: string;
  iters: string;
  total: string;
  time: number;
  mbps: number;
  usec: number;
  mxfers: number;
}

/** Parses the rows under the header: `%-8s%-8s%-8s%8.2fs%10.2f%11.2f%11.2f`. */
function rows(stdout: string): Row[] {
  const lines = stdout.split('\n');
  const at = lines.indexOf(HEADER);
  if (at < 0) return [];
  const out: Row[] = [];
  for (const line of lines.slice(at + 1)) {
    const m = /^(.{8})(.{8})(.{8})(.{8})s(.{10})(.{11})(.{11})$/.exec(line);
    if (m === null) break;
    out.push({ bytes: m[1].trim(), iters: m[2].trim(), total: m[3].trim(), time: Number(m[4]), mbps: Number(m[5]), usec: Number(m[6]), mxfers: Number(m[7]) });
  }
  return out;
}

/** The figures of one row agree with each other and with the run (within the 2-decimal rounding). */
function checkRow(t: Test, r: Row, size: number, iters: number, xfers: number): void {
  t.equal(r.bytes, sizeStr(size), `${size}: bytes column`);
  t.equal(r.iters, String(iters), `${size}: iters column`);
  t.equal(r.total, sizeStr(size * iters * xfers), `${size}: total column`);
  t.ok(r.usec > 0 && Number.isFinite(r.usec), `${size}: usec/xfer ${r.usec} > 0`);
  // time = usec/xfer × xfers; half a unit of the last printed digit of each may be lost.
  t.ok(Math.abs(r.time - (r.usec * iters * xfers) / 1e6) <= 0.005 + (0.005 * iters * xfers) / 1e6, `${size}: time ${r.time} agrees with usec/xfer ${r.usec}`);
  if (r.usec >= 1) t.ok(Math.abs(r.mbps - size / r.usec) <= 0.01 + (size / r.usec) * 0.01, `${size}: MB/sec ${r.mbps} is bytes per microsecond`);
}

t.test('fi-pingpong: fabtests table, the protocol each size took, every message verified, --json', async (t) => {
  const run = await runCli(['fi-pingpong', '-S', SIZES.join(','), '-I', '5', '--json'], { timeoutMs: 60_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const lines = run.stdout.trim().split('\n');
  t.equal(lines[0], HEADER, 'the header, exactly');
  const table = rows(run.stdout);
  t.equal(table.length, SIZES.length, 'one row per size');
  SIZES.forEach((s, i) => table[i] && checkRow(t, table[i], s, 5, 2));
  // 1 B and 4 KiB fit one eager packet, 70000 B is above the medium limit (64 KiB), 1100000 B
  // at least the long-read threshold (1 MiB); 15 pings a size (5 + 10 warm-up).
  t.equal(lines[SIZES.length + 1], '# rdm protocols, messages the client sent: eager 30 (1..4k), medium 0, longcts 15 (68k), longread 15 (1m)');
  t.equal(lines[SIZES.length + 2], '# data check: 120 of 120 data messages verified byte for byte (client 60, server 60)');
  const json = JSON.parse(lines[lines.length - 1]) as { verify: boolean; tagged: boolean; results: Array<{ xfer_size: number; iterations: number; protocols: Record<string, number>; verified: { client: number; server: number } }> };
  t.equal(json.verify, true, 'verification is on by default');
  t.equal(json.tagged, false);
  t.same(
    json.results.map((r) => [r.xfer_size, r.iterations, r.protocols, r.verified]),
    [
      [1, 5, { eager: 15 }, { client: 15, server: 15 }],
      [4096, 5, { eager: 15 }, { client: 15, server: 15 }],
      [70000, 5, { longcts: 15 }, { client: 15, server: 15 }],
      [1100000, 5, { longread: 15 }, { client: 15, server: 15 }],
    ],
  );
});

t.test('fi-bw -W 8: one row per size, the server checks every message of every window', async (t) => {
  const run = await runCli(['fi-bw', '-S', SIZES.join(','), '-I', '20', '-W', '8', '--json'], { timeoutMs: 60_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const lines = run.stdout.trim().split('\n');
  t.equal(lines[0], HEADER);
  const table = rows(run.stdout);
  t.equal(table.length, SIZES.length, 'one row per size');
  SIZES.forEach((s, i) => table[i] && checkRow(t, table[i], s, 20, 1));
  t.equal(lines[SIZES.length + 1], '# rdm protocols, messages the client sent: eager 60 (1..4k), medium 0, longcts 30 (68k), longread 30 (1m)');
  t.equal(lines[SIZES.length + 2], '# data check: 120 of 120 data messages verified byte for byte (client 0, server 120)');
  const json = JSON.parse(lines[lines.length - 1]) as { results: Array<{ window: number; warmup: number; verified: { server: number } }> };
  t.same(json.results.map((r) => [r.window, r.warmup, r.verified.server]), SIZES.map(() => [8, 10, 30]), 'a window of 8, 10 warm-up messages, 30 checked a size');
});

t.test('tagged: fi-pingpong --tagged -c sread and fi-bw --tagged -m (machine-readable)', async (t) => {
  const pp = await runCli(['fi-pingpong', '--tagged', '-c', 'sread', '-S', 'l:64,9000', '-I', '20', '-w', '2'], { timeoutMs: 60_000 });
  t.equal(pp.code, 0, `exit 0 (stderr: ${pp.stderr.slice(-2000)})`);
  t.equal(pp.stdout.split('\n')[0], HEADER);
  const table = rows(pp.stdout);
  t.equal(table.length, 2);
  [64, 9000].forEach((s, i) => table[i] && checkRow(t, table[i], s, 20, 2));
  t.match(pp.stdout, /^# rdm protocols, messages the client sent: eager 22 \(64\), medium 22 \(8\.7k\), longcts 0, longread 0$/m);
  t.match(pp.stdout, /^# data check: 88 of 88 data messages verified byte for byte \(client 44, server 44\)$/m);

  const bw = await runCli(['fi-bw', '--tagged', '-m', '-S', 'r:1000,30000,61000', '-I', '30', '-W', '16'], { timeoutMs: 60_000 });
  t.equal(bw.code, 0, `exit 0 (stderr: ${bw.stderr.slice(-2000)})`);
  const lines = bw.stdout.split('\n');
  t.equal(lines[0], '---');
  t.equal(lines[1], 'efa-emu fi-bw --tagged -m -S r:1000,30000,61000 -I 30 -W 16 :', 'the command line, each word followed by a space');
  const sizes = [1000, 31000, 61000];
  sizes.forEach((s, i) => {
    const m = new RegExp(`^- \\{ xfer_size: ${s}, iterations: 30, total: ${s * 30}, time: [0-9]+\\.[0-9]{6}, MB/sec: [0-9]+\\.[0-9]{6}, usec/xfer: [0-9]+\\.[0-9]{6}, Mxfers/sec: [0-9]+\\.[0-9]{6} \\}$`);
    t.match(lines[2 + i], m, `${s}: machine-readable row`);
  });
  t.match(bw.stdout, /^# data check: 120 of 120 data messages verified byte for byte \(client 0, server 120\)$/m);
});

t.test('bad flags fail at once with a clear error and a nonzero exit', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['fi-pingpong', '--bogus'], /unknown option '--bogus'/],
    [['fi-bw', '-S', 'r:10,0,5'], /inc > 0/],
    [['fi-pingpong', '-S', '20000000'], /larger than the tools' largest message/],
    [['fi-pingpong', '-W', '8'], /unknown option '-W'/],
    [['fi-bw', '-t', 'counter'], /completion counters are not emulated/],
    [['fi-bw', '-c', 'yield'], /expected one of spin, sread/],
  ];
  for (const [args, why] of cases) {
    const run = await runCli(args, { timeoutMs: 20_000 });
    t.not(run.code, 0, `${args.join(' ')}: nonzero exit`);
    t.match(run.stderr, why, `${args.join(' ')}: says why`);
    t.equal(run.stdout, '', `${args.join(' ')}: no table`);
  }
});

t.test("fabtests' formats: size_str, cnt_str, printf rounding, rows", async (t) => {
  t.same([64, 1024, 1536, 12288, 1048576, 1572864, 1023, 70000, 3 * 2 ** 30].map(sizeStr), ['64', '1k', '1.5k', '12k', '1m', '1.5m', '1023', '68k', '3g']);
  t.same([100, 999, 1000, 10000, 1500000, 2e9].map(cntStr), ['100', '999', '1k', '10k', '1m', '2b']);
  // C rounds an exact tie to even; toFixed would print 0.13 and 3.
  t.same([cFixed(0.125, 2), cFixed(0.375, 2), cFixed(2.5, 0), cFixed(1.005, 2), cFixed(12.3456, 6), cFixed(Infinity, 2)], ['0.12', '0.38', '2', '1.00', '12.345600', 'inf']);
  const f = perfFigures(4096, 10000, 123456, 2);
  t.equal(perfRow(f), '4k      10k     78m         0.12s    663.56       6.17       0.16');
  t.equal(machineRow(f), '- { xfer_size: 4096, iterations: 10000, total: 81920000, time: 0.123456, MB/sec: 663.556247, usec/xfer: 6.172800, Mxfers/sec: 0.162001 }');
  t.same(machineHeader(['fi_rdm_pingpong', '-S', 'all']), ['---', 'fi_rdm_pingpong -S all :']);
});

t.test('sizes and iterations', async (t) => {
  t.equal(DEF_TEST_SIZES.length, 48, "fabtests' 46 sizes up to 8m, then 12m and 16m");
  t.same(DEF_TEST_SIZES.slice(0, 8), [1, 2, 3, 4, 6, 8, 12, 16]);
  t.same(DEF_TEST_SIZES.slice(-4), [6 << 20, 8 << 20, 12 << 20, 16 << 20]);
  t.same(DEFAULT_SIZES, [64, 256, 1024, 4096, 65536, 1048576]);
  t.same(parseSizeSpec('ALL'), { kind: 'all' });
  t.same(parseSizeSpec('r:1,10,30'), { kind: 'list', sizes: [1, 11, 21] });
  t.same(parseSizeSpec('l:5,7'), { kind: 'list', sizes: [5, 7] });
  t.same(parseSizeSpec('4096'), { kind: 'list', sizes: [4096] });
  t.throws(() => parseSizeSpec('l:5,x'), /not a size/);
  t.same([1, 65535, 65536, 1 << 20].map((s) => sizeToCount(s, false)), [10000, 10000, 1000, 100]);
  t.same([1, 65536, 1 << 20].map((s) => sizeToCount(s, true)), [20000, 2000, 200]);
  t.same([1, 65536, 1 << 20, 16 << 20].map((s) => defaultIterations(s, false)), [1000, 1000, 64, 10], 'capped pingpong counts');
  t.same([1, 65536, 1 << 20, 16 << 20].map((s) => defaultIterations(s, true)), [2000, 2000, 128, 20], 'capped bw counts');
  t.same([effectiveWindow(4096, 64), effectiveWindow(16 << 20, 64), effectiveWindow(1 << 30, 64)], [64, 16, 1]);

  const flags = { size: parseSizeSpec('l:64,16777216'), warmup: 10, window: 64, compMethod: 'spin' as const, timeout: 60 };
  const bw = buildPlan('fi-bw', flags);
  t.same([bw.plan.iters, bw.plan.windows, bw.plan.verify], [[2000, 20], [64, 16], true], 'bw: capped counts, the window shrunk at 16m, verification on');
  t.same(bw.notes, ['fi-bw: -W 64 shrinks to keep the receive buffers within 256 MiB: 16 at 16m']);
  const pp = buildPlan('fi-pingpong', { ...flags, iterations: 500, verify: false });
  t.same([pp.plan.iters, pp.plan.windows, pp.plan.verify, pp.notes], [[500, 500], [1, 1], false, []], 'pingpong: -I is not capped; --no-verify');
});

t.test('the data check catches a flipped byte, a wrong tag, a duplicate, and allows any order untagged', async (t) => {
  const check = new MessageCheck(makePattern(5000 + PATTERN_SLIDE));
  check.reset(5000);
  for (const i of [0, 1, 2]) check.expect(i);
  // Untagged receives of one window complete in any order.
  for (const i of [2, 0, 1]) check.check(Buffer.from(check.message(i)), 5000, null);
  t.equal(check.checked, 3);
  t.equal(check.pending, 0);

  check.expect(3);
  const bad = Buffer.from(check.message(3));
  bad[4321] ^= 0x10;
  t.throws(() => check.check(bad, 5000, null), /Data check error \(0x[0-9a-f]{2}!=0x[0-9a-f]{2}\) at byte 4321 for buffer size 5000/);
  t.throws(() => check.check(Buffer.from(check.message(3)), 4999, null), /received 4999 bytes for buffer size 5000/);

  check.reset(5000);
  check.expect(7);
  check.expect(8);
  t.throws(() => check.check(Buffer.from(check.message(8)), 5000, 7n), DataCheckError, "tagged: message 8's bytes under tag 7");
  check.check(Buffer.from(check.message(8)), 5000, 8n);
  t.throws(() => check.check(Buffer.from(check.message(8)), 5000, 8n), /no outstanding receive/, 'the same tag twice');
  t.throws(() => check.check(Buffer.from(check.message(8)), 5000, null), /Data check error/, 'untagged: a duplicate of a message already taken');
});
