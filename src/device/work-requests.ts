import type { AddressHandle } from './address-handle';

/** A scatter/gather entry, as `ibv_sge`. `addr` is a byte offset from the start of the MR. */
export interface Sge {
  addr: number;
  length: number;
  lkey: number;
}

/**
 * A send work request, as `ibv_send_wr` with its `wr.ud` part flattened. Every send
 * completes (EFA has no unsignaled sends), so `sendFlags` needs no SIGNALED bit.
 */
export interface SendWr {
  wrId: number;
  /** A WrOpcode; `postSend` takes SEND (default) and SEND_WITH_IMM, the wr* API the RDMA ones too. */
  opcode?: number;
  /**
   * Up to `maxSendSge` entries. With SendFlags.INLINE (at most `maxInlineData` bytes) the bytes
   * are copied at post time; since SGE addresses are MR offsets, they still name an MR of the QP's PD.
   */
  sgList?: readonly Sge[];
  /** SendFlags bits (INLINE, SIGNALED, SOLICITED). */
  sendFlags?: number;
  /** Immediate data for SEND_WITH_IMM (32-bit). */
  immData?: number;
  ah: AddressHandle;
  remoteQpn: number;
  remoteQkey: number;
  /** RDMA: the remote buffer, a byte offset in the MR the rkey names (`wr.rdma.remote_addr`). */
  remoteAddr?: number;
  /** RDMA: the remote MR's key (`wr.rdma.rkey`). */
  rkey?: number;
}

/** A receive work request, as `ibv_recv_wr`. */
export interface RecvWr {
  wrId: number;
  /** Up to `maxRecvSge` entries. A UD receive needs 40 bytes for the GRH before the payload. */
  sgList: readonly Sge[];
}
