/**
 * The control daemon: the fabric's control plane. It leases GIDs and AH numbers to device
 * names, resolves GIDs to UDP endpoints, tracks membership by heartbeats and pushes
 * peer_up / peer_down events, and offers a key/value store and barriers for out-of-band
 * exchange (like a PMI). It is never on the data path.
 *
 * Robustness rules: it binds to loopback unless told otherwise, and no input from a
 * connection can crash it or make it buffer without bound. Bad requests get an error reply
 * with a stable code, are counted in {@link DaemonServer.stats}, and leave the connection up.
 * Resources a client can claim are bounded, each limit answering with its own code and a
 * message naming it: connections (`EMFILE`), leased names (`ENOSPC`), key/value bytes
 * (`ENOSPC`), waits per connection (`EAGAIN`), unread replies (the connection is dropped),
 * and connections that never make a successful request are closed after `idleTimeoutMs`
 * (`ETIMEDOUT`). With a token, a connection must `hello` first (`EACCES` otherwise).
 *
 * This module listens and accepts; each connection is a DaemonConnection
 * (daemon-connection.ts), membership is the DeviceRegistry (device-registry.ts), and the
 * key/value store and barriers are the KvStore (kv-store.ts). All read time from one Clock.
 */
import * as net from 'node:net';
import { DaemonError, InvalidArgumentError } from '../common/errors';
import { silentLogger, type Logger } from '../common/logger';
import { checkClock, type Clock } from './clock';
import { DaemonConnection, type ConnectionContext } from './daemon-connection';
import { DaemonStats } from './daemon-stats';
import { DeviceRegistry, type DeviceOwner } from './device-registry';
import { encodeLine } from './framing';
import { KvStore } from './kv-store';
import {
  DEFAULT_HEARTBEAT_TIMEOUT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_DEVICES,
  MAX_AHN,
  MAX_TOKEN_LENGTH,
  formatAddress,
  type DaemonEvent,
} from './protocol';
import { SocketCloser } from './socket-closer';
import { StateStore } from './state-store';
import { TokenGate } from './token-gate';

export { DaemonStats } from './daemon-stats';

/** Options of {@link startDaemon}. */
export interface DaemonOptions {
  /** Address to listen on. Default `127.0.0.1`: the fabric's control plane stays local unless asked. */
  host?: string;
  /** TCP port. Default 0 (the OS picks; read it back from `port`); the CLI passes 18515. */
  port?: number;
  /** State file keeping leases across restarts; null or absent keeps them in memory only. */
  statePath?: string | null;
  /** A device with no heartbeat for this long is declared down. Default 3000. */
  heartbeatTimeoutMs?: number;
  /**
   * Connections served at once. One more gets a single `EMFILE` error line (id null) and is
   * closed, so a flood of sockets cannot exhaust the daemon's file descriptors. Default 1024.
   */
  maxConnections?: number;
  /**
   * Device names leased in total (a name, once leased, stays leased). A register of a new
   * name beyond it is refused with `ENOSPC`; known names still register. Default and
   * maximum 65534, the number of AH numbers.
   */
  maxDevices?: number;
  /**
   * A connection with no successful request (with a token: no successful `hello`) this long
   * after it opened gets an `ETIMEDOUT` error line (id null) and is closed, so idle sockets
   * cannot hold connection slots. Once a connection has made a successful request it is
   * never closed for idling: a registered device proves itself by heartbeats. Default 60000.
   */
  idleTimeoutMs?: number;
  /**
   * Shared secret. When set, a connection must send `{"id":..,"op":"hello","token":..}` before
   * anything else; other requests get `EACCES`, and after 3 failures the connection is
   * closed. Null or absent: no token needed. The CLI takes it from `--token` or `EFA_EMU_TOKEN`.
   */
  token?: string | null;
  logger?: Logger;
  /**
   * The time source of every deadline: heartbeats, idle connections, get and barrier waits.
   * Default the real one; tests pass a `ManualClock` to move time by hand.
   */
  clock?: Clock;
}

/**
 * A running daemon. Made by {@link startDaemon}; stop it with {@link close}.
 */
export class DaemonServer {
  /** Counters; see {@link DaemonStats}. */
  readonly stats = new DaemonStats();
  /** A device with no heartbeat for this long is declared down. */
  readonly heartbeatTimeoutMs: number;
  /** See {@link DaemonOptions.maxConnections}. */
  readonly maxConnections: number;
  /** See {@link DaemonOptions.maxDevices}. */
  readonly maxDevices: number;
  /** See {@link DaemonOptions.idleTimeoutMs}. */
  readonly idleTimeoutMs: number;
  /** The time source of the daemon's deadlines; see {@link DaemonOptions.clock}. */
  readonly clock: Clock;
  private readonly tokens: TokenGate;
  private readonly store: StateStore;
  private readonly log: Logger;
  private readonly server: net.Server;
  private readonly requestedHost: string;
  private readonly requestedPort: number;
  private boundHost = '';
  private boundPort = 0;
  private readonly connections = new Set<DaemonConnection>();
  /** Sockets being closed by the daemon (refused, idle, failed auth): destroyed on close(). */
  private readonly closer: SocketCloser;
  private readonly registry: DeviceRegistry;
  private readonly context: ConnectionContext;
  private nextConnectionId = 1;
  private closing: Promise<void> | null = null;

  /** Use {@link startDaemon}. */
  constructor(opts: DaemonOptions, store: StateStore) {
    this.store = store;
    this.requestedHost = opts.host ?? '127.0.0.1';
    this.requestedPort = opts.port ?? 0;
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs ?? DEFAULT_HEARTBEAT_TIMEOUT_MS;
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.maxDevices = opts.maxDevices ?? DEFAULT_MAX_DEVICES;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.clock = checkClock(opts.clock, 'DaemonOptions.clock');
    this.tokens = new TokenGate(opts.token);
    this.log = (opts.logger ?? silentLogger()).child({ component: 'daemon' });
    this.closer = new SocketCloser(this.clock);
    this.registry = new DeviceRegistry({
      store,
      stats: this.stats,
      log: this.log,
      clock: this.clock,
      heartbeatTimeoutMs: this.heartbeatTimeoutMs,
      maxDevices: this.maxDevices,
      announce: (event, except) => this.broadcast(event, except),
    });
    this.context = {
      clock: this.clock,
      stats: this.stats,
      log: this.log,
      registry: this.registry,
      kv: new KvStore(this.clock, this.stats),
      tokens: this.tokens,
      closer: this.closer,
      idleTimeoutMs: this.idleTimeoutMs,
      forget: (conn) => {
        this.connections.delete(conn);
        this.stats.connectionsOpen--;
      },
    };
    this.server = net.createServer((socket) => this.accept(socket));
  }

  /** True when connections must `hello` with the daemon's token first. */
  get tokenRequired(): boolean {
    return this.tokens.required;
  }

  /** Connections open now. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** The address the daemon listens on. */
  get host(): string {
    return this.boundHost;
  }

  /** The TCP port the daemon listens on (the one the OS picked when 0 was asked). */
  get port(): number {
    return this.boundPort;
  }

  /** `host:port`, as clients and `parseDaemonAddress` take it. */
  get address(): string {
    return formatAddress(this.boundHost, this.boundPort);
  }

  /** The fabric id: bytes 8..11 of every GID this daemon leases. */
  get fabricId(): number {
    return this.store.fabricId;
  }

  /** Binds and starts the heartbeat sweep. Called once by {@link startDaemon}. */
  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        this.server.off('listening', onListening);
        const where = formatAddress(this.requestedHost, this.requestedPort);
        reject(new DaemonError(err.code ?? 'EIO', `daemon cannot listen on ${where}: ${err.message}`, { cause: err }));
      };
      const onListening = (): void => {
        this.server.off('error', onError);
        resolve();
      };
      this.server.once('error', onError);
      this.server.once('listening', onListening);
      this.server.listen(this.requestedPort, this.requestedHost);
    });
    const addr = this.server.address() as net.AddressInfo;
    this.boundHost = addr.address;
    this.boundPort = addr.port;
    this.server.on('error', (err) => this.log.error({ err }, 'listening socket error'));
    this.registry.startExpiry();
    this.log.info({ address: this.address, fabricId: this.fabricId, statePath: this.store.path }, 'daemon listening');
  }

  /**
   * Stops the daemon: no new connections, every connection ended, every timer cleared,
   * pending state writes finished. Idempotent; every call returns the same promise.
   */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.registry.stopExpiry();
    const serverClosed = new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
    for (const conn of [...this.connections]) {
      conn.teardown(false);
      conn.socket.destroy();
    }
    this.closer.destroyAll();
    await serverClosed;
    await this.store.flush();
    this.log.info({ address: this.address, stats: this.stats.toJSON() }, 'daemon closed');
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    if (this.connections.size >= this.maxConnections) {
      // Told why, then closed: a client sees a code naming the limit rather than a bare reset.
      this.stats.connectionsRefused++;
      this.stats.countError('EMFILE');
      this.log.warn({ remote: formatAddress(socket.remoteAddress ?? '?', socket.remotePort ?? 0), maxConnections: this.maxConnections }, 'connection refused: connection limit reached');
      socket.on('error', () => undefined);
      const body = { code: 'EMFILE', message: `daemon connection limit reached: maxConnections=${this.maxConnections} connections are open; try again later or raise --max-connections` };
      this.closer.end(socket, encodeLine({ id: null, ok: false, error: body }));
      return;
    }
    const conn = new DaemonConnection(this.context, this.nextConnectionId++, socket);
    this.connections.add(conn);
    this.stats.connectionsAccepted++;
    this.stats.connectionsOpen++;
  }

  private broadcast(event: DaemonEvent, except: DeviceOwner | null): void {
    for (const conn of this.connections) {
      if (conn === except || conn.device === null) continue;
      this.stats.eventsSent++;
      conn.send(event);
    }
  }
}

function positiveInt(name: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
    throw new InvalidArgumentError(`DaemonOptions.${name} must be an integer in ${min}..${max}, got ${v}`);
  }
}

/**
 * Starts a daemon: loads (or creates) the state, binds, and resolves once it accepts
 * connections. Rejects with DaemonError `ESTATE` when the state file exists but cannot be
 * trusted, or with the socket's code (e.g. `EADDRINUSE`) when it cannot listen.
 */
export async function startDaemon(opts: DaemonOptions = {}): Promise<DaemonServer> {
  if (opts.host !== undefined && (typeof opts.host !== 'string' || opts.host.length === 0)) {
    throw new InvalidArgumentError(`DaemonOptions.host must be a non-empty string, got ${JSON.stringify(opts.host)}`);
  }
  if (opts.port !== undefined && (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535)) {
    throw new InvalidArgumentError(`DaemonOptions.port must be an integer in 0..65535, got ${opts.port}`);
  }
  if (opts.heartbeatTimeoutMs !== undefined && (!Number.isFinite(opts.heartbeatTimeoutMs) || opts.heartbeatTimeoutMs <= 0)) {
    throw new InvalidArgumentError(`DaemonOptions.heartbeatTimeoutMs must be a positive number, got ${opts.heartbeatTimeoutMs}`);
  }
  positiveInt('maxConnections', opts.maxConnections, 1, 1 << 20);
  positiveInt('maxDevices', opts.maxDevices, 1, MAX_AHN);
  if (opts.idleTimeoutMs !== undefined && (!Number.isFinite(opts.idleTimeoutMs) || opts.idleTimeoutMs <= 0 || opts.idleTimeoutMs > 0x7fffffff)) {
    throw new InvalidArgumentError(`DaemonOptions.idleTimeoutMs must be a positive number of milliseconds, got ${opts.idleTimeoutMs}`);
  }
  if (opts.token !== undefined && opts.token !== null && (typeof opts.token !== 'string' || opts.token.length === 0 || opts.token.length > MAX_TOKEN_LENGTH)) {
    throw new InvalidArgumentError(`DaemonOptions.token must be a string of 1..${MAX_TOKEN_LENGTH} characters, or null`);
  }
  if (opts.statePath !== undefined && opts.statePath !== null && (typeof opts.statePath !== 'string' || opts.statePath === '')) {
    throw new InvalidArgumentError('DaemonOptions.statePath must be a non-empty string or null');
  }
  checkClock(opts.clock, 'DaemonOptions.clock');
  const store = await StateStore.open(opts.statePath ?? null);
  const daemon = new DaemonServer(opts, store);
  await daemon.listen();
  return daemon;
}
