import { FIRST_QPN, MAX_QPN } from './constants';

/**
 * Hands out 16-bit QP numbers. A destroyed QP's number is quarantined for `quarantineMs`
 * so that late packets addressed to the old QP are dropped as "unknown QPN" instead of
 * reaching a new QP that happens to get the same number (a real-world bug class on EFA).
 * Numbers are taken round-robin, which also spreads reuse out as far as possible.
 */
export class QpnAllocator {
  private readonly inUse = new Uint8Array(MAX_QPN + 1);
  /** When each number was released (ms on the injected clock); 0 = never used. */
  private readonly releasedAt = new Float64Array(MAX_QPN + 1);
  private cursor = FIRST_QPN;

  constructor(
    private readonly now: () => number,
    private readonly quarantineMs: number,
  ) {}

  /** The next free number, or -1 when every number is in use or quarantined. */
  allocate(): number {
    const span = MAX_QPN - FIRST_QPN + 1;
    const t = this.now();
    for (let i = 0; i < span; i++) {
      const qpn = this.cursor;
      this.cursor = qpn === MAX_QPN ? FIRST_QPN : qpn + 1;
      if (this.inUse[qpn] === 1) continue;
      const rel = this.releasedAt[qpn];
      if (rel !== 0 && t - rel < this.quarantineMs) continue;
      this.inUse[qpn] = 1;
      return qpn;
    }
    return -1;
  }

  release(qpn: number): void {
    this.inUse[qpn] = 0;
    this.releasedAt[qpn] = Math.max(1, this.now());
  }

  /** True while `qpn` is quarantined after being released. */
  isQuarantined(qpn: number): boolean {
    const rel = this.releasedAt[qpn];
    return this.inUse[qpn] === 0 && rel !== 0 && this.now() - rel < this.quarantineMs;
  }
}
