import { AH_UNKNOWN } from './constants';

/**
 * One work completion, as `ibv_wc` plus EFA's extended-completion source GID.
 * `pollCq` fills objects the caller hands in (and reuses), so polling allocates nothing.
 */
export class WorkCompletion {
  /** The caller's id of the work request. */
  wrId = 0;
  /** A WcStatus value; 0 is success. */
  status = 0;
  /** A WcOpcode value. */
  opcode = 0;
  /** Provider-specific detail for an error status (0 when none). */
  vendorErr = 0;
  /** Bytes received (for UD including the 40-byte GRH), or bytes sent. */
  byteLen = 0;
  /** Immediate data; valid when `wcFlags` has WITH_IMM. */
  immData = 0;
  /** WcFlags bits. */
  wcFlags = 0;
  /** The local QP number the work request was posted to. */
  qpNum = 0;
  /** Receive completions: the sender's QP number. */
  srcQp = 0;
  /**
   * Receive completions: the AH number the receiver's PD has for the sender's GID, or
   * 0xFFFF (AH_UNKNOWN) when it has none; then `sgid` holds the sender's GID.
   */
  ah = AH_UNKNOWN;
  /**
   * The sender's GID when `ah` is AH_UNKNOWN (EFA's `efadv_wc_read_sgid`), else null. It is
   * the device's own record of the sender, shared by every completion from it: read it, and
   * copy it (`Uint8Array.from(wc.sgid)`) to keep a GID you will change.
   */
  sgid: Uint8Array | null = null;
  /**
   * RDMA write with immediate on a QP created with EfadvQpFlags.UNSOLICITED_WRITE_RECV: it
   * consumed no receive (`wrId` is 0), as `efadv_wc_is_unsolicited` reports.
   */
  unsolicited = false;
}

/** Copies every field of `from` into `to`. */
export function copyCompletion(from: WorkCompletion, to: WorkCompletion): void {
  to.wrId = from.wrId;
  to.status = from.status;
  to.opcode = from.opcode;
  to.vendorErr = from.vendorErr;
  to.byteLen = from.byteLen;
  to.immData = from.immData;
  to.wcFlags = from.wcFlags;
  to.qpNum = from.qpNum;
  to.srcQp = from.srcQp;
  to.ah = from.ah;
  to.sgid = from.sgid;
  to.unsolicited = from.unsolicited;
}
