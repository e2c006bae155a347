import type { PathCounters } from './path-set';
import type { SendState } from './send-state';
import type { SrdConfig } from './srd-config';

/** Largest share of the window one decrease takes (Swift's max_mdf). */
const MAX_DECREASE = 0.5;
/** How hard a decrease reacts to the delay above target (Swift's beta). */
const BETA = 0.8;
/** Round trips are compared with the lowest seen in this long a span (BBR's min-RTT filter). */
const MIN_RTT_WINDOW_MS = 10_000;

/**
 * Per-peer congestion control of the packets in flight (SendState.cwnd), RTT-driven.
 *
 * `delay` is a delay-based AIMD window in the manner of Swift (Kumar et al., "Swift: Delay is
 * Simple and Effective for Congestion Control in the Datacenter", SIGCOMM 2020), with the
 * base round trip tracked as BBR does (the lowest RTT in a sliding span, Cardwell et al.,
 * "BBR: Congestion-Based Congestion Control", ACM Queue 2016), which is how AWS describes
 * SRD's controller: it watches the RTT so that queues stay short on every path.
 *
 * - Round trip below min RTT + ccTargetMs: the window grows, doubling per round trip until
 *   the first decrease (slow start), then by one packet per round trip.
 * - Once per round trip, if even the shortest round trip of that round was above the target,
 *   it shrinks by BETA x (rtt - target) / rtt, at most by half, never below one packet. A
 *   queue delays every packet of a round; a packet held back alone (reordered, jittered,
 *   retransmitted) does not, and must not cost the flow its window.
 * - A retransmission timeout with nothing answered (the requester's collapse) still cuts the
 *   window to one packet; losses alone do not shrink it: on a sprayed flow a lost packet says
 *   a path is bad (the path set handles it), not that the bottleneck is full.
 *
 * `off` keeps today's fixed window (the configured `window`), cut only by the collapse and
 * regrown by slow start, for comparison.
 */
export class CongestionControl {
  private readonly delay: boolean;
  private readonly window: number;
  private readonly targetMs: number;

  constructor(
    cfg: SrdConfig,
    private readonly counters: PathCounters,
  ) {
    this.delay = cfg.cc === 'delay';
    this.window = cfg.window;
    this.targetMs = cfg.ccTargetMs;
  }

  /** The window a new peer starts with. */
  initialWindow(cfg: SrdConfig): number {
    return this.delay ? Math.min(cfg.ccInitialWindow, cfg.window) : cfg.window;
  }

  /**
   * An ack completed `settled` sends; `rttMs` is its round trip (negative when it gave no
   * sample). Returns the new window.
   */
  onAck(tx: SendState, now: number, rttMs: number, settled: number): void {
    const max = this.window;
    if (!this.delay) {
      if (tx.cwnd >= max) return;
      tx.cwnd += tx.cwnd < tx.ssthresh ? settled : settled / tx.cwnd;
      if (tx.cwnd > max) tx.cwnd = max;
      return;
    }
    if (rttMs >= 0) {
      if (rttMs < tx.minRtt || now - tx.minRttAt > MIN_RTT_WINDOW_MS) {
        tx.minRtt = rttMs;
        tx.minRttAt = now;
      }
      if (rttMs < tx.roundMinRtt) tx.roundMinRtt = rttMs;
    }
    const target = tx.minRtt + this.targetMs;
    if (now >= tx.roundEndsAt) {
      const low = tx.roundMinRtt;
      tx.roundMinRtt = Infinity;
      const srtt = tx.rto.srtt;
      tx.roundEndsAt = now + (srtt > 0 ? srtt : rttMs > 0 ? rttMs : 0);
      if (low !== Infinity && low > target) {
        let f = 1 - (BETA * (low - target)) / low;
        if (f < 1 - MAX_DECREASE) f = 1 - MAX_DECREASE;
        const next = tx.cwnd * f;
        tx.cwnd = next < 1 ? 1 : next;
        tx.ssthresh = tx.cwnd;
        this.counters.ccDecreases++;
        return;
      }
    }
    if (rttMs < 0 || rttMs <= target) {
      if (tx.cwnd >= max) return;
      tx.cwnd += tx.cwnd < tx.ssthresh ? settled : settled / tx.cwnd;
      if (tx.cwnd > max) tx.cwnd = max;
    }
  }
}
