import { CqOverrunError, InvalidArgumentError } from '../common/errors';
import type { CompletionChannel } from './completion-channel';
import { AH_UNKNOWN, WcOpcode } from './constants';
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

  constructor(handle: number, cqe: number, channel: CompletionChannel | null, onOverrun: (cq: CompletionQueue) => void) {
    this.handle = handle;
    this.cqe = cqe;
    this.channel = channel;
    this.onOverrun = onOverrun;
    // Entries are created lazily up to the depth: a 32k-deep CQ that never fills stays small.
    this.ring = [];
    this.owners = [];
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
      const owner = this.owners[idx];
      if (owner !== null && src.opcode !== WcOpcode.RECV) owner.releaseSendSlot();
      this.owners[idx] = null;
      this.head = idx + 1 === this.cqe ? 0 : idx + 1;
      this.count--;
    }
    return n;
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
