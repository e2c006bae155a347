import { InvalidArgumentError } from '../common/errors';
import { SACK_BITS } from '../wire/srd-header';

/** Tunables of the SRD engine. Defaults suit loopback; every one can be overridden. */
export interface SrdConfig {
  /** Packets in flight per peer before sends queue (at most SACK_BITS). */
  window: number;
  /** Retransmission timeout bounds (RFC 6298 style, from measured RTT). */
  minRtoMs: number;
  maxRtoMs: number;
  initialRtoMs: number;
  /**
   * A packet no answer came for in this long fails with LOCAL_ERROR_UNRESP_REMOTE (or
   * UNREACH_REMOTE when the peer never answered at all).
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
   * Packets one timeout resends at most per peer, oldest first; the others wait one more RTO.
   * A late ack (a busy receiver, not a loss) then costs a few spurious resends, not a window's worth.
   */
  rtoBurst: number;
}

export const DEFAULT_SRD_CONFIG: Readonly<SrdConfig> = Object.freeze({
  window: 128,
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
});

/** Merges overrides onto the defaults; the error names the bad option. */
export function resolveSrdConfig(overrides: Partial<SrdConfig> = {}): SrdConfig {
  const cfg: SrdConfig = { ...DEFAULT_SRD_CONFIG };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_SRD_CONFIG)) throw new InvalidArgumentError(`srd.${key}: unknown SRD option`);
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new InvalidArgumentError(`srd.${key}: must be a non-negative number, got ${String(value)}`);
    }
    (cfg as unknown as Record<string, number>)[key] = value;
  }
  if (!Number.isInteger(cfg.window) || cfg.window < 1 || cfg.window > SACK_BITS) {
    throw new InvalidArgumentError(`srd.window: must be an integer in 1..${SACK_BITS}, got ${cfg.window}`);
  }
  if (cfg.minRtoMs <= 0 || cfg.minRtoMs > cfg.maxRtoMs) throw new InvalidArgumentError('srd.minRtoMs: must be > 0 and <= maxRtoMs');
  if (cfg.unresponsiveTimeoutMs <= 0) throw new InvalidArgumentError('srd.unresponsiveTimeoutMs: must be > 0');
  if (!Number.isInteger(cfg.ackEvery) || cfg.ackEvery < 1) throw new InvalidArgumentError('srd.ackEvery: must be an integer >= 1');
  if (!Number.isInteger(cfg.dupThresh) || cfg.dupThresh < 1) throw new InvalidArgumentError('srd.dupThresh: must be an integer >= 1');
  if (!Number.isInteger(cfg.rtoBurst) || cfg.rtoBurst < 1) throw new InvalidArgumentError('srd.rtoBurst: must be an integer >= 1');
  return cfg;
}
