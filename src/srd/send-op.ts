/**
 * One SRD message on its way: the encoded datagram and what its completion needs. Objects
 * are pooled by the engine; every field is set in the constructor so they keep one shape.
 */
export class SendOp {
  /** Whatever the device needs to complete the work request (its QP). */
  owner: unknown = null;
  wrId = 0;
  /** Payload bytes, reported by the completion. */
  byteLen = 0;
  /** The whole datagram; the SRD extension is rewritten on every transmission. */
  buf: Buffer | null = null;
  len = 0;
  psn = 0;
  /** RNR retries allowed (7 = forever). */
  rnrRetry = 7;
  rnrCount = 0;
  retries = 0;
  /**
   * Start of this send's silence budget: when it was posted, or its latest RNR reply. It fails
   * once the peer has been silent for unresponsiveTimeoutMs since then.
   */
  answeredAt = 0;
  /** tx_time (µs) of the latest transmission, which acks and NAKs echo. */
  lastTxTime = 0;
  /** The receiver incarnation stamped at launch; kept across retransmissions. */
  destIncarnation = 0;
  deadline = Infinity;
  /** Set once fast retransmit resent it, so one SACK burst does not resend it again and again. */
  fastRetransmitted = false;
  /** Waiting out an RNR back-off rather than a retransmission timeout. */
  rnrWaiting = false;

  reset(): void {
    this.owner = null;
    this.buf = null;
    this.wrId = 0;
    this.byteLen = 0;
    this.len = 0;
    this.psn = 0;
    this.rnrRetry = 7;
    this.rnrCount = 0;
    this.retries = 0;
    this.answeredAt = 0;
    this.lastTxTime = 0;
    this.destIncarnation = 0;
    this.deadline = Infinity;
    this.fastRetransmitted = false;
    this.rnrWaiting = false;
  }
}
