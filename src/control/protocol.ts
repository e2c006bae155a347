/**
 * The control daemon's wire protocol: newline-delimited JSON over TCP, one UTF-8 JSON object
 * per line.
 *
 * ```
 * request   {"id": 7, "op": "resolve", "gid": "fe80::1a2b:3c4d:0:2"}
 * reply     {"id": 7, "ok": true, "name": "rank1", ...}
 * error     {"id": 7, "ok": false, "error": {"code": "ENOENT", "message": "..."}}
 *           ("id" is null when the request could not be read far enough to know it)
 * event     {"event": "peer_down", "name": "rank1", "gid": "fe80::1a2b:3c4d:0:2"}
 * ```
 *
 * Events carry no `id`; they are pushed to every connection that registered a device, except
 * the connection owning the device the event is about.
 *
 * A daemon started with a token requires `{"id": 1, "op": "hello", "token": "..."}` as the
 * first request of a connection; until then every request is answered `EACCES`, and the
 * connection is closed after {@link MAX_AUTH_FAILURES} of them. Errors about the connection
 * itself (connection limit `EMFILE`, idle close `ETIMEDOUT`) carry id null and are the last
 * line before the daemon closes it.
 *
 * This module holds only types, limits and the checks both sides share; it does no I/O.
 */

/** A UDP endpoint of a device's data path, as the device announced it. */
export interface Endpoint {
  host: string;
  port: number;
}

/** What the daemon knows about one device, as `resolve` and `list` report it. */
export interface DeviceRecord {
  name: string;
  /** The device's GID in canonical IPv6 text. */
  gid: string;
  /** The fabric-wide address-handle number of the device (1..0xFFFE). */
  ahn: number;
  rank: number | null;
  endpoint: Endpoint;
  /**
   * The incarnation the device registered with (uint32, grows with every restart of the
   * process behind the name), or 0 when it gave none. SRD stamps it into data packets so a
   * restarted process never receives messages meant for its predecessor.
   */
  incarnation: number;
  /** False after a clean leave, a closed connection or a missed heartbeat deadline. */
  up: boolean;
  /** Milliseconds since the last register or heartbeat of the device. */
  lastSeenMsAgo: number;
  /** The counters the device sent with its latest heartbeat, or null before the first. */
  stats: Record<string, number> | null;
}

/** Largest request line the daemon reads, in bytes, newline excluded. */
export const MAX_LINE_BYTES = 65536;
/** The daemon port the CLI and launcher use when none is given. */
export const DEFAULT_DAEMON_PORT = 18515;
/** How often a registered client sends a heartbeat. */
export const DEFAULT_HEARTBEAT_MS = 1000;
/** How long the daemon waits for a heartbeat before it declares a device down. */
export const DEFAULT_HEARTBEAT_TIMEOUT_MS = 3000;
/** Longest device name. */
export const MAX_NAME_LENGTH = 64;
/** Longest key/value key and barrier name, in characters. */
export const MAX_KEY_LENGTH = 256;
/**
 * Largest key/value value, in UTF-8 bytes. A request line is itself capped at
 * {@link MAX_LINE_BYTES}, so in practice a value must leave room for the request envelope.
 */
export const MAX_VALUE_BYTES = 65536;
/** `get` and `barrier` wait this long when the request names no `timeoutMs`. */
export const DEFAULT_WAIT_TIMEOUT_MS = 30000;
/** Upper bound on a `get` or `barrier` `timeoutMs`. */
export const MAX_WAIT_TIMEOUT_MS = 600000;
/** Largest AH number handed out; 0xFFFF is reserved (it means "no AH" in completions). */
export const MAX_AHN = 0xfffe;
/** Largest barrier size accepted; a guard against nonsense, far above any real job. */
export const MAX_BARRIER_SIZE = 1 << 20;
/** Connections the daemon serves at once unless told otherwise; one more is refused with `EMFILE`. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/**
 * Device names the daemon leases in total unless told otherwise; a new name beyond it is
 * refused with `ENOSPC`. Equal to the number of AH numbers, the hard ceiling anyway.
 */
export const DEFAULT_MAX_DEVICES = MAX_AHN;
/**
 * How long a new connection may stay without a successful request (with a token: without
 * a successful `hello`) before the daemon closes it, unless told otherwise.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 60000;
/** Failed requests before authenticating after which the daemon closes the connection. */
export const MAX_AUTH_FAILURES = 3;
/** Longest shared token accepted, in characters. */
export const MAX_TOKEN_LENGTH = 1024;

/** The protocol limits and defaults in one frozen object, for callers that prefer a namespace. */
export const PROTOCOL = Object.freeze({
  MAX_LINE_BYTES,
  DEFAULT_DAEMON_PORT,
  DEFAULT_HEARTBEAT_MS,
  DEFAULT_HEARTBEAT_TIMEOUT_MS,
  MAX_NAME_LENGTH,
  MAX_KEY_LENGTH,
  MAX_VALUE_BYTES,
  DEFAULT_WAIT_TIMEOUT_MS,
  MAX_WAIT_TIMEOUT_MS,
  MAX_AHN,
  MAX_BARRIER_SIZE,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_DEVICES,
  DEFAULT_IDLE_TIMEOUT_MS,
  MAX_AUTH_FAILURES,
  MAX_TOKEN_LENGTH,
});

/**
 * The error codes the daemon replies with. Clients branch on these, so they never change
 * meaning; messages are for humans and may.
 */
export const DAEMON_ERROR_CODES = Object.freeze({
  /** The line was not JSON (or not UTF-8). */
  EBADMSG: 'EBADMSG',
  /** Not an object, missing op, or an argument of the wrong type or range; the message names it. */
  EINVAL: 'EINVAL',
  /** Unknown op. */
  ENOSYS: 'ENOSYS',
  /** The line was longer than MAX_LINE_BYTES; it was discarded. */
  EMSGSIZE: 'EMSGSIZE',
  /** No device with that GID has registered since the daemon started. */
  ENOENT: 'ENOENT',
  /** The device name is up and owned by another live connection. */
  EADDRINUSE: 'EADDRINUSE',
  /** This connection already registered a device. */
  EALREADY: 'EALREADY',
  /** This connection has no device (heartbeat before register, or the name was taken over). */
  ENODEV: 'ENODEV',
  /**
   * The daemon's device limit (`maxDevices`) is reached, AH numbers or device indexes are
   * exhausted, or the key/value store is full; the message names the limit.
   */
  ENOSPC: 'ENOSPC',
  /**
   * The daemon serves `maxConnections` connections already: sent with id null on the new
   * connection, which is then closed.
   */
  EMFILE: 'EMFILE',
  /**
   * The daemon requires a token and this connection has not sent a `hello` with the right
   * one. After {@link MAX_AUTH_FAILURES} such replies the connection is closed.
   */
  EACCES: 'EACCES',
  /**
   * A get or barrier wait ran out of time; or (id null) the connection sent no successful
   * request within the daemon's `idleTimeoutMs` and is being closed.
   */
  ETIMEDOUT: 'ETIMEDOUT',
  /** Too many waits outstanding on one connection. */
  EAGAIN: 'EAGAIN',
  /** The daemon could not persist its state, or hit an internal error. */
  EIO: 'EIO',
} as const);

export type DaemonErrorCode = (typeof DAEMON_ERROR_CODES)[keyof typeof DAEMON_ERROR_CODES];

/** The operations the daemon serves. */
export const OPS = ['hello', 'register', 'unregister', 'heartbeat', 'resolve', 'put', 'get', 'barrier', 'list'] as const;
export type Op = (typeof OPS)[number];

// ---- requests (the `id` and `op` fields are added by the client) ----

/**
 * The first request of a connection to a daemon started with a token. The token is compared
 * in constant time. A daemon without a token answers any hello with ok (the token, if any,
 * is ignored), so a client may always send it.
 */
export interface HelloArgs {
  token?: string;
}
export interface RegisterArgs {
  name: string;
  endpoint: Endpoint;
  rank?: number | null;
  /** uint32; see DeviceRecord.incarnation. */
  incarnation?: number;
}
export interface HeartbeatArgs {
  stats?: Record<string, number>;
}
/** A clean leave may carry the device's last counters, so `list` shows its final figures. */
export interface UnregisterArgs {
  stats?: Record<string, number>;
}
export interface ResolveArgs {
  gid: string;
}
export interface PutArgs {
  key: string;
  value: string;
}
export interface GetArgs {
  key: string;
  timeoutMs?: number;
}
export interface BarrierArgs {
  name: string;
  n: number;
  timeoutMs?: number;
}
/** The arguments or result of an op that has none. */
export type EmptyArgs = Record<never, never>;

/** The arguments of each op. */
export interface OpArgs {
  hello: HelloArgs;
  register: RegisterArgs;
  unregister: UnregisterArgs;
  heartbeat: HeartbeatArgs;
  resolve: ResolveArgs;
  put: PutArgs;
  get: GetArgs;
  barrier: BarrierArgs;
  list: EmptyArgs;
}

/** A request as it travels: `{id, op, ...args}`. */
export type Request<O extends Op = Op> = { id: number; op: O } & OpArgs[O];

// ---- results (an ok reply is `{id, ok: true, ...result}`) ----

export interface RegisterResult {
  gid: string;
  ahn: number;
  fabricId: number;
  deviceIndex: number;
  /**
   * The daemon's heartbeat deadline, so a client can warn when its own interval is too
   * long to keep the device up. Informational.
   */
  heartbeatTimeoutMs?: number;
}
export interface HelloResult {
  /** Whether this daemon requires a token (and so checked the one sent). */
  tokenRequired: boolean;
}
export interface GetResult {
  value: string;
}
export interface ListResult {
  fabricId: number;
  devices: DeviceRecord[];
}

/** The result of each op. */
export interface OpResults {
  hello: HelloResult;
  register: RegisterResult;
  unregister: EmptyArgs;
  heartbeat: EmptyArgs;
  resolve: DeviceRecord;
  put: EmptyArgs;
  get: GetResult;
  barrier: EmptyArgs;
  list: ListResult;
}

export type OkReply<O extends Op = Op> = { id: number; ok: true } & OpResults[O];

export interface ErrorBody {
  code: string;
  message: string;
}
export interface ErrorReply {
  id: number | null;
  ok: false;
  error: ErrorBody;
}
export type Reply = OkReply | ErrorReply;

// ---- events ----

export interface PeerDownEvent {
  event: 'peer_down';
  name: string;
  gid: string;
}
export interface PeerUpEvent {
  event: 'peer_up';
  name: string;
  gid: string;
  endpoint: Endpoint;
  incarnation: number;
}
export type DaemonEvent = PeerDownEvent | PeerUpEvent;

// ---- shared checks ----

const NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** True when `name` is a valid device name: 1..64 characters of `[A-Za-z0-9._-]`. */
export function isValidDeviceName(name: unknown): name is string {
  return typeof name === 'string' && NAME_RE.test(name);
}

/** True when `port` is a TCP/UDP port a peer can be reached on (1..65535). */
export function isValidPort(port: unknown): port is number {
  return typeof port === 'number' && Number.isInteger(port) && port >= 1 && port <= 65535;
}

/**
 * Reads an own property of a parsed JSON object. Request fields are looked up through this
 * so that a field missing from the request can never be answered by `Object.prototype`
 * (`constructor`, `toString`, `__proto__`, ...).
 */
export function ownField(obj: object, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(obj, key) ? (obj as Record<string, unknown>)[key] : undefined;
}

/** Formats `host:port`, bracketing IPv6 hosts so the text reads back unambiguously. */
export function formatAddress(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
