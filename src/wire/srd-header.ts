import { BASE_HEADER_LEN, readU32, writeU32 } from './header';

/*
 * SRD extensions, between the 40-byte base header and the payload (big-endian).
 *
 * SRD_DATA (hdr_len 72)
 *  byte  size  field
 *  40     4    session       the sender device's incarnation: ordered (serial arithmetic), a
 *                            restarted device has a larger one, so late packets of an earlier
 *                            incarnation are told apart and dropped
 *  44     4    psn           packet sequence number within the session
 *  48     4    window_start  lowest PSN the sender still waits on: everything below is settled
 *                            (acknowledged or abandoned), so the receiver may forget it
 *  52     4    tx_time       sender's clock in microseconds (low 32 bits), echoed by acks for RTT
 *  56     4    dest_incarn   the receiver incarnation the sender learned from its acks when it
 *                            first sent this message (0: none yet); another incarnation of the
 *                            receiver refuses the packet (NAK REMOTE_ERROR_UNKNOWN_PEER), so a
 *                            restarted process never gets messages meant for its predecessor
 *  60     4    ack_session   piggybacked ack of the reverse direction: the session it acks,
 *                            0 when the packet carries none (a ping-pong then needs no ack packets)
 *  64     4    ack_cum       its cumulative ack (no selective part: only sent when there is no hole)
 *  68     4    ack_echo      its echoed tx_time
 *
 * SRD_ACK (hdr_len 76, no payload)
 *  40     4    session       the session acknowledged
 *  44     4    cum_ack       every PSN below it was delivered, or settled by the sender (below
 *                            its window_start): the sender completes what it still has below it
 *  48     4    echo_time     tx_time of the data packet that triggered this ack
 *  52     4    incarnation   the acknowledging (receiving) device's incarnation
 *  56     4    sack_base     first PSN the selective map describes; the receiver anchors it where
 *                            the news is (cum_ack + 1 normally, near a late duplicate or a far
 *                            arrival otherwise), so a delivery any distance above cum_ack can be
 *                            reported: one message stuck below never hides the ones above it
 *  60    16    sack          bit i (MSB first) set = PSN sack_base + i was delivered
 *
 * SRD_NAK (hdr_len 56, no payload)
 *  40     4    session
 *  44     4    psn           the packet refused
 *  48     1    status        WcStatus the sender reports. The answer is final for this PSN: later
 *                            copies of it get the same answer, never a delivery. REMOTE_ERROR_RNR
 *                            means "receiver not ready": the sender may try the message again
 *                            later under a new PSN; any other status fails the send
 *  49     3    reserved
 *  52     4    echo_time     tx_time of the refused transmission, for the RTT estimate
 */

export const SRD_DATA_HDR_LEN = 72;
export const SRD_ACK_HDR_LEN = 76;
export const SRD_NAK_HDR_LEN = 56;

export const OFF_SESSION = 40;
export const OFF_PSN = 44;
export const OFF_WINDOW_START = 48;
export const OFF_TX_TIME = 52;
export const OFF_DEST_INCARNATION = 56;
export const OFF_PB_SESSION = 60;
export const OFF_PB_CUM = 64;
export const OFF_PB_ECHO = 68;
export const OFF_ACK_INCARNATION = 52;
export const OFF_CUM_ACK = 44;
export const OFF_ECHO_TIME = 48;
export const OFF_SACK_BASE = 56;
export const OFF_SACK = 60;
export const SACK_BITS = 128;
export const OFF_NAK_PSN = 44;
export const OFF_NAK_STATUS = 48;
export const OFF_NAK_ECHO_TIME = 52;

/** The fields of an SRD extension, decoded into one reused object. */
export class SrdFields {
  session = 0;
  psn = 0;
  windowStart = 0;
  txTime = 0;
  cumAck = 0;
  echoTime = 0;
  status = 0;
  destIncarnation = 0;
  incarnation = 0;
  pbSession = 0;
  pbCum = 0;
  pbEcho = 0;
  sackBase = 0;
}

/** Decodes the extension of a data packet; false when hdr_len is too short for it. */
export function decodeSrdData(buf: Uint8Array, hdrLen: number, out: SrdFields): boolean {
  if (hdrLen < SRD_DATA_HDR_LEN) return false;
  out.session = readU32(buf, OFF_SESSION);
  out.psn = readU32(buf, OFF_PSN);
  out.windowStart = readU32(buf, OFF_WINDOW_START);
  out.txTime = readU32(buf, OFF_TX_TIME);
  out.destIncarnation = readU32(buf, OFF_DEST_INCARNATION);
  out.pbSession = readU32(buf, OFF_PB_SESSION);
  out.pbCum = readU32(buf, OFF_PB_CUM);
  out.pbEcho = readU32(buf, OFF_PB_ECHO);
  return true;
}

export function decodeSrdAck(buf: Uint8Array, hdrLen: number, out: SrdFields): boolean {
  if (hdrLen < SRD_ACK_HDR_LEN) return false;
  out.session = readU32(buf, OFF_SESSION);
  out.cumAck = readU32(buf, OFF_CUM_ACK);
  out.echoTime = readU32(buf, OFF_ECHO_TIME);
  out.incarnation = readU32(buf, OFF_ACK_INCARNATION);
  out.sackBase = readU32(buf, OFF_SACK_BASE);
  return true;
}

export function decodeSrdNak(buf: Uint8Array, hdrLen: number, out: SrdFields): boolean {
  if (hdrLen < SRD_NAK_HDR_LEN) return false;
  out.session = readU32(buf, OFF_SESSION);
  out.psn = readU32(buf, OFF_NAK_PSN);
  out.status = buf[OFF_NAK_STATUS];
  out.echoTime = readU32(buf, OFF_NAK_ECHO_TIME);
  return true;
}

/** True when SACK bit `i` (PSN sack_base + i) is set in an ack packet. */
export function sackBit(buf: Uint8Array, i: number): boolean {
  return (buf[OFF_SACK + (i >> 3)] & (0x80 >> (i & 7))) !== 0;
}

export function writeSrdData(buf: Uint8Array, session: number, psn: number, windowStart: number, txTime: number, destIncarnation: number): void {
  writeU32(buf, OFF_SESSION, session);
  writeU32(buf, OFF_PSN, psn);
  writeU32(buf, OFF_WINDOW_START, windowStart);
  writeU32(buf, OFF_TX_TIME, txTime);
  writeU32(buf, OFF_DEST_INCARNATION, destIncarnation);
  writePiggyback(buf, 0, 0, 0);
}

/** Writes (or, with session 0, clears) the piggybacked ack of a data packet. */
export function writePiggyback(buf: Uint8Array, session: number, cum: number, echo: number): void {
  writeU32(buf, OFF_PB_SESSION, session);
  writeU32(buf, OFF_PB_CUM, cum);
  writeU32(buf, OFF_PB_ECHO, echo);
}

/** Writes an ack's fields with an empty selective map (set bits with setSackBit). */
export function writeSrdAck(buf: Uint8Array, session: number, cumAck: number, echoTime: number, incarnation: number, sackBase: number): void {
  writeU32(buf, OFF_SESSION, session);
  writeU32(buf, OFF_CUM_ACK, cumAck);
  writeU32(buf, OFF_ECHO_TIME, echoTime);
  writeU32(buf, OFF_ACK_INCARNATION, incarnation);
  writeU32(buf, OFF_SACK_BASE, sackBase);
  buf.fill(0, OFF_SACK, OFF_SACK + SACK_BITS / 8);
}

export function setSackBit(buf: Uint8Array, i: number): void {
  buf[OFF_SACK + (i >> 3)] |= 0x80 >> (i & 7);
}

export function writeSrdNak(buf: Uint8Array, session: number, psn: number, status: number, echoTime: number): void {
  writeU32(buf, OFF_SESSION, session);
  writeU32(buf, OFF_NAK_PSN, psn);
  buf[OFF_NAK_STATUS] = status;
  buf[49] = 0;
  buf[50] = 0;
  buf[51] = 0;
  writeU32(buf, OFF_NAK_ECHO_TIME, echoTime);
}

export { BASE_HEADER_LEN };
