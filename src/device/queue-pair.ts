import type { CompletionQueue } from './completion-queue';
import { DEFAULT_RNR_RETRY, QpState, QpType } from './constants';
import type { MemoryRegion } from './memory-region';
import type { ProtectionDomain } from './protection-domain';
import type { WrSession } from './wr-session';

/** Capacities of a QP, as `ibv_qp_cap`. */
export interface QpCap {
  maxSendWr: number;
  maxRecvWr: number;
  maxSendSge: number;
  maxRecvSge: number;
  maxInlineData: number;
}

/**
 * The posted receive work requests of a QP: a preallocated ring of slots, each holding a
 * wr_id and up to `maxRecvSge` scatter entries, resolved to their MRs when posted.
 * Posting and consuming move indices only; nothing is allocated per work request.
 */
export class ReceiveQueue {
  readonly depth: number;
  readonly maxSge: number;
  readonly wrId: Float64Array;
  readonly sgeCount: Uint8Array;
  /** MR of each SGE (null when the lkey named none). */
  readonly sgeMr: Array<MemoryRegion | null>;
  readonly sgeLkey: Uint32Array;
  readonly sgeAddr: Float64Array;
  readonly sgeLen: Uint32Array;
  head = 0;
  count = 0;

  constructor(depth: number, maxSge: number) {
    this.depth = depth;
    this.maxSge = maxSge;
    this.wrId = new Float64Array(depth);
    this.sgeCount = new Uint8Array(depth);
    this.sgeMr = new Array<MemoryRegion | null>(depth * maxSge).fill(null);
    this.sgeLkey = new Uint32Array(depth * maxSge);
    this.sgeAddr = new Float64Array(depth * maxSge);
    this.sgeLen = new Uint32Array(depth * maxSge);
  }

  /** Index of the slot the next post fills (caller checks `count < depth`). */
  tailSlot(): number {
    const idx = this.head + this.count;
    return idx >= this.depth ? idx - this.depth : idx;
  }

  /** Drops the oldest slot after it was consumed. */
  advance(): void {
    // Drop the MR references so a consumed slot does not keep a buffer alive.
    const base = this.head * this.maxSge;
    for (let i = 0; i < this.maxSge; i++) this.sgeMr[base + i] = null;
    this.head = this.head + 1 === this.depth ? 0 : this.head + 1;
    this.count--;
  }

  clear(): void {
    this.sgeMr.fill(null);
    this.head = 0;
    this.count = 0;
  }
}

/**
 * A queue pair, as `ibv_qp` (UD) or EFA's driver QP (SRD). The device owns the rules;
 * this object holds the QP's state and queues.
 */
export class QueuePair {
  state: QpState = QpState.RESET;
  qkey = 0;
  sqPsn = 0;
  /** SRD: RNR retries before a send fails with REMOTE_ERROR_RNR; 7 retries forever. */
  rnrRetry = DEFAULT_RNR_RETRY;
  destroyed = false;
  /** True while a move to RESET discards the QP's work: what it settles completes nothing. */
  discarding = false;
  /** Send work requests posted and not yet polled from the send CQ. */
  sqOutstanding = 0;
  readonly rq: ReceiveQueue;
  /** Transport state the QP's engine keeps (SRD); null for UD. */
  transport: unknown = null;
  /** Created with EfadvQpFlags.UNSOLICITED_WRITE_RECV: writes with immediate consume no receive. */
  unsolicitedWriteRecv = false;
  /** The send operations the QP was created for (`ibv_qp_init_attr_ex.send_ops_flags`, QpSendOps bits). */
  sendOps = 0;
  /** `ibv_qp_ex.wr_id`: the id the next `wr*` call gives its work request. */
  wrId = 0;
  /** `ibv_qp_ex.wr_flags`: the SendFlags of the next `wr*` work request. */
  wrFlags = 0;
  /** The open `wrStart` batch, or null. */
  wrSession: WrSession | null = null;

  constructor(
    readonly qpNum: number,
    readonly qpType: QpType,
    readonly pd: ProtectionDomain,
    readonly sendCq: CompletionQueue,
    readonly recvCq: CompletionQueue,
    readonly cap: QpCap,
    readonly sqSigAll: boolean,
  ) {
    this.rq = new ReceiveQueue(cap.maxRecvWr, cap.maxRecvSge);
  }

  /** Called by the send CQ when a send completion of this QP is polled. */
  releaseSendSlot(): void {
    if (this.sqOutstanding > 0) this.sqOutstanding--;
  }
}
