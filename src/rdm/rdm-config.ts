import { InvalidArgumentError } from '../common/errors';

/** How the endpoint makes progress. */
export type RdmProgressMode = 'event' | 'busy' | 'manual';

/** Tunables of an RDM endpoint; each named after the efa provider's variable that sets it. */
export interface RdmConfig {
  /**
   * Largest message sent whole in one eager packet. Default (0): the device MTU minus the
   * eager header, as the provider computes it.
   */
  eagerMaxSize: number;
  /** Messages up to this size go medium: several packets sent at once (FI_EFA_INTER_MAX_MEDIUM_MESSAGE_SIZE). */
  mediumMaxSize: number;
  /**
   * Messages of at least this size go long-read (the receiver pulls them with RDMA read) when
   * both devices can read; smaller ones above medium go long-CTS (FI_EFA_INTER_MIN_READ_MESSAGE_SIZE).
   */
  readMinSize: number;
  /** Use RDMA read at all (FI_EFA_USE_DEVICE_RDMA). */
  useDeviceRdma: boolean;
  /** Packets the endpoint may have at the device at once (FI_EFA_TX_SIZE). */
  txSize: number;
  /** Receive buffers kept posted (FI_EFA_RX_SIZE). */
  rxSize: number;
  /** Long-CTS: packets' worth of data one CTS grants (FI_EFA_TX_MIN_CREDITS). */
  ctsCredits: number;
  /** The device's own RNR retries before it reports RNR to the endpoint (fi_setopt FI_OPT_EFA_RNR_RETRY). */
  rnrRetry: number;
  /**
   * A packet's second RNR puts its peer in back-off: nothing is sent to it for this long
   * (0: a random 40..120 us, as the provider's default), doubling per RNR up to the cap
   * (FI_EFA_TIMEOUT_INTERVAL and FI_EFA_MAX_TIMEOUT, which the provider takes in us; ms here).
   */
  rnrBackoffInitialMs: number;
  rnrBackoffCapMs: number;
  /** An RNR'd packet resent for this long without getting through fails its operation. */
  rnrTimeoutMs: number;
  /**
   * While operations wait on a peer's answer (a CTS, data, an EOR), the endpoint re-sends its
   * handshake this often: a dead peer then fails that send, and the waiting operations with it.
   */
  probeIntervalMs: number;
  /** Send-after-send ordering (FI_ORDER_SAS): messages of one sender are matched in send order. */
  ordered: boolean;
  /** `event` (wake on the device CQ's channel), `busy` (spin) or `manual` (the caller calls progress). */
  progress: RdmProgressMode;
}

export const DEFAULT_RDM_CONFIG: Readonly<RdmConfig> = Object.freeze({
  eagerMaxSize: 0,
  mediumMaxSize: 65536,
  readMinSize: 1048576,
  useDeviceRdma: true,
  txSize: 256,
  rxSize: 512,
  ctsCredits: 32,
  rnrRetry: 3,
  rnrBackoffInitialMs: 0,
  rnrBackoffCapMs: 1000,
  rnrTimeoutMs: 10_000,
  probeIntervalMs: 500,
  ordered: false,
  progress: 'event',
});

const ENV_NAMES: Partial<Record<keyof RdmConfig, string>> = {
  mediumMaxSize: 'FI_EFA_INTER_MAX_MEDIUM_MESSAGE_SIZE',
  readMinSize: 'FI_EFA_INTER_MIN_READ_MESSAGE_SIZE',
  useDeviceRdma: 'FI_EFA_USE_DEVICE_RDMA',
  txSize: 'FI_EFA_TX_SIZE',
  rxSize: 'FI_EFA_RX_SIZE',
  ctsCredits: 'FI_EFA_TX_MIN_CREDITS',
  rnrBackoffInitialMs: 'FI_EFA_TIMEOUT_INTERVAL',
  rnrBackoffCapMs: 'FI_EFA_MAX_TIMEOUT',
};
/** Variables the provider takes in microseconds. */
const MICROSECONDS = new Set<keyof RdmConfig>(['rnrBackoffInitialMs', 'rnrBackoffCapMs']);

function intIn(key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new InvalidArgumentError(`rdm ${key}: an integer in ${min}..${max}, got ${String(v)}`);
  return v;
}

function numIn(key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw new InvalidArgumentError(`rdm ${key}: a number in ${min}..${max}, got ${String(v)}`);
  return v;
}

/**
 * Reads the FI_EFA_* variables the provider honours (so a job tuned for real EFA behaves the
 * same here) into config overrides; a malformed value is an EINVAL naming the variable.
 */
export function rdmConfigFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<RdmConfig> {
  const out: Partial<RdmConfig> = {};
  for (const [key, name] of Object.entries(ENV_NAMES) as Array<[keyof RdmConfig, string]>) {
    const text = env[name];
    if (text === undefined || text === '') continue;
    if (key === 'useDeviceRdma') {
      if (!/^(0|1|true|false|yes|no)$/i.test(text)) throw new InvalidArgumentError(`${name}: 0 or 1, got "${text}"`);
      out.useDeviceRdma = /^(1|true|yes)$/i.test(text);
      continue;
    }
    const v = Number(text);
    if (!Number.isInteger(v)) throw new InvalidArgumentError(`${name}: an integer, got "${text}"`);
    (out as Record<string, number>)[key] = MICROSECONDS.has(key) ? v / 1000 : v;
  }
  return out;
}

/** Defaults, then the environment, then `overrides`; checked. */
export function resolveRdmConfig(overrides: Partial<RdmConfig> = {}, env: NodeJS.ProcessEnv = process.env): RdmConfig {
  const c: RdmConfig = { ...DEFAULT_RDM_CONFIG, ...rdmConfigFromEnv(env), ...overrides };
  intIn('eagerMaxSize', c.eagerMaxSize, 0, 1 << 20);
  intIn('mediumMaxSize', c.mediumMaxSize, 0, 1 << 30);
  intIn('readMinSize', c.readMinSize, 0, Number.MAX_SAFE_INTEGER);
  if (typeof c.useDeviceRdma !== 'boolean') throw new InvalidArgumentError('rdm useDeviceRdma: true or false');
  intIn('txSize', c.txSize, 4, 8192);
  intIn('rxSize', c.rxSize, 4, 16384);
  intIn('ctsCredits', c.ctsCredits, 1, 4096);
  intIn('rnrRetry', c.rnrRetry, 0, 7);
  numIn('rnrBackoffInitialMs', c.rnrBackoffInitialMs, 0, 10_000);
  numIn('rnrBackoffCapMs', c.rnrBackoffCapMs, c.rnrBackoffInitialMs, 60_000);
  numIn('rnrTimeoutMs', c.rnrTimeoutMs, 1, 3_600_000);
  numIn('probeIntervalMs', c.probeIntervalMs, 1, 600_000);
  if (typeof c.ordered !== 'boolean') throw new InvalidArgumentError('rdm ordered: true or false');
  if (c.progress !== 'event' && c.progress !== 'busy' && c.progress !== 'manual') throw new InvalidArgumentError(`rdm progress: event, busy or manual, got ${String(c.progress)}`);
  return c;
}
