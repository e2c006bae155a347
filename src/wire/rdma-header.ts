import { readU32, writeU32 } from './header';
import { SRD_DATA_HDR_LEN } from './srd-header';

/*
 * RDMA extension of SRD data packets (types SRD_RDMA_WRITE, SRD_READ_REQ, SRD_READ_RESP). These
 * packets are SRD data packets in every other respect: the 72-byte SRD_DATA header (session,
 * PSN, window start, piggybacked ack) comes first, so acks, selective acks, retransmission and
 * duplicate suppression treat them exactly as sends. The extension follows (big-endian):
 *
 *  byte  size  field
 *  72     4    rkey         the remote MR's key (WRITE, READ_REQ); 0 in READ_RESP
 *  76     8    addr         WRITE: where this packet's payload goes, a byte offset in the
 *                           remote MR; READ_REQ: where the read starts in the remote MR;
 *                           READ_RESP: this payload's offset within the read
 *  84     4    length       the operation's total bytes (WRITE: the whole work request;
 *                           READ_REQ / READ_RESP: the whole read)
 *  88     4    op_id        READ_REQ / READ_RESP: the initiator's id of the read; WRITE: 0
 *
 * A write is segmented into MTU packets. A write with immediate carries its immediate (flag
 * HAS_IMM) on its last packet only, sent once every other segment is acknowledged, so the
 * target's completion always follows the placement of every byte. A read request is one
 * packet without payload; the target answers with READ_RESP packets, sent reliably by its
 * own SRD requester.
 */

export const RDMA_HDR_LEN = SRD_DATA_HDR_LEN + 20;
export const OFF_RKEY = 72;
export const OFF_ADDR_HI = 76;
export const OFF_ADDR_LO = 80;
export const OFF_RDMA_LENGTH = 84;
export const OFF_OP_ID = 88;

/** The RDMA fields of a packet, decoded into one reused object. */
export class RdmaFields {
  rkey = 0;
  addr = 0;
  length = 0;
  opId = 0;
}

/** Decodes the RDMA extension; false when hdr_len is too short for it. */
export function decodeRdma(buf: Uint8Array, hdrLen: number, out: RdmaFields): boolean {
  if (hdrLen < RDMA_HDR_LEN) return false;
  out.rkey = readU32(buf, OFF_RKEY);
  out.addr = readU32(buf, OFF_ADDR_HI) * 0x1_0000_0000 + readU32(buf, OFF_ADDR_LO);
  out.length = readU32(buf, OFF_RDMA_LENGTH);
  out.opId = readU32(buf, OFF_OP_ID);
  return true;
}

/** Writes the RDMA extension (addr below 2^53). */
export function writeRdma(buf: Uint8Array, rkey: number, addr: number, length: number, opId: number): void {
  writeU32(buf, OFF_RKEY, rkey);
  writeU32(buf, OFF_ADDR_HI, Math.floor(addr / 0x1_0000_0000));
  writeU32(buf, OFF_ADDR_LO, addr >>> 0);
  writeU32(buf, OFF_RDMA_LENGTH, length);
  writeU32(buf, OFF_OP_ID, opId);
}
