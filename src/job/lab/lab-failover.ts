/*
 * `efa-emu lab failover`: a paced SRD stream between two ranks while one path to the
 * receiver is black-holed for a while, once with K paths and once with a single path (the
 * same loss on that path), and what each saw: throughput around the fault, latency, how long
 * the stream took to route around the dead path, retransmissions and app-visible errors.
 */
import { InvalidArgumentError } from '../../common/errors';
import { fmt, formatTable, formatVerdict, type VerdictCheck } from './lab-table';
import { latencyCdfPanel, renderSvg, type PlotPanel } from './lab-plot';
import { coarsen, LatencyHistogram, round, sumBins, type HistogramJson, type Percentiles } from './lab-stats';
import { FAILOVER_RANK_PROGRAM, runScenario, withLab, type LabRunOptions } from './lab-run';

/** Options of {@link runFailoverLab}; every one has the command's default. */
export interface FailoverOptions extends LabRunOptions {
  /** Paths of the multipath scenario (default 4); the other scenario has 1. */
  paths?: number;
  /** Length of the measured stream in ms (default 2000). */
  durationMs?: number;
  /**
   * Ms the stream runs before the measured part (default 500), not counted in any figure:
   * a rank's code sends below the pace until it is optimised, and that backlog is not the fault's.
   */
  warmupMs?: number;
  /** When the path is cut, in ms after the stream starts (default 800). */
  faultAtMs?: number;
  /** How long it stays cut, in ms (default 300). */
  faultForMs?: number;
  /** Messages per second (default 20000), paced. */
  rate?: number;
  /** Bytes per message (default 1024). */
  size?: number;
  /** Most sends the sender keeps outstanding (default 512). */
  maxOutstanding?: number;
}

/** Throughput over one interval. */
export interface Throughput {
  msgs_per_s: number;
  MB_per_s: number;
}

/** What one scenario measured. */
export interface FailoverScenario {
  name: string;
  paths: number;
  /** The path black-holed, and the partition target the sender used. */
  fault_path: number;
  fault_target: string;
  /** When the path was cut and healed, ms after the stream started (the sender's clock). */
  fault: { start_ms: number; end_ms: number } | null;
  /** Messages sent and delivered, the warm-up's included. */
  messages: number;
  delivered: number;
  warmup_messages: number;
  throughput: { before: Throughput; during: Throughput; after: Throughput | null };
  /** Post to send completion, of the messages posted after the warm-up. */
  latency_ms: Percentiles;
  retransmissions: number;
  app_errors: number;
  error_statuses: Record<string, number>;
  /**
   * Ms from the fault's start to the end of the first 10 ms window (wholly after the start)
   * in which the receiver got at least 80 % of the pre-fault rate; null: not before the fault ended.
   */
  route_around_ms: number | null;
  /** Ms from the fault's start after which every 10 ms window of the fault had 80 % or more; null: none did to its end. */
  steady_ms: number | null;
  /** The lowest 10 ms window rate during the fault, as % of the pre-fault rate. */
  dip_pct: number | null;
  /** The sender's path counters (`path{p}_*`, `path_*`) that its device has. */
  path_counters: Record<string, number>;
  /** Sends held back by the outstanding limit, at most. */
  max_backlog: number;
  /** Receiver arrivals per `bin_ms`, as messages per second, from the end of the warm-up to the end of the stream. */
  series: { bin_ms: number; msgs_per_s: number[] };
  /** Latency CDF: (ms, fraction at or below). */
  cdf: Array<[number, number]>;
  sender_counters: Record<string, number>;
  receiver_counters: Record<string, number>;
}

/** The whole lab, as `--json` prints it. */
export interface FailoverReport {
  lab: 'failover';
  config: Required<Omit<FailoverOptions, keyof LabRunOptions>>;
  scenarios: FailoverScenario[];
  verdict: { pass: boolean; checks: VerdictCheck[] };
  /** What makes the figures read differently than intended (a sender that could not keep the pace). */
  notes: string[];
}

/** Window of the route-around criterion, and the share of the pre-fault rate it must reach. */
const RECOVERY_WINDOW_MS = 10;
const RECOVERY_SHARE = 0.8;
/** Bin width of the plotted and reported series. */
const SERIES_BIN_MS = 5;

/** The done-when targets. */
export const FAILOVER_TARGETS = { recoveryMs: 50, p999Ratio: 5 } as const;

function resolve(o: FailoverOptions): FailoverReport['config'] {
  const c = {
    paths: o.paths ?? 4,
    durationMs: o.durationMs ?? 2000,
    warmupMs: o.warmupMs ?? 500,
    faultAtMs: o.faultAtMs ?? 800,
    faultForMs: o.faultForMs ?? 300,
    rate: o.rate ?? 20000,
    size: o.size ?? 1024,
    maxOutstanding: o.maxOutstanding ?? 512,
  };
  if (c.faultAtMs >= c.durationMs) throw new InvalidArgumentError(`--fault-at ${c.faultAtMs} ms: must be before the stream ends (--duration ${c.durationMs} ms)`);
  if (c.faultAtMs <= 0) throw new InvalidArgumentError('--fault-at: must be after the stream starts (> 0)');
  return c;
}

/**
 * Runs both scenarios (K paths, then 1 path), each as two ranks through the launcher
 * against an embedded daemon, and returns the figures.
 * @throws InvalidArgumentError for inconsistent options; LabError when a scenario fails or times out
 */
export async function runFailoverLab(o: FailoverOptions = {}): Promise<FailoverReport> {
  const c = resolve(o);
  const plans = [c.paths, ...(c.paths > 1 ? [1] : [])].map((paths) => ({ paths, faultPath: paths >= 3 ? 2 : paths - 1 }));
  return withLab(o, async (ctx) => {
    const scenarios: FailoverScenario[] = [];
    for (const p of plans) {
      const name = `paths=${p.paths}`;
      const args = [
        '--paths', String(p.paths),
        '--duration-ms', String(c.durationMs),
        '--warmup-ms', String(c.warmupMs),
        '--fault-at-ms', String(c.faultAtMs),
        '--fault-for-ms', String(c.faultForMs),
        '--fault-path', String(p.faultPath),
        '--rate', String(c.rate),
        '--size', String(c.size),
        '--max-outstanding', String(c.maxOutstanding),
      ];
      const [snd, rcv] = await runScenario(ctx, { name, n: 2, program: FAILOVER_RANK_PROGRAM, args, role: (r) => (r === 0 ? 'sender' : 'receiver') });
      scenarios.push(analyse(name, p.paths, p.faultPath, c, snd as unknown as SenderFigures, rcv as unknown as ReceiverFigures));
    }
    return { lab: 'failover', config: c, scenarios, verdict: verdict(scenarios), notes: notes(c, scenarios) };
  });
}

interface SenderFigures extends Percentiles {
  target: string;
  posted: number;
  warmupPosted: number;
  errors: number;
  errorStatuses: Record<string, number>;
  maxBacklog: number;
  fault: { startMs: number; endMs: number } | null;
  hist: HistogramJson;
  stats: Record<string, number>;
}

interface ReceiverFigures {
  delivered: number;
  errors: number;
  errorStatuses: Record<string, number>;
  binMs: number;
  bins: number[];
  stats: Record<string, number>;
}

function throughput(count: number, spanMs: number, size: number): Throughput {
  const rate = spanMs > 0 ? (count / spanMs) * 1000 : NaN;
  return { msgs_per_s: round(rate, 1), MB_per_s: round((rate * size) / 1e6, 3) };
}

function analyse(name: string, paths: number, faultPath: number, c: FailoverReport['config'], s: SenderFigures, r: ReceiverFigures): FailoverScenario {
  const bin = r.binMs;
  const bins = r.bins;
  const faultStart = s.fault?.startMs ?? c.faultAtMs;
  const faultEnd = s.fault?.endMs ?? c.faultAtMs + c.faultForMs;
  const before = sumBins(bins, bin, 0, faultStart);
  const preRate = before / faultStart; // messages per ms
  const during = sumBins(bins, bin, faultStart, faultEnd);
  const afterSpan = c.durationMs - faultEnd;
  let routeAround: number | null = null;
  let dip: number | null = null;
  let lastBelow: number | null = null;
  let lastWindow = faultStart;
  const need = RECOVERY_SHARE * preRate * RECOVERY_WINDOW_MS;
  // Windows on bin edges (sumBins counts a partly covered bin whole).
  const firstEnd = Math.ceil(faultStart / bin) * bin + RECOVERY_WINDOW_MS;
  for (let t = firstEnd; t <= faultEnd + 1e-9 && preRate > 0; t += bin) {
    const got = sumBins(bins, bin, t - RECOVERY_WINDOW_MS, t);
    dip = Math.min(dip ?? Infinity, (100 * got) / (preRate * RECOVERY_WINDOW_MS));
    if (got >= need) routeAround ??= round(t - faultStart, 1);
    else lastBelow = t;
    lastWindow = t;
  }
  // For good: every later window of the fault at 80 % or more.
  const steady = preRate <= 0 ? null : lastBelow === null ? round(firstEnd - faultStart, 1) : lastBelow < lastWindow ? round(lastBelow + bin - faultStart, 1) : null;
  const pathCounters: Record<string, number> = {};
  for (const [k, v] of Object.entries(s.stats)) if (/^path/.test(k)) pathCounters[k] = v;
  const factor = Math.max(1, Math.round(SERIES_BIN_MS / bin));
  return {
    name,
    paths,
    fault_path: faultPath,
    fault_target: s.target,
    fault: s.fault === null ? null : { start_ms: round(s.fault.startMs, 2), end_ms: round(s.fault.endMs, 2) },
    messages: s.posted,
    delivered: r.delivered,
    warmup_messages: s.warmupPosted,
    throughput: {
      before: throughput(before, faultStart, c.size),
      during: throughput(during, faultEnd - faultStart, c.size),
      after: afterSpan > 0 ? throughput(sumBins(bins, bin, faultEnd, c.durationMs), afterSpan, c.size) : null,
    },
    latency_ms: { p50: s.p50, p99: s.p99, 'p99.9': s['p99.9'] },
    retransmissions: s.stats.retrans_pkts ?? 0,
    app_errors: s.errors + r.errors,
    error_statuses: mergeCounts(s.errorStatuses, r.errorStatuses),
    route_around_ms: routeAround,
    steady_ms: steady,
    dip_pct: dip === null ? null : round(dip, 1),
    path_counters: pathCounters,
    max_backlog: s.maxBacklog,
    // The measured stream only: the last sends' stragglers would read as a collapse.
    series: { bin_ms: bin * factor, msgs_per_s: coarsen(bins.slice(0, Math.ceil(c.durationMs / bin)), factor).map((n) => round((n / (bin * factor)) * 1000, 1)) },
    cdf: LatencyHistogram.fromJSON(s.hist).cdf(),
    sender_counters: s.stats,
    receiver_counters: r.stats,
  };
}

function mergeCounts(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = (out[k] ?? 0) + v;
  return out;
}

function verdict(scenarios: FailoverScenario[]): FailoverReport['verdict'] {
  const multi = scenarios.find((s) => s.paths > 1);
  const single = scenarios.find((s) => s.paths === 1);
  const checks: VerdictCheck[] = [];
  if (multi !== undefined) {
    checks.push({ name: `${multi.name} zero app-visible errors`, value: String(multi.app_errors), pass: multi.app_errors === 0 });
    checks.push({
      name: `${multi.name} routes around within ${FAILOVER_TARGETS.recoveryMs} ms`,
      value: multi.route_around_ms === null ? 'never' : `${fmt(multi.route_around_ms)} ms`,
      pass: multi.route_around_ms !== null && multi.route_around_ms <= FAILOVER_TARGETS.recoveryMs,
    });
    if (single !== undefined) {
      const ratio = single.latency_ms['p99.9'] / multi.latency_ms['p99.9'];
      checks.push({ name: `p99.9 >= ${FAILOVER_TARGETS.p999Ratio}x better than 1 path`, value: `${fmt(ratio)}x`, pass: ratio >= FAILOVER_TARGETS.p999Ratio });
    }
  }
  return { pass: checks.length > 0 && checks.every((x) => x.pass), checks };
}

/** Below this share of --rate before the fault, the stream was saturated rather than paced. */
const PACE_SHARE = 0.9;

function notes(c: FailoverReport['config'], scenarios: FailoverScenario[]): string[] {
  const out: string[] = [];
  for (const s of scenarios) {
    const share = s.throughput.before.msgs_per_s / c.rate;
    if (share < PACE_SHARE) {
      out.push(
        `${s.name}: before the fault the receiver got ${fmt(100 * share)} % of --rate ${c.rate} msg/s: the stream was saturated (sends waited for the ${c.maxOutstanding} outstanding), so latency includes that queueing; a lower --rate measures the fault alone`,
      );
    }
  }
  return out;
}

function tp(t: Throughput | null): string {
  return t === null ? '-' : `${fmt(t.msgs_per_s, 4)} (${fmt(t.MB_per_s)})`;
}

/** The report as the command prints it: the table, then the verdict line. */
export function formatFailover(rep: FailoverReport): string {
  const c = rep.config;
  const sc = rep.scenarios;
  const title = `lab failover: ${c.size} B SRD sends at ${c.rate} msg/s for ${c.durationMs} ms (after ${c.warmupMs} ms of warm-up), one path to the receiver black-holed from ${c.faultAtMs} ms for ${c.faultForMs} ms`;
  const header = sc.map((s) => `${s.name} (path ${s.fault_path} cut)`);
  const rows: string[][] = [
    ['messages sent / delivered', ...sc.map((s) => `${s.messages} / ${s.delivered}`)],
    ['  of which in the warm-up', ...sc.map((s) => String(s.warmup_messages))],
    ['before fault msg/s (MB/s)', ...sc.map((s) => tp(s.throughput.before))],
    ['during fault msg/s (MB/s)', ...sc.map((s) => tp(s.throughput.during))],
    ['after fault msg/s (MB/s)', ...sc.map((s) => tp(s.throughput.after))],
    ['lowest 10 ms rate in fault', ...sc.map((s) => (s.dip_pct === null ? '-' : `${fmt(s.dip_pct)} %`))],
    ['time to route around', ...sc.map((s) => (s.route_around_ms === null ? 'never' : `${fmt(s.route_around_ms)} ms`))],
    ['back to >= 80 % for good', ...sc.map((s) => (s.steady_ms === null ? 'never' : `${fmt(s.steady_ms)} ms`))],
    ['latency p50 / p99 / p99.9 ms', ...sc.map((s) => `${fmt(s.latency_ms.p50)} / ${fmt(s.latency_ms.p99)} / ${fmt(s.latency_ms['p99.9'])}`)],
    ['retransmissions', ...sc.map((s) => String(s.retransmissions))],
    ['app-visible errors', ...sc.map((s) => String(s.app_errors) + (s.app_errors > 0 ? ` (${Object.entries(s.error_statuses).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''))],
    ['sends held back, at most', ...sc.map((s) => String(s.max_backlog))],
  ];
  // Whatever path counters the devices have: per path tx / lost / retransmitted, then the rest.
  const maxPaths = Math.max(...sc.map((s) => s.paths));
  for (let p = 0; p < maxPaths; p++) {
    const keys = ['tx_pkts', 'lost_pkts', 'retrans_pkts', 'down_events'];
    if (!sc.some((s) => keys.some((k) => `path${p}_${k}` in s.path_counters))) continue;
    rows.push([`path ${p} tx / lost / retrans / down`, ...sc.map((s) => (p < s.paths ? keys.map((k) => String(s.path_counters[`path${p}_${k}`] ?? 0)).join(' / ') : '-'))]);
  }
  const others = [...new Set(sc.flatMap((s) => Object.keys(s.path_counters)))].filter((k) => !/^path\d+_/.test(k)).sort();
  for (const k of others) rows.push([k, ...sc.map((s) => String(s.path_counters[k] ?? 0))]);
  if (maxPaths > 0 && !sc.some((s) => Object.keys(s.path_counters).length > 0)) rows.push(['path counters', ...sc.map(() => 'none (device has no path counters)')]);
  return formatTable(title, header, rows) + rep.notes.map((n) => `note: ${n}\n`).join('') + formatVerdict(rep.verdict.checks);
}

/** The `--plot` image: latency CDFs, and receiver throughput over time with the fault window shaded. */
export function plotFailover(rep: FailoverReport): string {
  const panels: PlotPanel[] = [
    latencyCdfPanel(rep.scenarios),
  ];
  rep.scenarios.forEach((s, i) => {
    const f = s.fault ?? { start_ms: rep.config.faultAtMs, end_ms: rep.config.faultAtMs + rep.config.faultForMs };
    panels.push({
      title: `Receiver throughput, ${s.name} (path ${s.fault_path} cut)`,
      xLabel: `time after the warm-up (ms), ${s.series.bin_ms} ms bins`,
      yLabel: 'messages per second',
      series: [{ name: s.name, points: s.series.msgs_per_s.map((y, b) => [b * s.series.bin_ms, y] as [number, number]), color: ['#1f77b4', '#d62728'][i % 2], width: 1.5 }],
      shades: [{ from: f.start_ms, to: f.end_ms, label: `fault window ${fmt(f.start_ms)}-${fmt(f.end_ms)} ms` }],
    });
  });
  const c = rep.config;
  return renderSvg(panels, `efa-emu lab failover: ${c.size} B at ${c.rate} msg/s, path cut ${c.faultAtMs} ms + ${c.faultForMs} ms`);
}
