// `efa-emu lab failover` and `lab incast` end to end through the CLI, short runs: what the
// JSON must hold whatever the machine's speed, the failover outcome multipath exists for, the
// incast accounting, the plots as well-formed SVG, and the time limit killing and naming ranks.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import type { FailoverReport } from '../src/job/lab/lab-failover';
import type { IncastReport } from '../src/job/lab/lab-incast';
import { histogramPercentiles, jainIndex, LatencyHistogram, percentiles } from '../src/job/lab/lab-stats';
import { lastJsonLine, runCli } from './helpers/run-cli';

t.setTimeout(240_000);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-lab-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Checks what an XML parser would: tags nest and close, attributes are quoted, text is escaped. Returns the problems. */
function xmlProblems(text: string): string[] {
  const problems: string[] = [];
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (const m of text.matchAll(tag)) {
    const between = text.slice(last, m.index);
    if (/[<>]/.test(between)) problems.push(`stray < or > before offset ${m.index}`);
    if (/&(?!amp;|lt;|gt;|quot;|apos;|#\d+;)/.test(between)) problems.push(`unescaped & before offset ${m.index}`);
    last = (m.index as number) + m[0].length;
    const [, closing, name, , selfClosing] = m;
    if (closing === '/') {
      const open = stack.pop();
      if (open !== name) problems.push(`</${name}> closes <${open ?? 'nothing'}>`);
    } else if (selfClosing !== '/') stack.push(name);
  }
  if (text.slice(last).trim() !== '') problems.push('text after the root element');
  if (stack.length > 0) problems.push(`unclosed: ${stack.join(', ')}`);
  if (!/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/.test(text)) problems.push('does not start with an <svg> root in the SVG namespace');
  return problems;
}

t.test('lab failover --json --plot: both scenarios; with 4 paths no app-visible error and a lower p99.9 than 1 path', async (t) => {
  const plot = path.join(dir, 'failover.svg');
  const run = await runCli(['lab', 'failover', '--duration', '1s', '--fault-at', '400ms', '--fault-for', '200ms', '--rate', '5000', '--json', '--plot', plot, '--timeout', '100'], { timeoutMs: 120_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const rep = lastJsonLine(run.stdout) as unknown as FailoverReport;
  t.equal(rep.lab, 'failover');
  t.same(rep.scenarios.map((s) => [s.name, s.paths, s.fault_path]), [['paths=4', 4, 2], ['paths=1', 1, 0]], 'K paths with path 2 cut, then 1 path with path 0 cut');
  for (const s of rep.scenarios) {
    t.ok(s.messages > 0, `${s.name}: messages sent`);
    t.equal(s.delivered, s.messages, `${s.name}: every message delivered`);
    t.ok(s.fault !== null && Math.abs(s.fault.start_ms - 400) < 50 && Math.abs(s.fault.end_ms - s.fault.start_ms - 200) < 1, `${s.name}: the fault window as asked (${JSON.stringify(s.fault)})`);
    t.ok(s.latency_ms.p50 <= s.latency_ms.p99 && s.latency_ms.p99 <= s.latency_ms['p99.9'], `${s.name}: p50 <= p99 <= p99.9`);
    t.match(s.fault_target, new RegExp(`^\\S+#${s.fault_path}$`), `${s.name}: the partition named the receiver's path`);
  }
  const [multi, single] = rep.scenarios;
  t.equal(multi.app_errors, 0, 'no app-visible error with 4 paths');
  t.ok(multi.latency_ms['p99.9'] < single.latency_ms['p99.9'], `p99.9 with 4 paths (${multi.latency_ms['p99.9']} ms) below 1 path's (${single.latency_ms['p99.9']} ms)`);
  // One path black-holed is all of the traffic: messages posted in the window wait it out.
  t.ok(single.latency_ms['p99.9'] >= 100, `1 path: p99.9 (${single.latency_ms['p99.9']} ms) shows the 200 ms outage`);
  t.ok(single.throughput.during.msgs_per_s < single.throughput.before.msgs_per_s / 2, '1 path: the throughput collapses during the fault');
  t.equal(single.route_around_ms, null, '1 path: no route around');
  t.type(rep.verdict.pass, 'boolean');
  t.equal(rep.verdict.checks.length, 3, 'three done-when checks');

  const svg = fs.readFileSync(plot, 'utf8');
  t.same(xmlProblems(svg), [], 'the plot is well-formed SVG');
  const windows = [...svg.matchAll(/<rect class="fault-window" x="([\d.]+)" y="0" width="([\d.]+)"[^>]*><title>fault window ([\d.]+)-([\d.]+) ms<\/title>/g)];
  t.equal(windows.length, 2, 'the fault window shaded in each throughput panel');
  for (const [i, w] of windows.entries()) {
    const f = rep.scenarios[i].fault as { start_ms: number; end_ms: number };
    t.ok(Number(w[2]) > 0, 'the window has a width');
    t.ok(Math.abs(Number(w[3]) - f.start_ms) < 1 && Math.abs(Number(w[4]) - f.end_ms) < 1, `the shaded window is the fault's (${w[3]}-${w[4]} ms)`);
  }
  t.match(svg, /<polyline [^>]*><title>paths=4<\/title><\/polyline>/, 'a latency line per scenario');
  t.match(svg, /latency \(ms, log scale\)/);
});

t.test('lab incast --json --plot: both cc scenarios; per-sender goodputs add up to the total', async (t) => {
  const plot = path.join(dir, 'incast.svg');
  const senders = 4;
  const run = await runCli(['lab', 'incast', '--senders', String(senders), '--duration', '1s', '--json', '--plot', plot, '--timeout', '100'], { timeoutMs: 120_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const rep = lastJsonLine(run.stdout) as unknown as IncastReport;
  t.equal(rep.lab, 'incast');
  t.equal(rep.config.bottleneck_bytes_per_s, 20e6, '20mbps is 20 MB/s');
  t.equal(rep.config.buffer_bytes, 256 * 1024);
  t.same(rep.scenarios.map((s) => s.cc), ['delay', 'off']);
  for (const s of rep.scenarios) {
    t.ok(s.messages > 0, `${s.name}: messages sent`);
    t.equal(s.per_sender_MB_per_s.length, senders, `${s.name}: a goodput per sender`);
    const sum = s.per_sender_MB_per_s.reduce((a, b) => a + b, 0);
    t.ok(Math.abs(sum - s.goodput.MB_per_s) < 1e-3, `${s.name}: per-sender goodputs sum (${sum}) to the total (${s.goodput.MB_per_s})`);
    t.ok(s.goodput.MB_per_s > 0, `${s.name}: goodput`);
    t.ok(Math.abs(s.goodput.pct_of_bottleneck - (100 * s.goodput.MB_per_s) / 20) < 0.01, `${s.name}: % of the bottleneck`);
    t.ok(s.jain > 0 && s.jain <= 1, `${s.name}: Jain's index in (0, 1]`);
    t.equal(s.bottleneck.error, null, `${s.name}: the receiver took the bottleneck`);
    t.ok(s.bottleneck.packets > 0, `${s.name}: packets went through the bottleneck`);
    t.ok(s.goodput.MB_per_s <= 20 * 1.1, `${s.name}: goodput within the bottleneck rate (${s.goodput.MB_per_s} MB/s)`);
    t.ok(s.interval_ms.to > s.interval_ms.from, `${s.name}: a measuring interval`);
  }
  const svg = fs.readFileSync(plot, 'utf8');
  t.same(xmlProblems(svg), [], 'the plot is well-formed SVG');
  t.match(svg, /<title>sender 4<\/title>/, 'a line per sender');
  t.match(svg, /<title>total<\/title>/);
});

t.test('lab: --timeout stops the ranks and names them; exit 124', async (t) => {
  const run = await runCli(['lab', 'failover', '--duration', '20s', '--fault-at', '1s', '--timeout', '2'], { timeoutMs: 60_000 });
  t.equal(run.code, 124, `exit 124 (stderr: ${run.stderr.slice(-2000)})`);
  t.match(run.stderr, /efa-emu lab failover: ETIMEDOUT: scenario paths=4 ran past --timeout 2 s, so its ranks still running were stopped: rank 0 \(sender\) [^,]+, rank 1 \(receiver\) /);
  t.equal(run.stdout, '', 'no table for a lab that did not finish');
});

t.test('lab: usage errors are one line before any rank starts', async (t) => {
  for (const [args, re] of [
    [['lab', 'failover', '--duration', '2'], /^efa-emu: EINVAL: .*--duration.*expected a time with a unit/],
    [['lab', 'failover', '--fault-at', '3s'], /^efa-emu: EINVAL: --fault-at 3000 ms: must be before the stream ends/],
    [['lab', 'failover', '--size', '9000'], /^efa-emu: EINVAL: --size 9000: larger than the device MTU/],
    [['lab', 'incast', '--bottleneck', '20xx'], /^efa-emu: EFAULTSPEC: --bottleneck: .*unknown rate unit "xx"/],
    [['lab', 'incast', '--buffer', 'lots'], /^efa-emu: EFAULTSPEC: --buffer: /],
  ] as Array<[string[], RegExp]>) {
    const run = await runCli(args, { timeoutMs: 30_000 });
    t.equal(run.code, 1, `${args.join(' ')}: exit 1`);
    t.match(run.stderr, re, `${args.join(' ')}: ${run.stderr.trim()}`);
    t.equal(run.stderr.trim().split('\n').length, 1, 'one line');
  }
});

t.test('lab figures: percentiles, the merged histogram, Jain', async (t) => {
  const xs = Float64Array.from({ length: 1000 }, (_, i) => 1000 - i);
  t.same(percentiles(xs), { p50: 500, p99: 990, 'p99.9': 999 }, 'nearest rank, ceil(q n)');
  const a = new LatencyHistogram();
  const b = new LatencyHistogram();
  for (let i = 1; i <= 1000; i++) (i % 2 === 0 ? a : b).add(i / 10);
  a.merge(LatencyHistogram.fromJSON(JSON.parse(JSON.stringify(b.toJSON()))));
  t.equal(a.total, 1000, 'merging adds the counts');
  const p = histogramPercentiles(a);
  t.ok(Math.abs(p.p50 - 50) / 50 < 0.05 && Math.abs(p['p99.9'] - 99.9) / 99.9 < 0.05, `within a bucket of the exact ones (${JSON.stringify(p)})`);
  const cdf = a.cdf();
  t.equal(cdf[cdf.length - 1][1], 1, 'the CDF ends at 1');
  t.ok(cdf.every(([x, f], i) => i === 0 || (x > cdf[i - 1][0] && f >= cdf[i - 1][1])), 'the CDF rises left to right');
  t.equal(jainIndex([2, 2, 2, 2]), 1, 'equal shares: 1');
  t.equal(jainIndex([4, 0, 0, 0]), 0.25, 'one takes all: 1/n');
});
