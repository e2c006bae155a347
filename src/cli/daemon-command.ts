import { homedir } from 'node:os';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import { rootLogger } from '../common/logger';
import {
  DEFAULT_DAEMON_PORT,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_DEVICES,
  MAX_AHN,
} from '../control/protocol';
import { readDaemonToken } from '../env';
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
    .option('--max-connections <n>', 'connections served at once; one more is refused with EMFILE', intOption(1, 1 << 20), DEFAULT_MAX_CONNECTIONS)
    .option('--max-devices <n>', 'device names leased in total; a new name beyond it is refused with ENOSPC', intOption(1, MAX_AHN), DEFAULT_MAX_DEVICES)
    .option('--idle-timeout <ms>', 'close a connection that makes no successful request within this time', intOption(1, 0x7fffffff), DEFAULT_IDLE_TIMEOUT_MS)
    // The environment is the safer way to pass it: a command line is visible to other users in `ps`.
    .option('--token <secret>', 'require clients to send this token in a hello first (default: EFA_EMU_TOKEN, else none)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (default: EFA_EMU_LOG or info)')
    .action(async (o: {
      host: string;
      port: number;
      state?: string;
      heartbeatTimeout: number;
      maxConnections: number;
      maxDevices: number;
      idleTimeout: number;
      token?: string;
      logLevel?: string;
    }) => {
      const logger = rootLogger(o.logLevel ?? process.env.EFA_EMU_LOG ?? 'info');
      const statePath = o.state === 'none' ? null : (o.state ?? defaultStatePath());
      // The default location may not exist yet on a fresh machine; a path the user named is
      // taken as it is, so a typo there is an error, not a new folder.
      if (o.state === undefined && statePath !== null) mkdirSync(dirname(statePath), { recursive: true });
      const token = o.token !== undefined && o.token !== '' ? o.token : readDaemonToken();
      const daemon = await startDaemon({
        host: o.host,
        port: o.port,
        statePath,
        heartbeatTimeoutMs: o.heartbeatTimeout,
        maxConnections: o.maxConnections,
        maxDevices: o.maxDevices,
        idleTimeoutMs: o.idleTimeout,
        token,
        logger,
      });
      const notes = [statePath ? `state ${statePath}` : '', token ? 'token required' : ''].filter((x) => x !== '');
      process.stdout.write(`efa-emu daemon listening on ${daemon.host}:${daemon.port}${notes.length ? ` (${notes.join(', ')})` : ''}\n`);
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
