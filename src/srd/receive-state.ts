import { PsnLedger } from './psn-ledger';

/**
 * The responder's half of SRD from one remote device: which PSNs of the sender's current
 * session were delivered or refused, so each message reaches the application at most once,
 * and the acknowledgement owed back.
 */
export class ReceiveState {
  session = 0;
  hasSession = false;
  readonly ledger = new PsnLedger();
  /** Data packets delivered since the last ack. */
  unacked = 0;
  /** Lowest and highest PSN delivered since the last ack: where the selective map goes. */
  newLow = 0;
  newHigh = 0;
  /** tx_time of the latest delivered data packet, echoed by the next ack, and the path it came by. */
  echoTime = 0;
  echoPath = 0;
  /** Queued for an ack flush. */
  ackScheduled = false;
  /** When the oldest unacked delivery happened (ms). */
  firstUnackedAt = 0;
  /** Deliveries since the ack timer last looked: nonzero means the stream is still flowing. */
  freshDeliveries = 0;
  /** Highest PSN delivered in this session (serial), to spot new gaps. */
  highest = 0;

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
    this.ledger.reset(windowStart);
    this.unacked = 0;
    this.freshDeliveries = 0;
    this.highest = (windowStart - 1) >>> 0;
  }

  /** Notes a delivery for the next ack. */
  noteDelivered(psn: number, now: number): void {
    if (this.unacked === 0) {
      this.firstUnackedAt = now;
      this.newLow = psn;
      this.newHigh = psn;
    } else {
      if (((psn - this.newLow) | 0) < 0) this.newLow = psn;
      if (((psn - this.newHigh) | 0) > 0) this.newHigh = psn;
    }
    this.unacked++;
    this.freshDeliveries++;
  }

  /** An ack went out: nothing is owed any more. */
  acked(): void {
    this.unacked = 0;
    this.freshDeliveries = 0;
  }
}
