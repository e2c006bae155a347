import { CqOverrunError, InvalidArgumentError, NotSupportedError } from '../common/errors';
import type { CompletionChannel } from './completion-channel';
import { AH_UNKNOWN, EfadvWcFlags, ENOENT, WcOpcode } from './constants';
import { copyCompletion, WorkCompletion } from './work-completion';

/** What a CQ needs from the QP a completion belongs to: a send slot is freed when polled. */
export interface CompletionOwner {
  readonly qpNum: number;
  releaseSendSlot(): void;
}

/**
 * A completion queue of fixed depth, as `ibv_cq`. Completions sit in a preallocated ring;
 * when more arrive than the depth holds the CQ is overrun: it raises an error on every later
 * poll (and the device reports an async event) instead of dropping anything silently.
 */
export class CompletionQueue {
  /** The number of completions the CQ holds (`cqe` as asked for). */
  readonly cqe: number;
  readonly handle: number;
  readonly channel: CompletionChannel | null;
  /** True once more completions arrived than `cqe` holds; the CQ is then unusable. */
  overrun = false;
  destroyed = false;
  /** QPs that report to this CQ; it cannot be destroyed while any do. */
  users = 0;
  private readonly ring: WorkCompletion[];
  private readonly owners: Array<CompletionOwner | null>;
  private head = 0;
  private count = 0;
  private armed = false;
  private readonly onOverrun: (cq: CompletionQueue) => void;
  /** EfadvWcFlags the CQ was created with. */
  readonly efadvWcFlags: number;
  /** The extended poll's current entry (-1: none; startPoll was not called or found nothing). */
  private current = -1;
  /** The current entry of the extended poll, as `ibv_cq_ex.wr_id`. */
  wrId = 0;
  /** The current entry's `ibv_wc_status`, as `ibv_cq_ex.status`. */
  status = 0;

  constructor(handle: number, cqe: number, channel: CompletionChannel | null, onOverrun: (cq: CompletionQueue) => void, efadvWcFlags = 0) {
    this.handle = handle;
    this.cqe = cqe;
    this.channel = channel;
    this.onOverrun = onOverrun;
    this.efadvWcFlags = efadvWcFlags;
    // Entries are created lazily up to the depth: a 32k-deep CQ that never fills stays small.
    this.ring = [];
    this.owners = [];
  }

  /** True when receive completions carry the sender GID (created with EfadvWcFlags.WITH_SGID). */
  get withSgid(): boolean {
    return (this.efadvWcFlags & EfadvWcFlags.WITH_SGID) !== 0;
  }

  /** Completions waiting to be polled. */
  get depthUsed(): number {
    return this.count;
  }

  /**
   * Reserves the next ring entry for a completion and returns it for the caller to fill,
   * or null when the CQ is overrun (the caller then drops the completion; the error is
   * raised to the user by `poll` and the async event).
   */
  push(owner: CompletionOwner | null): WorkCompletion | null {
    if (this.overrun || this.destroyed) return null;
    if (this.count === this.cqe) {
      this.overrun = true;
      this.onOverrun(this);
      return null;
    }
    let idx = this.head + this.count;
    if (idx >= this.cqe) idx -= this.cqe;
    let wc = this.ring[idx];
    if (wc === undefined) {
      wc = new WorkCompletion();
      this.ring[idx] = wc;
    }
    wc.vendorErr = 0;
    wc.immData = 0;
    wc.wcFlags = 0;
    wc.srcQp = 0;
    wc.ah = AH_UNKNOWN;
    wc.sgid = null;
    wc.unsolicited = false;
    wc.byteLen = 0;
    this.owners[idx] = owner;
    this.count++;
    if (this.armed && this.channel !== null) {
      this.armed = false;
      this.channel.notify(this);
    }
    return wc;
  }

  /**
   * Moves up to `max` completions into `out` (creating entries of `out` as needed) and
   * returns how many, as `ibv_poll_cq`.
   */
  poll(max: number, out: WorkCompletion[]): number {
    if (this.overrun) {
      throw new CqOverrunError(`CQ ${this.handle} overrun: more than ${this.cqe} completions were queued before being polled`);
    }
    if (!Number.isInteger(max) || max < 0) throw new InvalidArgumentError(`pollCq: num_entries must be a non-negative integer, got ${max}`);
    if (this.current !== -1) throw new InvalidArgumentError('pollCq: an extended poll is under way (endPoll first)');
    const n = max < this.count ? max : this.count;
    for (let i = 0; i < n; i++) {
      const idx = this.head;
      const src = this.ring[idx];
      let dst = out[i];
      if (dst === undefined) {
        dst = new WorkCompletion();
        out[i] = dst;
      }
      copyCompletion(src, dst);
      this.popHead();
    }
    return n;
  }

  // ------------------------------------------------------------- extended poll

  /**
   * Starts an extended poll, as `ibv_start_poll`: 0 with the oldest completion made current
   * (its `wrId` and `status` set, the `read*` accessors reading it), or ENOENT when the CQ is
   * empty (the poll is then over: no endPoll). Throws once the CQ overran.
   */
  startPoll(): number {
    if (this.overrun) throw new CqOverrunError(`CQ ${this.handle} overrun: more than ${this.cqe} completions were queued before being polled`);
    if (this.current !== -1) throw new InvalidArgumentError('startPoll: a poll is already under way (endPoll first)');
    return this.load();
  }

  /** Consumes the current completion and makes the next one current, as `ibv_next_poll`: 0 or ENOENT. */
  nextPoll(): number {
    this.consumeCurrent('nextPoll');
    return this.load();
  }

  /** Ends the poll, consuming the current completion, as `ibv_end_poll`. */
  endPoll(): void {
    if (this.current === -1) return;
    this.consumeCurrent('endPoll');
  }

  private load(): number {
    if (this.count === 0) {
      this.current = -1;
      return ENOENT;
    }
    this.current = this.head;
    const wc = this.ring[this.head];
    this.wrId = wc.wrId;
    this.status = wc.status;
    return 0;
  }

  private consumeCurrent(what: string): void {
    if (this.current === -1) throw new InvalidArgumentError(`${what}: no completion is current (startPoll first)`);
    this.popHead();
    this.current = -1;
  }

  /** Consumes the oldest completion: a send's frees its QP's send slot. */
  private popHead(): void {
    const idx = this.head;
    const owner = this.owners[idx];
    // Receive opcodes have bit 7 set (IBV_WC_RECV and up).
    if (owner !== null && this.ring[idx].opcode < WcOpcode.RECV) owner.releaseSendSlot();
    this.owners[idx] = null;
    this.head = idx + 1 === this.cqe ? 0 : idx + 1;
    this.count--;
  }

  private cur(what: string): WorkCompletion {
    if (this.current === -1) throw new InvalidArgumentError(`${what}: no completion is current (startPoll first)`);
    return this.ring[this.current];
  }

  /** `ibv_wc_read_opcode`. */
  readOpcode(): number {
    return this.cur('readOpcode').opcode;
  }
  /** `ibv_wc_read_vendor_err`: the EFA completion status. */
  readVendorErr(): number {
    return this.cur('readVendorErr').vendorErr;
  }
  /** `ibv_wc_read_byte_len`. */
  readByteLen(): number {
    return this.cur('readByteLen').byteLen;
  }
  /** `ibv_wc_read_imm_data` (valid when readWcFlags has WITH_IMM). */
  readImmData(): number {
    return this.cur('readImmData').immData;
  }
  /** `ibv_wc_read_qp_num`. */
  readQpNum(): number {
    return this.cur('readQpNum').qpNum;
  }
  /** `ibv_wc_read_src_qp`. */
  readSrcQp(): number {
    return this.cur('readSrcQp').srcQp;
  }
  /** `ibv_wc_read_wc_flags`. */
  readWcFlags(): number {
    return this.cur('readWcFlags').wcFlags;
  }
  /** `ibv_wc_read_slid`: on EFA, the sender's AH number (AH_UNKNOWN when the receiver has none). */
  readSlid(): number {
    return this.cur('readSlid').ah;
  }
  /**
   * `efadv_wc_read_sgid`: the sender's GID when the receiver has no AH for it, null when it has
   * one (the C call's ENOENT). Only a CQ created with EfadvWcFlags.WITH_SGID has it (in C the
   * call is then undefined; here it throws EOPNOTSUPP).
   */
  readSgid(): Uint8Array | null {
    if (!this.withSgid) throw new NotSupportedError('readSgid: the CQ was not created with EfadvWcFlags.WITH_SGID');
    return this.cur('readSgid').sgid;
  }
  /** `efadv_wc_is_unsolicited`; needs a CQ created with EfadvWcFlags.WITH_IS_UNSOLICITED. */
  isUnsolicited(): boolean {
    if ((this.efadvWcFlags & EfadvWcFlags.WITH_IS_UNSOLICITED) === 0) throw new NotSupportedError('isUnsolicited: the CQ was not created with EfadvWcFlags.WITH_IS_UNSOLICITED');
    return this.cur('isUnsolicited').unsolicited;
  }

  /** Arms the CQ: the next completion queues one event on its channel. */
  arm(): void {
    this.armed = true;
  }

  /**
   * Forgets the owner of queued completions of a QP being destroyed, so that polling them
   * later does not touch the dead QP.
   */
  detachOwner(owner: CompletionOwner): void {
    for (let i = 0, idx = this.head; i < this.count; i++) {
      if (this.owners[idx] === owner) this.owners[idx] = null;
      idx = idx + 1 === this.cqe ? 0 : idx + 1;
    }
  }
}
