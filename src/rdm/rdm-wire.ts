/*
 * The RDM endpoint's packets: what rides inside one SRD send (DESIGN: the rdm layer sits on
 * the device). The packet types, their numbers and their fields are those of libfabric's EFA
 * RDM protocol v4 (prov/efa/docs/efa_rdm_protocol_v4.md), so a capture names the protocol
 * path a message took exactly as the real provider would have. Multi-byte fields are little
 * endian (the provider writes host order, and EFA hosts are x86/Graviton, both little endian).
 *
 * Encoding writes into a caller's buffer; decoding fills a caller's reusable fields object and
 * returns false for anything malformed (never throws), so a bad packet is dropped and counted.
 */

/** Protocol version carried in every base header. */
export const RDM_PROTOCOL_VERSION = 4;

/** Packet types (protocol v4 §1.3). */
export const RdmPktType = {
  CTS: 3,
  CTSDATA: 4,
  READRSP: 5,
  EOR: 7,
  HANDSHAKE: 9,
  RECEIPT: 10,
  PEER_ERROR: 12,
  EAGER_MSGRTM: 64,
  EAGER_TAGRTM: 65,
  MEDIUM_MSGRTM: 66,
  MEDIUM_TAGRTM: 67,
  LONGCTS_MSGRTM: 68,
  LONGCTS_TAGRTM: 69,
  LONGREAD_MSGRTM: 128,
  LONGREAD_TAGRTM: 129,
} as const;
export type RdmPktType = (typeof RdmPktType)[keyof typeof RdmPktType];

const PKT_NAMES = new Map<number, string>(Object.entries(RdmPktType).map(([k, v]) => [v, k]));

/** The name of a packet type (`rdmPktTypeName(66)` is `MEDIUM_MSGRTM`). */
export function rdmPktTypeName(type: number): string {
  return PKT_NAMES.get(type) ?? `UNKNOWN_${type}`;
}

/** Flags of a REQ (request-to-message) packet's base header (protocol v4 §3.1). */
export const ReqFlags = {
  /** A raw-address header follows: the receiver may not know the sender yet. */
  RAW_ADDR_HDR: 1 << 0,
  /** A remote-CQ-data header follows (fi_senddata). */
  CQ_DATA_HDR: 1 << 1,
  /** Two-sided message (not RMA or atomic). */
  MSG: 1 << 2,
  /** Tagged message. */
  TAGGED: 1 << 3,
  /** A connection-id header follows (after the handshake, instead of the raw address). */
  CONNID_HDR: 1 << 15,
} as const;

/** Every packet type's flag: the 4-byte connection id of the sender follows (§1.3). */
export const PKT_CONNID_HDR = 1 << 15;

/** Extra features and requests a handshake announces (protocol v4 §2.1). */
export const RdmFeature = {
  RDMA_READ: 1 << 0,
  DELIVERY_COMPLETE: 1 << 1,
  CONSTANT_HEADER_LENGTH: 1 << 2,
  CONNID_HEADER: 1 << 3,
  RUNT: 1 << 4,
  RDMA_WRITE: 1 << 5,
  READ_NACK: 1 << 6,
  REQUEST_USER_RECV_QP: 1 << 7,
  UNSOLICITED_WRITE_RECV: 1 << 8,
  PEER_ERROR: 1 << 9,
} as const;

/** The protocol a message took; names as the provider's counters and the dissector show them. */
export type RdmProtocol = 'eager' | 'medium' | 'longcts' | 'longread';

/** The REQ packet type for a protocol, untagged or tagged. */
export function rtmType(proto: RdmProtocol, tagged: boolean): RdmPktType {
  switch (proto) {
    case 'eager':
      return tagged ? RdmPktType.EAGER_TAGRTM : RdmPktType.EAGER_MSGRTM;
    case 'medium':
      return tagged ? RdmPktType.MEDIUM_TAGRTM : RdmPktType.MEDIUM_MSGRTM;
    case 'longcts':
      return tagged ? RdmPktType.LONGCTS_TAGRTM : RdmPktType.LONGCTS_MSGRTM;
    case 'longread':
      return tagged ? RdmPktType.LONGREAD_TAGRTM : RdmPktType.LONGREAD_MSGRTM;
  }
}

/** The protocol of a REQ packet type, or null when it is not a message REQ. */
export function rtmProtocol(type: number): RdmProtocol | null {
  switch (type) {
    case RdmPktType.EAGER_MSGRTM:
    case RdmPktType.EAGER_TAGRTM:
      return 'eager';
    case RdmPktType.MEDIUM_MSGRTM:
    case RdmPktType.MEDIUM_TAGRTM:
      return 'medium';
    case RdmPktType.LONGCTS_MSGRTM:
    case RdmPktType.LONGCTS_TAGRTM:
      return 'longcts';
    case RdmPktType.LONGREAD_MSGRTM:
    case RdmPktType.LONGREAD_TAGRTM:
      return 'longread';
    default:
      return null;
  }
}

function isTaggedType(type: number): boolean {
  return type === RdmPktType.EAGER_TAGRTM || type === RdmPktType.MEDIUM_TAGRTM || type === RdmPktType.LONGCTS_TAGRTM || type === RdmPktType.LONGREAD_TAGRTM;
}

/** Bytes of the raw address (EFA's `struct efa_ep_addr`: GID, QPN, pad, qkey, 8 reserved). */
export const RAW_ADDR_LEN = 32;
/** Bytes of the optional headers: the raw address is length-prefixed and padded to 8 bytes. */
const RAW_ADDR_HDR_LEN = 40;
const RAW_ADDR_FIELD_LEN = RAW_ADDR_HDR_LEN - 4;
const CQ_DATA_HDR_LEN = 8;
const CONNID_HDR_LEN = 4;
/** One remote IOV of a long-read REQ: addr u64, len u64, key u64. */
export const RMA_IOV_LEN = 24;

/** Fixed header bytes of each REQ type, before the optional headers. */
function reqBaseLen(type: number): number {
  switch (type) {
    case RdmPktType.EAGER_MSGRTM:
      return 8;
    case RdmPktType.EAGER_TAGRTM:
      return 16;
    case RdmPktType.MEDIUM_MSGRTM:
    case RdmPktType.LONGCTS_MSGRTM:
    case RdmPktType.LONGREAD_MSGRTM:
      return 24;
    case RdmPktType.MEDIUM_TAGRTM:
    case RdmPktType.LONGCTS_TAGRTM:
    case RdmPktType.LONGREAD_TAGRTM:
      return 32;
    default:
      return 0;
  }
}

/**
 * Header bytes of a REQ packet of `type`: before the peer's handshake it carries the raw
 * address, after it the connection id; then remote CQ data and the read IOVs when present.
 */
export function reqHeaderLen(type: number, rawAddr: boolean, cqData: boolean, iovCount = 0): number {
  return reqBaseLen(type) + (rawAddr ? RAW_ADDR_HDR_LEN : CONNID_HDR_LEN) + (cqData ? CQ_DATA_HDR_LEN : 0) + iovCount * RMA_IOV_LEN;
}

export const CTS_LEN = 24;
/** CTSDATA: base, recv_id u32, seg_length u64, seg_offset u64, connid u32 + pad. */
export const CTSDATA_HDR_LEN = 32;
export const EOR_LEN = 16;
/** PEER_ERROR: base, op_id u32, ref_kind u32, prov_errno u32, connid u32. */
export const PEER_ERROR_LEN = 20;

/** What a PEER_ERROR's op_id names (protocol v4, the PEER_ERROR extra feature). */
export const PeerErrorRef = {
  /** The receiver's peer's operation id (a send_id): that send failed at the receiver's side. */
  OPE_INDEX: 0,
  /** A message id of the sender: that message failed at the sender; drop what arrived of it. */
  MSG_ID: 1,
} as const;
/** Handshake: base, nextra_p3, one extra-info word, connid, device version, p2p (flags 0x800A). */
export const HANDSHAKE_LEN = 8 + 8 + 8 + 8 + 8;

// ------------------------------------------------------------------ numbers

function writeU64(buf: Uint8Array, off: number, v: number): void {
  const dv = view(buf);
  dv.setUint32(off, v >>> 0, true);
  dv.setUint32(off + 4, Math.floor(v / 0x1_0000_0000) >>> 0, true);
}

function readU64(buf: Uint8Array, off: number): number {
  const dv = view(buf);
  return dv.getUint32(off + 4, true) * 0x1_0000_0000 + dv.getUint32(off, true);
}

let lastBuf: Uint8Array | null = null;
let lastView: DataView | null = null;
/** One DataView per buffer, cached for the common case of many fields in the same packet. */
function view(buf: Uint8Array): DataView {
  if (buf !== lastBuf) {
    lastBuf = buf;
    lastView = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  return lastView as DataView;
}

// ------------------------------------------------------------------ REQ packets

/** What a REQ packet carries; encodeReq reads it, decodeReq fills it. Reusable. */
export class ReqFields {
  type = 0;
  flags = 0;
  msgId = 0;
  /** Tag, as two 32-bit halves (tagged types only). */
  tagLo = 0;
  tagHi = 0;
  /** Medium, long-CTS, long-read: the whole message's length. Eager: its payload's. */
  msgLength = 0;
  /** Medium: where this segment's payload goes in the message. */
  segOffset = 0;
  /** Long-CTS, long-read: the sender's id of the operation. */
  sendId = 0;
  /** Long-CTS: how many packets' worth of data the sender would like per CTS. */
  creditRequest = 0;
  /** The raw-address header (when the flag is set): GID, QPN and connection id of the sender. */
  rawAddr: Uint8Array | null = null;
  rawAddrOff = 0;
  /** The sender's connection id: from the connid header, or the raw address's. */
  connid = 0;
  /** Remote CQ data (when the flag is set), as two 32-bit halves. */
  cqDataLo = 0;
  cqDataHi = 0;
  /** Long-read: the sender's buffer (an offset in the region `readKey` names) and length. */
  readAddr = 0;
  readLen = 0;
  readKey = 0;
  /** Where the payload starts and how long it is. */
  payloadOff = 0;
  payloadLen = 0;
}

/**
 * Writes a REQ header at `buf[0..]` and returns its length; the payload goes after it. `raw`
 * is the sender's 32-byte raw address, written when `f.flags` has RAW_ADDR_HDR.
 */
export function encodeReq(buf: Uint8Array, f: ReqFields, raw: Uint8Array | null): number {
  const dv = view(buf);
  const type = f.type;
  buf[0] = type;
  buf[1] = RDM_PROTOCOL_VERSION;
  dv.setUint16(2, f.flags, true);
  dv.setUint32(4, f.msgId >>> 0, true);
  let off: number;
  switch (type) {
    case RdmPktType.EAGER_MSGRTM:
      off = 8;
      break;
    case RdmPktType.EAGER_TAGRTM:
      dv.setUint32(8, f.tagLo >>> 0, true);
      dv.setUint32(12, f.tagHi >>> 0, true);
      off = 16;
      break;
    case RdmPktType.MEDIUM_MSGRTM:
    case RdmPktType.MEDIUM_TAGRTM:
      writeU64(buf, 8, f.msgLength);
      writeU64(buf, 16, f.segOffset);
      off = 24;
      break;
    case RdmPktType.LONGCTS_MSGRTM:
    case RdmPktType.LONGCTS_TAGRTM:
      writeU64(buf, 8, f.msgLength);
      dv.setUint32(16, f.sendId >>> 0, true);
      dv.setUint32(20, f.creditRequest >>> 0, true);
      off = 24;
      break;
    case RdmPktType.LONGREAD_MSGRTM:
    case RdmPktType.LONGREAD_TAGRTM:
      writeU64(buf, 8, f.msgLength);
      dv.setUint32(16, f.sendId >>> 0, true);
      dv.setUint32(20, 1, true);
      off = 24;
      break;
    default:
      throw new RangeError(`encodeReq: ${type} is not a REQ packet type`);
  }
  if (off === 24 && isTaggedType(type)) {
    dv.setUint32(24, f.tagLo >>> 0, true);
    dv.setUint32(28, f.tagHi >>> 0, true);
    off = 32;
  }
  if ((f.flags & ReqFlags.RAW_ADDR_HDR) !== 0) {
    if (raw === null || raw.length !== RAW_ADDR_LEN) throw new RangeError('encodeReq: RAW_ADDR_HDR needs the 32-byte raw address');
    dv.setUint32(off, RAW_ADDR_FIELD_LEN, true);
    buf.set(raw, off + 4);
    dv.setUint32(off + 4 + RAW_ADDR_LEN, 0, true);
    off += RAW_ADDR_HDR_LEN;
  }
  if ((f.flags & ReqFlags.CQ_DATA_HDR) !== 0) {
    dv.setUint32(off, f.cqDataLo >>> 0, true);
    dv.setUint32(off + 4, f.cqDataHi >>> 0, true);
    off += CQ_DATA_HDR_LEN;
  }
  if ((f.flags & ReqFlags.CONNID_HDR) !== 0) {
    dv.setUint32(off, f.connid >>> 0, true);
    off += CONNID_HDR_LEN;
  }
  if (type === RdmPktType.LONGREAD_MSGRTM || type === RdmPktType.LONGREAD_TAGRTM) {
    writeU64(buf, off, f.readAddr);
    writeU64(buf, off + 8, f.readLen);
    writeU64(buf, off + 16, f.readKey);
    off += RMA_IOV_LEN;
  }
  return off;
}

/** Decodes a REQ packet of `len` bytes; false when malformed (`f` is then undefined). */
export function decodeReq(buf: Uint8Array, len: number, f: ReqFields): boolean {
  if (len < 8 || buf[1] !== RDM_PROTOCOL_VERSION) return false;
  const type = buf[0];
  const base = reqBaseLen(type);
  if (base === 0 || len < base) return false;
  const dv = view(buf);
  f.type = type;
  f.flags = dv.getUint16(2, true);
  f.msgId = dv.getUint32(4, true);
  f.tagLo = 0;
  f.tagHi = 0;
  f.segOffset = 0;
  f.sendId = 0;
  f.creditRequest = 0;
  f.readAddr = 0;
  f.readLen = 0;
  f.readKey = 0;
  let iovCount = 0;
  if (type === RdmPktType.EAGER_TAGRTM) {
    f.tagLo = dv.getUint32(8, true);
    f.tagHi = dv.getUint32(12, true);
  } else if (base >= 24) {
    f.msgLength = readU64(buf, 8);
    if (type === RdmPktType.MEDIUM_MSGRTM || type === RdmPktType.MEDIUM_TAGRTM) f.segOffset = readU64(buf, 16);
    else {
      f.sendId = dv.getUint32(16, true);
      if (type === RdmPktType.LONGREAD_MSGRTM || type === RdmPktType.LONGREAD_TAGRTM) {
        iovCount = dv.getUint32(20, true);
        if (iovCount !== 1) return false; // the endpoint reads one contiguous region
      } else f.creditRequest = dv.getUint32(20, true);
    }
    if (base === 32) {
      f.tagLo = dv.getUint32(24, true);
      f.tagHi = dv.getUint32(28, true);
    }
  }
  // The type says tagged or not; a MSG or TAGGED flag that contradicts it is malformed.
  if ((f.flags & (isTaggedType(type) ? ReqFlags.MSG : ReqFlags.TAGGED)) !== 0) return false;
  let off = base;
  f.rawAddr = null;
  f.rawAddrOff = 0;
  f.connid = 0;
  if ((f.flags & ReqFlags.RAW_ADDR_HDR) !== 0) {
    if (len < off + RAW_ADDR_HDR_LEN || dv.getUint32(off, true) !== RAW_ADDR_FIELD_LEN) return false;
    f.rawAddr = buf;
    f.rawAddrOff = off + 4;
    f.connid = dv.getUint32(off + 4 + 20, true);
    off += RAW_ADDR_HDR_LEN;
  }
  f.cqDataLo = 0;
  f.cqDataHi = 0;
  if ((f.flags & ReqFlags.CQ_DATA_HDR) !== 0) {
    if (len < off + CQ_DATA_HDR_LEN) return false;
    f.cqDataLo = dv.getUint32(off, true);
    f.cqDataHi = dv.getUint32(off + 4, true);
    off += CQ_DATA_HDR_LEN;
  }
  if ((f.flags & ReqFlags.CONNID_HDR) !== 0) {
    if ((f.flags & ReqFlags.RAW_ADDR_HDR) !== 0 || len < off + CONNID_HDR_LEN) return false;
    f.connid = dv.getUint32(off, true);
    off += CONNID_HDR_LEN;
  }
  if (iovCount === 1) {
    if (len < off + RMA_IOV_LEN) return false;
    f.readAddr = readU64(buf, off);
    f.readLen = readU64(buf, off + 8);
    f.readKey = readU64(buf, off + 16);
    off += RMA_IOV_LEN;
    if (f.readLen !== f.msgLength || f.readKey > 0xffffffff) return false;
  }
  f.payloadOff = off;
  f.payloadLen = len - off;
  if (type === RdmPktType.EAGER_MSGRTM || type === RdmPktType.EAGER_TAGRTM) f.msgLength = f.payloadLen;
  else if (f.segOffset + f.payloadLen > f.msgLength) return false;
  if (iovCount === 1 && f.payloadLen !== 0) return false;
  return true;
}

// ------------------------------------------------------------------ control packets

/** Fields of CTS, CTSDATA, EOR and HANDSHAKE packets. Reusable. */
export class CtrlFields {
  type = 0;
  flags = 0;
  sendId = 0;
  recvId = 0;
  /** CTS: bytes the receiver is ready for now. */
  recvLength = 0;
  /** CTSDATA: this segment's bytes and where they go. */
  segLength = 0;
  segOffset = 0;
  /** The sender's connection id (0 when the packet has no connid header). */
  connid = 0;
  /** PEER_ERROR: the operation or message it names, how, and the error. */
  opId = 0;
  refKind = 0;
  provErrno = 0;
  /** HANDSHAKE: the sender's feature and request bits, host id and device version (PCI id). */
  features = 0;
  hostId = 0;
  deviceVersion = 0;
  payloadOff = 0;
}

function writeBase(buf: Uint8Array, type: number, flags: number): DataView {
  const dv = view(buf);
  buf[0] = type;
  buf[1] = RDM_PROTOCOL_VERSION;
  dv.setUint16(2, flags, true);
  return dv;
}

/** A CTS: the receiver of a long-CTS message is ready for `recvLength` more bytes. */
export function encodeCts(buf: Uint8Array, connid: number, sendId: number, recvId: number, recvLength: number): number {
  const dv = writeBase(buf, RdmPktType.CTS, PKT_CONNID_HDR);
  dv.setUint32(4, connid >>> 0, true);
  dv.setUint32(8, sendId >>> 0, true);
  dv.setUint32(12, recvId >>> 0, true);
  writeU64(buf, 16, recvLength);
  return CTS_LEN;
}

/** A CTSDATA header; `segLength` payload bytes follow it. */
export function encodeCtsData(buf: Uint8Array, connid: number, recvId: number, segLength: number, segOffset: number): number {
  const dv = writeBase(buf, RdmPktType.CTSDATA, PKT_CONNID_HDR);
  dv.setUint32(4, recvId >>> 0, true);
  writeU64(buf, 8, segLength);
  writeU64(buf, 16, segOffset);
  dv.setUint32(24, connid >>> 0, true);
  dv.setUint32(28, 0, true);
  return CTSDATA_HDR_LEN;
}

/** An EOR: the receiver finished reading a long-read message. */
export function encodeEor(buf: Uint8Array, connid: number, sendId: number, recvId: number): number {
  const dv = writeBase(buf, RdmPktType.EOR, PKT_CONNID_HDR);
  dv.setUint32(4, sendId >>> 0, true);
  dv.setUint32(8, recvId >>> 0, true);
  dv.setUint32(12, connid >>> 0, true);
  return EOR_LEN;
}

/** A PEER_ERROR: the operation or message `opId` names (by `refKind`) failed with `provErrno`. */
export function encodePeerError(buf: Uint8Array, connid: number, opId: number, refKind: number, provErrno: number): number {
  const dv = writeBase(buf, RdmPktType.PEER_ERROR, PKT_CONNID_HDR);
  dv.setUint32(4, opId >>> 0, true);
  dv.setUint32(8, refKind >>> 0, true);
  dv.setUint32(12, provErrno >>> 0, true);
  dv.setUint32(16, connid >>> 0, true);
  return PEER_ERROR_LEN;
}

/** Handshake optional headers (§2.1.1), in the order they follow the extra-info words. */
export const HandshakeFlags = {
  HOST_ID_HDR: 1 << 0,
  DEVICE_VERSION_HDR: 1 << 1,
  USER_RECV_QP_HDR: 1 << 2,
  HMEM_P2P_HDR: 1 << 3,
} as const;

/** A HANDSHAKE announcing `features` (one extra-info word), with connid, device version and p2p headers. */
export function encodeHandshake(buf: Uint8Array, features: number, connid: number, deviceVersion: number): number {
  const dv = writeBase(buf, RdmPktType.HANDSHAKE, PKT_CONNID_HDR | HandshakeFlags.DEVICE_VERSION_HDR | HandshakeFlags.HMEM_P2P_HDR);
  dv.setUint32(4, 4, true);
  writeU64(buf, 8, features);
  dv.setUint32(16, connid >>> 0, true);
  dv.setUint32(20, 0, true);
  dv.setUint32(24, deviceVersion >>> 0, true);
  dv.setUint32(28, 0, true);
  // p2p_supported: no device memory here.
  dv.setUint32(32, 0, true);
  dv.setUint32(36, 0, true);
  return HANDSHAKE_LEN;
}

/** Decodes a CTS, CTSDATA, EOR or HANDSHAKE packet; false when malformed. */
export function decodeCtrl(buf: Uint8Array, len: number, f: CtrlFields): boolean {
  if (len < 4 || buf[1] !== RDM_PROTOCOL_VERSION) return false;
  const dv = view(buf);
  f.type = buf[0];
  f.flags = dv.getUint16(2, true);
  const connid = (f.flags & PKT_CONNID_HDR) !== 0;
  f.connid = 0;
  switch (f.type) {
    case RdmPktType.CTS:
      if (len !== CTS_LEN) return false;
      if (connid) f.connid = dv.getUint32(4, true);
      f.sendId = dv.getUint32(8, true);
      f.recvId = dv.getUint32(12, true);
      f.recvLength = readU64(buf, 16);
      f.payloadOff = CTS_LEN;
      return true;
    case RdmPktType.CTSDATA: {
      const hdr = connid ? CTSDATA_HDR_LEN : CTSDATA_HDR_LEN - 8;
      if (len < hdr) return false;
      f.recvId = dv.getUint32(4, true);
      f.segLength = readU64(buf, 8);
      f.segOffset = readU64(buf, 16);
      if (connid) f.connid = dv.getUint32(24, true);
      f.payloadOff = hdr;
      return f.segLength === len - hdr;
    }
    case RdmPktType.EOR:
      if (len !== EOR_LEN) return false;
      f.sendId = dv.getUint32(4, true);
      f.recvId = dv.getUint32(8, true);
      if (connid) f.connid = dv.getUint32(12, true);
      f.payloadOff = EOR_LEN;
      return true;
    case RdmPktType.PEER_ERROR:
      if (len !== PEER_ERROR_LEN) return false;
      f.opId = dv.getUint32(4, true);
      f.refKind = dv.getUint32(8, true);
      f.provErrno = dv.getUint32(12, true);
      if (connid) f.connid = dv.getUint32(16, true);
      f.payloadOff = PEER_ERROR_LEN;
      return f.refKind === PeerErrorRef.OPE_INDEX || f.refKind === PeerErrorRef.MSG_ID;
    case RdmPktType.HANDSHAKE: {
      if (len < 8) return false;
      const nextraP3 = dv.getUint32(4, true);
      if (nextraP3 < 3 || nextraP3 > 3 + 256) return false;
      let off = 8 + (nextraP3 - 3) * 8;
      if (len < off) return false;
      // Words beyond the first name features this endpoint does not know: ignored (§2.1).
      f.features = nextraP3 > 3 ? dv.getUint32(8, true) : 0;
      f.hostId = 0;
      f.deviceVersion = 0;
      const opt = (flag: number, bytes: number): boolean => (f.flags & flag) === 0 || len >= off + bytes;
      if (connid) {
        if (!opt(PKT_CONNID_HDR, 8)) return false;
        f.connid = dv.getUint32(off, true);
        off += 8;
      }
      if ((f.flags & HandshakeFlags.HOST_ID_HDR) !== 0) {
        if (!opt(HandshakeFlags.HOST_ID_HDR, 8)) return false;
        f.hostId = readU64(buf, off);
        off += 8;
      }
      if ((f.flags & HandshakeFlags.DEVICE_VERSION_HDR) !== 0) {
        if (!opt(HandshakeFlags.DEVICE_VERSION_HDR, 8)) return false;
        f.deviceVersion = dv.getUint32(off, true);
        off += 8;
      }
      if ((f.flags & HandshakeFlags.USER_RECV_QP_HDR) !== 0) {
        if (!opt(HandshakeFlags.USER_RECV_QP_HDR, 8)) return false;
        off += 8;
      }
      if ((f.flags & HandshakeFlags.HMEM_P2P_HDR) !== 0) {
        if (!opt(HandshakeFlags.HMEM_P2P_HDR, 8)) return false;
        off += 8;
      }
      f.payloadOff = off;
      return true;
    }
    default:
      return false;
  }
}
