/** PSNs a receiver tracks ahead of its cumulative ack; larger than any sender window. */
export const RX_WINDOW = 256;

/**
 * The receiving half of SRD from one remote device: which PSNs of the sender's current
 * session were delivered, so that each message reaches the application at most once, and
 * the ack state to report back.
 */
export class ReceiveContext {
  readonly peerIndex: number;
  /** Where acks go: the source address of the peer's latest data packet. */
  host = '';
  port = 0;
  session = 0;
  hasSession = false;
  /** Every PSN below `base` is settled (delivered, or abandoned by the sender). */
  base = 0;
  /** 1 = delivered, by PSN % RX_WINDOW, for PSNs in [base, base + RX_WINDOW). */
  readonly delivered = new Uint8Array(RX_WINDOW);
  /**
   * PSNs refused with a final status, remembered so a retransmission gets the same answer
   * (the sender must not mistake a lost NAK for success). Rare, so a Map.
   */
  readonly refused = new Map<number, number>();
  /** Data packets delivered since the last ack. */
  unacked = 0;
  /** tx_time of the latest data packet, echoed by the next ack. */
  echoTime = 0;
  /** Queued for an ack flush. */
  ackScheduled = false;
  /** When the oldest unacked delivery happened (ms). */
  firstUnackedAt = 0;
  /** Deliveries since the ack timer last looked: nonzero means the stream is still flowing. */
  freshDeliveries = 0;
  /** Highest PSN delivered in this session (serial), to spot new gaps. */
  highest = 0;

  constructor(peerIndex: number) {
    this.peerIndex = peerIndex;
  }

  /**
   * True for a session older than the current one (serial order): a late packet of an earlier
   * incarnation of the sender, which must not replace the live one.
   */
  isStale(session: number): boolean {
    return this.hasSession && ((session - this.session) | 0) < 0;
  }

  /** Starts tracking a new (newer) session of the sender, beginning at its window start. */
  startSession(session: number, windowStart: number): void {
    this.session = session;
    this.hasSession = true;
    this.base = windowStart;
    this.delivered.fill(0);
    this.refused.clear();
    this.unacked = 0;
    this.freshDeliveries = 0;
    this.highest = (windowStart - 1) >>> 0;
  }

  /** The sender settled everything below `windowStart`: forget it. */
  advanceTo(windowStart: number): void {
    const d = (windowStart - this.base) | 0;
    if (d <= 0) return;
    if (d >= RX_WINDOW) this.delivered.fill(0);
    else for (let i = 0; i < d; i++) this.delivered[(this.base + i) % RX_WINDOW] = 0;
    this.base = windowStart >>> 0;
    if (this.refused.size > 0) {
      for (const psn of this.refused.keys()) if (((psn - this.base) | 0) < 0) this.refused.delete(psn);
    }
    this.slide();
  }

  /** Marks a PSN delivered and moves the cumulative point over any run of delivered PSNs. */
  markDelivered(psn: number): void {
    this.delivered[psn % RX_WINDOW] = 1;
    this.slide();
  }

  private slide(): void {
    while (this.delivered[this.base % RX_WINDOW] === 1) {
      this.delivered[this.base % RX_WINDOW] = 0;
      this.base = (this.base + 1) >>> 0;
    }
  }

  isDelivered(psn: number): boolean {
    return ((psn - this.base) | 0) < 0 || this.delivered[psn % RX_WINDOW] === 1;
  }
}
