import { InvalidArgumentError } from '../common/errors';
import { formatGid, GID_LENGTH } from '../common/gid';
import { RAW_ADDR_LEN } from './rdm-wire';

/**
 * An endpoint's raw address, laid out as EFA's `struct efa_ep_addr` (what `fi_getname` gives
 * and `fi_av_insert` takes for the efa provider): the 16-byte GID, the QP number (u16), two
 * bytes of padding, the QP's qkey (u32), which serves as the connection id, then 8 reserved
 * bytes. Little endian.
 */
export interface RawAddress {
  gid: Uint8Array;
  gidText: string;
  qpn: number;
  /** The QP's qkey: a fresh random value per endpoint, so a reused QPN is a new connection. */
  connid: number;
}

/** Writes a raw address into a new 32-byte buffer. */
export function encodeRawAddress(gid: Uint8Array, qpn: number, connid: number): Uint8Array {
  if (gid.length !== GID_LENGTH) throw new InvalidArgumentError(`raw address: a GID is ${GID_LENGTH} bytes, got ${gid.length}`);
  const out = new Uint8Array(RAW_ADDR_LEN);
  out.set(gid, 0);
  const dv = new DataView(out.buffer);
  dv.setUint16(16, qpn, true);
  dv.setUint32(20, connid >>> 0, true);
  return out;
}

/** Reads a raw address at `buf[off..off+32)`; throws EINVAL when it is not one. */
export function decodeRawAddress(buf: Uint8Array, off = 0): RawAddress {
  if (!(buf instanceof Uint8Array) || buf.length - off < RAW_ADDR_LEN) {
    throw new InvalidArgumentError(`raw address: expected ${RAW_ADDR_LEN} bytes (GID, QPN, connection id as efa_ep_addr)`);
  }
  const dv = new DataView(buf.buffer, buf.byteOffset + off, RAW_ADDR_LEN);
  const gid = Uint8Array.prototype.slice.call(buf, off, off + GID_LENGTH);
  return { gid, gidText: formatGid(gid), qpn: dv.getUint16(16, true), connid: dv.getUint32(20, true) };
}

/** `fe80::...:qpn:connid` style text for logs and tools. */
export function formatRawAddress(a: RawAddress): string {
  return `${a.gidText}/qpn ${a.qpn}/connid 0x${a.connid.toString(16).padStart(8, '0')}`;
}
