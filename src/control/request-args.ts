/**
 * Reading and checking the arguments of each daemon request. A request is untrusted JSON:
 * every field is read as an own property and checked for type and range here, so the
 * registry and the key/value store work on values they can trust. A bad field throws
 * InvalidArgumentError (`EINVAL`) naming the op and the field.
 */
import { InvalidArgumentError } from '../common/errors';
import { formatGid, parseGid } from '../common/gid';
import {
  DEFAULT_WAIT_TIMEOUT_MS,
  MAX_BARRIER_SIZE,
  MAX_KEY_LENGTH,
  MAX_NAME_LENGTH,
  MAX_VALUE_BYTES,
  MAX_WAIT_TIMEOUT_MS,
  isValidDeviceName,
  isValidPort,
  ownField,
  type Endpoint,
} from './protocol';

/** Longest endpoint host name accepted (a DNS name is at most 253 characters). */
const MAX_HOST_LENGTH = 255;
/** Stats keys accepted per heartbeat. */
const MAX_STATS_KEYS = 256;

/** A `register` request, checked. */
export interface RegisterRequest {
  name: string;
  endpoint: Endpoint;
  rank: number | null;
  /** 0 when the request gave none. */
  incarnation: number;
}

/** A `get` request, checked. */
export interface GetRequest {
  key: string;
  timeoutMs: number;
}

/** A `barrier` request, checked. */
export interface BarrierRequest {
  name: string;
  n: number;
  timeoutMs: number;
}

/** A `put` request, checked. */
export interface PutRequest {
  key: string;
  value: string;
}

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

/** The arguments of `register`. */
export function readRegister(req: object): RegisterRequest {
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
  return { name, endpoint, rank, incarnation };
}

/** The optional `stats` of a heartbeat or an unregister. */
export function readStats(op: string, req: object): Record<string, number> | undefined {
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

/** The GID of `resolve`, in canonical text. */
export function readResolveGid(req: object): string {
  const raw = ownField(req, 'gid');
  // 45 characters is the longest IPv6 text; the bound keeps error messages short.
  if (typeof raw !== 'string' || raw.length > 64) invalid('resolve', 'gid', 'must be a GID in IPv6 text');
  return formatGid(parseGid(raw, 'resolve: "gid"'));
}

/** The arguments of `put`. */
export function readPut(req: object): PutRequest {
  const key = readKey('put', req, 'key');
  const value = ownField(req, 'value');
  if (typeof value !== 'string') invalid('put', 'value', 'must be a string');
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > MAX_VALUE_BYTES) invalid('put', 'value', `must be at most ${MAX_VALUE_BYTES} bytes, got ${bytes}`);
  return { key, value };
}

/** The arguments of `get`. */
export function readGet(req: object): GetRequest {
  const key = readKey('get', req, 'key');
  return { key, timeoutMs: readTimeout('get', req) };
}

/** The arguments of `barrier`. */
export function readBarrier(req: object): BarrierRequest {
  const name = readKey('barrier', req, 'name');
  const n = ownField(req, 'n');
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_BARRIER_SIZE) {
    invalid('barrier', 'n', `must be an integer in 1..${MAX_BARRIER_SIZE}`);
  }
  return { name, n, timeoutMs: readTimeout('barrier', req) };
}
