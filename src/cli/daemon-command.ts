import { homedir } from 'node:os';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { rootLogger } from '../common/logger';
import { DEFAULT_DAEMON_PORT } from '../control/protocol';
import { startDaemon } from '../control/server';
import { intOption } from './cli-options';

/** The default state file of a standalone daemon: leases survive restarts and reboots. */
export function defaultStatePath(): string {
  return join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'efa-emu', 'daemon-state.json');
}

export function registerDaemonCommand(program: Command): void {
  program
    .command('daemon')
    .description('run the control daemon: GID leases, address resolution, key/value and barriers, membership')
    .option('--host <addr>', 'address to listen on (loopback unless told otherwise)', '127.0.0.1')
    .option('--port <n>', 'TCP port (0 lets the OS pick)', intOption(0, 65535), DEFAULT_DAEMON_PORT)
    .option('--state <file>', `state file keeping GID leases (default ${defaultStatePath()}); "none" keeps them in memory`)
    .option('--heartbeat-timeout <ms>', 'declare a device down after this long without a heartbeat', intOption(100, 600_000), 3000)
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default: EFA_EMU_LOG or info)')
    .action(async (o: { host: string; port: number; state?: string; heartbeatTimeout: number; logLevel?: string }) => {
      const logger = rootLogger(o.logLevel ?? process.env.EFA_EMU_LOG ?? 'info');
      const statePath = o.state === 'none' ? null : (o.state ?? defaultStatePath());
      // The default location may not exist yet on a fresh machine; a path the user named is
      // taken as it is, so a typo there is an error, not a new folder.
      if (o.state === undefined && statePath !== null) mkdirSync(dirname(statePath), { recursive: true });
      const daemon = await startDaemon({ host: o.host, port: o.port, statePath, heartbeatTimeoutMs: o.heartbeatTimeout, logger });
      process.stdout.write(`efa-emu daemon listening on ${daemon.host}:${daemon.port}${statePath ? ` (state ${statePath})` : ''}\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
      await daemon.close();
    });
}
