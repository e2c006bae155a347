import { InvalidArgumentError } from './errors';

/**
 * A 16-byte global identifier of an emulated EFA device.
 *
 * Layout (network byte order), shown in IPv6 notation like real EFA GIDs:
 *
 * ```
 *  byte 0..1   0xfe80        link-local prefix, as the GIDs of real EFA devices show
 *  byte 2..7   0             reserved
 *  byte 8..11  fabric id     random 32-bit value chosen when a daemon's state is created;
 *                            devices of two different fabrics never talk to each other
 *  byte 12..15 device index  assigned by the daemon in registration order, stable per device
 *                            name, never handed to another name
 * ```
 *
 * Example: `fe80::1a2b:3c4d:0:7` is device index 7 of fabric 0x1a2b3c4d.
 */
export type Gid = Uint8Array;

export const GID_LENGTH = 16;
export const GID_PREFIX = 0xfe80;
export const GID_FABRIC_OFFSET = 8;
export const GID_INDEX_OFFSET = 12;

/** Builds a GID from its fabric id and device index. */
export function makeGid(fabricId: number, deviceIndex: number): Gid {
  const gid = new Uint8Array(GID_LENGTH);
  const view = new DataView(gid.buffer);
  view.setUint16(0, GID_PREFIX);
  view.setUint32(GID_FABRIC_OFFSET, fabricId >>> 0);
  view.setUint32(GID_INDEX_OFFSET, deviceIndex >>> 0);
  return gid;
}

/** Reads the device index (bytes 12..15) of a GID stored at `offset` in `buf`. */
export function gidDeviceIndex(buf: Uint8Array, offset = 0): number {
  return ((buf[offset + 12] << 24) | (buf[offset + 13] << 16) | (buf[offset + 14] << 8) | buf[offset + 15]) >>> 0;
}

/** Reads the fabric id (bytes 8..11) of a GID stored at `offset` in `buf`. */
export function gidFabricId(buf: Uint8Array, offset = 0): number {
  return ((buf[offset + 8] << 24) | (buf[offset + 9] << 16) | (buf[offset + 10] << 8) | buf[offset + 11]) >>> 0;
}

/** Formats a GID in canonical IPv6 text (lower case, longest zero run compressed). */
export function formatGid(gid: Uint8Array, offset = 0): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((gid[offset + 2 * i] << 8) | gid[offset + 2 * i + 1]);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

/**
 * Parses a GID given as IPv6 text or as 16 bytes. Throws InvalidArgumentError naming
 * `what` when the value is not a GID.
 */
export function parseGid(value: string | Uint8Array, what = 'gid'): Gid {
  if (value instanceof Uint8Array) {
    if (value.length !== GID_LENGTH) {
      throw new InvalidArgumentError(`${what}: a GID has ${GID_LENGTH} bytes, got ${value.length}`);
    }
    return Uint8Array.from(value);
  }
  if (typeof value !== 'string') throw new InvalidArgumentError(`${what}: expected a GID string or 16 bytes`);
  const text = value.trim().toLowerCase();
  const bad = (): never => {
    throw new InvalidArgumentError(`${what}: "${value}" is not a GID in IPv6 notation`);
  };
  if (!/^[0-9a-f:]+$/.test(text)) bad();
  const halves = text.split('::');
  if (halves.length > 2) bad();
  const parse = (part: string): number[] =>
    part === '' ? [] : part.split(':').map((g) => (g.length >= 1 && g.length <= 4 ? parseInt(g, 16) : bad()));
  const head = parse(halves[0]);
  const tail = halves.length === 2 ? parse(halves[1]) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) bad();
  const groups = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const gid = new Uint8Array(GID_LENGTH);
  for (let i = 0; i < 8; i++) {
    gid[2 * i] = groups[i] >> 8;
    gid[2 * i + 1] = groups[i] & 0xff;
  }
  return gid;
}

/** True when two GIDs hold the same 16 bytes. */
export function gidEquals(a: Uint8Array, b: Uint8Array, bOffset = 0): boolean {
  for (let i = 0; i < GID_LENGTH; i++) if (a[i] !== b[bOffset + i]) return false;
  return true;
}
