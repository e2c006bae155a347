import { FI_ETRUNC, fiErrnoFromProv } from './fi-errno';
import type { RdmCq } from './rdm-cq';
import type { RxOp, TxOp } from './rdm-ops';
import { FI_ADDR_NOTAVAIL } from './rdm-peer';

/** libfabric's completion flags (include/rdma/fabric.h). */
export const FI_MSG = 1 << 1;
export const FI_TAGGED = 1 << 3;
export const FI_RECV = 1 << 10;
export const FI_SEND = 1 << 11;
export const FI_REMOTE_CQ_DATA = 1 << 17;

/*
 * The CQ entries the efa provider writes: sends as FI_SEND with FI_MSG or FI_TAGGED, receives
 * as FI_RECV with the same and FI_REMOTE_CQ_DATA when the message carried data; an error entry
 * carries err = to_fi_errno(prov_errno) and prov_errno.
 */

export function writeSendDone(cq: RdmCq, op: TxOp): void {
  const e = cq.push(false);
  e.opContext = op.context;
  e.flags = FI_SEND | (op.tagged ? FI_TAGGED : FI_MSG);
  e.len = op.len;
}

export function writeSendError(cq: RdmCq, op: TxOp, provErrno: number): void {
  const e = cq.push(true);
  e.opContext = op.context;
  e.flags = FI_SEND | (op.tagged ? FI_TAGGED : FI_MSG);
  e.len = op.len;
  e.err = fiErrnoFromProv(provErrno);
  e.provErrno = provErrno;
}

/** A receive that got its whole message: success, or FI_ETRUNC when it did not fit. */
export function writeRecvDone(cq: RdmCq, r: RxOp): boolean {
  const truncated = r.msgLen > r.buf.length;
  const e = cq.push(truncated);
  e.opContext = r.context;
  e.flags = FI_RECV | (r.tagged ? FI_TAGGED : FI_MSG) | (r.hasData ? FI_REMOTE_CQ_DATA : 0);
  e.len = Math.min(r.msgLen, r.buf.length);
  e.buf = r.buf;
  e.data = r.hasData ? r.dataHi * 0x1_0000_0000 + r.dataLo : 0;
  e.tag = r.tagged ? (BigInt(r.mtagHi) << 32n) | BigInt(r.mtagLo) : 0n;
  e.srcAddr = r.peer?.fiAddr ?? FI_ADDR_NOTAVAIL;
  if (truncated) {
    e.err = FI_ETRUNC;
    e.olen = r.msgLen - r.buf.length;
  }
  return truncated;
}

export function writeRecvError(cq: RdmCq, r: RxOp, err: number, provErrno: number): void {
  const e = cq.push(true);
  e.opContext = r.context;
  e.flags = FI_RECV | (r.tagged ? FI_TAGGED : FI_MSG);
  e.len = Math.min(r.received, r.buf.length);
  e.buf = r.buf;
  e.srcAddr = r.peer?.fiAddr ?? FI_ADDR_NOTAVAIL;
  e.err = err;
  e.provErrno = provErrno;
}
