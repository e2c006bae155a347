/**
 * Most PSNs a receiver tracks above its cumulative point, and so the most a sender lets its
 * PSNs run ahead of its oldest unsettled one. A message is unsettled for at most about the
 * unresponsive timeout, so this only binds a stream of more than 2^18 messages in that time.
 */
export const MAX_PSN_SPAN = 1 << 18;

/** Ledger entry: nothing known about this PSN yet. */
export const PSN_UNKNOWN = 0;
/** Ledger entry: delivered to the application. Refusals store their EfaStatus (1..127). */
export const PSN_DELIVERED = 0xff;

const INITIAL_SPAN = 256;

/**
 * What a receiver decided about each PSN of a sender's session: delivered, refused (with the
 * status every later copy gets again), or not seen yet. Everything below `base` is settled
 * (delivered, or given up by the sender: its window start passed it) and is never delivered
 * again. Above `base` the entries live in a power-of-two ring that grows with the span the
 * sender actually uses, so one message stuck below never limits how many flow above it.
 */
export class PsnLedger {
  base = 0;
  private states = new Uint8Array(INITIAL_SPAN);
  private mask = INITIAL_SPAN - 1;

  /** Forgets everything and starts over at `base` (a new session of the sender). */
  reset(base: number): void {
    this.base = base >>> 0;
    this.states.fill(0);
  }

  /** PSNs above base the ring currently covers. */
  get capacity(): number {
    return this.mask + 1;
  }

  /** The entry of `psn`: PSN_DELIVERED for anything below base, PSN_UNKNOWN beyond the ring. */
  get(psn: number): number {
    const off = (psn - this.base) | 0;
    if (off < 0) return PSN_DELIVERED;
    if (off > this.mask) return PSN_UNKNOWN;
    return this.states[psn & this.mask];
  }

  /**
   * Records `state` for `psn` (at or above base, less than MAX_PSN_SPAN above it); false when
   * it lies outside that range. Delivered PSNs at the base move the cumulative point on.
   */
  set(psn: number, state: number): boolean {
    const off = (psn - this.base) | 0;
    if (off < 0 || off >= MAX_PSN_SPAN) return false;
    if (off > this.mask) this.grow(off + 1);
    this.states[psn & this.mask] = state;
    if (off === 0) this.slide();
    return true;
  }

  /** The sender settled everything below `windowStart`: forget it and move base there. */
  advanceTo(windowStart: number): void {
    const d = (windowStart - this.base) | 0;
    if (d <= 0) return;
    if (d > this.mask) this.states.fill(0);
    else for (let i = 0; i < d; i++) this.states[(this.base + i) & this.mask] = 0;
    this.base = windowStart >>> 0;
    this.slide();
  }

  private slide(): void {
    const states = this.states;
    const mask = this.mask;
    while (states[this.base & mask] === PSN_DELIVERED) {
      states[this.base & mask] = 0;
      this.base = (this.base + 1) >>> 0;
    }
  }

  private grow(span: number): void {
    let cap = this.mask + 1;
    while (cap < span) cap *= 2;
    const next = new Uint8Array(cap);
    const old = this.states;
    const oldMask = this.mask;
    for (let i = 0; i <= oldMask; i++) {
      const psn = (this.base + i) >>> 0;
      next[psn & (cap - 1)] = old[psn & oldMask];
    }
    this.states = next;
    this.mask = cap - 1;
  }
}
