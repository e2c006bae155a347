import type { SrdChannel } from './srd-channel';

/** Where a send is in its life. */
export const OpState = {
  /** Posted, waiting for room in the peer's or the device's window. */
  QUEUED: 0,
  /** Transmitted under its PSN, waiting for an ack or a NAK. */
  IN_FLIGHT: 1,
  /** Refused with RNR: its PSN is retired; it waits out a back-off holding no window slot. */
  PARKED: 2,
  /** Back-off over, waiting for room to go out again under a new PSN. */
  READY: 3,
  /** Completed; the object waits for the socket to let go of its buffer, then is reused. */
  DONE: 4,
} as const;
export type OpState = (typeof OpState)[keyof typeof OpState];

/**
 * One SRD message on its way: the encoded datagram and what its completion needs. Objects
 * are pooled by the engine; every field is set in the constructor so they keep one shape.
 */
export class SendOp {
  /** Whatever the device needs to complete the work request (its QP). */
  owner: unknown = null;
  wrId = 0;
  /**
   * The multi-packet operation this packet is a segment of (an RDMA write or read), or null
   * for a message of its own: the device completes the work request once all are settled.
   */
  msg: unknown = null;
  /** Payload bytes, reported by the completion. */
  byteLen = 0;
  /** The whole datagram; the SRD extension is rewritten on every transmission. */
  buf: Buffer | null = null;
  len = 0;
  channel: SrdChannel | null = null;
  state: OpState = OpState.QUEUED;
  /** The PSN of its current transmission (meaningful while IN_FLIGHT). */
  psn = 0;
  /** RNR retries allowed (7 = forever). */
  rnrRetry = 7;
  rnrCount = 0;
  /** Timeouts of the current PSN, for the exponential back-off of its RTO. */
  retries = 0;
  /**
   * Start of the wait the peer's silence is measured against: when the send was posted, or
   * when it woke from its latest RNR back-off. The send fails once the peer has made no
   * progress for unresponsiveTimeoutMs since then.
   */
  since = 0;
  /** When its current PSN was first transmitted. */
  launchedAt = 0;
  /** When its current RTO runs out. */
  rtoAt = Infinity;
  /** tx_time (µs) of the latest transmission, and the same moment in ms. */
  lastTxTime = 0;
  sentAt = 0;
  /** The receiver incarnation stamped at the first launch; kept for every later PSN. */
  destIncarnation = 0;
  stamped = false;
  /** When the engine next wants to look at it (RTO, failure or end of back-off). */
  deadline = Infinity;
  /** Position in the engine's deadline heap, -1 when not in it. */
  heapIndex = -1;
  /** Neighbours in its channel's in-flight list (PSN order). */
  prev: SendOp | null = null;
  next: SendOp | null = null;
  /** Set once fast retransmit resent it, so one SACK burst does not resend it again and again. */
  fastRetransmitted = false;
  /** When the selective acks showed it missing and it will be old enough to count as lost. */
  lostAt = Infinity;
  /** Its RTO passed and it was not sent again yet (it waits for room in the congestion window). */
  lost = false;
  /** Transmissions the socket has not let go of yet: the buffer must not change meanwhile. */
  inSocket = 0;
  /** The path its latest copy took. */
  path = 0;
  /** Copies of its current PSN sent: with one, an ack of it says its path delivers. */
  copies = 0;
  /** Called by the transport when it no longer reads `buf` (one function per pooled object). */
  readonly onSent: () => void;
  /** Recycles a DONE op once the socket let go of it. */
  recycle: ((op: SendOp) => void) | null = null;

  constructor() {
    this.onSent = () => {
      this.inSocket--;
      if (this.inSocket === 0 && this.state === OpState.DONE && this.recycle !== null) this.recycle(this);
    };
  }

  reset(): void {
    this.owner = null;
    this.msg = null;
    this.buf = null;
    this.wrId = 0;
    this.byteLen = 0;
    this.len = 0;
    this.channel = null;
    this.state = OpState.QUEUED;
    this.psn = 0;
    this.rnrRetry = 7;
    this.rnrCount = 0;
    this.retries = 0;
    this.since = 0;
    this.launchedAt = 0;
    this.rtoAt = Infinity;
    this.lastTxTime = 0;
    this.sentAt = 0;
    this.destIncarnation = 0;
    this.stamped = false;
    this.deadline = Infinity;
    this.heapIndex = -1;
    this.prev = null;
    this.next = null;
    this.fastRetransmitted = false;
    this.lostAt = Infinity;
    this.lost = false;
    this.inSocket = 0;
    this.path = 0;
    this.copies = 0;
  }
}
