import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../common/logger';
import { startDaemon, type DaemonServer } from '../control/server';
import { parseHostPort, readDaemonToken, type HostPort } from '../env';

/**
 * The daemon a command talks to: the one named by `--daemon`, or else one started inside
 * this process on a port the OS picks (so `launch`, `pingpong` and `bench` run anywhere
 * with no setup). `close()` stops it only when it was started here.
 *
 * The embedded daemon listens on loopback and needs no token, unless one is given in `token`
 * or `EFA_EMU_TOKEN`: then it requires it, and the ranks, inheriting the variable (or told by
 * the caller), send it.
 */
export async function daemonForCommand(
  address: string | undefined,
  opts: { statePath?: string | null; logger: Logger; token?: string | null },
): Promise<EmbeddedDaemon> {
  if (address !== undefined) {
    return { address: parseHostPort(address, '--daemon'), close: async () => undefined, restart: async () => false };
  }
  const token = opts.token === undefined ? readDaemonToken() : opts.token;
  // Leases go to a state file even when the user named none (a temporary one, removed at the
  // end), so a restart of this daemon keeps every GID and AH number.
  const tmpDir = opts.statePath ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-daemon-'));
  const statePath = opts.statePath ?? path.join(tmpDir as string, 'state.json');
  const start = (port: number): Promise<DaemonServer> => startDaemon({ host: '127.0.0.1', port, statePath, logger: opts.logger, token });
  let server: DaemonServer | null = await start(0);
  const port = server.port;
  let closing: Promise<void> | null = null;
  return {
    address: { host: server.host, port },
    restart: async (downMs: number) => {
      if (closing !== null || server === null) return false;
      const s = server;
      server = null;
      await s.close();
      await new Promise((r) => setTimeout(r, downMs));
      if (closing !== null) return false;
      server = await start(port);
      return true;
    },
    close: () => {
      closing ??= (async () => {
        await server?.close();
        if (tmpDir !== null) fs.rmSync(tmpDir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

/** The daemon of a command; `restart` stops and restarts an embedded one on the same port. */
export interface EmbeddedDaemon {
  address: HostPort;
  close: () => Promise<void>;
  /** Stops the embedded daemon, waits `downMs`, starts it again (false for an external daemon). */
  restart: (downMs: number) => Promise<boolean>;
}
