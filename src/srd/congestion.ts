import type { PathCounters } from './path-set';
import type { SendState } from './send-state';
import type { SrdConfig } from './srd-config';

/** Largest share of the window one decrease takes (Swift's max_mdf). */
const MAX_DECREASE = 0.5;
/** How hard a decrease reacts to the delay above target (Swift's beta). */
const BETA = 0.8;
/**
 * Per-peer congestion control of the packets in flight (SendState.cwnd), RTT-driven.
 *
 * `delay` is a delay-based AIMD window in the manner of Swift (Kumar et al., "Swift: Delay is
 * Simple and Effective for Congestion Control in the Datacenter", SIGCOMM 2020): every peer
 * compares its round trips with the same fixed target delay (`ccTargetMs`), which is how AWS
 * describes SRD's controller, RTT-driven so that queues stay short on every path. A target
 * relative to each flow's own lowest RTT (Vegas, or BBR's min-RTT filter) was tried and
 * dropped: a flow that starts while the queue is already full measures the queue as its base
 * and then never yields (in an 8-sender incast one sender kept a 128-packet window while the
 * others sat at 1). A fixed target treats every sender alike, so they converge to equal shares.
 *
 * - Round trip at or below the target: the window grows, doubling per round trip until the
 *   first decrease (slow start), then by one packet per round trip.
 * - Once per round trip, if even the shortest round trip of that round was above the target,
 *   it shrinks by BETA x (rtt - target) / rtt, at most by half, never below one packet. A
 *   queue delays every packet of a round; a packet held back alone (reordered, jittered,
 *   retransmitted) does not, and must not cost the flow its window.
 * - The target is the configured queueing budget plus the link's own delay where the device
 *   knows of one (an injected `delay`/`jitter`, see setLinkDelay): a target below the path's
 *   base round trip would pin every window at one packet for nothing. It is the same for every
 *   peer of every device running the spec, so senders into one queue still converge to equal
 *   shares. (Raising a peer's own target when its window sat at one packet was tried: peers
 *   then ended with different targets, and one took 13 MB/s of a 20 MB/s incast.)
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
  private readonly initialCwnd: number;
  /** The round trip the links add by themselves (ms), on top of which queueing is judged. */
  private linkDelayMs = 0;

  constructor(
    cfg: SrdConfig,
    private readonly counters: PathCounters,
  ) {
    this.delay = cfg.cc === 'delay';
    this.window = cfg.window;
    this.targetMs = cfg.ccTargetMs;
    this.initialCwnd = this.delay ? Math.min(cfg.ccInitialWindow, cfg.window) : cfg.window;
  }

  /** Sets the base round trip the links add (an injected delay): the target moves up by it. */
  setLinkDelay(ms: number): void {
    this.linkDelayMs = ms > 0 && Number.isFinite(ms) ? ms : 0;
  }

  /** The round trip the controller aims at now. */
  get target(): number {
    return this.targetMs + this.linkDelayMs;
  }

  /** The window a new peer starts with. */
  get initialWindow(): number {
    return this.initialCwnd;
  }

  /**
   * An ack completed `settled` sends; `rttMs` is its round trip (negative when it gave no
   * sample). Sets the peer's window (tx.cwnd).
   */
  onAck(tx: SendState, now: number, rttMs: number, settled: number): void {
    if (!this.delay) {
      this.grow(tx, settled);
      return;
    }
    if (rttMs >= 0 && rttMs < tx.roundMinRtt) tx.roundMinRtt = rttMs;
    const target = this.target;
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
    if (rttMs < 0 || rttMs <= target) this.grow(tx, settled);
  }

  /** Slow start below ssthresh, then one packet per window of acks, up to the configured window. */
  private grow(tx: SendState, settled: number): void {
    const max = this.window;
    if (tx.cwnd >= max) return;
    tx.cwnd += tx.cwnd < tx.ssthresh ? settled : settled / tx.cwnd;
    if (tx.cwnd > max) tx.cwnd = max;
  }
}
