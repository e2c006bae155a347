/**
 * Retransmission timeout from measured round trips, as RFC 6298: a smoothed RTT and its
 * variance, RTO = SRTT + max(G, 4 × RTTVAR), clamped to [minRto, maxRto]. Back-off is applied
 * per packet by the caller (doubling per retransmission).
 */
export class RtoEstimator {
  srtt = 0;
  rttvar = 0;
  rto: number;
  samples = 0;

  constructor(
    readonly minRtoMs: number,
    readonly maxRtoMs: number,
    initialRtoMs: number,
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
    this.rto = clamp(this.srtt + Math.max(this.granularityMs, 4 * this.rttvar), this.minRtoMs, this.maxRtoMs);
  }

  /** The timeout for a packet sent `retries` times before: RTO × 2^retries, at most maxRto. */
  backedOff(retries: number): number {
    const r = this.rto * 2 ** Math.min(retries, 20);
    return r < this.maxRtoMs ? r : this.maxRtoMs;
  }
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}
