import { FI_ADDR_NOTAVAIL } from './rdm-peer';
import { FI_EAGAIN, FI_EAVAIL } from './fi-errno';

/**
 * One completion, as `fi_cq_tagged_entry` plus the source address `fi_cq_readfrom` reports.
 * `read` copies into entries the caller owns, so polling allocates nothing.
 */
export class RdmCqEntry {
  /** The context the operation was posted with. */
  opContext: unknown = null;
  /** FI_SEND or FI_RECV, with FI_MSG or FI_TAGGED, and FI_REMOTE_CQ_DATA when `data` is valid. */
  flags = 0;
  /** Bytes sent, or bytes received into the buffer. */
  len = 0;
  /** Receives: the buffer the message landed in. */
  buf: Uint8Array | null = null;
  /** Remote CQ data (FI_REMOTE_CQ_DATA). */
  data = 0;
  /** Tagged receives: the message's tag. */
  tag = 0n;
  /** Receives: the sender's fi_addr, FI_ADDR_NOTAVAIL when it is not in the AV. */
  srcAddr = FI_ADDR_NOTAVAIL;
}

/** An error completion, as `fi_cq_err_entry`. */
export class RdmCqErrEntry extends RdmCqEntry {
  /** The fi errno (positive), as `err`. */
  err = 0;
  /** The provider's error: the EFA completion status that caused it (`prov_errno`). */
  provErrno = 0;
  /** Bytes that did not fit (truncation). */
  olen = 0;
}

class Slot extends RdmCqErrEntry {
  isError = false;
}

function copyEntry(from: RdmCqEntry, to: RdmCqEntry): void {
  to.opContext = from.opContext;
  to.flags = from.flags;
  to.len = from.len;
  to.buf = from.buf;
  to.data = from.data;
  to.tag = from.tag;
  to.srcAddr = from.srcAddr;
}

/**
 * The endpoint's completion queue (`fid_cq`), successes and errors in one order: `read` returns
 * -FI_EAVAIL when the next entry is an error, which `readerr` then takes, as libfabric's CQs do.
 * Reading drives the endpoint's progress first (FI_PROGRESS_MANUAL semantics; the endpoint also
 * progresses by itself when its device CQ signals).
 */
export class RdmCq {
  private ring: Slot[] = [];
  private head = 0;
  private count = 0;
  private readonly waiters: Array<() => void> = [];
  /** Set by the endpoint that writes this CQ. */
  progress: () => void = () => {};

  /** Completions waiting to be read. */
  get length(): number {
    return this.count;
  }

  /** Takes up to `max` successful completions into `out` (reused); 0 when none, -FI_EAVAIL at an error. */
  read(out: RdmCqEntry[], max = out.length): number {
    this.progress();
    let n = 0;
    while (n < max && this.count > 0) {
      const s = this.ring[this.head];
      if (s.isError) return n > 0 ? n : -FI_EAVAIL;
      copyEntry(s, out[n++]);
      this.pop();
    }
    return n > 0 ? n : -FI_EAGAIN;
  }

  /** Takes the error completion at the head into `out`; -FI_EAGAIN when the head is not one. */
  readerr(out: RdmCqErrEntry): number {
    if (this.count === 0 || !this.ring[this.head].isError) return -FI_EAGAIN;
    const s = this.ring[this.head];
    copyEntry(s, out);
    out.err = s.err;
    out.provErrno = s.provErrno;
    out.olen = s.olen;
    this.pop();
    return 1;
  }

  /**
   * Waits until a completion (or an error) is available or `timeoutMs` passes, as `fi_cq_sread`
   * does; then reads as `read` does.
   */
  async sread(out: RdmCqEntry[], max = out.length, timeoutMs = -1): Promise<number> {
    const n = this.read(out, max);
    if (n !== -FI_EAGAIN || timeoutMs === 0) return n;
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      const wake = (): void => {
        if (timer !== null) clearTimeout(timer);
        resolve();
      };
      this.waiters.push(wake);
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          const i = this.waiters.indexOf(wake);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve();
        }, timeoutMs);
      }
    });
    return this.read(out, max);
  }

  /** Endpoint side: appends a completion. The fields are written into the returned slot. */
  push(isError: boolean): RdmCqErrEntry {
    if (this.count === this.ring.length) this.grow();
    const s = this.ring[(this.head + this.count) % this.ring.length];
    this.count++;
    s.isError = isError;
    s.opContext = null;
    s.flags = 0;
    s.len = 0;
    s.buf = null;
    s.data = 0;
    s.tag = 0n;
    s.srcAddr = FI_ADDR_NOTAVAIL;
    s.err = 0;
    s.provErrno = 0;
    s.olen = 0;
    if (this.waiters.length > 0) {
      const ws = this.waiters.splice(0);
      for (const w of ws) w();
    }
    return s;
  }

  private pop(): void {
    const s = this.ring[this.head];
    s.opContext = null;
    s.buf = null;
    this.head = (this.head + 1) % this.ring.length;
    this.count--;
  }

  /** A CQ never overruns: the provider queues completions in memory, so it grows. */
  private grow(): void {
    const next: Slot[] = [];
    for (let i = 0; i < this.count; i++) next.push(this.ring[(this.head + i) % this.ring.length]);
    const size = Math.max(64, this.ring.length * 2);
    while (next.length < size) next.push(new Slot());
    this.ring = next;
    this.head = 0;
  }
}
