import { crc32 } from './checksum';

/*
 * Every efa-emu datagram starts with this 40-byte base header (all fields big-endian).
 *
 *  byte   size  field
 *   0      2    magic        0xEFA1: rejects foreign traffic before anything else is read
 *   2      1    version      WIRE_VERSION
 *   3      1    type         PacketType
 *   4      1    flags        bit 0 HAS_IMM: the imm field is valid; bit 1 zero; bits 2-7 the
 *                            path (0..63): which of the sender's network paths to this peer the
 *                            packet takes, the entropy an SRD encapsulation puts in its UDP
 *                            source port so that ECMP spreads one flow; an ack or NAK travels
 *                            on the path of the data packet it answers; UD packets use path 0
 *   5      1    hdr_len      bytes from the start to the payload (40 + type extension)
 *   6      2    src_qpn      sender's QP number
 *   8      2    dst_qpn      receiver's QP number
 *  10      2    payload_len  bytes after the header; must equal datagram length - hdr_len
 *  12      4    qkey         the Q_Key the sender named (UD and SRD both check it)
 *  16      4    imm          immediate data (valid when HAS_IMM)
 *  20     16    src_gid      sender device's GID (see src/common/gid.ts for its layout)
 *  36      4    crc          CRC-32 over the whole datagram with this field taken as zero
 *
 * Types with more fields (SRD) put them between byte 40 and hdr_len.
 */

export const WIRE_MAGIC = 0xefa1;
/** 2: SRD acks carry a sack_base; every RNR answer is final for its PSN (no RNR_LAST flag). */
export const WIRE_VERSION = 2;
/** True for the packet types that are SRD data (sequenced, acked, retransmitted). */
export function isSrdData(type: number): boolean {
  return type === PacketType.SRD_DATA || type >= PacketType.SRD_RDMA_WRITE;
}
export const BASE_HEADER_LEN = 40;

export const OFF_MAGIC = 0;
export const OFF_VERSION = 2;
export const OFF_TYPE = 3;
export const OFF_FLAGS = 4;
export const OFF_HDR_LEN = 5;
export const OFF_SRC_QPN = 6;
export const OFF_DST_QPN = 8;
export const OFF_PAYLOAD_LEN = 10;
export const OFF_QKEY = 12;
export const OFF_IMM = 16;
export const OFF_SRC_GID = 20;
export const OFF_CRC = 36;

export const FLAG_HAS_IMM = 0x01;
/** The path occupies the flag bits from this one up (six bits). */
export const FLAG_PATH_SHIFT = 2;
/** Paths a device may keep to one peer: what six bits of the flags byte hold. */
export const MAX_PATHS = 64;

/** The path a packet takes (flags bits 2-7); 0 for a buffer too short to hold the flags. */
export function packetPath(buf: Uint8Array): number {
  return buf.length > OFF_FLAGS ? buf[OFF_FLAGS] >> FLAG_PATH_SHIFT : 0;
}

/** Sets a packet's path (0..63), keeping its other flags; the CRC is computed after. */
export function setPacketPath(buf: Uint8Array, path: number): void {
  buf[OFF_FLAGS] = (buf[OFF_FLAGS] & ((1 << FLAG_PATH_SHIFT) - 1)) | ((path & (MAX_PATHS - 1)) << FLAG_PATH_SHIFT);
}

/** Packet types. Values are on the wire: never renumber. */
export const PacketType = {
  UD_SEND: 1,
  SRD_DATA: 2,
  SRD_ACK: 3,
  /** A negative acknowledgement of one packet: receiver not ready, or a final error status. */
  SRD_NAK: 4,
  /** One segment of an RDMA write (SRD data with the RDMA extension, see rdma-header.ts). */
  SRD_RDMA_WRITE: 5,
  /** An RDMA read request: no payload, the target answers with SRD_READ_RESP packets. */
  SRD_READ_REQ: 6,
  /** One segment of the data an RDMA read returns. */
  SRD_READ_RESP: 7,
} as const;
export type PacketType = (typeof PacketType)[keyof typeof PacketType];

/** Why a datagram was refused by the decoder. 0 means it was accepted. */
export const DecodeError = {
  OK: 0,
  TRUNCATED: 1,
  BAD_MAGIC: 2,
  BAD_VERSION: 3,
  BAD_TYPE: 4,
  BAD_LENGTH: 5,
  BAD_CHECKSUM: 6,
} as const;
export type DecodeError = (typeof DecodeError)[keyof typeof DecodeError];

/**
 * A decoded base header. One instance is reused for every received packet, so decoding
 * allocates nothing; `srcGidOffset` points into the datagram instead of copying the GID.
 */
export class PacketHeader {
  type = 0;
  flags = 0;
  hdrLen = 0;
  srcQpn = 0;
  dstQpn = 0;
  payloadLen = 0;
  qkey = 0;
  imm = 0;
  /** Offset of the 16-byte source GID inside the decoded datagram. */
  srcGidOffset = OFF_SRC_GID;
}

function isKnownType(type: number): boolean {
  return type >= PacketType.UD_SEND && type <= PacketType.SRD_READ_RESP;
}

/**
 * Decodes and verifies a datagram's base header into `out`. Never throws: garbage returns a
 * DecodeError for the caller to count. Verifying the CRC zeroes the crc field in `buf`
 * (the buffer belongs to the receive path and is not reused).
 */
export function decodeHeader(buf: Uint8Array, len: number, out: PacketHeader): DecodeError {
  if (len < BASE_HEADER_LEN) return DecodeError.TRUNCATED;
  if (((buf[OFF_MAGIC] << 8) | buf[OFF_MAGIC + 1]) !== WIRE_MAGIC) return DecodeError.BAD_MAGIC;
  if (buf[OFF_VERSION] !== WIRE_VERSION) return DecodeError.BAD_VERSION;
  const type = buf[OFF_TYPE];
  if (!isKnownType(type)) return DecodeError.BAD_TYPE;
  const hdrLen = buf[OFF_HDR_LEN];
  const payloadLen = (buf[OFF_PAYLOAD_LEN] << 8) | buf[OFF_PAYLOAD_LEN + 1];
  if (hdrLen < BASE_HEADER_LEN || hdrLen + payloadLen !== len) return DecodeError.BAD_LENGTH;
  const wireCrc = readU32(buf, OFF_CRC);
  buf[OFF_CRC] = 0;
  buf[OFF_CRC + 1] = 0;
  buf[OFF_CRC + 2] = 0;
  buf[OFF_CRC + 3] = 0;
  if (crc32(buf, len) !== wireCrc) return DecodeError.BAD_CHECKSUM;
  out.type = type;
  out.flags = buf[OFF_FLAGS];
  out.hdrLen = hdrLen;
  out.srcQpn = (buf[OFF_SRC_QPN] << 8) | buf[OFF_SRC_QPN + 1];
  out.dstQpn = (buf[OFF_DST_QPN] << 8) | buf[OFF_DST_QPN + 1];
  out.payloadLen = payloadLen;
  out.qkey = readU32(buf, OFF_QKEY);
  out.imm = readU32(buf, OFF_IMM);
  out.srcGidOffset = OFF_SRC_GID;
  return DecodeError.OK;
}

/**
 * Writes a base header at the start of `buf`. The payload (and any type extension) must
 * already be in place or be written before `sealPacket`.
 */
export function encodeHeader(
  buf: Uint8Array,
  type: PacketType,
  flags: number,
  hdrLen: number,
  srcQpn: number,
  dstQpn: number,
  payloadLen: number,
  qkey: number,
  imm: number,
  srcGid: Uint8Array,
): void {
  buf[OFF_MAGIC] = WIRE_MAGIC >> 8;
  buf[OFF_MAGIC + 1] = WIRE_MAGIC & 0xff;
  buf[OFF_VERSION] = WIRE_VERSION;
  buf[OFF_TYPE] = type;
  buf[OFF_FLAGS] = flags;
  buf[OFF_HDR_LEN] = hdrLen;
  buf[OFF_SRC_QPN] = srcQpn >> 8;
  buf[OFF_SRC_QPN + 1] = srcQpn & 0xff;
  buf[OFF_DST_QPN] = dstQpn >> 8;
  buf[OFF_DST_QPN + 1] = dstQpn & 0xff;
  buf[OFF_PAYLOAD_LEN] = payloadLen >> 8;
  buf[OFF_PAYLOAD_LEN + 1] = payloadLen & 0xff;
  writeU32(buf, OFF_QKEY, qkey);
  writeU32(buf, OFF_IMM, imm);
  buf.set(srcGid, OFF_SRC_GID);
}

/** Computes and stores the CRC of the first `len` bytes of a fully written packet. */
export function sealPacket(buf: Uint8Array, len: number): void {
  writeU32(buf, OFF_CRC, 0);
  writeU32(buf, OFF_CRC, crc32(buf, len));
}

export function readU32(buf: Uint8Array, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
}

export function writeU32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}
