import fs from 'node:fs';
import { InvalidArgumentError as CommanderArgError, Option, type Command } from 'commander';
import { DEVICE_MTU, intOption, messageSizeOption, NO_SEGMENTATION, refuseOversize } from './cli-options';
import { MAX_RANKS } from '../job/launch';
import { DEFAULT_LAB_TIMEOUT_S, LabError } from '../job/lab/lab-run';
import { formatFailover, plotFailover, runFailoverLab } from '../job/lab/lab-failover';
import { formatIncast, parseBottleneck, plotIncast, runIncastLab } from '../job/lab/lab-incast';
import { MAX_PATHS } from '../wire/header';

const TIME_UNITS: Readonly<Record<string, number>> = { us: 0.001, ms: 1, s: 1000 };

/** Commander parser for a time with a unit (`2s`, `800ms`, `1.5s`), in ms, greater than 0. */
export function durationOption(value: string): number {
  const ms = timeMs(value);
  if (!(ms > 0)) throw new CommanderArgError(`expected a time greater than 0, got "${value}"`);
  return ms;
}

function timeMs(value: string): number {
  const m = /^((?:\d+(?:\.\d*)?|\.\d+))(us|ms|s)$/.exec(value.trim());
  if (m === null) throw new CommanderArgError(`expected a time with a unit such as 2s, 800ms or 1.5s, got "${value}"`);
  const ms = Number(m[1]) * TIME_UNITS[m[2]];
  if (!Number.isFinite(ms)) throw new CommanderArgError(`time out of range: "${value}"`);
  return ms;
}

function timeOption(flags: string, description: string, ms: number, shown: string, parse: (v: string) => number = durationOption): Option {
  return new Option(flags, description).argParser(parse).default(ms, shown);
}

interface LabFlags {
  plot?: string;
  json?: boolean;
  timeout: number;
  logLevel?: string;
}

/** Registers `efa-emu lab failover` and `efa-emu lab incast`. */
export function registerLabCommand(program: Command): void {
  const lab = program
    .command('lab')
    .description('run an SRD scenario end to end with real ranks and print what it measured: failover (a path black-holed) or incast (N senders into a bottleneck)');

  lab
    .command('failover')
    .description('a paced SRD stream while one path to the receiver is black-holed, with K paths and with 1 path: throughput around the fault, latency, time to route around, retransmissions, errors')
    .option('--paths <k>', `paths of the multipath scenario (1..${MAX_PATHS}; path 2 is cut, path 1 when K is 2); the other scenario has 1 path (path 0 cut), and K = 1 runs only that one`, intOption(1, MAX_PATHS), 4)
    .addOption(timeOption('--duration <time>', 'length of the measured stream (2s, 1500ms, ...)', 2000, '2s'))
    .addOption(timeOption('--warmup <time>', 'stream this long before the measured part, counted in no figure (the ranks\' code warms up, windows open)', 500, '500ms', timeMs))
    .addOption(timeOption('--fault-at <time>', 'when the path is cut, after the measured stream starts', 800, '800ms'))
    .addOption(timeOption('--fault-for <time>', 'how long it stays cut', 300, '300ms'))
    .option('--rate <msgs>', 'messages per second, paced', intOption(1, 10_000_000), 20000)
    .option('--size <bytes>', `message size (at most the device MTU, ${DEVICE_MTU})`, messageSizeOption, 1024)
    .option('--plot <file.svg>', 'also draw latency CDFs and throughput over time (fault window shaded) to this SVG file')
    .option('--json', 'print one JSON document with every figure instead of the table')
    .option('--timeout <seconds>', 'stop the lab (killing its ranks) after this long', intOption(1, 24 * 3600), DEFAULT_LAB_TIMEOUT_S)
    .option('--log-level <level>', 'log level (EFA_EMU_LOG)')
    .action(async (o: LabFlags & { paths: number; duration: number; warmup: number; faultAt: number; faultFor: number; rate: number; size: number }) => {
      refuseOversize('--size', [o.size], DEVICE_MTU, 'the device MTU', NO_SEGMENTATION);
      await runLab('failover', o, async () => {
        const rep = await runFailoverLab({ paths: o.paths, durationMs: o.duration, warmupMs: o.warmup, faultAtMs: o.faultAt, faultForMs: o.faultFor, rate: o.rate, size: o.size, timeoutS: o.timeout, logLevel: o.logLevel });
        return { rep, text: formatFailover(rep), svg: o.plot === undefined ? null : plotFailover(rep) };
      });
    });

  lab
    .command('incast')
    .description('N senders, each with a fixed number of SRD sends outstanding, into one receiver behind a receive-side bottleneck, with congestion control and without: goodput, drops, retransmissions, latency, fairness, errors')
    .option('--senders <n>', 'senders', intOption(1, MAX_RANKS - 1), 8)
    .option('--bottleneck <rate>', "the receiver's ingress rate, as the fault grammar's (20mbps = 20 MB/s; 100mbit = 12.5 MB/s)", '20mbps')
    .option('--buffer <size>', "the bottleneck's FIFO (bytes, or with B, KB, KiB, MB, MiB)", '256KiB')
    .option('--size <bytes>', `message size (at most the device MTU, ${DEVICE_MTU})`, messageSizeOption, 8192)
    .option('--outstanding <n>', 'sends each sender keeps outstanding', intOption(1, 4000), 64)
    .addOption(timeOption('--duration <time>', 'length of the measured stream (3s, 1500ms, ...)', 3000, '3s'))
    .addOption(timeOption('--warmup <time>', 'stream this long before the measured part, counted in no figure (the ranks\' code warms up, windows open)', 500, '500ms', timeMs))
    .option('--plot <file.svg>', 'also draw latency CDFs and throughput over time per sender to this SVG file')
    .option('--json', 'print one JSON document with every figure instead of the table')
    .option('--timeout <seconds>', 'stop the lab (killing its ranks) after this long', intOption(1, 24 * 3600), DEFAULT_LAB_TIMEOUT_S)
    .option('--log-level <level>', 'log level (EFA_EMU_LOG)')
    .action(async (o: LabFlags & { senders: number; bottleneck: string; buffer: string; size: number; outstanding: number; duration: number; warmup: number }) => {
      refuseOversize('--size', [o.size], DEVICE_MTU, 'the device MTU', NO_SEGMENTATION);
      // Before any rank starts: a bad rate or size is one line naming its flag.
      parseBottleneck(o.bottleneck, o.buffer);
      await runLab('incast', o, async () => {
        const rep = await runIncastLab({ senders: o.senders, bottleneck: o.bottleneck, buffer: o.buffer, size: o.size, outstanding: o.outstanding, durationMs: o.duration, warmupMs: o.warmup, timeoutS: o.timeout, logLevel: o.logLevel });
        return { rep, text: formatIncast(rep), svg: o.plot === undefined ? null : plotIncast(rep) };
      });
    });
}

async function runLab(name: string, o: LabFlags, body: () => Promise<{ rep: unknown; text: string; svg: string | null }>): Promise<void> {
  let out: { rep: unknown; text: string; svg: string | null };
  try {
    out = await body();
  } catch (err) {
    if (!(err instanceof LabError)) throw err;
    // The ranks are stopped and named; the exit code says why (124: the time limit).
    process.stderr.write(`efa-emu lab ${name}: ${err.code}: ${err.message}\n`);
    process.exitCode = err.exitCode;
    return;
  }
  if (out.svg !== null && o.plot !== undefined) fs.writeFileSync(o.plot, out.svg);
  process.stdout.write(o.json ? `${JSON.stringify(out.rep)}\n` : out.text);
}
