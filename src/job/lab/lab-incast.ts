/*
 * `efa-emu lab incast`: N senders stream to one receiver behind a receive-side bottleneck
 * (a shared FIFO drained at a fixed rate, dropping on overflow), once with congestion control
 * and once without, and what each saw: goodput against the bottleneck rate, drops at the
 * bottleneck, retransmissions, latency, fairness between the senders, app-visible errors.
 */
import { InvalidArgumentError } from '../../common/errors';
import { parseFaultSpec } from '../../io/fault-spec';
import type { CcMode } from '../../srd/srd-config';
import { fmt, formatTable, formatVerdict, type VerdictCheck } from './lab-table';
import { latencyCdfPanel, PALETTE, renderSvg, type PlotPanel, type PlotSeries } from './lab-plot';
import { coarsen, histogramPercentiles, jainIndex, LatencyHistogram, round, sumBins, type HistogramJson, type Percentiles } from './lab-stats';
import { INCAST_RANK_PROGRAM, runScenario, withLab, type LabRunOptions } from './lab-run';

/** Options of {@link runIncastLab}; every one has the command's default. */
export interface IncastOptions extends LabRunOptions {
  /** Senders (default 8). */
  senders?: number;
  /** The bottleneck's rate, in the fault grammar (`20mbps` = 20 MB/s; default `20mbps`). */
  bottleneck?: string;
  /** Its FIFO, in bytes or with a unit (default `256KiB`). */
  buffer?: string;
  /** Bytes per message (default 8192). */
  size?: number;
  /** Length of the measured stream in ms (default 3000). */
  durationMs?: number;
  /** Ms the senders stream before the measured part (default 500), not counted in any figure. */
  warmupMs?: number;
  /** Sends each sender keeps outstanding (default 64). */
  outstanding?: number;
}

/** What one scenario measured. */
export interface IncastScenario {
  name: string;
  cc: CcMode;
  /** The interval every sender was sending in, ms after the common start. */
  interval_ms: { from: number; to: number };
  /** Over that interval. */
  goodput: { MB_per_s: number; pct_of_bottleneck: number };
  per_sender_MB_per_s: number[];
  jain: number;
  /** `packets`: what arrived at the bottleneck (admitted + dropped). */
  bottleneck: { drops: number; packets: number; drop_pct: number | null; queue_max_bytes: number | null; error: string | null };
  retransmissions: number;
  latency_ms: Percentiles;
  app_errors: number;
  error_statuses: Record<string, number>;
  messages: number;
  /** Each sender's goodput at the receiver per `bin_ms`, in MB/s, from the end of the warm-up to the end of the stream. */
  series: { bin_ms: number; per_sender_MB_per_s: number[][] };
  cdf: Array<[number, number]>;
  receiver_counters: Record<string, number>;
  /** Summed over the senders. */
  sender_counters: Record<string, number>;
}

/** The whole lab, as `--json` prints it. */
export interface IncastReport {
  lab: 'incast';
  config: Required<Omit<IncastOptions, keyof LabRunOptions>> & { bottleneck_bytes_per_s: number; buffer_bytes: number };
  scenarios: IncastScenario[];
  verdict: { pass: boolean; checks: VerdictCheck[] };
}

/** The done-when targets of the scenario with congestion control. */
export const INCAST_TARGETS = { goodputPct: 85, dropPct: 1, jain: 0.9 } as const;

/** Bin width of the plotted series: wide enough for a few messages per sender per bin. */
const PLOT_BIN_MS = 50;

/** The bottleneck's rate and buffer, checked with the fault grammar (the error names the flag). */
export function parseBottleneck(rate: string, buffer: string): { rate: number; buffer: number } {
  const r = parseFaultSpec(`bottleneck=${rate}`, '--bottleneck');
  const b = parseFaultSpec(`bottleneck-buffer=${buffer}`, '--buffer');
  return { rate: r.bottleneckBytesPerSec as number, buffer: b.bottleneckBufferBytes };
}

function resolve(o: IncastOptions): IncastReport['config'] {
  const c = {
    senders: o.senders ?? 8,
    bottleneck: o.bottleneck ?? '20mbps',
    buffer: o.buffer ?? '256KiB',
    size: o.size ?? 8192,
    durationMs: o.durationMs ?? 3000,
    warmupMs: o.warmupMs ?? 500,
    outstanding: o.outstanding ?? 64,
  };
  if (!Number.isInteger(c.senders) || c.senders < 1) throw new InvalidArgumentError(`--senders ${c.senders}: must be an integer >= 1`);
  const b = parseBottleneck(c.bottleneck, c.buffer);
  return { ...c, bottleneck_bytes_per_s: b.rate, buffer_bytes: b.buffer };
}

/**
 * Runs both scenarios (cc delay, then off), each as N + 1 ranks through the launcher against
 * an embedded daemon, and returns the figures.
 * @throws FaultSpecError for a bad bottleneck; LabError when a scenario fails or times out
 */
export async function runIncastLab(o: IncastOptions = {}): Promise<IncastReport> {
  const c = resolve(o);
  return withLab(o, async (ctx) => {
    const scenarios: IncastScenario[] = [];
    for (const cc of ['delay', 'off'] as const) {
      const name = `cc=${cc}`;
      const args = [
        '--cc', cc,
        '--duration-ms', String(c.durationMs),
        '--warmup-ms', String(c.warmupMs),
        '--size', String(c.size),
        '--outstanding', String(c.outstanding),
        '--receiver-faults', `bottleneck=${c.bottleneck},bottleneck-buffer=${c.buffer}`,
      ];
      const figs = await runScenario(ctx, { name, n: c.senders + 1, program: INCAST_RANK_PROGRAM, args, role: (r) => (r === 0 ? 'receiver' : `sender ${r}`) });
      scenarios.push(analyse(name, cc, c, figs[0] as unknown as ReceiverFigures, figs.slice(1) as unknown as SenderFigures[]));
    }
    return { lab: 'incast', config: c, scenarios, verdict: verdict(scenarios) };
  });
}

interface SenderFigures {
  rank: number;
  posted: number;
  errors: number;
  errorStatuses: Record<string, number>;
  firstPostMs: number;
  lastPostMs: number;
  hist: HistogramJson;
  stats: Record<string, number>;
}

interface ReceiverFigures {
  bottleneckError: string | null;
  errors: number;
  errorStatuses: Record<string, number>;
  binMs: number;
  bins: number[][];
  stats: Record<string, number>;
}

function analyse(name: string, cc: CcMode, c: IncastReport['config'], r: ReceiverFigures, senders: SenderFigures[]): IncastScenario {
  const bin = r.binMs;
  // From the last sender's first send (after the warm-up: time 0) to the common end (a sender
  // waiting for completions is still running), in whole bins only, so every sender's bytes
  // count over the same time.
  const from = Math.max(0, Math.ceil(Math.max(...senders.map((s) => s.firstPostMs)) / bin) * bin);
  const to = Math.max(from, Math.floor(c.durationMs / bin) * bin);
  const span = to - from;
  const perSender = r.bins.map((b) => (span > 0 ? sumBins(b, bin, from, to) / span / 1000 : 0)); // bytes/ms / 1000 = MB/s
  const total = perSender.reduce((a, b) => a + b, 0);
  const hist = new LatencyHistogram();
  for (const s of senders) hist.merge(s.hist);
  // rx_bottleneck_pkts counts what the bottleneck let in; what arrived at it is that plus its drops.
  const drops = r.stats.rx_bottleneck_drops ?? 0;
  const pkts = (r.stats.rx_bottleneck_pkts ?? 0) + drops;
  const senderCounters: Record<string, number> = {};
  for (const s of senders) for (const [k, v] of Object.entries(s.stats)) senderCounters[k] = (senderCounters[k] ?? 0) + v;
  const statuses: Record<string, number> = { ...r.errorStatuses };
  for (const s of senders) for (const [k, v] of Object.entries(s.errorStatuses)) statuses[k] = (statuses[k] ?? 0) + v;
  const plotFactor = Math.max(1, Math.round(PLOT_BIN_MS / bin));
  return {
    name,
    cc,
    interval_ms: { from, to },
    goodput: { MB_per_s: round(total, 4), pct_of_bottleneck: round((100 * total * 1e6) / c.bottleneck_bytes_per_s, 2) },
    // Unrounded, so they add up to the total exactly as the JSON reader sums them.
    per_sender_MB_per_s: perSender,
    jain: round(jainIndex(perSender), 4),
    bottleneck: {
      drops,
      packets: pkts,
      drop_pct: pkts > 0 ? round((100 * drops) / pkts, 3) : null,
      queue_max_bytes: r.stats.rx_bottleneck_queue_max_bytes ?? null,
      error: r.bottleneckError,
    },
    retransmissions: senderCounters.retrans_pkts ?? 0,
    latency_ms: histogramPercentiles(hist),
    app_errors: r.errors + senders.reduce((a, s) => a + s.errors, 0),
    error_statuses: statuses,
    messages: senders.reduce((a, s) => a + s.posted, 0),
    // The measured stream only: the drain after it would read as a collapse.
    series: { bin_ms: bin * plotFactor, per_sender_MB_per_s: r.bins.map((b) => coarsen(b.slice(0, Math.ceil(c.durationMs / bin)), plotFactor).map((n) => round(n / (bin * plotFactor) / 1000, 4))) },
    cdf: hist.cdf(),
    receiver_counters: r.stats,
    sender_counters: senderCounters,
  };
}

function verdict(scenarios: IncastScenario[]): IncastReport['verdict'] {
  const on = scenarios.find((s) => s.cc === 'delay');
  const checks: VerdictCheck[] = [];
  if (on !== undefined) {
    checks.push({ name: `${on.name} goodput >= ${INCAST_TARGETS.goodputPct} % of the bottleneck`, value: `${fmt(on.goodput.pct_of_bottleneck)} %`, pass: on.goodput.pct_of_bottleneck >= INCAST_TARGETS.goodputPct });
    checks.push({
      name: `${on.name} bottleneck drops <= ${INCAST_TARGETS.dropPct} %`,
      value: on.bottleneck.drop_pct === null ? 'no bottleneck counters' : `${fmt(on.bottleneck.drop_pct)} %`,
      pass: on.bottleneck.drop_pct !== null && on.bottleneck.drop_pct <= INCAST_TARGETS.dropPct,
    });
    checks.push({ name: `${on.name} Jain >= ${INCAST_TARGETS.jain}`, value: fmt(on.jain), pass: on.jain >= INCAST_TARGETS.jain });
  }
  return { pass: checks.length > 0 && checks.every((x) => x.pass), checks };
}

/** The report as the command prints it: the table, then the verdict line. */
export function formatIncast(rep: IncastReport): string {
  const c = rep.config;
  const sc = rep.scenarios;
  const title = `lab incast: ${c.senders} senders x ${c.outstanding} outstanding ${c.size} B SRD sends for ${c.durationMs} ms (after ${c.warmupMs} ms of warm-up) into one receiver behind bottleneck=${c.bottleneck} (${fmt(c.bottleneck_bytes_per_s / 1e6)} MB/s), bottleneck-buffer=${c.buffer} (${c.buffer_bytes} B)`;
  const rows: string[][] = [
    ['goodput MB/s (% of bottleneck)', ...sc.map((s) => `${fmt(s.goodput.MB_per_s)} (${fmt(s.goodput.pct_of_bottleneck)} %)`)],
    ['per sender MB/s min / max', ...sc.map((s) => `${fmt(Math.min(...s.per_sender_MB_per_s))} / ${fmt(Math.max(...s.per_sender_MB_per_s))}`)],
    ["Jain's fairness index", ...sc.map((s) => fmt(s.jain))],
    ['bottleneck drops / arrivals', ...sc.map((s) => (s.bottleneck.error !== null ? 'bottleneck refused' : `${s.bottleneck.drops} / ${s.bottleneck.packets}` + (s.bottleneck.drop_pct === null ? '' : ` (${fmt(s.bottleneck.drop_pct)} %)`)))],
    ['bottleneck queue max bytes', ...sc.map((s) => (s.bottleneck.queue_max_bytes === null ? '-' : String(s.bottleneck.queue_max_bytes)))],
    ['retransmissions', ...sc.map((s) => String(s.retransmissions))],
    ['latency p50 / p99 / p99.9 ms', ...sc.map((s) => `${fmt(s.latency_ms.p50)} / ${fmt(s.latency_ms.p99)} / ${fmt(s.latency_ms['p99.9'])}`)],
    ['app-visible errors', ...sc.map((s) => String(s.app_errors) + (s.app_errors > 0 ? ` (${Object.entries(s.error_statuses).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''))],
    ['messages sent', ...sc.map((s) => String(s.messages))],
    ['measured over (ms after warm-up)', ...sc.map((s) => `${s.interval_ms.from}..${s.interval_ms.to}`)],
  ];
  for (const k of ['cc_decreases', 'cwnd_sum', 'retrans_timeout_events']) {
    if (sc.some((s) => k in s.sender_counters)) rows.push([`${k} (senders)`, ...sc.map((s) => fmt(s.sender_counters[k] ?? 0, 4))]);
  }
  return formatTable(title, sc.map((s) => s.name), rows) + formatVerdict(rep.verdict.checks);
}

/** The `--plot` image: latency CDFs, and each scenario's throughput per sender and in total over time. */
export function plotIncast(rep: IncastReport): string {
  const c = rep.config;
  const panels: PlotPanel[] = [
    latencyCdfPanel(rep.scenarios),
  ];
  for (const s of rep.scenarios) {
    const b = s.series.bin_ms;
    const len = Math.max(0, ...s.series.per_sender_MB_per_s.map((x) => x.length));
    const total = Array.from({ length: len }, (_, i) => s.series.per_sender_MB_per_s.reduce((a, x) => a + (x[i] ?? 0), 0));
    const series: PlotSeries[] = [
      { name: 'total', points: total.map((y, i) => [i * b, y] as [number, number]), color: '#000000', width: 2 },
      { name: 'bottleneck', points: [[0, c.bottleneck_bytes_per_s / 1e6], [len * b, c.bottleneck_bytes_per_s / 1e6]], color: '#999999', width: 1, dash: '6 4' },
      ...s.series.per_sender_MB_per_s.map((x, i) => ({ name: `sender ${i + 1}`, points: x.map((y, j) => [j * b, y] as [number, number]), color: PALETTE[i % PALETTE.length], width: 1 })),
    ];
    panels.push({ title: `Goodput at the receiver, ${s.name}`, xLabel: `time after the warm-up (ms), ${b} ms bins`, yLabel: 'MB/s', series });
  }
  return renderSvg(panels, `efa-emu lab incast: ${c.senders} senders, bottleneck ${c.bottleneck}, buffer ${c.buffer}, ${c.size} B messages`);
}
