import { crc32 as zlibCrc32 } from 'node:zlib';

/*
 * CRC-32 (IEEE 802.3 polynomial, the one zlib and Ethernet use). It detects every burst error
 * up to 32 bits and every odd number of flipped bits: the random corruption our fault
 * injector produces.
 *
 * Two implementations, picked by length: for small packets (acks, 64-byte messages) the cost
 * of calling into zlib dominates and a slicing-by-8 table walk in JavaScript is ~4× faster;
 * from a few hundred bytes on, zlib's native code wins. Both give the same value.
 */

/** Below this many bytes the JavaScript table walk is faster than the native call. */
const NATIVE_FROM = 448;

const TABLE = buildTable();

function buildTable(): Int32Array {
  const t = new Int32Array(256 * 8);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
    t[i] = c;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) t[s * 256 + i] = (t[(s - 1) * 256 + i] >>> 8) ^ t[t[(s - 1) * 256 + i] & 0xff];
  }
  return t;
}

/** CRC-32 of the first `len` bytes of `data`. */
export function crc32(data: Uint8Array, len = data.length): number {
  if (len >= NATIVE_FROM) return zlibCrc32(len === data.length ? data : data.subarray(0, len)) >>> 0;
  const t = TABLE;
  let c = -1;
  let i = 0;
  for (; i + 8 <= len; i += 8) {
    const a = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) ^ c;
    c =
      t[1792 + (a & 0xff)] ^
      t[1536 + ((a >>> 8) & 0xff)] ^
      t[1280 + ((a >>> 16) & 0xff)] ^
      t[1024 + (a >>> 24)] ^
      t[768 + data[i + 4]] ^
      t[512 + data[i + 5]] ^
      t[256 + data[i + 6]] ^
      t[data[i + 7]];
  }
  for (; i < len; i++) c = t[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
