import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { captureEnv, mergeCapture } from './capture-option';
import { rootLogger } from '../common/logger';
import { intOption } from './cli-options';
import { daemonForCommand } from './embedded-daemon';
import { parseFaultSpec } from '../io/fault-spec';
import { launch, MAX_RANKS } from './launch';

/** Environment variable naming one launch, so ranks can keep their keys apart on a shared daemon. */
export const ENV_JOB_ID = 'EFA_EMU_JOB_ID';

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
      const logger = rootLogger(o.logLevel);
      // A bad spec fails here, naming the flag, before any rank starts.
      if (o.fault !== undefined) parseFaultSpec(o.fault, '--fault');
      const rest = args[0] === '--' ? args.slice(1) : args;
      const daemon = await daemonForCommand(o.daemon, { statePath: o.state ?? null, logger });
      try {
        const env: NodeJS.ProcessEnv = { [ENV_JOB_ID]: randomBytes(6).toString('hex'), ...captureEnv(o.capture) };
        if (o.logLevel !== undefined) env.EFA_EMU_LOG = o.logLevel;
        const res = await launch({
          n: o.np,
          program: prog,
          args: rest,
          daemon: daemon.address,
          faults: o.fault ?? null,
          env,
          prefix: o.prefix,
          timeoutMs: o.timeout !== undefined ? o.timeout * 1000 : null,
          logger,
          // A rank may ask for the embedded daemon to be restarted (chaos testing):
          // process.send({ efaEmu: 'restart-daemon', downMs }).
          onMessage: (rank, msg) => {
            const m = msg as { efaEmu?: unknown; downMs?: unknown };
            if (m?.efaEmu !== 'restart-daemon') return;
            const downMs = typeof m.downMs === 'number' && m.downMs >= 0 && m.downMs <= 60_000 ? m.downMs : 500;
            logger.info({ rank, downMs }, 'restarting the daemon on request');
            daemon.restart(downMs).catch((err: Error) => logger.error({ err }, 'daemon restart failed'));
          },
        });
        process.exitCode = res.exitCode;
        await mergeCapture(o.capture);
      } finally {
        await daemon.close();
      }
    });
}
