/**
 * What a rank learns from its environment: who it is, how many ranks there are, where the
 * daemon is, and which faults to inject.
 *
 * `efa-emu launch` sets the `EFA_EMU_*` variables; when a rank is started by another launcher
 * (a shell loop, Slurm's `srun`, Open MPI's `mpirun`, a PMI launcher), their own rank/size
 * variables are accepted so no wrapper script is needed.
 */
import { isIP, SocketAddress } from 'node:net';
import { InvalidArgumentError } from './common/errors';
import { CC_MODES, type CcMode } from './srd/srd-config';
import { MAX_PATHS } from './wire/header';

/** Daemon address, `host:port`, `:port` or `port`. */
export const ENV_DAEMON = 'EFA_EMU_DAEMON';
/** This process's rank, 0-based. */
export const ENV_RANK = 'EFA_EMU_RANK';
/** Number of ranks in the job. */
export const ENV_SIZE = 'EFA_EMU_SIZE';
/** Fault spec applied to this process's device (same syntax as `--faults`). */
export const ENV_FAULTS = 'EFA_EMU_FAULTS';
/**
 * SRD tunables for this process's device, `key=value` pairs named as in SrdConfig
 * (`window=32,unresponsiveTimeoutMs=300`): how a simulation's failing seed is replayed with
 * real processes.
 */
export const ENV_SRD = 'EFA_EMU_SRD';
/**
 * SRD paths each device keeps to each peer (1..64, see SrdConfig.paths); wins over a
 * `paths=` in {@link ENV_SRD}.
 */
export const ENV_PATHS = 'EFA_EMU_PATHS';
/**
 * SRD congestion control of each device: `delay` (or `on`) or `off` (see SrdConfig.cc);
 * wins over a `cc=` in {@link ENV_SRD}.
 */
export const ENV_CC = 'EFA_EMU_CC';
/** The EFA generation a device emulates (`efa0` .. `efa3`); the newest when unset. */
export const ENV_GENERATION = 'EFA_EMU_GENERATION';
/** Device name; the daemon keeps a device's GID stable per name. */
export const ENV_DEVICE_NAME = 'EFA_EMU_DEVICE_NAME';
/**
 * The control daemon's shared token: `efa-emu daemon` requires it when set, and every
 * daemon client sends it (in a `hello`) when set. Ranks inherit it from the launcher's
 * environment, so it is never put on a command line another user could read.
 */
export const ENV_TOKEN = 'EFA_EMU_TOKEN';
/**
 * The address this process's device binds its UDP socket to. The device announces it to the
 * daemon as the endpoint its peers send to, so on several hosts it is this host's address on
 * the network the peers share (`10.0.0.2`); loopback when unset. It must be an IP address of
 * this host: a wildcard (`0.0.0.0`, `::`) would tell every peer to send to itself, and a name
 * would never match the source address a peer's datagrams are checked against.
 */
export const ENV_HOST = 'EFA_EMU_HOST';
/** Doorbell batching: the largest datagram a device packs packets into, or `0`/`off` (see openDevice's `coalesce`). */
export const ENV_COALESCE = 'EFA_EMU_COALESCE';
/** Set to `1` by `efa-emu launch` in every rank it starts. */
export const ENV_LAUNCHED = 'EFA_EMU_LAUNCHED';

/** Where rank numbers are looked for, first found wins. */
export const RANK_VARS = [ENV_RANK, 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK'] as const;
/** Where the world size is looked for, first found wins. */
export const SIZE_VARS = [ENV_SIZE, 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE', 'PMI_SIZE'] as const;

/** The daemon's host when none is given: it binds to loopback by default. */
export const DEFAULT_DAEMON_HOST = '127.0.0.1';
/** The address a device binds when neither `openDevice`'s `host` nor {@link ENV_HOST} names one. */
export const DEFAULT_DEVICE_HOST = '127.0.0.1';
/** The daemon's TCP port when none is given. */
export const DEFAULT_DAEMON_PORT = 18515;

/** A TCP endpoint of the control daemon. */
export interface HostPort {
  host: string;
  port: number;
}

/** Everything a rank reads from its environment; `null` where the variable is absent. */
export interface RankEnv {
  /** 0-based rank, or null when no launcher variable is set. */
  rank: number | null;
  /** World size, or null when no launcher variable is set. */
  size: number | null;
  /** Control daemon address (defaults to 127.0.0.1:18515). */
  daemon: HostPort;
  /** Fault spec string from `EFA_EMU_FAULTS`. */
  faults: string | null;
  /** SRD tunables from `EFA_EMU_SRD` (unparsed). */
  srd: string | null;
  /** Device name from `EFA_EMU_DEVICE_NAME`. */
  deviceName: string | null;
  /** EFA generation from `EFA_EMU_GENERATION`. */
  generation: string | null;
  /** True when started by `efa-emu launch` (`EFA_EMU_LAUNCHED=1`). */
  launched: boolean;
}

const DECIMAL = /^[0-9]+$/;

/**
 * Parses a daemon address: `host:port`, `[ipv6]:port`, `:port` or a bare `port`.
 * The host defaults to 127.0.0.1.
 *
 * @param text - the address text
 * @param what - the name of the variable or option it came from, used in error messages
 * @throws InvalidArgumentError when the text is empty, the port is not an integer in
 *   1..65535, or the host is malformed
 */
export function parseHostPort(text: string, what: string): HostPort {
  const s = text.trim();
  const bad = (why: string): InvalidArgumentError =>
    new InvalidArgumentError(`${what} must be "host:port", ":port" or "port" (${why}), got ${JSON.stringify(text)}`);
  if (s === '') throw bad('empty');

  let host: string;
  let portText: string;
  if (s.startsWith('[')) {
    // Bracketed IPv6 literal, the only way an address with colons in its host can carry a port.
    const close = s.indexOf(']');
    if (close < 0 || s[close + 1] !== ':') throw bad('expected "[ipv6]:port"');
    host = s.slice(1, close);
    portText = s.slice(close + 2);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) {
      host = '';
      portText = s;
    } else {
      host = s.slice(0, colon);
      portText = s.slice(colon + 1);
      if (host.includes(':')) throw bad('an IPv6 host must be in brackets');
    }
  }
  if (/\s/.test(host)) throw bad('the host contains whitespace');
  if (!DECIMAL.test(portText)) throw bad('the port is not a decimal integer');
  const port = Number(portText);
  if (port < 1 || port > 65535) throw bad('the port must be 1..65535');
  return { host: host === '' ? DEFAULT_DAEMON_HOST : host, port };
}

/** Formats an address so that {@link parseHostPort} reads it back (IPv6 hosts get brackets). */
export function formatHostPort(addr: HostPort): string {
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

/**
 * Reads the rank's identity and settings from `env`.
 *
 * Each of rank and size comes from the first variable of its list that is set and non-empty
 * ({@link RANK_VARS}, {@link SIZE_VARS}); an empty variable counts as unset, as a shell's
 * `VAR= cmd` intends.
 *
 * @throws InvalidArgumentError naming the variable when a rank is not a non-negative integer,
 *   a size is not a positive integer, the rank is not below the size, or the daemon address is
 *   malformed
 */
export function readRankEnv(env: NodeJS.ProcessEnv = process.env): RankEnv {
  const rank = readInt(env, RANK_VARS, 0);
  const size = readInt(env, SIZE_VARS, 1);
  if (rank && size && rank.value >= size.value) {
    throw new InvalidArgumentError(
      `${rank.name}=${rank.value} must be less than the world size ${size.name}=${size.value}`,
    );
  }
  const daemonText = nonEmpty(env[ENV_DAEMON]);
  const daemon =
    daemonText === null ? { host: DEFAULT_DAEMON_HOST, port: DEFAULT_DAEMON_PORT } : parseHostPort(daemonText, ENV_DAEMON);
  return {
    rank: rank ? rank.value : null,
    size: size ? size.value : null,
    daemon,
    faults: nonEmpty(env[ENV_FAULTS]),
    srd: nonEmpty(env[ENV_SRD]),
    deviceName: nonEmpty(env[ENV_DEVICE_NAME]),
    generation: nonEmpty(env[ENV_GENERATION]),
    launched: env[ENV_LAUNCHED] === '1',
  };
}

/**
 * Checks a number of SRD paths (an option's value).
 *
 * @throws InvalidArgumentError naming `what` unless it is an integer 1..64
 */
export function checkPaths(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_PATHS) {
    throw new InvalidArgumentError(`${what} must be an integer in 1..${MAX_PATHS}, got ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`);
  }
  return value;
}

/**
 * Parses a number of SRD paths from text (a variable or a flag).
 *
 * @throws InvalidArgumentError naming `what` unless it is a decimal integer 1..64
 */
export function parsePaths(text: string, what: string): number {
  const s = text.trim();
  const n = Number(s);
  if (!DECIMAL.test(s) || n < 1 || n > MAX_PATHS) throw new InvalidArgumentError(`${what} must be an integer in 1..${MAX_PATHS}, got ${JSON.stringify(text)}`);
  return n;
}

/** The words a congestion-control setting may be given as: the modes, and `on` for `delay`. */
export const CC_WORDS = [...CC_MODES, 'on'] as const;

/**
 * Reads a congestion-control mode: `delay`, `off`, or `on` (the same as `delay`).
 *
 * @throws InvalidArgumentError naming `what` for anything else
 */
export function parseCcMode(value: unknown, what: string): CcMode {
  const s = typeof value === 'string' ? value.trim().toLowerCase() : value;
  if (s === 'on') return 'delay';
  if (typeof s === 'string' && (CC_MODES as readonly string[]).includes(s)) return s as CcMode;
  throw new InvalidArgumentError(`${what} must be one of ${CC_WORDS.join(', ')} (on = delay), got ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`);
}

/**
 * The number of SRD paths from {@link ENV_PATHS}, or null when unset or empty.
 *
 * @throws InvalidArgumentError naming the variable when it is not an integer 1..64
 */
export function readPathsEnv(env: NodeJS.ProcessEnv = process.env): number | null {
  const v = nonEmpty(env[ENV_PATHS]);
  return v === null ? null : parsePaths(v, ENV_PATHS);
}

/**
 * The congestion-control mode from {@link ENV_CC}, or null when unset or empty.
 *
 * @throws InvalidArgumentError naming the variable when it is not delay, on or off
 */
export function readCcEnv(env: NodeJS.ProcessEnv = process.env): CcMode | null {
  const v = nonEmpty(env[ENV_CC]);
  return v === null ? null : parseCcMode(v, ENV_CC);
}

/**
 * The variables `efa-emu launch` gives one rank. Other launchers (tests, scripts) can use it
 * to start ranks the same way.
 */
export function rankEnvVars(opts: {
  rank: number;
  size: number;
  daemon: HostPort;
  faults?: string | null;
  generation?: string | null;
  /** SRD paths ({@link ENV_PATHS}). */
  paths?: number | null;
  /** SRD congestion control ({@link ENV_CC}). */
  cc?: CcMode | null;
}): Record<string, string> {
  const vars: Record<string, string> = {
    [ENV_DAEMON]: formatHostPort(opts.daemon),
    [ENV_RANK]: String(opts.rank),
    [ENV_SIZE]: String(opts.size),
    [ENV_LAUNCHED]: '1',
  };
  if (opts.faults !== undefined && opts.faults !== null) vars[ENV_FAULTS] = opts.faults;
  if (opts.generation !== undefined && opts.generation !== null) vars[ENV_GENERATION] = opts.generation;
  if (opts.paths !== undefined && opts.paths !== null) vars[ENV_PATHS] = String(opts.paths);
  if (opts.cc !== undefined && opts.cc !== null) vars[ENV_CC] = opts.cc;
  return vars;
}

/** The daemon token from {@link ENV_TOKEN}, or null when unset or empty. */
export function readDaemonToken(env: NodeJS.ProcessEnv = process.env): string | null {
  const v = env[ENV_TOKEN];
  return v === undefined || v === '' ? null : v;
}

/**
 * Checks a device bind address and returns it in the form the kernel reports source addresses
 * (`0:0::1` becomes `::1`), since peers compare the two as strings.
 *
 * @param text - the address text
 * @param what - the name of the variable or option it came from, used in error messages
 * @throws InvalidArgumentError when the text is not an IPv4 or IPv6 address, is a wildcard
 *   (`0.0.0.0`, `::`), or carries an IPv6 zone (`fe80::1%eth0`)
 */
export function parseDeviceHost(text: string, what: string): string {
  const s = text.trim();
  const bad = (why: string): InvalidArgumentError => new InvalidArgumentError(`${what} must be an IP address of this host that peers can reach (${why}), got ${JSON.stringify(text)}`);
  // A zone only means something on this host; a peer told to send to fe80::1%eth0 would
  // use its own eth0, or fail.
  if (s.includes('%')) throw bad('an IPv6 zone cannot be announced to peers');
  const family = isIP(s);
  if (family === 0) throw bad('not an IPv4 or IPv6 address; a name would never match the source address peers check');
  const canonical = new SocketAddress({ address: s, family: family === 4 ? 'ipv4' : 'ipv6' }).address;
  if (canonical === '0.0.0.0' || canonical === '::') {
    throw bad('a wildcard is announced to peers as it is, and they cannot send to it; bind the address of the interface they reach');
  }
  return canonical;
}

/**
 * The device bind address from {@link ENV_HOST}, checked as {@link parseDeviceHost} does, or
 * null when unset or empty.
 *
 * @throws InvalidArgumentError naming `EFA_EMU_HOST` when it is set to something else than an
 *   IP address a device can announce
 */
export function readDeviceHost(env: NodeJS.ProcessEnv = process.env): string | null {
  const v = nonEmpty(env[ENV_HOST]);
  return v === null ? null : parseDeviceHost(v, ENV_HOST);
}

function nonEmpty(v: string | undefined): string | null {
  return v === undefined || v.trim() === '' ? null : v;
}

function readInt(
  env: NodeJS.ProcessEnv,
  names: readonly string[],
  min: number,
): { name: string; value: number } | null {
  for (const name of names) {
    const raw = nonEmpty(env[name]);
    if (raw === null) continue;
    const s = raw.trim();
    const value = Number(s);
    if (!DECIMAL.test(s) || !Number.isSafeInteger(value) || value < min) {
      const kind = min === 0 ? 'a non-negative integer' : 'a positive integer';
      throw new InvalidArgumentError(`${name} must be ${kind}, got ${JSON.stringify(raw)}`);
    }
    return { name, value };
  }
  return null;
}
