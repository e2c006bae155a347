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
): Promise<{ address: HostPort; close: () => Promise<void>; server: DaemonServer | null }> {
  if (address !== undefined) {
    return { address: parseHostPort(address, '--daemon'), close: async () => undefined, server: null };
  }
  const token = opts.token === undefined ? readDaemonToken() : opts.token;
  const server = await startDaemon({ host: '127.0.0.1', port: 0, statePath: opts.statePath ?? null, logger: opts.logger, token });
  return { address: { host: server.host, port: server.port }, close: () => server.close(), server };
}
