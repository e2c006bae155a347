import type { Command } from 'commander';
import { addSrdFlags, choiceOption, DEVICE_MTU, intOption, messageSizeOption, NO_SEGMENTATION, refuseOversize, type SrdFlags } from './cli-options';
import { runJob } from '../job/run-job';
import { PINGPONG_RANK_PROGRAM } from '../job/programs';

export function registerPingPongCommand(program: Command): void {
  const cmd = program
    .command('pingpong')
    .description('run a ping-pong between two ranks of its own (like ibv_ud_pingpong)')
    .option('--type <type>', 'QP type: ud or srd', choiceOption(['ud', 'srd'] as const), 'ud')
    .option('--size <bytes>', `message size (at most the device MTU, ${DEVICE_MTU})`, messageSizeOption, 64)
    .option('--iters <n>', 'round trips', intOption(1, 100_000_000), 1000)
    .option('--poll <mode>', 'event: sleep until a completion event; busy: spin on pollCq', choiceOption(['event', 'busy'] as const), 'event')
    .option('--timeout-ms <ms>', 'resend a ping whose pong has not come back after this long', intOption(1, 600_000), 100)
    .option('--generation <gen>', 'EFA device generation of every rank: efa0 (the 2018 device: send/receive only) .. efa3 (default, the newest)')
    .option('--fault <spec>', 'fault spec for both devices');
  addSrdFlags(cmd)
    .option('--daemon <host:port>', 'use this daemon instead of starting one')
    .option('--json', 'print the result as one JSON line')
    .option('--capture <file>', 'write every datagram the ranks send and receive to this pcap file (see contrib/wireshark)')
    .option('--log-level <level>', 'log level (EFA_EMU_LOG)')
    .action(async (o: SrdFlags & { type: string; size: number; iters: number; poll: string; timeoutMs: number; fault?: string; generation?: string; daemon?: string; json?: boolean; capture?: string; logLevel?: string }) => {
      refuseOversize('--size', [o.size], DEVICE_MTU, 'the device MTU', NO_SEGMENTATION);
      const args = [o.type, '--size', String(o.size), '--iters', String(o.iters), '--poll', o.poll, '--timeout-ms', String(o.timeoutMs)];
      if (o.json) args.push('--json');
      process.exitCode = await runJob(o, `pingpong-${process.pid}-${Date.now()}`, () => ({
        n: 2,
        program: PINGPONG_RANK_PROGRAM,
        args,
        // The client's lines are the command's output, unprefixed, so --json stays parseable.
        onLine: (rank, stream, line) => {
          if (stream === 'stdout' && rank === 0) process.stdout.write(`${line}\n`);
          else process.stderr.write(`[${rank}] ${line}\n`);
        },
      }));
    });
}
