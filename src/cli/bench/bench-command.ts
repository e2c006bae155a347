import type { Command } from 'commander';
import { InvalidArgumentError, NotSupportedError } from '../../common/errors';
import { capNames, DEFAULT_GENERATION, EfadvDeviceCaps, generationProfile } from '../../device/generations';
import { ENV_GENERATION } from '../../env';
import { addSrdFlags, choiceOption, DEVICE_MTU, intOption, MAX_RAW_SIZE, messageSizeOption, NO_SEGMENTATION, refuseOversize, type SrdFlags } from '../cli-options';
import { runJob } from '../../job/run-job';
import { BENCH_RANK_PROGRAM } from '../../job/programs';
import { addRatios, formatRxd, formatTables, isRdmaTest, toJson, type BenchResult } from './bench-table';
import { measureRxd, rxdProblem, type RxdResult } from '../../job/bench/rxd-baseline';

/** fi_pingpong's rxd figure includes its start-up: fewer iterations than this read mostly that. */
const RXD_MIN_ITERS = 5000;

/** Message sizes of `--size all`: powers of two from 64 to the MTU, as perftest's -a. */
export const ALL_SIZES = [64, 128, 256, 512, 1024, 2048, 4096, 8192];
/** RDMA sizes of `--size all`: powers of two from 64 B to 8 MiB, perftest's -a range for RDMA. */
export const ALL_RDMA_SIZES = Array.from({ length: 18 }, (_, i) => 64 * 2 ** i);
/** Largest RDMA size the bench takes (each rank registers one buffer of it). */
export const MAX_BENCH_RDMA_SIZE = 64 * 1024 * 1024;

const TESTS = ['lat', 'bw', 'write_lat', 'write_bw', 'read_lat', 'read_bw'] as const;
type Test = (typeof TESTS)[number];

function parseSize(value: string): number[] | 'all' {
  if (value === 'all') return 'all';
  return value.split(',').map(messageSizeOption);
}

interface BenchOptions extends SrdFlags {
  test: Test;
  type: 'raw' | 'raw-batched' | 'ud' | 'srd' | 'all';
  size: number[] | 'all';
  iters: number;
  window: number;
  poll: 'event' | 'busy';
  fault?: string;
  generation?: string;
  json?: boolean;
  daemon?: string;
  capture?: string;
  logLevel?: string;
  /** --test lat: measure libfabric rxd beside (false with --no-rxd). */
  rxd: boolean;
}

/** Registers `efa-emu bench`: perftest's tests between two ranks of its own, in perftest's output format. */
export function registerBenchCommand(program: Command): void {
  const cmd = program
    .command('bench')
    .description('perftest-style latency or bandwidth between two ranks of its own, against raw UDP in the same run, printed as perftest prints it')
    .option(
      '--test <test>',
      'lat (ping-pong, like ib_send_lat), bw (one-way stream, like ib_send_bw), or RDMA over SRD: write_lat, write_bw, read_lat, read_bw (like ib_write_lat, ...)',
      choiceOption(TESTS),
      'lat',
    )
    .option('--type <type>', 'raw (bare node:dgram, a datagram a message), raw-batched (the same, packed into datagrams as the devices batch), ud, srd, or all (raw, raw-batched, ud, srd: a table each, then their ratios to raw)', choiceOption(['raw', 'raw-batched', 'ud', 'srd', 'all'] as const), 'all')
    .option('--size <bytes>', `message size, a comma list, or "all" (64..${DEVICE_MTU}); UD and SRD take at most the device MTU (${DEVICE_MTU})`, parseSize, [64])
    .option('--iters <n>', 'iterations (round trips for lat, messages for bw)', intOption(1, 100_000_000), 1000)
    .option('--window <n>', 'bw: messages outstanding', intOption(1, 4096), 128)
    .option('--poll <mode>', 'event: sleep until a completion event; busy: spin on pollCq', choiceOption(['event', 'busy'] as const), 'event')
    .option('--generation <gen>', 'EFA device generation of every rank: efa0 (the 2018 device: send/receive only) .. efa3 (default, the newest)')
    .option('--fault <spec>', 'faults on the devices (raw is the fault-free baseline)');
  addSrdFlags(cmd)
    .option('--daemon <host:port>', 'use this daemon instead of starting one')
    .option('--json', 'end with one JSON line {"results": [...]}, each a perftest --out_json document {"test_info", "results"}')
    .option('--capture <file>', 'write every datagram the ranks send and receive to this pcap file (see contrib/wireshark)')
    .option('--log-level <level>', 'log level (EFA_EMU_LOG)')
    .option('--no-rxd', "--test lat: skip the same-run libfabric udp;ofi_rxd fi_pingpong figures (measured when libfabric-bin is installed)")
    .action(async (o: BenchOptions) => {
      const rdmaTest = isRdmaTest(o.test);
      const sizes = o.size === 'all' ? (rdmaTest ? ALL_RDMA_SIZES : ALL_SIZES) : o.size;
      // RDMA is an SRD operation: `all` is SRD beside the raw UDP baseline.
      if (rdmaTest && o.type === 'ud') throw new InvalidArgumentError(`--type ud: --test ${o.test} is RDMA, which EFA does over SRD only (use --type srd or all)`);
      const types = o.type === 'all' ? (rdmaTest ? ['raw', 'srd'] : ['raw', 'raw-batched', 'ud', 'srd']) : [o.type];
      if (rdmaTest && types.includes('srd')) {
        // Refused before any rank starts, as the device would refuse the memory registration.
        const profile = generationProfile(o.generation ?? process.env[ENV_GENERATION] ?? DEFAULT_GENERATION, o.generation !== undefined ? '--generation' : ENV_GENERATION);
        const need = o.test.startsWith('read') ? EfadvDeviceCaps.RDMA_READ : EfadvDeviceCaps.RDMA_WRITE;
        if ((profile.deviceCaps & need) === 0) {
          throw new NotSupportedError(`--test ${o.test}: the ${profile.name} device has no RDMA ${o.test.startsWith('read') ? 'read' : 'write'} (its capabilities: ${capNames(profile.deviceCaps).join(', ') || 'none'})`);
        }
        refuseOversize('--size', sizes, profile.maxRdmaSize, `the device's largest RDMA`);
      }
      // Checked here, not at parsing: the limit depends on --type, and raw has no MTU of ours.
      if (rdmaTest) {
        // Raw rows beside an RDMA test clip to what a datagram holds (the JSON says raw_size).
        refuseOversize('--size', sizes, MAX_BENCH_RDMA_SIZE, 'what the bench registers for RDMA');
      } else if (o.type === 'raw' || o.type === 'raw-batched') refuseOversize('--size', sizes, MAX_RAW_SIZE, 'the largest datagram the raw baseline sends');
      else refuseOversize('--size', sizes, DEVICE_MTU, 'the device MTU', `${NO_SEGMENTATION} (only --type raw, and the RDMA tests, take larger sizes)`);
      const results: BenchResult[] = [];
      const bar = process.stderr.isTTY ? new ProgressBar() : null;
      const args = ['--tests', o.test, '--types', types.join(','), '--sizes', sizes.join(','), '--iters', String(o.iters), '--window', String(o.window), '--poll', o.poll];
      const exitCode = await runJob(o, `bench-${process.pid}-${Date.now()}`, () => ({
        n: 2,
        program: BENCH_RANK_PROGRAM,
        args,
        onLine: (rank, stream, line) => {
          if (rank === 0 && stream === 'stdout' && line.startsWith('{"bench":')) {
            results.push((JSON.parse(line) as { bench: BenchResult }).bench);
          } else if (rank === 0 && stream === 'stderr' && line.startsWith('{"progress":')) {
            bar?.update((JSON.parse(line) as { progress: number }).progress);
          } else {
            process.stderr.write(`[${rank}] ${line}\n`);
          }
        },
      }));
      bar?.clear();
      if (o.type === 'all') addRatios(results);
      process.stdout.write(formatTables(results, { fault: o.fault ?? null }));
      // After the ranks, not beside them: the C stack must not share the cores with the run.
      let rxd: { results: RxdResult[]; errors: string[] } | { skipped: string } | null = null;
      if (o.test === 'lat' && o.rxd && exitCode === 0) {
        const problem = rxdProblem();
        rxd = problem !== null ? { skipped: problem } : await measureRxd(sizes, Math.max(o.iters, RXD_MIN_ITERS));
        process.stdout.write(formatRxd(rxd, results));
      }
      if (o.json) {
        const doc = { ...toJson(o.test, o.poll, o.fault ?? null, results), ...(rxd === null ? {} : { rxd }) };
        process.stdout.write(`${JSON.stringify(doc)}\n`);
      }
      process.exitCode = exitCode;
    });
}

/** A one-line progress bar on a terminal, shown only once a run has taken a second. */
class ProgressBar {
  private readonly startedAt = Date.now();
  private shown = false;

  update(fraction: number): void {
    if (!this.shown && Date.now() - this.startedAt < 1000) return;
    this.shown = true;
    const width = 30;
    const filled = Math.round(fraction * width);
    process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.round(fraction * 100)}%`);
  }

  clear(): void {
    if (this.shown) process.stderr.write('\r\x1b[K');
  }
}
