import { InvalidArgumentError } from '../common/errors';
import { MAX_PATHS } from '../wire/header';

/**
 * Congestion control of a peer's window: `delay`, the RTT-driven controller (see
 * congestion.ts), or `off`, a fixed window cut only by retransmission timeouts.
 */
export type CcMode = 'delay' | 'off';
/** The congestion-control modes, as `cc=` accepts them. */
export const CC_MODES: readonly CcMode[] = ['delay', 'off'];

/** Largest per-peer or device-wide window accepted. */
export const MAX_WINDOW = 65536;

/** Tunables of the SRD engine. Defaults suit loopback; every one can be overridden. */
export interface SrdConfig {
  /**
   * Packets in flight per peer before further sends to it wait. Only packets actually in
   * flight count: a send waiting out an RNR back-off holds no slot.
   */
  window: number;
  /**
   * Packets in flight to all peers together: what a receiver's socket buffer can absorb when
   * every device sends to it at once (all-to-all). Peers waiting for room are served in turn.
   */
  deviceWindow: number;
  /** Retransmission timeout bounds (RFC 6298 style, from measured RTT). */
  minRtoMs: number;
  maxRtoMs: number;
  initialRtoMs: number;
  /**
   * A peer that makes no progress on what is outstanding for this long fails the sends that
   * waited on it with LOCAL_ERROR_UNRESP_REMOTE (UNREACH_REMOTE when it never answered at
   * all). Progress: an ack completing a send, or a NAK (RNR included) of a PSN in flight.
   */
  unresponsiveTimeoutMs: number;
  /** The receiver acks at least once per this many data packets. */
  ackEvery: number;
  /**
   * Longest a receiver holds an ack back to coalesce it with others. Within it, an ack goes
   * out as soon as the stream pauses (a timer turn in which nothing new arrived), so sparse
   * traffic is acked at once and dense traffic about every `ackEvery` packets.
   */
  ackDelayMs: number;
  /** First back-off after a receiver-not-ready reply; doubles per retry up to rnrBackoffMaxMs. */
  rnrBackoffMs: number;
  rnrBackoffMaxMs: number;
  /** Later packets selectively acked before a hole is retransmitted without waiting for the RTO. */
  dupThresh: number;
  /**
   * Packets one timer turn resends at most per peer on timeouts; the others wait one more
   * RTO. A late ack (a busy receiver, not a loss) then costs a few spurious resends, not a
   * window's worth.
   */
  rtoBurst: number;
  /**
   * Network paths to each peer (1..64): packets are sprayed over them, a path that stops
   * delivering is avoided and probed to come back. 1 is a single path, as UD's.
   */
  paths: number;
  /** Losses in a row on one path (no delivery on it in between) that take it out of use. */
  pathDownLosses: number;
  /** First wait before a path out of use is probed with one packet; doubles while it fails. */
  pathProbeMs: number;
  /** Longest wait between probes of a path that stays bad. */
  pathProbeMaxMs: number;
  /** Congestion control: `delay` (RTT-driven window) or `off`. */
  cc: CcMode;
  /**
   * Round trip the delay controller aims at (Swift's target delay): the path's base RTT plus
   * the queueing accepted. The window grows while a round's shortest round trip stays at or
   * below it, and shrinks, in proportion to the excess, above it.
   */
  ccTargetMs: number;
  /** Window a peer starts with under `cc=delay` (slow start until the delay target is met). */
  ccInitialWindow: number;
}

export const DEFAULT_SRD_CONFIG: Readonly<SrdConfig> = Object.freeze({
  window: 128,
  deviceWindow: 64,
  minRtoMs: 5,
  maxRtoMs: 250,
  initialRtoMs: 10,
  unresponsiveTimeoutMs: 2000,
  ackEvery: 16,
  ackDelayMs: 1,
  rnrBackoffMs: 1,
  rnrBackoffMaxMs: 64,
  dupThresh: 3,
  rtoBurst: 8,
  paths: 4,
  pathDownLosses: 3,
  pathProbeMs: 10,
  pathProbeMaxMs: 200,
  cc: 'delay',
  ccTargetMs: 2,
  ccInitialWindow: 8,
} satisfies SrdConfig);

/**
 * Reads SRD tunables from text, `key=value` pairs separated by commas, named as in SrdConfig
 * (`window=32,unresponsiveTimeoutMs=300`); `formatSrdConfig` writes it. Checked by
 * resolveSrdConfig, which names a bad option.
 */
export function parseSrdConfigText(text: string, source = 'srd'): Partial<SrdConfig> {
  const out: Record<string, number | string> = {};
  for (const item of text.split(',')) {
    const s = item.trim();
    if (s === '') continue;
    const eq = s.indexOf('=');
    const key = eq < 0 ? s : s.slice(0, eq).trim();
    if (key === 'cc') {
      const mode = eq < 0 ? '' : s.slice(eq + 1).trim();
      if (!(CC_MODES as readonly string[]).includes(mode)) throw new InvalidArgumentError(`${source}: cc needs one of ${CC_MODES.join(', ')}, as cc=off`);
      (out as Record<string, unknown>).cc = mode;
      continue;
    }
    const value = eq < 0 ? NaN : Number(s.slice(eq + 1).trim());
    if (!(key in DEFAULT_SRD_CONFIG)) throw new InvalidArgumentError(`${source}: unknown SRD option ${JSON.stringify(key)} (known: ${Object.keys(DEFAULT_SRD_CONFIG).join(', ')})`);
    if (eq < 0 || !Number.isFinite(value)) throw new InvalidArgumentError(`${source}: ${key} needs a number, as ${key}=${DEFAULT_SRD_CONFIG[key as keyof SrdConfig]}`);
    out[key] = value;
  }
  return out as Partial<SrdConfig>;
}

/** The text form of the options of `cfg` that differ from the defaults (parseSrdConfigText reads it). */
export function formatSrdConfig(cfg: Partial<SrdConfig>): string {
  const items: string[] = [];
  for (const [key, value] of Object.entries(cfg)) {
    if (value === undefined || value === DEFAULT_SRD_CONFIG[key as keyof SrdConfig]) continue;
    items.push(typeof value === 'string' ? `${key}=${value}` : `${key}=${Number(value.toFixed(6))}`);
  }
  return items.join(',');
}

/** Merges overrides onto the defaults; the error names the bad option. */
export function resolveSrdConfig(overrides: Partial<SrdConfig> = {}): SrdConfig {
  const cfg: SrdConfig = { ...DEFAULT_SRD_CONFIG };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_SRD_CONFIG)) throw new InvalidArgumentError(`srd.${key}: unknown SRD option`);
    if (key === 'cc') {
      if (!(CC_MODES as readonly unknown[]).includes(value)) throw new InvalidArgumentError(`srd.cc: must be one of ${CC_MODES.join(', ')}, got ${String(value)}`);
      cfg.cc = value as CcMode;
      continue;
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new InvalidArgumentError(`srd.${key}: must be a non-negative number, got ${String(value)}`);
    }
    (cfg as unknown as Record<string, number>)[key] = value;
  }
  for (const key of ['window', 'deviceWindow'] as const) {
    const v = cfg[key];
    if (!Number.isInteger(v) || v < 1 || v > MAX_WINDOW) throw new InvalidArgumentError(`srd.${key}: must be an integer in 1..${MAX_WINDOW}, got ${v}`);
  }
  if (cfg.minRtoMs <= 0 || cfg.minRtoMs > cfg.maxRtoMs) throw new InvalidArgumentError('srd.minRtoMs: must be > 0 and <= maxRtoMs');
  if (cfg.unresponsiveTimeoutMs <= 0) throw new InvalidArgumentError('srd.unresponsiveTimeoutMs: must be > 0');
  if (cfg.rnrBackoffMs <= 0) throw new InvalidArgumentError('srd.rnrBackoffMs: must be > 0');
  if (!Number.isInteger(cfg.ackEvery) || cfg.ackEvery < 1) throw new InvalidArgumentError('srd.ackEvery: must be an integer >= 1');
  if (!Number.isInteger(cfg.dupThresh) || cfg.dupThresh < 1) throw new InvalidArgumentError('srd.dupThresh: must be an integer >= 1');
  if (!Number.isInteger(cfg.rtoBurst) || cfg.rtoBurst < 1) throw new InvalidArgumentError('srd.rtoBurst: must be an integer >= 1');
  if (!Number.isInteger(cfg.paths) || cfg.paths < 1 || cfg.paths > MAX_PATHS) throw new InvalidArgumentError(`srd.paths: must be an integer in 1..${MAX_PATHS}, got ${cfg.paths}`);
  if (!Number.isInteger(cfg.pathDownLosses) || cfg.pathDownLosses < 1) throw new InvalidArgumentError('srd.pathDownLosses: must be an integer >= 1');
  if (cfg.pathProbeMs <= 0 || cfg.pathProbeMs > cfg.pathProbeMaxMs) throw new InvalidArgumentError('srd.pathProbeMs: must be > 0 and <= pathProbeMaxMs');
  if (cfg.ccTargetMs <= 0) throw new InvalidArgumentError('srd.ccTargetMs: must be > 0');
  if (!Number.isInteger(cfg.ccInitialWindow) || cfg.ccInitialWindow < 1) throw new InvalidArgumentError('srd.ccInitialWindow: must be an integer >= 1');
  return cfg;
}
