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
 *
 * This module is the public API and the reconnect policy; one connection's requests and
 * replies are an RpcChannel (rpc-channel.ts), heartbeats a Heartbeater (heartbeat.ts). All
 * timers run on the Clock given in the options.
 */
import { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import { ClosedError, DaemonError, InvalidArgumentError } from '../common/errors';
import { silentLogger, type Logger } from '../common/logger';
import { readDaemonToken } from '../env';
import { checkClock, type Clock, type ClockTimer } from './clock';
import { Heartbeater } from './heartbeat';
import {
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_WAIT_TIMEOUT_MS,
  formatAddress,
  isValidPort,
  type DeviceRecord,
  type Endpoint,
  type OpArgs,
  type OpResults,
  type Op,
  type RegisterResult,
} from './protocol';
import { openSocket, RpcChannel } from './rpc-channel';

export { parseDaemonAddress } from './daemon-address';

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
  /**
   * The time source of every timer: connect and request timeouts, heartbeats, reconnect
   * back-off. Default the real one; tests pass a `ManualClock` to move time by hand.
   */
  clock?: Clock;
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
/** Reconnect back-off: the first retry after this, doubling up to {@link RECONNECT_MAX_MS}. */
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 2000;
/** How long close() waits for the daemon to acknowledge unregister. */
const CLOSE_UNREGISTER_TIMEOUT_MS = 2000;

type State = 'ready' | 'disconnected' | 'closing' | 'closed';

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
  private readonly clock: Clock;
  private readonly connectTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly reconnectEnabled: boolean;
  private readonly token: string | null;
  private readonly heartbeats: Heartbeater;
  private state: State = 'disconnected';
  private channel: RpcChannel | null = null;
  private nextId = 1;
  private registerArgs: OpArgs['register'] | null = null;
  private registration: Registration | null = null;
  private reconnectTimer: ClockTimer | null = null;
  private reconnectDelayMs = RECONNECT_MIN_MS;
  private closePromise: Promise<void> | null = null;

  private constructor(opts: DaemonClientOptions) {
    super();
    this.host = opts.host;
    this.port = opts.port;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'daemon-client', daemon: formatAddress(opts.host, opts.port) });
    this.clock = checkClock(opts.clock, 'DaemonClientOptions.clock');
    this.connectTimeoutMs = positive('connectTimeoutMs', opts.connectTimeoutMs, 5000);
    this.requestTimeoutMs = positive('requestTimeoutMs', opts.requestTimeoutMs, 10000);
    const heartbeatMs = positive('heartbeatMs', opts.heartbeatMs, DEFAULT_HEARTBEAT_MS);
    this.reconnectEnabled = opts.reconnect ?? true;
    const token = opts.token === undefined ? readDaemonToken() : opts.token;
    if (token !== undefined && token !== null && typeof token !== 'string') {
      throw new InvalidArgumentError('DaemonClientOptions.token must be a string or null');
    }
    this.token = token ? token : null;
    this.heartbeats = new Heartbeater(this.clock, heartbeatMs, this.log, {
      canBeat: () => this.state === 'ready' && this.registerArgs !== null,
      send: (stats) => this.request('heartbeat', stats ? { stats } : {}, { holdsRef: false }),
      deviceLost: () => {
        if (!this.registerArgs) return false;
        this.log.error({ name: this.registerArgs.name }, 'the daemon no longer has our device registered (taken over after missed heartbeats); heartbeats stopped');
        this.registerArgs = null;
        this.registration = null;
        return true;
      },
    });
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
    const socket = await openSocket(client.host, client.port, client.connectTimeoutMs, true, client.clock);
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
    if (res.heartbeatTimeoutMs !== undefined && this.heartbeats.periodMs * 2 > res.heartbeatTimeoutMs) {
      this.log.warn({ heartbeatMs: this.heartbeats.periodMs, daemonTimeoutMs: res.heartbeatTimeoutMs }, 'heartbeat period is more than half the daemon deadline; the device may be declared down');
    }
    this.heartbeats.start();
    return { ...this.registration };
  }

  /** Leaves the fabric cleanly: the device is marked down and peers are told at once. */
  async unregister(): Promise<void> {
    // Stopped first: a heartbeat overtaking the unregister would be answered ENODEV.
    this.heartbeats.stop();
    try {
      await this.request('unregister', {});
    } catch (err) {
      if (this.registerArgs) this.heartbeats.start();
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
    this.heartbeats.statsProvider = fn;
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
    this.heartbeats.stop();
    if (this.reconnectTimer) this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const channel = this.channel;
    channel?.rejectAll(() => new ClosedError('daemon client closed'));
    if (wasReady && this.registerArgs && channel) {
      try {
        // The device's last words: its counters as it leaves, so `status` after a job shows them.
        const stats = this.heartbeats.readStats('stats provider threw; leaving without last counters');
        await this.request('unregister', stats ? { stats } : {}, { internal: true, timeoutMs: CLOSE_UNREGISTER_TIMEOUT_MS, holdsRef: true });
      } catch (err) {
        this.log.debug({ err }, 'unregister on close failed');
      }
    }
    this.registerArgs = null;
    this.registration = null;
    if (channel) await channel.end(CLOSE_UNREGISTER_TIMEOUT_MS);
    this.channel = null;
    this.state = 'closed';
  }

  // ---- connection ----

  private attach(socket: net.Socket): void {
    this.channel = new RpcChannel(socket, {
      clock: this.clock,
      log: this.log,
      address: this.address,
      nextId: () => this.nextId++,
      onEvent: (m) => this.onEvent(m),
      onClose: (channel) => this.onChannelClosed(channel),
    });
  }

  private onChannelClosed(channel: RpcChannel): void {
    if (channel !== this.channel) {
      channel.rejectAll((p) => new DaemonError('ENOTCONN', `${p.op}: connection to the daemon at ${this.address} was lost`));
      return;
    }
    this.channel = null;
    if (this.state === 'closing' || this.state === 'closed') {
      channel.rejectAll(() => new ClosedError('daemon client closed'));
      return;
    }
    const wasReady = this.state === 'ready';
    this.state = 'disconnected';
    this.heartbeats.connectionLost();
    const refusal = channel.refusal;
    channel.rejectAll((p) =>
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
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = null;
      void this.tryReconnect();
    }, delay);
    this.reconnectTimer.unref();
  }

  private async tryReconnect(): Promise<void> {
    let socket: net.Socket;
    try {
      socket = await openSocket(this.host, this.port, this.connectTimeoutMs, false, this.clock);
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
    const channel = this.channel;
    if (this.token !== null) {
      try {
        await this.request('hello', { token: this.token }, { internal: true, holdsRef: false });
      } catch (err) {
        if (this.state === 'disconnected') this.log.warn({ err }, 'hello after reconnect failed; retrying');
        if (this.channel === channel) socket.destroy();
        return;
      }
      if (this.state !== 'disconnected' || this.channel !== channel) return;
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
        // Closing the socket sends us back through onChannelClosed, which schedules the next try.
        if (this.channel === channel) socket.destroy();
        return;
      }
    }
    if (this.state !== 'disconnected' || this.channel !== channel) return;
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
    const channel = this.channel;
    if (!channel || !channel.open) {
      return Promise.reject(new DaemonError('ENOTCONN', `${op}: not connected to the daemon at ${this.address}`));
    }
    return channel.call(op, args, opts.timeoutMs ?? this.requestTimeoutMs, opts.holdsRef ?? true);
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
}

function pickRegistration(r: RegisterResult): Registration {
  return { gid: r.gid, ahn: r.ahn, fabricId: r.fabricId, deviceIndex: r.deviceIndex };
}

/** Our own deadline for a wait the daemon times out itself. */
function waitBudget(timeoutMs: number | undefined): number {
  const t = typeof timeoutMs === 'number' && Number.isFinite(timeoutMs) && timeoutMs >= 0 ? timeoutMs : DEFAULT_WAIT_TIMEOUT_MS;
  return t + WAIT_SLACK_MS;
}
