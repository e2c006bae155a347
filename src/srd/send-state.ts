import { OpRing } from './op-ring';
import type { PathSet } from './path-set';
import { RtoEstimator } from './rto-estimator';
import type { SrdConfig } from './srd-config';
import type { SendOp } from './send-op';

/**
 * The requester's half of SRD towards one remote device: PSNs, the sends in flight (a list
 * in PSN order), the sends waiting for room, and what the peer's answers told us.
 */
export class SendState {
  /** This device's incarnation: lets the receiver tell it from an earlier one. */
  readonly session: number;
  /** The receiver's incarnation, from the control plane or its latest acks (0: not known yet). */
  rxIncarnation = 0;
  nextPsn = 0;
  /** Sends in flight, oldest PSN first (an intrusive list through SendOp.prev/next). */
  head: SendOp | null = null;
  tail: SendOp | null = null;
  inFlight = 0;
  /**
   * Of those, the packets believed to be in the network: a packet whose RTO passed counts as
   * lost (`lostCount`) until it is sent again, which only happens when the congestion window
   * has room, so a peer that went quiet gets one resend at a time, not a window's worth.
   */
  inNet = 0;
  lostCount = 0;
  /** Sends refused with RNR that wait out their back-off (they hold no window slot). */
  parked = 0;
  /** Posted sends waiting for room, oldest first. */
  readonly queue = new OpRing();
  /** Sends whose RNR back-off is over, waiting for room; served before `queue`. */
  readonly ready = new OpRing();
  readonly rto: RtoEstimator;
  /** True once any answer came back: a later silence is "unresponsive", not "unreachable". */
  everAnswered = false;
  /**
   * When the peer last made progress on what is outstanding now: an ack that completed a
   * send, or a NAK of a PSN in flight. Answers to copies already settled do not count, so a
   * peer that only echoes old packets is not mistaken for a live one.
   */
  lastProgressAt = -Infinity;
  /**
   * Time this device itself was stalled (its timers ran late) since the peer's last progress:
   * not counted as the peer's silence, since the answers may have waited in our own socket.
   */
  stallCredit = 0;
  /**
   * Since when the peer has had something in flight without a break: its silence is only
   * measured while it has been asked something.
   */
  busySince = -Infinity;
  /**
   * Packets the peer may have in flight, cut to 1 when a retransmission timeout says the path
   * or the receiver is in trouble and grown back by acks (slow start up to ssthresh, then one
   * per window of acks), at most the configured window. A dead or swamped peer then holds
   * one slot of the device-wide window, not a window's worth.
   */
  cwnd: number;
  ssthresh: number;
  /** What this peer counts against the device-wide window: min(inNet, floor(cwnd)). */
  pipe = 0;
  /** Queued in the engine's list of peers waiting for device-wide room. */
  blocked = false;
  /** Timer turn the retransmission burst count belongs to, and the count. */
  burstTurn = -1;
  burstLeft = 0;
  /** Timer turn of the latest retransmission timeout (one timeout event per turn). */
  timeoutTurn = -1;
  /** The paths to this peer and what is known of each. */
  readonly paths: PathSet;
  /** The delay controller's current round: its shortest round trip and when it ends. */
  roundMinRtt = Infinity;
  roundEndsAt = -Infinity;

  constructor(session: number, cfg: SrdConfig, paths: PathSet, initialCwnd: number) {
    this.session = session >>> 0;
    this.paths = paths;
    this.cwnd = initialCwnd;
    this.ssthresh = cfg.window;
    // A slow peer's RTO may follow its round trips up to half the unresponsive timeout, so
    // that a packet still gets sent twice before the peer is given up.
    this.rto = new RtoEstimator(cfg.minRtoMs, cfg.maxRtoMs, cfg.initialRtoMs, Math.max(cfg.maxRtoMs, cfg.unresponsiveTimeoutMs / 2));
  }

  /** Lowest PSN not yet settled; nextPsn when nothing is in flight. */
  get windowStart(): number {
    return this.head === null ? this.nextPsn : this.head.psn;
  }

  /** Sends posted or woken and not yet in flight. */
  get waiting(): number {
    return this.queue.size + this.ready.size;
  }

  /** Appends a newly launched send (its PSN is the highest). */
  append(op: SendOp): void {
    op.prev = this.tail;
    op.next = null;
    if (this.tail === null) this.head = op;
    else this.tail.next = op;
    this.tail = op;
    this.inFlight++;
    op.lost = false;
    this.inNet++;
  }

  unlink(op: SendOp): void {
    if (op.prev === null) this.head = op.next;
    else op.prev.next = op.next;
    if (op.next === null) this.tail = op.prev;
    else op.next.prev = op.prev;
    op.prev = null;
    op.next = null;
    this.inFlight--;
    if (op.lost) {
      op.lost = false;
      this.lostCount--;
    } else {
      this.inNet--;
    }
  }

  /** Its RTO passed: the packet no longer counts as in the network. */
  markLost(op: SendOp): void {
    if (op.lost) return;
    op.lost = true;
    this.inNet--;
    this.lostCount++;
  }

  /** A lost packet is sent again. */
  markResent(op: SendOp): void {
    if (!op.lost) return;
    op.lost = false;
    this.lostCount--;
    this.inNet++;
  }

  /** The oldest lost packet the socket no longer holds (the next to resend), or null. */
  firstLost(): SendOp | null {
    if (this.lostCount === 0) return null;
    for (let op = this.head; op !== null; op = op.next) if (op.lost && op.inSocket === 0) return op;
    return null;
  }

  /** The send in flight with this PSN, or null (a walk: the list is at most a window long). */
  find(psn: number): SendOp | null {
    for (let op = this.head; op !== null; op = op.next) {
      const d = (op.psn - psn) | 0;
      if (d === 0) return op;
      if (d > 0) return null;
    }
    return null;
  }
}
