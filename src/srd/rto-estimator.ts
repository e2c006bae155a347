/**
 * Retransmission timeout from measured round trips, as RFC 6298: a smoothed RTT and its
 * variance, RTO = SRTT + max(G, 4 × RTTVAR), at least minRto.
 *
 * `maxRto` bounds the exponential back-off, not the estimate: a peer whose round trips are
 * measured longer than maxRto (a receiver starved of CPU, a deep queue) gets an RTO that
 * covers them (up to `ceilingMs`), or every packet to it would be sent twice, adding load to
 * what is already overloaded. And, as Karn's algorithm keeps it, a back-off reached by
 * timeouts stays for the next packets until an answer brings a fresh sample.
 */
export class RtoEstimator {
  srtt = 0;
  rttvar = 0;
  rto: number;
  samples = 0;
  /** Timeouts since the last fresh sample: later packets start backed off this far. */
  backoff = 0;

  constructor(
    readonly minRtoMs: number,
    readonly maxRtoMs: number,
    initialRtoMs: number,
    /** Largest RTO a measured round trip can set (above maxRto only for slow peers). */
    readonly ceilingMs = Math.max(maxRtoMs, 1000),
    /** Clock granularity G of RFC 6298. */
    readonly granularityMs = 0.05,
  ) {
    this.rto = clamp(initialRtoMs, minRtoMs, maxRtoMs);
  }

  /** Feeds one RTT sample (ms). */
  sample(rttMs: number): void {
    if (!(rttMs >= 0) || rttMs > 60_000) return; // a wrapped or nonsensical echo
    if (this.samples === 0) {
      this.srtt = rttMs;
      this.rttvar = rttMs / 2;
    } else {
      // alpha = 1/8, beta = 1/4 as RFC 6298 recommends.
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rttMs);
      this.srtt = 0.875 * this.srtt + 0.125 * rttMs;
    }
    this.samples++;
    this.backoff = 0;
    const estimate = this.srtt + Math.max(this.granularityMs, 4 * this.rttvar);
    // Up to maxRto as configured; beyond it only as far as the round trips themselves go.
    const cap = this.srtt * 2 > this.maxRtoMs ? Math.min(this.ceilingMs, Math.max(this.maxRtoMs, this.srtt * 2)) : this.maxRtoMs;
    this.rto = clamp(estimate, this.minRtoMs, cap);
  }

  /** A retransmission timeout happened: the next packets wait twice as long. */
  timedOut(): void {
    if (this.backoff < 20) this.backoff++;
  }

  /** The timeout for a packet sent `retries` times before: RTO × 2^retries, within max(maxRto, RTO). */
  backedOff(retries: number): number {
    const n = retries > this.backoff ? retries : this.backoff;
    const r = this.rto * 2 ** Math.min(n, 20);
    const max = this.rto > this.maxRtoMs ? this.rto : this.maxRtoMs;
    return r < max ? r : max;
  }
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}
