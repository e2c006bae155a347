/*
 * `efa-emu fi-pingpong` and `efa-emu fi-bw`: fabtests' fi_rdm_pingpong / fi_rdm_bw (and, with
 * --tagged, fi_rdm_tagged_pingpong / fi_rdm_tagged_bw) over the emulator's RDM endpoint. Like
 * `pingpong` and `bench`, each starts its own daemon (or uses --daemon), launches two ranks of
 * fi-rank.js (client 0, server 1) and prints the client's results in fabtests' format.
 */
import { InvalidArgumentError as CommanderArgError, type Command } from 'commander';
import { EfaError } from '../../common/errors';
import { choiceOption, intOption } from '../cli-options';
import { runJob } from '../../job/run-job';
import { FI_RANK_PROGRAM } from '../../job/programs';
import { FI_PROTOCOLS, sizeStr, machineHeader, machineRow, perfFigures, perfHeader, perfRow, protocolLine, verifyLine, type FiProtocol } from './fi-format';
import { MAX_WINDOW, type FiEndReport, type FiPlan, type FiSizeResult } from '../../job/fi/fi-plan';
import { BW_RX_BUDGET, defaultIterations, DEFAULT_WINDOW, effectiveWindow, parseSizeSpec, sizesOf, type SizeSpec } from './fi-sizes';

interface FiOptions {
  size?: SizeSpec;
  iterations?: number;
  warmup: number;
  /** fi-bw only. */
  window?: number;
  verify?: boolean;
  machineReadable?: boolean;
  tagged?: boolean;
  compMethod: 'spin' | 'sread';
  timeout: number;
  fault?: string;
  generation?: string;
  daemon?: string;
  capture?: string;
  json?: boolean;
  logLevel?: string;
}

/** fabtests' -t takes queue or counter; only CQs are emulated. */
function completionTypeOption(value: string): string {
  if (value === 'queue') return value;
  if (value === 'counter') throw new CommanderArgError('"counter": completion counters are not emulated, only queues (-t queue)');
  throw new CommanderArgError(`expected queue (fabtests' -t is the completion type; the tagged variants are --tagged), got "${value}"`);
}

function defineFiCommand(program: Command, name: 'fi-pingpong' | 'fi-bw'): void {
  const bw = name === 'fi-bw';
  const like = bw ? 'fi_rdm_bw (--tagged: fi_rdm_tagged_bw)' : 'fi_rdm_pingpong (--tagged: fi_rdm_tagged_pingpong)';
  const cmd = program
    .command(name)
    .description(`fabtests-style ${bw ? 'bandwidth' : 'ping-pong'} over the RDM endpoint between two ranks of its own, like ${like}`)
    .option('-S, --size <spec>', 'message sizes: N, all (1 B .. 16 MiB), r:start,inc,end, l:a,b,c or a,b,c (default: 64, 256, 1k, 4k, 64k, 1m)', parseSizeSpec)
    .option('-I, --iterations <n>', `iterations of every size (default: fabtests' size_to_count, capped; see README)`, intOption(1, 100_000_000))
    .option('-w, --warmup <n>', 'warm-up iterations before timing starts', intOption(0, 1_000_000), 10);
  if (bw) cmd.option('-W, --window <n>', `messages posted per window (above ${BW_RX_BUDGET / 2 ** 20} MiB of receive buffers it shrinks)`, intOption(1, MAX_WINDOW), DEFAULT_WINDOW);
  cmd
    .option('-v, --verify', 'check every message byte for byte (the default here; fabtests needs -v)')
    .option('--no-verify', 'do not check the data')
    .option('-m, --machine-readable', "fabtests' machine-readable (YAML) output")
    .option('--tagged', 'tagged messages (fi_tsend / fi_trecv), as the fi_rdm_tagged_* tests')
    .option('-c, --comp-method <method>', 'spin: poll the CQ, the endpoint busy-polling; sread: block in fi_cq_sread, event progress', choiceOption(['spin', 'sread'] as const), 'spin')
    .option('-t <type>', 'completion type: queue (counter is not emulated)', completionTypeOption, 'queue')
    .option('-p, --provider <name>', 'provider: efa only', choiceOption(['efa'] as const), 'efa')
    .option('-e, --ep-type <type>', 'endpoint type: rdm only', choiceOption(['rdm'] as const), 'rdm')
    .option('--timeout <s>', 'fail when no completion comes for this long', intOption(1, 3600), 60)
    .option('--generation <gen>', 'EFA device generation of both ranks: efa0 (no RDMA read: no long-read protocol) .. efa3 (default)')
    .option('--fault <spec>', 'fault spec for both devices')
    .option('--daemon <host:port>', 'use this daemon instead of starting one')
    .option('--json', 'end with one JSON line {"results": [...]}')
    .option('--capture <file>', 'write every datagram the ranks send and receive to this pcap file (see contrib/wireshark)')
    .option('--log-level <level>', 'log level (EFA_EMU_LOG)')
    .action(async (o: FiOptions) => {
      process.exitCode = await runFi(name, o);
    });
}

/** Registers `fi-pingpong` and `fi-bw`. */
export function registerFiCommands(program: Command): void {
  defineFiCommand(program, 'fi-pingpong');
  defineFiCommand(program, 'fi-bw');
}

/** The plan for the ranks, and notes for the user about what differs from the flags. */
export function buildPlan(name: 'fi-pingpong' | 'fi-bw', o: Pick<FiOptions, 'size' | 'iterations' | 'warmup' | 'verify' | 'tagged' | 'compMethod' | 'timeout'> & { window: number }): { plan: FiPlan; notes: string[] } {
  const bw = name === 'fi-bw';
  const sizes = sizesOf(o.size ?? { kind: 'default' });
  const windows = sizes.map((s) => (bw ? effectiveWindow(s, o.window) : 1));
  const notes: string[] = [];
  const shrunk = sizes.flatMap((s, k) => (bw && windows[k] < o.window ? [`${windows[k]} at ${sizeStr(s)}`] : []));
  if (shrunk.length > 0) notes.push(`${name}: -W ${o.window} shrinks to keep the receive buffers within ${BW_RX_BUDGET / 2 ** 20} MiB: ${shrunk.join(', ')}`);
  const plan: FiPlan = {
    test: bw ? 'bw' : 'pingpong',
    sizes,
    iters: sizes.map((s) => o.iterations ?? defaultIterations(s, bw)),
    windows,
    warmup: o.warmup,
    verify: o.verify !== false,
    tagged: o.tagged === true,
    comp: o.compMethod,
    timeoutMs: o.timeout * 1000,
  };
  return { plan, notes };
}

async function runFi(name: 'fi-pingpong' | 'fi-bw', o: FiOptions): Promise<number> {
  const { plan, notes } = buildPlan(name, { ...o, window: o.window ?? DEFAULT_WINDOW });
  for (const n of notes) process.stderr.write(`${n}\n`);
  const xfers = plan.test === 'pingpong' ? 2 : 1;
  const results: FiSizeResult[] = [];
  let end: FiEndReport | null = null;
  let headerDone = false;
  const print = (line: string): void => void process.stdout.write(`${line}\n`);
  const onResult = (r: FiSizeResult): void => {
    if (!headerDone) {
      headerDone = true;
      if (o.machineReadable) machineHeader(['efa-emu', name, ...rawArgs(name)]).forEach(print);
      else print(perfHeader());
    }
    const f = perfFigures(r.size, r.iters, r.elapsedUs, xfers);
    print(o.machineReadable ? machineRow(f) : perfRow(f));
    results.push(r);
  };
  const exitCode = await runJob(o, `fi-${process.pid}-${Date.now()}`, () => ({
    n: 2,
    program: FI_RANK_PROGRAM,
    args: ['--plan', JSON.stringify(plan)],
    onLine: (rank, stream, line) => {
      if (rank === 0 && stream === 'stdout' && line.startsWith('{"fi":')) onResult((JSON.parse(line) as { fi: FiSizeResult }).fi);
      else if (rank === 0 && stream === 'stdout' && line.startsWith('{"fiEnd":')) end = (JSON.parse(line) as { fiEnd: FiEndReport }).fiEnd;
      else process.stderr.write(`[${rank}] ${line}\n`);
    },
  }));
  if (exitCode !== 0) return exitCode;
  const report = end as FiEndReport | null;
  if (report === null || results.length !== plan.sizes.length) {
    throw new EfaError('EIO', `${name}: the client ended without reporting every size (${results.length} of ${plan.sizes.length})`);
  }
  const counts = Object.fromEntries(FI_PROTOCOLS.map((p) => [p, report.stats[`${p}_tx_msgs`] ?? 0])) as Record<FiProtocol, number>;
  const sizesBy = Object.fromEntries(FI_PROTOCOLS.map((p) => [p, new Set(results.filter((r) => (r.protocols[p] ?? 0) > 0).map((r) => r.size))])) as Record<FiProtocol, Set<number>>;
  print(protocolLine(counts, plan.sizes, sizesBy));
  const checked = { client: sum(results.map((r) => r.verified.client)), server: sum(results.map((r) => r.verified.server)) };
  const expected = sum(results.map((r) => (r.iters + r.warmup) * xfers));
  print(verifyLine(plan.verify, checked, expected));
  if (o.json) {
    const rows = results.map((r) => {
      const f = perfFigures(r.size, r.iters, r.elapsedUs, xfers);
      return {
        xfer_size: r.size,
        iterations: r.iters,
        warmup: r.warmup,
        ...(plan.test === 'bw' ? { window: r.window } : {}),
        total_bytes: f.totalBytes,
        time_s: f.timeS,
        mb_per_sec: f.mbPerSec,
        usec_per_xfer: f.usecPerXfer,
        mxfers_per_sec: f.mxfersPerSec,
        protocols: r.protocols,
        verified: r.verified,
      };
    });
    print(JSON.stringify({ test: name, tagged: plan.tagged, comp: plan.comp, verify: plan.verify, fault: o.fault ?? null, results: rows, stats: report.stats }));
  }
  // Verification is on, yet not every data message was checked: the check itself is broken.
  if (plan.verify && checked.client + checked.server !== expected) {
    throw new EfaError('EIO', `${name}: ${checked.client + checked.server} data messages checked, ${expected} were sent`);
  }
  return 0;
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

/** The words after the command's name on the command line (what fabtests' -m echoes as argv). */
function rawArgs(name: string): string[] {
  const i = process.argv.indexOf(name);
  return i < 0 ? [] : process.argv.slice(i + 1);
}
