import { RtoEstimator } from './rto-estimator';
import type { SrdConfig } from './srd-config';
import type { SendOp } from './send-op';

/**
 * The sending half of SRD towards one remote device: a session id, PSNs, the window of
 * packets in flight (a ring indexed by PSN) and the FIFO of messages waiting for room.
 */
export class SendContext {
  readonly peerIndex: number;
  host: string;
  port: number;
  /** This device's incarnation: lets the receiver tell it from an earlier one. */
  readonly session: number;
  /** The receiver's incarnation, from its latest acks (0: not known yet). */
  rxIncarnation = 0;
  nextPsn = 0;
  /** Lowest PSN not yet settled; equals nextPsn when nothing is in flight. */
  windowStart = 0;
  readonly ring: Array<SendOp | null>;
  readonly window: number;
  /** Messages waiting for window room, FIFO from queueHead. */
  readonly queue: SendOp[] = [];
  queueHead = 0;
  readonly rto: RtoEstimator;
  /** True once any packet came back from the peer: a later silence is "unresponsive", not "unreachable". */
  everHeard = false;
  /** When the latest ack or NAK of this session came back (-Infinity: never). */
  lastHeardAt = -Infinity;
  /** Earliest deadline among the packets in flight (may be stale-early, never late). */
  deadline = Infinity;

  constructor(peerIndex: number, host: string, port: number, session: number, cfg: SrdConfig) {
    this.peerIndex = peerIndex;
    this.host = host;
    this.port = port;
    this.session = session >>> 0;
    this.window = cfg.window;
    this.ring = new Array<SendOp | null>(cfg.window).fill(null);
    this.rto = new RtoEstimator(cfg.minRtoMs, cfg.maxRtoMs, cfg.initialRtoMs);
  }

  /** Packets in flight (settled ones inside the span still hold their place). */
  get inFlight(): number {
    return (this.nextPsn - this.windowStart) >>> 0;
  }

  get queued(): number {
    return this.queue.length - this.queueHead;
  }

  slot(psn: number): number {
    return psn % this.window;
  }

  /** The op in flight with this PSN, or null when it is settled or outside the window. */
  opAt(psn: number): SendOp | null {
    if (((psn - this.windowStart) | 0) < 0 || ((psn - this.nextPsn) | 0) >= 0) return null;
    const op = this.ring[psn % this.window];
    return op !== null && op.psn === psn ? op : null;
  }

  /** The oldest queued message, left in the queue. */
  peek(): SendOp | null {
    return this.queueHead < this.queue.length ? this.queue[this.queueHead] : null;
  }

  /** Takes the oldest queued message, compacting the array now and then rather than shifting it. */
  dequeue(): SendOp | null {
    if (this.queueHead >= this.queue.length) return null;
    const op = this.queue[this.queueHead];
    this.queueHead++;
    if (this.queueHead === this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    } else if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
    return op;
  }
}
