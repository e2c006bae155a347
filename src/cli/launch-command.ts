import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { intOption } from './cli-options';
import { MAX_RANKS } from './launch';
import { runJob } from './run-job';

export { ENV_JOB_ID } from './run-job';

export function registerLaunchCommand(program: Command): void {
  program
    .command('launch')
    .description('start N ranks of a program (.js or .ts), each with its own emulated EFA device')
    .requiredOption('-n, --np <n>', 'number of ranks', intOption(1, MAX_RANKS))
    .option('--daemon <host:port>', 'use this daemon instead of starting one')
    .option('--fault <spec>', 'fault spec for every device, passed as EFA_EMU_FAULTS')
    .option('--state <file>', 'state file for the daemon this command starts')
    .option('--timeout <seconds>', 'stop every rank after this long', intOption(1, 7 * 24 * 3600))
    .option('--no-prefix', 'do not prefix output lines with the rank')
    .option('--capture <file>', 'write every datagram the ranks send and receive to this pcap file (see contrib/wireshark)')
    .option('--log-level <level>', 'log level of the launcher and its daemon (EFA_EMU_LOG)')
    .argument('<program>', 'the program every rank runs')
    .argument('[args...]', 'arguments for the program (after --)')
    .passThroughOptions()
    .action(async (prog: string, args: string[], o: { np: number; daemon?: string; fault?: string; state?: string; timeout?: number; prefix: boolean; capture?: string; logLevel?: string }) => {
      const rest = args[0] === '--' ? args.slice(1) : args;
      process.exitCode = await runJob(o, randomBytes(6).toString('hex'), (daemon, logger) => ({
        n: o.np,
        program: prog,
        args: rest,
        prefix: o.prefix,
        timeoutMs: o.timeout !== undefined ? o.timeout * 1000 : null,
        // A rank may ask for the embedded daemon to be restarted (chaos testing):
        // process.send({ efaEmu: 'restart-daemon', downMs }).
        onMessage: (rank, msg) => {
          const m = msg as { efaEmu?: unknown; downMs?: unknown };
          if (m?.efaEmu !== 'restart-daemon') return;
          const downMs = typeof m.downMs === 'number' && m.downMs >= 0 && m.downMs <= 60_000 ? m.downMs : 500;
          logger.info({ rank, downMs }, 'restarting the daemon on request');
          daemon.restart(downMs).catch((err: Error) => logger.error({ err }, 'daemon restart failed'));
        },
      }));
    });
}
