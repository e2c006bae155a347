/**
 * The daemon client a device (or a tool) uses to reach the fabric's control plane.
 *
 * Lifecycle of the connection:
 * ```
 *   connect() ──> ready ──(socket lost)──> disconnected ──(back-off: 100 ms doubling to 2 s)──┐
 *                   ^                         emit 'disconnected'                           │
 *                   └── emit 'reconnected' <── re-register same name/endpoint/rank <── connected
 * ```
 * With a token, `hello` is sent before anything else on each connection (also before the
 * re-register). While not ready, calls fail fast with `ENOTCONN` instead of queueing: the data path does
 * not depend on the daemon, and a caller that needs it is better told now than left hanging.
 *
 * The socket is unref'd while nothing is pending, so a program whose only handle left is
 * the daemon connection exits; while a call is outstanding the socket holds the process
 * open, so `await client.get(...)` in a script is not cut short.
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { ClosedError, DaemonError, InvalidArgumentError } from '../common/errors';
import { silentLogger, type Logger } from '../common/logger';
import { readDaemonToken } from '../env';
import { encodeLine, LineSplitter, type LineSink } from './framing';
import {
  DEFAULT_DAEMON_PORT,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_WAIT_TIMEOUT_MS,
  MAX_LINE_BYTES,
  formatAddress,
  isValidPort,
  type DeviceRecord,
  type Endpoint,
  type OpArgs,
  type OpResults,
  type Op,
  type RegisterResult,
} from './protocol';

/** Options of {@link DaemonClient.connect}. */
export interface DaemonClientOptions {
  host: string;
  port: number;
  logger?: Logger;
  /** How long connecting may take. Default 5000. */
  connectTimeoutMs?: number;
  /** How long a request waits for its reply. Default 10000; get and barrier wait their own timeoutMs plus 5000. */
  requestTimeoutMs?: number;
  /** Heartbeat period once registered. Default 1000. */
  heartbeatMs?: number;
  /** Reconnect (and re-register) after the connection drops. Default true. */
  reconnect?: boolean;
  /**
   * The daemon's shared token. When set (non-empty), the client sends `hello` with it first
   * on every connection, the first and each reconnect. Default `process.env.EFA_EMU_TOKEN`;
   * pass null to send none even when the variable is set.
   */
  token?: string | null;
}

/** What {@link DaemonClient.register} resolves to. */
export interface Registration {
  gid: string;
  ahn: number;
  fabricId: number;
  deviceIndex: number;
}

/** Payload of the 'peer_down' event. */
export interface PeerDownInfo {
  name: string;
  gid: string;
}

/** Payload of the 'peer_up' event. */
export interface PeerUpInfo {
  name: string;
  gid: string;
  endpoint: Endpoint;
  /** The device's incarnation (0 when it registered none). */
  incarnation: number;
}

/** Events of a {@link DaemonClient}. */
export interface DaemonClientEvents {
  peer_down: [PeerDownInfo];
  peer_up: [PeerUpInfo];
  disconnected: [];
  /** Carries the registration after re-registering (or null when none was held). */
  reconnected: [Registration | null];
}

/** Slack added to a get/barrier wait so the daemon's own ETIMEDOUT arrives before ours. */
const WAIT_SLACK_MS = 5000;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 2000;
/** The client reads larger lines than it sends: a `list` of a big fabric can exceed 64 KiB. */
const MAX_REPLY_BYTES = 16 * 1024 * 1024;
/** How long close() waits for the daemon to acknowledge unregister. */
const CLOSE_UNREGISTER_TIMEOUT_MS = 2000;

type State = 'ready' | 'disconnected' | 'closing' | 'closed';

interface Pending {
  readonly op: string;
  readonly resolve: (msg: Record<string, unknown>) => void;
  readonly reject: (err: Error) => void;
  timer: NodeJS.Timeout | null;
  /** Whether this request holds the process open (user calls do, heartbeats don't). */
  readonly holdsRef: boolean;
}

interface RequestOptions {
  timeoutMs?: number;
  /** Sent even while not ready (the re-register and the closing unregister). */
  internal?: boolean;
  holdsRef?: boolean;
}

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new InvalidArgumentError(`DaemonClientOptions.${name} must be a positive number of milliseconds, got ${v}`);
  }
  return v;
}

/**
 * Opens a TCP connection, mapping failures to DaemonError with the address in the message.
 * `holdRef` false makes the attempt itself unref'd (background reconnects must not keep a
 * finished program alive).
 */
function openSocket(host: string, port: number, timeoutMs: number, holdRef: boolean): Promise<net.Socket> {
  const where = formatAddress(host, port);
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host, port });
    if (!holdRef) socket.unref();
    const timer = setTimeout(() => {
      cleanup();
      socket.destroy();
      reject(new DaemonError('ETIMEDOUT', `connecting to the daemon at ${where} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    if (!holdRef) timer.unref();
    const onConnect = (): void => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      cleanup();
      socket.destroy();
      reject(new DaemonError(err.code ?? 'ECONNREFUSED', `cannot connect to the daemon at ${where}: ${err.message}`, { cause: err }));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', onError);
    };
    socket.once('connect', onConnect);
    socket.once('error', onError);
  });
}

/**
 * A connection to the control daemon. Make one with {@link DaemonClient.connect}.
 *
 * Errors the daemon answers with reject as DaemonError carrying the daemon's code.
 */
export class DaemonClient extends EventEmitter<DaemonClientEvents> {
  /** The daemon's host. */
  readonly host: string;
  /** The daemon's port. */
  readonly port: number;
  private readonly log: Logger;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly heartbeatMs: number;
  private readonly reconnectEnabled: boolean;
  private readonly token: string | null;
  /**
   * An error the daemon sent with id null (connection limit, idle close, auth failure) just
   * before closing: calls that fail because the socket then closes report it, not ENOTCONN.
   */
  private lastRefusal: DaemonError | null = null;
  private state: State = 'disconnected';
  private socket: net.Socket | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private refHolders = 0;
  private registerArgs: OpArgs['register'] | null = null;
  private registration: Registration | null = null;
  private statsProvider: (() => Record<string, number>) | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private heartbeatInFlight = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectDelayMs = RECONNECT_MIN_MS;
  private closePromise: Promise<void> | null = null;

  private constructor(opts: DaemonClientOptions) {
    super();
    this.host = opts.host;
    this.port = opts.port;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'daemon-client', daemon: formatAddress(opts.host, opts.port) });
    this.connectTimeoutMs = positive('connectTimeoutMs', opts.connectTimeoutMs, 5000);
    this.requestTimeoutMs = positive('requestTimeoutMs', opts.requestTimeoutMs, 10000);
    this.heartbeatMs = positive('heartbeatMs', opts.heartbeatMs, DEFAULT_HEARTBEAT_MS);
    this.reconnectEnabled = opts.reconnect ?? true;
    const token = opts.token === undefined ? readDaemonToken() : opts.token;
    if (token !== undefined && token !== null && typeof token !== 'string') {
      throw new InvalidArgumentError('DaemonClientOptions.token must be a string or null');
    }
    this.token = token ? token : null;
  }

  /**
   * Connects to the daemon. Rejects with DaemonError `ECONNREFUSED` or `ETIMEDOUT` (or the
   * socket's own code, e.g. `ENOTFOUND`) naming the address; with a token, rejects with the
   * daemon's `EACCES` when the token is wrong, or `EMFILE` when the daemon is at its
   * connection limit. A failed first connect is not retried: reconnecting is for connections
   * that worked once.
   */
  static async connect(opts: DaemonClientOptions): Promise<DaemonClient> {
    if (typeof opts !== 'object' || opts === null) throw new InvalidArgumentError('DaemonClientOptions must be an object');
    if (typeof opts.host !== 'string' || opts.host.length === 0) {
      throw new InvalidArgumentError(`DaemonClientOptions.host must be a non-empty string, got ${JSON.stringify(opts.host)}`);
    }
    if (!isValidPort(opts.port)) throw new InvalidArgumentError(`DaemonClientOptions.port must be an integer in 1..65535, got ${opts.port}`);
    const client = new DaemonClient(opts);
    const socket = await openSocket(client.host, client.port, client.connectTimeoutMs, true);
    client.attach(socket);
    if (client.token !== null) {
      try {
        await client.request('hello', { token: client.token }, { internal: true, holdsRef: true, timeoutMs: client.connectTimeoutMs });
      } catch (err) {
        client.state = 'closed';
        socket.destroy();
        throw err;
      }
    }
    client.state = 'ready';
    return client;
  }

  /** `host:port` of the daemon. */
  get address(): string {
    return formatAddress(this.host, this.port);
  }

  /** True while requests can be sent. */
  get connected(): boolean {
    return this.state === 'ready';
  }

  /** The registration held (renewed after a reconnect), or null. */
  get currentRegistration(): Registration | null {
    return this.registration;
  }

  /**
   * Registers this connection's device and starts heartbeats. The same name always gets
   * the same GID and AH number from a daemon (and its state file). One device per client.
   */
  async register(req: { name: string; endpoint: Endpoint; rank?: number | null; incarnation?: number }): Promise<Registration> {
    const args: OpArgs['register'] = { name: req.name, endpoint: { host: req.endpoint?.host, port: req.endpoint?.port }, rank: req.rank ?? null };
    if (req.incarnation !== undefined) args.incarnation = req.incarnation;
    const res = await this.request('register', args);
    this.registerArgs = args;
    this.registration = pickRegistration(res);
    if (res.heartbeatTimeoutMs !== undefined && this.heartbeatMs * 2 > res.heartbeatTimeoutMs) {
      this.log.warn({ heartbeatMs: this.heartbeatMs, daemonTimeoutMs: res.heartbeatTimeoutMs }, 'heartbeat period is more than half the daemon deadline; the device may be declared down');
    }
    this.startHeartbeats();
    return { ...this.registration };
  }

  /** Leaves the fabric cleanly: the device is marked down and peers are told at once. */
  async unregister(): Promise<void> {
    // Stopped first: a heartbeat overtaking the unregister would be answered ENODEV.
    this.stopHeartbeats();
    try {
      await this.request('unregister', {});
    } catch (err) {
      if (this.registerArgs) this.startHeartbeats();
      throw err;
    }
    this.registerArgs = null;
    this.registration = null;
  }

  /** Looks up a device by GID. Rejects `ENOENT` when no such device registered, `EINVAL` for a malformed GID. */
  async resolve(gid: string): Promise<DeviceRecord> {
    const r = await this.request('resolve', { gid });
    return {
      name: r.name,
      gid: r.gid,
      ahn: r.ahn,
      rank: r.rank ?? null,
      endpoint: { host: r.endpoint.host, port: r.endpoint.port },
      up: r.up,
      lastSeenMsAgo: r.lastSeenMsAgo,
      stats: r.stats ?? null,
      incarnation: typeof r.incarnation === 'number' ? r.incarnation : 0,
    };
  }

  /** Stores `value` under `key`, replacing any previous value and waking waiting `get`s. */
  async put(key: string, value: string): Promise<void> {
    await this.request('put', { key, value });
  }

  /**
   * The value under `key`, waiting until some process puts it. Rejects `ETIMEDOUT` after
   * `timeoutMs` (default 30000, at most 600000).
   */
  async get(key: string, timeoutMs?: number): Promise<string> {
    const args: OpArgs['get'] = timeoutMs === undefined ? { key } : { key, timeoutMs };
    const r = await this.request('get', args, { timeoutMs: waitBudget(timeoutMs) });
    return r.value;
  }

  /**
   * Resolves once `n` callers (across all processes) have entered barrier `name`. Barriers
   * are reusable: the next `n` callers form the next round. Rejects `ETIMEDOUT` after
   * `timeoutMs`, having left the round.
   */
  async barrier(name: string, n: number, timeoutMs?: number): Promise<void> {
    const args: OpArgs['barrier'] = timeoutMs === undefined ? { name, n } : { name, n, timeoutMs };
    await this.request('barrier', args, { timeoutMs: waitBudget(timeoutMs) });
  }

  /** Every device registered since the daemon started, up or down, by device index. */
  async list(): Promise<{ fabricId: number; devices: DeviceRecord[] }> {
    const r = await this.request('list', {});
    return { fabricId: r.fabricId, devices: r.devices };
  }

  /** Sets the function whose counters go with each heartbeat (shown by `list`); null stops sending them. */
  setStatsProvider(fn: (() => Record<string, number>) | null): void {
    if (fn !== null && typeof fn !== 'function') throw new InvalidArgumentError('setStatsProvider: expected a function or null');
    this.statsProvider = fn;
  }

  /**
   * Closes the client: pending calls reject with ClosedError, the device is unregistered
   * if the daemon is reachable, the socket is ended, timers are cleared. Idempotent; every
   * call returns the same promise.
   */
  close(): Promise<void> {
    if (!this.closePromise) this.closePromise = this.doClose();
    return this.closePromise;
  }

  private async doClose(): Promise<void> {
    const wasReady = this.state === 'ready';
    this.state = 'closing';
    this.stopHeartbeats();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.rejectAll(() => new ClosedError('daemon client closed'));
    const socket = this.socket;
    if (wasReady && this.registerArgs && socket) {
      try {
        // The device's last words: its counters as it leaves, so `status` after a job shows them.
        const stats = this.lastStats();
        await this.request('unregister', stats ? { stats } : {}, { internal: true, timeoutMs: CLOSE_UNREGISTER_TIMEOUT_MS, holdsRef: true });
      } catch (err) {
        this.log.debug({ err }, 'unregister on close failed');
      }
    }
    this.registerArgs = null;
    this.registration = null;
    if (socket && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        // end() lets the unregister reply drain; destroy() bounds the wait if the daemon
        // never closes its side. Ref'd meanwhile so `await client.close()` returns even
        // when it is the program's last piece of work.
        socket.ref();
        const timer = setTimeout(() => socket.destroy(), CLOSE_UNREGISTER_TIMEOUT_MS);
        timer.unref();
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        socket.end();
      });
    }
    this.socket = null;
    this.state = 'closed';
  }

  // ---- connection ----

  private attach(socket: net.Socket): void {
    this.socket = socket;
    this.lastRefusal = null;
    socket.setNoDelay(true);
    if (this.refHolders === 0) socket.unref();
    else socket.ref();
    const sink: LineSink = {
      line: (text) => this.onLine(text),
      oversize: () => {
        this.log.error(`daemon sent a line longer than ${MAX_REPLY_BYTES} bytes; dropping the connection`);
        socket.destroy();
      },
      badEncoding: () => this.log.warn('daemon sent a line that is not UTF-8; ignored'),
    };
    const splitter = new LineSplitter(MAX_REPLY_BYTES, sink);
    socket.on('data', (chunk: Buffer) => splitter.push(chunk));
    socket.on('error', (err) => this.log.debug({ err }, 'daemon connection error'));
    socket.on('close', () => {
      splitter.stop();
      this.onSocketClosed(socket);
    });
  }

  private onSocketClosed(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.socket = null;
    if (this.state === 'closing' || this.state === 'closed') {
      this.rejectAll(() => new ClosedError('daemon client closed'));
      return;
    }
    const wasReady = this.state === 'ready';
    this.state = 'disconnected';
    this.heartbeatInFlight = false;
    const refusal = this.lastRefusal;
    this.lastRefusal = null;
    this.rejectAll((p) =>
      refusal
        ? new DaemonError(refusal.code, `${p.op}: the daemon at ${this.address} closed the connection: ${refusal.message}`)
        : new DaemonError('ENOTCONN', `${p.op}: connection to the daemon at ${this.address} was lost`),
    );
    if (wasReady) {
      this.log.warn('connection to the daemon lost');
      this.emit('disconnected');
      this.reconnectDelayMs = RECONNECT_MIN_MS;
    }
    if (this.reconnectEnabled) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer || this.state !== 'disconnected') return;
    const delay = this.reconnectDelayMs;
    this.reconnectDelayMs = Math.min(this.reconnectDelayMs * 2, RECONNECT_MAX_MS);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.tryReconnect();
    }, delay);
    this.reconnectTimer.unref();
  }

  private async tryReconnect(): Promise<void> {
    let socket: net.Socket;
    try {
      socket = await openSocket(this.host, this.port, this.connectTimeoutMs, false);
    } catch (err) {
      this.log.debug({ err }, 'reconnect attempt failed');
      this.scheduleReconnect();
      return;
    }
    if (this.state !== 'disconnected') {
      socket.destroy();
      return;
    }
    this.attach(socket);
    if (this.token !== null) {
      try {
        await this.request('hello', { token: this.token }, { internal: true, holdsRef: false });
      } catch (err) {
        if (this.state === 'disconnected') this.log.warn({ err }, 'hello after reconnect failed; retrying');
        if (this.socket === socket) socket.destroy();
        return;
      }
      if (this.state !== 'disconnected' || this.socket !== socket) return;
    }
    const args = this.registerArgs;
    if (args) {
      try {
        const res = await this.request('register', args, { internal: true, holdsRef: false });
        const previous = this.registration;
        this.registration = pickRegistration(res);
        if (previous && previous.gid !== this.registration.gid) {
          this.log.warn({ name: args.name, before: previous.gid, after: this.registration.gid }, 'the daemon gave this device a new GID (was it restarted without its state file?)');
        }
      } catch (err) {
        if (this.state === 'disconnected') this.log.warn({ err, name: args.name }, 're-register after reconnect failed; retrying');
        // Closing the socket sends us back through onSocketClosed, which schedules the next try.
        if (this.socket === socket) socket.destroy();
        return;
      }
    }
    if (this.state !== 'disconnected' || this.socket !== socket) return;
    this.state = 'ready';
    this.reconnectDelayMs = RECONNECT_MIN_MS;
    this.log.info('reconnected to the daemon');
    this.emit('reconnected', this.registration ? { ...this.registration } : null);
  }

  // ---- requests ----

  private request<O extends Op>(op: O, args: OpArgs[O], opts: RequestOptions = {}): Promise<OpResults[O]> {
    if (this.state === 'closing' || this.state === 'closed') {
      if (!opts.internal) return Promise.reject(new ClosedError(`${op}: daemon client closed`));
    } else if (this.state !== 'ready' && !opts.internal) {
      return Promise.reject(new DaemonError('ENOTCONN', `${op}: not connected to the daemon at ${this.address} (reconnecting)`));
    }
    const socket = this.socket;
    if (!socket || socket.destroyed) {
      return Promise.reject(new DaemonError('ENOTCONN', `${op}: not connected to the daemon at ${this.address}`));
    }
    const id = this.nextId++;
    const line = encodeLine({ id, op, ...args });
    const bytes = Buffer.byteLength(line) - 1;
    if (bytes > MAX_LINE_BYTES) {
      return Promise.reject(new DaemonError('EMSGSIZE', `${op}: request is ${bytes} bytes, the daemon reads at most ${MAX_LINE_BYTES}`));
    }
    const holdsRef = opts.holdsRef ?? true;
    const timeoutMs = opts.timeoutMs ?? this.requestTimeoutMs;
    return new Promise<OpResults[O]>((resolve, reject) => {
      const p: Pending = {
        op,
        resolve: resolve as (msg: Record<string, unknown>) => void,
        reject,
        timer: null,
        holdsRef,
      };
      p.timer = setTimeout(() => {
        if (this.pending.get(id) !== p) return;
        this.settle(id, p);
        reject(new DaemonError('ETIMEDOUT', `${op}: no reply from the daemon at ${this.address} within ${timeoutMs} ms`));
      }, timeoutMs);
      // The socket (ref'd while a user call is pending) is what keeps the process alive.
      p.timer.unref();
      this.pending.set(id, p);
      if (holdsRef && this.refHolders++ === 0) socket.ref();
      socket.write(line);
    });
  }

  /** Forgets a pending request: its timer and its hold on the process. */
  private settle(id: number, p: Pending): void {
    this.pending.delete(id);
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    if (p.holdsRef && --this.refHolders === 0) this.socket?.unref();
  }

  private rejectAll(makeError: (p: Pending) => Error): void {
    for (const [id, p] of [...this.pending]) {
      this.settle(id, p);
      p.reject(makeError(p));
    }
  }

  private onLine(text: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      this.log.warn('daemon sent a line that is not JSON; ignored');
      return;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return;
    const m = msg as Record<string, unknown>;
    if (typeof m.event === 'string') {
      this.onEvent(m);
      return;
    }
    const id = m.id;
    if (typeof id !== 'number') {
      const err = m.error as { code?: unknown; message?: unknown } | undefined;
      this.log.warn({ code: err?.code, message: err?.message }, 'daemon reported an error not tied to a request');
      if (typeof err?.code === 'string') this.lastRefusal = new DaemonError(err.code, typeof err.message === 'string' ? err.message : err.code);
      return;
    }
    const p = this.pending.get(id);
    if (!p) return; // answered after our own timeout: nobody waits for it any more
    this.settle(id, p);
    if (m.ok === true) {
      p.resolve(m);
      return;
    }
    const body = (typeof m.error === 'object' && m.error !== null ? m.error : {}) as { code?: unknown; message?: unknown };
    const code = typeof body.code === 'string' ? body.code : 'EIO';
    const message = typeof body.message === 'string' ? body.message : 'daemon returned an error without a message';
    p.reject(new DaemonError(code, message));
  }

  private onEvent(m: Record<string, unknown>): void {
    if (typeof m.name !== 'string' || typeof m.gid !== 'string') return;
    if (m.event === 'peer_down') {
      this.emit('peer_down', { name: m.name, gid: m.gid });
    } else if (m.event === 'peer_up') {
      const ep = m.endpoint as Endpoint | undefined;
      if (!ep || typeof ep.host !== 'string' || typeof ep.port !== 'number') return;
      const incarnation = typeof m.incarnation === 'number' ? m.incarnation : 0;
      this.emit('peer_up', { name: m.name, gid: m.gid, endpoint: { host: ep.host, port: ep.port }, incarnation });
    }
    // Unknown events are ignored: a newer daemon may announce more than we understand.
  }

  // ---- heartbeats ----

  private startHeartbeats(): void {
    if (this.heartbeatTimer) return;
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.heartbeatMs);
    this.heartbeatTimer.unref();
  }

  private stopHeartbeats(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  private lastStats(): Record<string, number> | undefined {
    if (!this.statsProvider) return undefined;
    try {
      return finiteOnly(this.statsProvider());
    } catch (err) {
      this.log.warn({ err }, 'stats provider threw; leaving without last counters');
      return undefined;
    }
  }

  private heartbeat(): void {
    // One at a time: a slow daemon must not collect a queue of heartbeats from us.
    if (this.state !== 'ready' || !this.registerArgs || this.heartbeatInFlight) return;
    let stats: Record<string, number> | undefined;
    if (this.statsProvider) {
      try {
        stats = finiteOnly(this.statsProvider());
      } catch (err) {
        this.log.warn({ err }, 'stats provider threw; heartbeat sent without stats');
      }
    }
    this.heartbeatInFlight = true;
    this.request('heartbeat', stats ? { stats } : {}, { holdsRef: false }).then(
      () => {
        this.heartbeatInFlight = false;
      },
      (err: DaemonError) => {
        this.heartbeatInFlight = false;
        if (err.code === 'ENOTCONN' || err.code === 'ECLOSED') return;
        if (err.code === 'ENODEV' && this.registerArgs) {
          // The daemon gave our name to another connection after we missed the deadline.
          // Reclaiming it (here or on reconnect) would fight the new owner, so let it go.
          this.log.error({ name: this.registerArgs.name }, 'the daemon no longer has our device registered (taken over after missed heartbeats); heartbeats stopped');
          this.stopHeartbeats();
          this.registerArgs = null;
          this.registration = null;
          return;
        }
        this.log.warn({ err }, 'heartbeat failed');
      },
    );
  }
}

function pickRegistration(r: RegisterResult): Registration {
  return { gid: r.gid, ahn: r.ahn, fabricId: r.fabricId, deviceIndex: r.deviceIndex };
}

/** Our own deadline for a wait the daemon times out itself. */
function waitBudget(timeoutMs: number | undefined): number {
  const t = typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs >= 0 ? timeoutMs : DEFAULT_WAIT_TIMEOUT_MS;
  return t + WAIT_SLACK_MS;
}

function finiteOnly(stats: Record<string, number> | null | undefined): Record<string, number> | undefined {
  if (!stats || typeof stats !== 'object') return undefined;
  const out: [string, number][] = [];
  for (const [k, v] of Object.entries(stats)) if (typeof v === 'number' && Number.isFinite(v)) out.push([k, v]);
  return Object.fromEntries(out);
}

/**
 * Parses a daemon address: `host:port`, `:port` or `port` (host defaults to 127.0.0.1),
 * or `[v6host]:port`. Throws InvalidArgumentError for anything else.
 */
export function parseDaemonAddress(text: string): { host: string; port: number } {
  if (typeof text !== 'string') throw new InvalidArgumentError('daemon address must be a string like 127.0.0.1:18515');
  const s = text.trim();
  const bad = (why: string): never => {
    throw new InvalidArgumentError(`daemon address ${JSON.stringify(text)} is not valid: ${why} (expected host:port, :port or port, e.g. 127.0.0.1:${DEFAULT_DAEMON_PORT})`);
  };
  let host = '127.0.0.1';
  let portText: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0 || s[close + 1] !== ':') return bad('a bracketed IPv6 host must be followed by :port');
    host = s.slice(1, close);
    if (host === '') bad('empty host');
    portText = s.slice(close + 2);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) {
      portText = s;
    } else {
      if (s.indexOf(':') !== colon) bad('an IPv6 host must be written in brackets, as [::1]:port');
      if (colon > 0) host = s.slice(0, colon);
      portText = s.slice(colon + 1);
    }
  }
  if (!/^[0-9]{1,5}$/.test(portText)) bad('the port is not a number');
  const port = Number(portText);
  if (!isValidPort(port)) bad('the port must be in 1..65535');
  if (/\s/.test(host)) bad('the host contains whitespace');
  return { host, port };
}
