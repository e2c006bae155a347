import { BASE_HEADER_LEN, encodeHeader, FLAG_HAS_IMM, PacketType, sealPacket } from '../wire/header';

/**
 * UD's whole transport: one datagram per message, no state, no retransmission. A UD send is
 * a base header followed by the payload; loss, duplication and reordering reach the
 * application as they happen.
 */

/** Offset of the payload in a UD packet. */
export const UD_PAYLOAD_OFFSET = BASE_HEADER_LEN;

/**
 * Finishes a UD packet whose payload was gathered at UD_PAYLOAD_OFFSET: writes the header and
 * the CRC; returns the datagram length.
 */
export function finishUdPacket(
  buf: Uint8Array,
  payloadLen: number,
  srcQpn: number,
  dstQpn: number,
  qkey: number,
  imm: number | undefined,
  srcGid: Uint8Array,
): number {
  const hasImm = imm !== undefined;
  encodeHeader(
    buf,
    PacketType.UD_SEND,
    hasImm ? FLAG_HAS_IMM : 0,
    BASE_HEADER_LEN,
    srcQpn,
    dstQpn,
    payloadLen,
    qkey,
    hasImm ? imm >>> 0 : 0,
    srcGid,
  );
  const len = BASE_HEADER_LEN + payloadLen;
  sealPacket(buf, len);
  return len;
}

/** True when a UD packet may be delivered to a QP whose Q_Key is `qpQkey`. */
export function udQkeyMatches(packetQkey: number, qpQkey: number): boolean {
  return packetQkey === qpQkey;
}

/**
 * Fills a 40-byte GRH (the area at the start of every UD receive buffer) as an IPv6-style
 * header: version 6, the payload length, next header 0x1B (IB transport), hop limit 64,
 * source and destination GIDs. Receivers that look at it see who sent the message, as on
 * InfiniBand.
 */
export function writeGrh(out: Uint8Array, payloadLen: number, sgid: Uint8Array, sgidOff: number, dgid: Uint8Array): void {
  const off = 0;
  out[off] = 0x60;
  out[off + 1] = 0;
  out[off + 2] = 0;
  out[off + 3] = 0;
  out[off + 4] = payloadLen >> 8;
  out[off + 5] = payloadLen & 0xff;
  out[off + 6] = 0x1b;
  out[off + 7] = 64;
  for (let i = 0; i < 16; i++) out[off + 8 + i] = sgid[sgidOff + i];
  out.set(dgid, off + 24);
}
