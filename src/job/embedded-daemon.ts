import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { DaemonError } from '../common/errors';
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
    const given = parseHostPort(address, '--daemon');
    // Before any rank starts: one clear error from the command instead of one per rank.
    await probeDaemon(given);
    return {
      address: given,
      close: async () => undefined,
      restart: async () => ({ restarted: false, reason: 'external' }),
    };
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
  // close() waits for a restart under way: otherwise the restart could start a daemon after
  // close() returned, and that listening socket would keep the command from exiting.
  let restarting: Promise<RestartOutcome> | null = null;
  // Ends a restart's down time early when the command closes, so closing never waits it out.
  let endDownTime: (() => void) | null = null;

  const restartOnce = async (downMs: number): Promise<RestartOutcome> => {
    const s = server as DaemonServer;
    server = null;
    const downSince = performance.now();
    await s.close();
    // close() may have come while the old daemon was stopping: then there is no down time to
    // end, and none is started. Between this check and the timer there is no await.
    if (closing === null) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, downMs);
        endDownTime = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      endDownTime = null;
    }
    if (closing !== null) return { restarted: false, reason: 'closing' };
    const next = await start(port);
    if (closing !== null) {
      await next.close();
      return { restarted: false, reason: 'closing' };
    }
    server = next;
    return { restarted: true, downMs: Math.round(performance.now() - downSince), address: { host: next.host, port: next.port } };
  };

  return {
    address: { host: server.host, port },
    restart: (downMs: number) => {
      if (closing !== null) return Promise.resolve({ restarted: false, reason: 'closing' });
      if (restarting !== null) return Promise.resolve({ restarted: false, reason: 'busy' });
      if (server === null) return Promise.resolve({ restarted: false, reason: 'gone' });
      const p = restartOnce(downMs).finally(() => {
        restarting = null;
      });
      restarting = p;
      return p;
    },
    close: () => {
      closing ??= (async () => {
        endDownTime?.();
        // A failed restart has already left no daemon behind; only its outcome is ignored here.
        await restarting?.catch(() => undefined);
        await server?.close();
        server = null;
        if (tmpDir !== null) fs.rmSync(tmpDir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

/** How long {@link probeDaemon} waits for the TCP connection. */
const PROBE_TIMEOUT_MS = 5000;

/**
 * Checks that something accepts TCP connections at `addr`.
 * @throws DaemonError with the socket's code (ECONNREFUSED, EHOSTUNREACH, ...) or ETIMEDOUT.
 */
export function probeDaemon(addr: HostPort, timeoutMs = PROBE_TIMEOUT_MS): Promise<void> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: addr.host, port: addr.port });
    const fail = (code: string, why: string): void => {
      sock.destroy();
      reject(new DaemonError(code, `cannot connect to the daemon at ${addr.host}:${addr.port}: ${why}`));
    };
    sock.setTimeout(timeoutMs, () => fail('ETIMEDOUT', `no answer in ${timeoutMs} ms`));
    sock.once('error', (err: Error & { code?: string }) => fail(err.code ?? 'ECONNREFUSED', err.message));
    sock.once('connect', () => {
      sock.destroy();
      resolve();
    });
  });
}

/**
 * Starts a daemon inside this process on a loopback port the OS picks, with its leases in a
 * temporary state file (or `statePath`), for a library user's own jobs and tests: pass its
 * `address` to {@link launch} (or to ranks as `EFA_EMU_DAEMON`), `restart()` it to test
 * reconnection, `close()` it at the end.
 */
export function startEmbeddedDaemon(opts: { statePath?: string | null; logger: Logger; token?: string | null }): Promise<EmbeddedDaemon> {
  return daemonForCommand(undefined, opts);
}

/** What {@link EmbeddedDaemon.restart} did. */
export type RestartOutcome =
  | {
      restarted: true;
      /** Measured time from stopping the old daemon to the new one listening. */
      downMs: number;
      /** Where the new daemon listens (the old daemon's address). */
      address: HostPort;
    }
  | {
      restarted: false;
      /**
       * `external`: the daemon was given with `--daemon` and is not this process's to restart;
       * `busy`: a restart is already under way; `gone`: an earlier restart failed, so there is
       * no daemon left to restart; `closing`: the command is ending.
       */
      reason: 'external' | 'busy' | 'gone' | 'closing';
    };

/** The daemon of a command; `restart` stops and restarts an embedded one on the same port. */
export interface EmbeddedDaemon {
  address: HostPort;
  close: () => Promise<void>;
  /**
   * Stops the embedded daemon, waits `downMs`, starts it again on the same port with the same
   * state file. Rejects with the daemon's error (e.g. `EADDRINUSE` when another process took
   * the port meanwhile); the command then has no daemon until it ends.
   */
  restart: (downMs: number) => Promise<RestartOutcome>;
}
