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
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { DaemonError, EfaError, InvalidArgumentError } from '../common/errors';
import { formatGid, makeGid, parseGid } from '../common/gid';
import { silentLogger, type Logger } from '../common/logger';
import { encodeLine, LineSplitter, type LineSink } from './framing';
import {
  DEFAULT_HEARTBEAT_TIMEOUT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_DEVICES,
  MAX_AHN,
  MAX_AUTH_FAILURES,
  MAX_TOKEN_LENGTH,
  DEFAULT_WAIT_TIMEOUT_MS,
  MAX_BARRIER_SIZE,
  MAX_KEY_LENGTH,
  MAX_LINE_BYTES,
  MAX_NAME_LENGTH,
  MAX_VALUE_BYTES,
  MAX_WAIT_TIMEOUT_MS,
  formatAddress,
  isValidDeviceName,
  isValidPort,
  ownField,
  type DaemonEvent,
  type DeviceRecord,
  type Endpoint,
  type ListResult,
  type RegisterResult,
} from './protocol';
import { StateStore, type Lease } from './state-store';

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
}

/** Longest endpoint host name accepted (a DNS name is at most 253 characters). */
const MAX_HOST_LENGTH = 255;
/** Waits (get, barrier) one connection may hold at once; each owns a timer. */
const MAX_WAITERS_PER_CONNECTION = 4096;
/** Total bytes of keys and values the key/value store holds. */
const MAX_KV_BYTES = 64 * 1024 * 1024;
/**
 * A connection whose unread replies pile up past this is dropped: a peer that sends
 * requests but never reads must not make the daemon buffer without bound.
 */
const MAX_PENDING_OUTPUT_BYTES = 16 * 1024 * 1024;
/** Stats keys accepted per heartbeat. */
const MAX_STATS_KEYS = 256;

/** The request errors counted as "bad requests" (malformed input, not failed operations). */
const BAD_REQUEST_CODES = new Set(['EBADMSG', 'EINVAL', 'ENOSYS', 'EMSGSIZE']);

/**
 * Counters of a running daemon. Plain fields for cheap increments; {@link toJSON} gives a
 * snapshot for logs, tests and the status command.
 */
export class DaemonStats {
  connectionsAccepted = 0;
  connectionsOpen = 0;
  requests = 0;
  /** Malformed requests by code: EBADMSG, EINVAL, ENOSYS, EMSGSIZE. */
  readonly badRequests = new Map<string, number>();
  /** Every error reply by code, bad requests included. */
  readonly errors = new Map<string, number>();
  registrations = 0;
  leasesCreated = 0;
  heartbeats = 0;
  heartbeatTimeouts = 0;
  eventsSent = 0;
  /** get and barrier calls currently waiting. */
  waitsOpen = 0;
  /** Connections dropped for not reading their replies. */
  slowConnectionsDropped = 0;
  /** Connections refused because `maxConnections` were open. */
  connectionsRefused = 0;
  /** Connections closed for making no successful request within `idleTimeoutMs`. */
  idleConnectionsClosed = 0;
  /** Requests refused with EACCES (missing or wrong token). */
  authFailures = 0;
  /** Connections closed after too many EACCES replies. */
  authConnectionsClosed = 0;

  /** Counts an error reply. */
  countError(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
    if (BAD_REQUEST_CODES.has(code)) this.badRequests.set(code, (this.badRequests.get(code) ?? 0) + 1);
  }

  /** Total malformed requests. */
  get badRequestsTotal(): number {
    let n = 0;
    for (const v of this.badRequests.values()) n += v;
    return n;
  }

  toJSON(): Record<string, unknown> {
    return {
      connectionsAccepted: this.connectionsAccepted,
      connectionsOpen: this.connectionsOpen,
      requests: this.requests,
      badRequests: Object.fromEntries(this.badRequests),
      badRequestsTotal: this.badRequestsTotal,
      errors: Object.fromEntries(this.errors),
      registrations: this.registrations,
      leasesCreated: this.leasesCreated,
      heartbeats: this.heartbeats,
      heartbeatTimeouts: this.heartbeatTimeouts,
      eventsSent: this.eventsSent,
      waitsOpen: this.waitsOpen,
      slowConnectionsDropped: this.slowConnectionsDropped,
      connectionsRefused: this.connectionsRefused,
      idleConnectionsClosed: this.idleConnectionsClosed,
      authFailures: this.authFailures,
      authConnectionsClosed: this.authConnectionsClosed,
    };
  }
}

/** A device registered since this daemon started. Kept after it goes down: names are leased forever. */
class Device {
  readonly name: string;
  readonly gid: string;
  readonly ahn: number;
  readonly deviceIndex: number;
  endpoint: Endpoint;
  rank: number | null;
  incarnation = 0;
  up = false;
  owner: Connection | null = null;
  lastSeen = 0;
  stats: Record<string, number> | null = null;

  constructor(name: string, gid: string, ahn: number, deviceIndex: number, endpoint: Endpoint, rank: number | null) {
    this.name = name;
    this.gid = gid;
    this.ahn = ahn;
    this.deviceIndex = deviceIndex;
    this.endpoint = endpoint;
    this.rank = rank;
  }

  record(now: number): DeviceRecord {
    return {
      name: this.name,
      gid: this.gid,
      ahn: this.ahn,
      rank: this.rank,
      endpoint: { host: this.endpoint.host, port: this.endpoint.port },
      incarnation: this.incarnation,
      up: this.up,
      lastSeenMsAgo: Math.max(0, Math.round(now - this.lastSeen)),
      stats: this.stats,
    };
  }
}

/** A `get` or `barrier` call waiting for its answer. */
class Waiter {
  readonly conn: Connection;
  readonly requestId: number;
  /** Key (get) or barrier name. */
  readonly key: string;
  readonly kind: 'get' | 'barrier';
  timer: NodeJS.Timeout | null = null;

  constructor(conn: Connection, requestId: number, kind: 'get' | 'barrier', key: string) {
    this.conn = conn;
    this.requestId = requestId;
    this.kind = kind;
    this.key = key;
  }
}

/** The current round of one barrier. */
class BarrierRound {
  n: number;
  readonly members = new Set<Waiter>();
  constructor(n: number) {
    this.n = n;
  }
}

/** One client socket. */
class Connection implements LineSink {
  readonly id: number;
  readonly socket: net.Socket;
  readonly remote: string;
  readonly splitter: LineSplitter;
  readonly waiters = new Set<Waiter>();
  device: Device | null = null;
  closed = false;
  /** True once a `hello` carried the right token (always true when the daemon has none). */
  authenticated: boolean;
  /** EACCES replies sent so far. */
  authFailures = 0;
  /** Closes the connection if it makes no successful request in time; null once it has. */
  idleTimer: NodeJS.Timeout | null = null;
  private readonly server: DaemonServer;

  constructor(server: DaemonServer, id: number, socket: net.Socket) {
    this.server = server;
    this.id = id;
    this.socket = socket;
    this.remote = formatAddress(socket.remoteAddress ?? '?', socket.remotePort ?? 0);
    this.splitter = new LineSplitter(MAX_LINE_BYTES, this);
    this.authenticated = !server.tokenRequired;
  }

  line(text: string): void {
    this.server._onLine(this, text);
  }

  oversize(): void {
    this.server._badRequest(this, null, 'EMSGSIZE', `request line longer than ${MAX_LINE_BYTES} bytes; discarded up to the next newline`);
  }

  badEncoding(): void {
    this.server._badRequest(this, null, 'EBADMSG', 'request line is not valid UTF-8');
  }
}

/** Marks a handler result that is sent later (a waiting get or barrier). */
const DEFERRED = Symbol('deferred');
type HandlerResult = object | typeof DEFERRED | Promise<object | typeof DEFERRED>;

function invalid(op: string, field: string, what: string): never {
  throw new InvalidArgumentError(`${op}: "${field}" ${what}`);
}

function readTimeout(op: string, req: object): number {
  const v = ownField(req, 'timeoutMs');
  if (v === undefined || v === null) return DEFAULT_WAIT_TIMEOUT_MS;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > MAX_WAIT_TIMEOUT_MS) {
    invalid(op, 'timeoutMs', `must be a number of milliseconds in 0..${MAX_WAIT_TIMEOUT_MS}`);
  }
  return v;
}

function readKey(op: string, req: object, field: string): string {
  const v = ownField(req, field);
  if (typeof v !== 'string' || v.length < 1 || v.length > MAX_KEY_LENGTH) {
    invalid(op, field, `must be a string of 1..${MAX_KEY_LENGTH} characters`);
  }
  return v;
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
  /** SHA-256 of the token, or null. Hashed so the comparison is on equal-length buffers and leaks no length. */
  private readonly tokenDigest: Buffer | null;
  private readonly store: StateStore;
  private readonly log: Logger;
  private readonly server: net.Server;
  private readonly requestedHost: string;
  private readonly requestedPort: number;
  private boundHost = '';
  private boundPort = 0;
  private readonly connections = new Set<Connection>();
  /** Sockets being closed by the daemon (refused, idle, failed auth): destroyed on close(). */
  private readonly lingering = new Set<net.Socket>();
  private nextConnectionId = 1;
  private readonly devices = new Map<string, Device>();
  private readonly byGid = new Map<string, Device>();
  private readonly kv = new Map<string, string>();
  private kvBytes = 0;
  private readonly getWaiters = new Map<string, Set<Waiter>>();
  private readonly barriers = new Map<string, BarrierRound>();
  private sweepTimer: NodeJS.Timeout | null = null;
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
    this.tokenDigest = opts.token ? digest(opts.token) : null;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'daemon' });
    this.server = net.createServer((socket) => this.accept(socket));
  }

  /** True when connections must `hello` with the daemon's token first. */
  get tokenRequired(): boolean {
    return this.tokenDigest !== null;
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
    // One ticking timer scans all devices, rather than a timer per device. Scanning at a
    // quarter of the deadline bounds detection latency to 1.25x the deadline.
    const period = Math.max(10, Math.min(1000, Math.floor(this.heartbeatTimeoutMs / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), period);
    this.sweepTimer.unref();
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
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    const serverClosed = new Promise<void>((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
    for (const conn of [...this.connections]) {
      this.teardown(conn, false);
      conn.socket.destroy();
    }
    for (const socket of [...this.lingering]) socket.destroy();
    await serverClosed;
    await this.store.flush();
    this.log.info({ address: this.address, stats: this.stats.toJSON() }, 'daemon closed');
  }

  // ---- connections ----

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
      endSocket(socket, encodeLine({ id: null, ok: false, error: body }), this.lingering);
      return;
    }
    const conn = new Connection(this, this.nextConnectionId++, socket);
    this.connections.add(conn);
    this.stats.connectionsAccepted++;
    this.stats.connectionsOpen++;
    this.log.debug({ conn: conn.id, remote: conn.remote }, 'connection opened');
    socket.on('data', (chunk: Buffer) => conn.splitter.push(chunk));
    socket.on('error', (err) => this.log.debug({ conn: conn.id, err }, 'connection error'));
    socket.on('close', () => this.teardown(conn, true));
    conn.idleTimer = setTimeout(() => {
      conn.idleTimer = null;
      this.stats.idleConnectionsClosed++;
      this.closeWithError(conn, 'ETIMEDOUT', `closing idle connection: no successful request within idleTimeoutMs=${this.idleTimeoutMs} ms`);
    }, this.idleTimeoutMs);
    conn.idleTimer.unref();
  }

  /**
   * Sends a last error line (id null) and closes the connection. The socket is ended so the
   * line is delivered, and destroyed shortly after in case the peer never closes its side.
   */
  private closeWithError(conn: Connection, code: string, message: string): void {
    if (conn.closed) return;
    this.stats.countError(code);
    this.log.debug({ conn: conn.id, remote: conn.remote, code }, message);
    const line = encodeLine({ id: null, ok: false, error: { code, message } });
    this.teardown(conn, true);
    endSocket(conn.socket, line, this.lingering);
  }

  /** Forgets a connection: its waits are dropped, its device goes down. */
  private teardown(conn: Connection, announce: boolean): void {
    if (conn.closed) return;
    conn.closed = true;
    conn.splitter.stop();
    if (conn.idleTimer) clearTimeout(conn.idleTimer);
    conn.idleTimer = null;
    this.connections.delete(conn);
    this.stats.connectionsOpen--;
    for (const w of conn.waiters) this.dropWaiter(w);
    conn.waiters.clear();
    const dev = conn.device;
    conn.device = null;
    if (dev && dev.owner === conn) {
      dev.owner = null;
      if (dev.up) {
        dev.up = false;
        this.log.info({ name: dev.name, gid: dev.gid }, 'device down: connection closed');
        if (announce) this.broadcast({ event: 'peer_down', name: dev.name, gid: dev.gid }, null);
      }
    }
    this.log.debug({ conn: conn.id }, 'connection closed');
  }

  private send(conn: Connection, message: object): void {
    if (conn.closed || conn.socket.destroyed) return;
    conn.socket.write(encodeLine(message));
    if (conn.socket.writableLength > MAX_PENDING_OUTPUT_BYTES) {
      this.stats.slowConnectionsDropped++;
      this.log.warn({ conn: conn.id, remote: conn.remote }, 'dropping a connection that does not read its replies');
      conn.socket.destroy();
    }
  }

  private reply(conn: Connection, id: number, result: object): void {
    this.markEstablished(conn);
    this.send(conn, { ...result, id, ok: true });
  }

  /**
   * A request accepted (answered ok, or a get/barrier now waiting) makes the connection
   * established: it is no longer idle-timed, so a long wait is not cut short.
   */
  private markEstablished(conn: Connection): void {
    if (conn.idleTimer && conn.authenticated) {
      clearTimeout(conn.idleTimer);
      conn.idleTimer = null;
    }
  }

  private replyError(conn: Connection, id: number | null, err: unknown): void {
    let code: string;
    let message: string;
    if (err instanceof EfaError) {
      code = err.code;
      message = err.message;
    } else {
      // A bug in a handler: answer rather than crash, and make it visible in the log.
      this.log.error({ conn: conn.id, err }, 'internal error while serving a request');
      code = 'EIO';
      message = `internal daemon error: ${(err as Error)?.message ?? String(err)}`;
    }
    this.stats.countError(code);
    this.send(conn, { id, ok: false, error: { code, message } });
  }

  /** Replies to a request the daemon could not accept. @internal */
  _badRequest(conn: Connection, id: number | null, code: string, message: string): void {
    this.log.debug({ conn: conn.id, code }, message);
    this.replyError(conn, id, new DaemonError(code, message));
    // Before authenticating, garbage counts against the connection like a wrong token does.
    if (!conn.authenticated) this.countAuthFailure(conn);
  }

  /** Constant-time comparison of a presented token with the daemon's. */
  private tokenMatches(token: string): boolean {
    if (!this.tokenDigest) return true;
    return timingSafeEqual(digest(token), this.tokenDigest);
  }

  /** Replies EACCES and closes the connection once it has failed too often. */
  private refuseUnauthenticated(conn: Connection, id: number | null, message: string): void {
    this.stats.authFailures++;
    const left = MAX_AUTH_FAILURES - conn.authFailures - 1;
    const suffix = left > 0 ? '' : '; closing the connection';
    this.replyError(conn, id, new DaemonError('EACCES', message + suffix));
    this.countAuthFailure(conn);
  }

  private countAuthFailure(conn: Connection): void {
    conn.authFailures++;
    if (conn.authFailures >= MAX_AUTH_FAILURES && !conn.closed) {
      this.stats.authConnectionsClosed++;
      this.log.warn({ conn: conn.id, remote: conn.remote }, 'closing a connection that failed to authenticate');
      this.teardown(conn, true);
      // end(): the EACCES line already written is delivered before the FIN.
      endSocket(conn.socket, null, this.lingering);
    }
  }

  private broadcast(event: DaemonEvent, except: Connection | null): void {
    for (const conn of this.connections) {
      if (conn === except || conn.device === null) continue;
      this.stats.eventsSent++;
      this.send(conn, event);
    }
  }

  // ---- request dispatch ----

  /** Serves one request line. @internal */
  _onLine(conn: Connection, text: string): void {
    if (conn.closed) return;
    this.stats.requests++;
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      return this._badRequest(conn, null, 'EBADMSG', `request is not JSON: ${(err as Error).message}`);
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      return this._badRequest(conn, null, 'EINVAL', 'request must be a JSON object');
    }
    const rawId = ownField(msg, 'id');
    if (typeof rawId !== 'number' || !Number.isSafeInteger(rawId)) {
      return this._badRequest(conn, null, 'EINVAL', '"id" must be an integer');
    }
    const id = rawId;
    const op = ownField(msg, 'op');
    if (typeof op !== 'string') return this._badRequest(conn, id, 'EINVAL', '"op" must be a string naming the operation');
    if (!conn.authenticated) {
      if (op !== 'hello') {
        return this.refuseUnauthenticated(conn, id, `this daemon requires a token: send {"id":..,"op":"hello","token":..} first (op ${JSON.stringify(op.slice(0, 64))} refused)`);
      }
      const token = ownField(msg, 'token');
      if (typeof token !== 'string' || token.length === 0) return this.refuseUnauthenticated(conn, id, 'hello: this daemon requires a token and none was given');
      if (!this.tokenMatches(token)) return this.refuseUnauthenticated(conn, id, 'hello: wrong token');
      conn.authenticated = true;
    }
    let result: HandlerResult;
    try {
      result = this.dispatch(conn, id, op, msg);
    } catch (err) {
      return this.replyError(conn, id, err);
    }
    if (result === DEFERRED) return this.markEstablished(conn);
    if (result instanceof Promise) {
      result.then(
        (r) => {
          if (r !== DEFERRED) this.reply(conn, id, r);
        },
        (err) => this.replyError(conn, id, err),
      );
      return;
    }
    this.reply(conn, id, result);
  }

  // A switch, not an object of handlers: an op named "constructor" or "__proto__" must be
  // unknown, not a property of Object.prototype.
  private dispatch(conn: Connection, id: number, op: string, req: object): HandlerResult {
    switch (op) {
      case 'hello':
        // Reached unauthenticated only with the right token (checked in _onLine); with no
        // daemon token the token is ignored, so clients may always send one.
        return { tokenRequired: this.tokenRequired };
      case 'register':
        return this.opRegister(conn, req);
      case 'unregister':
        return this.opUnregister(conn, req);
      case 'heartbeat':
        return this.opHeartbeat(conn, req);
      case 'resolve':
        return this.opResolve(req);
      case 'put':
        return this.opPut(req);
      case 'get':
        return this.opGet(conn, id, req);
      case 'barrier':
        return this.opBarrier(conn, id, req);
      case 'list':
        return this.opList();
      default:
        throw new DaemonError('ENOSYS', `unknown op ${JSON.stringify(op.slice(0, 64))}`);
    }
  }

  // ---- ops ----

  private opRegister(conn: Connection, req: object): RegisterResult | Promise<RegisterResult> {
    const name = ownField(req, 'name');
    if (!isValidDeviceName(name)) invalid('register', 'name', `must be 1..${MAX_NAME_LENGTH} characters of [A-Za-z0-9._-]`);
    const endpoint = readEndpoint(ownField(req, 'endpoint'));
    const rawRank = ownField(req, 'rank');
    let rank: number | null = null;
    if (rawRank !== undefined && rawRank !== null) {
      if (typeof rawRank !== 'number' || !Number.isSafeInteger(rawRank) || rawRank < 0) {
        invalid('register', 'rank', 'must be a non-negative integer or null');
      }
      rank = rawRank;
    }
    const rawInc = ownField(req, 'incarnation');
    let incarnation = 0;
    if (rawInc !== undefined && rawInc !== null) {
      if (typeof rawInc !== 'number' || !Number.isInteger(rawInc) || rawInc < 0 || rawInc > 0xffffffff) {
        invalid('register', 'incarnation', 'must be a 32-bit unsigned integer');
      }
      incarnation = rawInc;
    }
    this.checkRegister(conn, name);
    if (this.store.get(name) === undefined && this.store.size >= this.maxDevices) {
      throw new DaemonError('ENOSPC', `daemon device limit reached: maxDevices=${this.maxDevices} names are leased; cannot lease ${name} (known names still register)`);
    }
    const lease = this.store.lease(name);
    // A known name completes synchronously, so replies keep request order. A new name is
    // only announced once its lease is on disk: a GID handed out must survive a crash.
    if (!this.store.needsSave) return this.completeRegister(conn, name, lease, endpoint, rank, incarnation);
    return this.store.save().then(
      () => {
        // Nobody to answer; the lease is kept and the device stays down.
        if (conn.closed) return {} as RegisterResult;
        // Checked again: another registration may have run while the lease was written.
        this.checkRegister(conn, name);
        return this.completeRegister(conn, name, lease, endpoint, rank, incarnation);
      },
      (err: Error) => {
        this.log.error({ err, statePath: this.store.path }, 'cannot persist a new lease');
        throw new DaemonError('EIO', `daemon cannot persist the lease of ${name} to ${this.store.path}: ${err.message}`, { cause: err });
      },
    );
  }

  private completeRegister(conn: Connection, name: string, lease: Lease, endpoint: Endpoint, rank: number | null, incarnation: number): RegisterResult {
    let dev = this.devices.get(name);
    if (!dev) {
      const gid = formatGid(makeGid(this.store.fabricId, lease.deviceIndex));
      dev = new Device(name, gid, lease.ahn, lease.deviceIndex, endpoint, rank);
      this.devices.set(name, dev);
      this.byGid.set(gid, dev);
      this.stats.leasesCreated++;
    }
    const previous = dev.owner;
    if (previous && previous !== conn) {
      // Taking over a device whose owner is alive but silent: the old connection loses it
      // and learns so (ENODEV) at its next heartbeat.
      previous.device = null;
    }
    dev.owner = conn;
    dev.endpoint = endpoint;
    dev.rank = rank;
    dev.incarnation = incarnation;
    dev.up = true;
    dev.lastSeen = performance.now();
    dev.stats = null;
    conn.device = dev;
    this.stats.registrations++;
    this.log.info({ name, gid: dev.gid, ahn: dev.ahn, endpoint, rank, conn: conn.id }, 'device registered');
    this.broadcast({ event: 'peer_up', name, gid: dev.gid, endpoint: { ...endpoint }, incarnation }, conn);
    return {
      gid: dev.gid,
      ahn: dev.ahn,
      fabricId: this.store.fabricId,
      deviceIndex: dev.deviceIndex,
      heartbeatTimeoutMs: this.heartbeatTimeoutMs,
    };
  }

  private checkRegister(conn: Connection, name: string): void {
    if (conn.device) {
      throw new DaemonError('EALREADY', `this connection already registered device ${conn.device.name}; unregister it first`);
    }
    const dev = this.devices.get(name);
    if (dev && dev.up && dev.owner && dev.owner !== conn && !dev.owner.closed) {
      throw new DaemonError('EADDRINUSE', `device name ${name} is up and owned by another connection`);
    }
  }

  private opUnregister(conn: Connection, req: object): object {
    const stats = this.statsArg('unregister', req);
    const dev = conn.device;
    if (!dev) return {};
    conn.device = null;
    if (dev.owner === conn) {
      dev.owner = null;
      // Its last words: the counters as the device closed.
      if (stats) dev.stats = stats;
      if (dev.up) {
        dev.up = false;
        this.log.info({ name: dev.name, gid: dev.gid }, 'device down: unregistered');
        this.broadcast({ event: 'peer_down', name: dev.name, gid: dev.gid }, conn);
      }
    }
    return {};
  }

  /** The optional `stats` of a heartbeat or an unregister, checked. */
  private statsArg(op: string, req: object): Record<string, number> | undefined {
    const rawStats = ownField(req, 'stats');
    if (rawStats === undefined || rawStats === null) return undefined;
    if (typeof rawStats !== 'object' || Array.isArray(rawStats)) invalid(op, 'stats', 'must be an object of numbers');
    const entries = Object.entries(rawStats);
    if (entries.length > MAX_STATS_KEYS) invalid(op, 'stats', `may hold at most ${MAX_STATS_KEYS} counters`);
    for (const [k, v] of entries) {
      if (typeof v !== 'number' || !Number.isFinite(v)) invalid(op, `stats.${k.slice(0, 64)}`, 'must be a finite number');
    }
    // fromEntries defines own properties: a counter named "__proto__" stays a counter.
    return Object.fromEntries(entries) as Record<string, number>;
  }

  private opHeartbeat(conn: Connection, req: object): object {
    const stats = this.statsArg('heartbeat', req);
    const dev = conn.device;
    if (!dev || dev.owner !== conn) {
      throw new DaemonError('ENODEV', 'no device is registered on this connection (never registered, unregistered, or taken over after a missed heartbeat)');
    }
    this.stats.heartbeats++;
    dev.lastSeen = performance.now();
    if (stats) dev.stats = stats;
    if (!dev.up) {
      dev.up = true;
      this.log.info({ name: dev.name, gid: dev.gid }, 'device up again: heartbeat resumed');
      this.broadcast({ event: 'peer_up', name: dev.name, gid: dev.gid, endpoint: { ...dev.endpoint }, incarnation: dev.incarnation }, conn);
    }
    return {};
  }

  private opResolve(req: object): DeviceRecord {
    const raw = ownField(req, 'gid');
    // 45 characters is the longest IPv6 text; the bound keeps error messages short.
    if (typeof raw !== 'string' || raw.length > 64) invalid('resolve', 'gid', 'must be a GID in IPv6 text');
    const gid = formatGid(parseGid(raw, 'resolve: "gid"'));
    const dev = this.byGid.get(gid);
    if (!dev) throw new DaemonError('ENOENT', `no device with GID ${gid} has registered with this daemon`);
    return dev.record(performance.now());
  }

  private opPut(req: object): object {
    const key = readKey('put', req, 'key');
    const value = ownField(req, 'value');
    if (typeof value !== 'string') invalid('put', 'value', 'must be a string');
    const bytes = Buffer.byteLength(value, 'utf8');
    if (bytes > MAX_VALUE_BYTES) invalid('put', 'value', `must be at most ${MAX_VALUE_BYTES} bytes, got ${bytes}`);
    const old = this.kv.get(key);
    const delta = bytes + key.length * 2 - (old === undefined ? 0 : Buffer.byteLength(old, 'utf8') + key.length * 2);
    if (this.kvBytes + delta > MAX_KV_BYTES) {
      throw new DaemonError('ENOSPC', `key/value store is full (${MAX_KV_BYTES} bytes)`);
    }
    this.kv.set(key, value);
    this.kvBytes += delta;
    const waiting = this.getWaiters.get(key);
    if (waiting) {
      this.getWaiters.delete(key);
      for (const w of waiting) {
        this.finishWaiter(w);
        this.reply(w.conn, w.requestId, { value });
      }
    }
    return {};
  }

  private opGet(conn: Connection, id: number, req: object): HandlerResult {
    const key = readKey('get', req, 'key');
    const timeoutMs = readTimeout('get', req);
    const value = this.kv.get(key);
    if (value !== undefined) return { value };
    const w = this.addWaiter(conn, id, 'get', key, timeoutMs, `get ${JSON.stringify(key)}: no value after ${timeoutMs} ms`);
    let set = this.getWaiters.get(key);
    if (!set) {
      set = new Set();
      this.getWaiters.set(key, set);
    }
    set.add(w);
    return DEFERRED;
  }

  private opBarrier(conn: Connection, id: number, req: object): HandlerResult {
    const name = readKey('barrier', req, 'name');
    const n = ownField(req, 'n');
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_BARRIER_SIZE) {
      invalid('barrier', 'n', `must be an integer in 1..${MAX_BARRIER_SIZE}`);
    }
    const timeoutMs = readTimeout('barrier', req);
    let round = this.barriers.get(name);
    if (round && round.n !== n) {
      throw new InvalidArgumentError(`barrier: "n" is ${n} but barrier ${JSON.stringify(name)} is gathering ${round.n} callers`);
    }
    if (n === 1) return {};
    if (!round) {
      round = new BarrierRound(n);
      this.barriers.set(name, round);
    }
    const w = this.addWaiter(conn, id, 'barrier', name, timeoutMs, `barrier ${JSON.stringify(name)}: ${n} callers did not arrive within ${timeoutMs} ms`);
    round.members.add(w);
    if (round.members.size >= n) {
      // Release this round; the next caller starts a fresh one (barriers are reusable).
      this.barriers.delete(name);
      for (const m of round.members) {
        this.finishWaiter(m);
        this.reply(m.conn, m.requestId, {});
      }
    }
    return DEFERRED;
  }

  private opList(): ListResult {
    const now = performance.now();
    const devices = [...this.devices.values()].sort((a, b) => a.deviceIndex - b.deviceIndex).map((d) => d.record(now));
    return { fabricId: this.store.fabricId, devices };
  }

  // ---- waits ----

  private addWaiter(conn: Connection, id: number, kind: 'get' | 'barrier', key: string, timeoutMs: number, timeoutMessage: string): Waiter {
    if (conn.waiters.size >= MAX_WAITERS_PER_CONNECTION) {
      throw new DaemonError('EAGAIN', `too many waits on this connection (at most ${MAX_WAITERS_PER_CONNECTION})`);
    }
    const w = new Waiter(conn, id, kind, key);
    conn.waiters.add(w);
    this.stats.waitsOpen++;
    w.timer = setTimeout(() => {
      w.timer = null;
      this.dropWaiter(w);
      conn.waiters.delete(w);
      this.replyError(conn, id, new DaemonError('ETIMEDOUT', timeoutMessage));
    }, timeoutMs);
    return w;
  }

  /** A wait got its answer: stop its timer and forget it on its connection. */
  private finishWaiter(w: Waiter): void {
    this.stats.waitsOpen--;
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
    w.conn.waiters.delete(w);
  }

  /** A wait ends without an answer (timeout or closed connection): take it out of its queue. */
  private dropWaiter(w: Waiter): void {
    this.stats.waitsOpen--;
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
    if (w.kind === 'get') {
      const set = this.getWaiters.get(w.key);
      if (set) {
        set.delete(w);
        if (set.size === 0) this.getWaiters.delete(w.key);
      }
    } else {
      const round = this.barriers.get(w.key);
      if (round) {
        round.members.delete(w);
        if (round.members.size === 0) this.barriers.delete(w.key);
      }
    }
  }

  // ---- membership ----

  private sweep(): void {
    const now = performance.now();
    for (const dev of this.devices.values()) {
      if (!dev.up || now - dev.lastSeen <= this.heartbeatTimeoutMs) continue;
      dev.up = false;
      this.stats.heartbeatTimeouts++;
      this.log.warn({ name: dev.name, gid: dev.gid, silentMs: Math.round(now - dev.lastSeen) }, 'device down: heartbeat missed');
      this.broadcast({ event: 'peer_down', name: dev.name, gid: dev.gid }, dev.owner);
    }
  }
}

/** SHA-256 of a token, so tokens of any length compare as equal-length buffers. */
function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * Writes a last line (if any) and closes: end() delivers what is queued, the timer makes sure
 * a peer that never closes its side cannot keep the socket (and its descriptor) alive.
 */
function endSocket(socket: net.Socket, line: string | null, lingering: Set<net.Socket>): void {
  if (socket.destroyed) return;
  // Reading (and discarding) is what lets the peer's FIN be seen and the socket close; a
  // paused socket would wait for the timer.
  socket.removeAllListeners('data');
  socket.resume();
  lingering.add(socket);
  socket.once('close', () => lingering.delete(socket));
  if (line !== null) socket.end(line);
  else socket.end();
  const timer = setTimeout(() => socket.destroy(), 1000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

function readEndpoint(v: unknown): Endpoint {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) invalid('register', 'endpoint', 'must be an object {host, port}');
  const host = ownField(v, 'host');
  const port = ownField(v, 'port');
  if (typeof host !== 'string' || host.length < 1 || host.length > MAX_HOST_LENGTH) {
    invalid('register', 'endpoint.host', `must be a string of 1..${MAX_HOST_LENGTH} characters`);
  }
  if (!isValidPort(port)) invalid('register', 'endpoint.port', 'must be an integer in 1..65535');
  return { host, port };
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
  const store = await StateStore.open(opts.statePath ?? null);
  const daemon = new DaemonServer(opts, store);
  await daemon.listen();
  return daemon;
}
