// The base header codec: big-endian layout as documented, encode/seal/decode round trip, CRC
// catching every single-bit error, and a decoder that refuses garbage without ever throwing.
import t from 'tap';
import { makeGid } from '../src/common/gid';
import { finishUdPacket, UD_PAYLOAD_OFFSET, udQkeyMatches, writeGrh } from '../src/ud/ud-packet';
import { crc32 } from '../src/wire/checksum';
import {
  BASE_HEADER_LEN,
  decodeHeader,
  DecodeError,
  encodeHeader,
  FLAG_HAS_IMM,
  OFF_CRC,
  OFF_HDR_LEN,
  OFF_MAGIC,
  OFF_PAYLOAD_LEN,
  OFF_SRC_GID,
  OFF_TYPE,
  OFF_VERSION,
  PacketHeader,
  PacketType,
  readU32,
  sealPacket,
  WIRE_MAGIC,
  WIRE_VERSION,
} from '../src/wire/header';

/** mulberry32: a tiny seeded PRNG. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const GID = makeGid(0x0a0b0c0d, 0x01020304);
const ERROR_VALUES = new Set<number>(Object.values(DecodeError));
const KNOWN_TYPES: number[] = (Object.values(PacketType) as number[]).sort((x, y) => x - y);
const MAX_TYPE = KNOWN_TYPES[KNOWN_TYPES.length - 1];

/** A sealed packet of `total` bytes (header + payload 0, 1, 2, ...). */
function packet(total = 100, opts: { type?: number; flags?: number; imm?: number; hdrLen?: number } = {}): Buffer {
  const hdrLen = opts.hdrLen ?? BASE_HEADER_LEN;
  const buf = Buffer.alloc(total);
  for (let i = hdrLen; i < total; i++) buf[i] = i & 0xff;
  encodeHeader(buf, (opts.type ?? PacketType.UD_SEND) as PacketType, opts.flags ?? 0, hdrLen, 0x1234, 0xabcd, total - hdrLen, 0x89abcdef, opts.imm ?? 0, GID);
  sealPacket(buf, total);
  return buf;
}

const decode = (buf: Uint8Array, len = buf.length): [DecodeError, PacketHeader] => {
  const h = new PacketHeader();
  return [decodeHeader(buf, len, h), h];
};

t.test('layout: fields at their documented offsets, big-endian', async (t) => {
  t.equal(BASE_HEADER_LEN, 40);
  t.equal(UD_PAYLOAD_OFFSET, 40, 'a UD payload follows the base header');
  const buf = packet(100, { flags: FLAG_HAS_IMM, imm: 0xdeadbeef });
  t.same([...buf.subarray(0, 2)], [0xef, 0xa1], 'magic 0xEFA1 at 0');
  t.equal(WIRE_MAGIC, 0xefa1);
  t.equal(buf[2], WIRE_VERSION, 'version at 2');
  t.equal(buf[3], PacketType.UD_SEND, 'type at 3');
  t.equal(buf[4], FLAG_HAS_IMM, 'flags at 4');
  t.equal(buf[5], 40, 'hdr_len at 5');
  t.same([...buf.subarray(6, 8)], [0x12, 0x34], 'src_qpn at 6');
  t.same([...buf.subarray(8, 10)], [0xab, 0xcd], 'dst_qpn at 8');
  t.same([...buf.subarray(10, 12)], [0, 60], 'payload_len at 10');
  t.same([...buf.subarray(12, 16)], [0x89, 0xab, 0xcd, 0xef], 'qkey at 12');
  t.same([...buf.subarray(16, 20)], [0xde, 0xad, 0xbe, 0xef], 'imm at 16');
  t.same([...buf.subarray(20, 36)], [...GID], 'src_gid at 20');
  const zeroed = Buffer.from(buf);
  zeroed.writeUInt32BE(0, OFF_CRC);
  t.equal(readU32(buf, OFF_CRC), crc32(zeroed), 'crc at 36: CRC-32 of the datagram with the crc field as zero');
  t.equal(PacketType.UD_SEND, 1, 'UD_SEND is type 1 on the wire');
  t.same(KNOWN_TYPES, KNOWN_TYPES.map((_, i) => i + 1), 'packet types are numbered 1, 2, ... without gaps');
});

t.test('encode/seal/decode round trip', async (t) => {
  for (const total of [40, 41, 100, 8232]) {
    const [err, h] = decode(packet(total, { flags: FLAG_HAS_IMM, imm: 0xfedcba98 }));
    t.equal(err, DecodeError.OK, `${total} bytes decode OK`);
    t.equal(h.type, PacketType.UD_SEND);
    t.equal(h.flags, FLAG_HAS_IMM);
    t.equal(h.hdrLen, 40);
    t.equal(h.srcQpn, 0x1234);
    t.equal(h.dstQpn, 0xabcd);
    t.equal(h.payloadLen, total - 40);
    t.equal(h.qkey, 0x89abcdef, 'qkey read unsigned');
    t.equal(h.imm, 0xfedcba98, 'imm read unsigned');
    t.equal(h.srcGidOffset, OFF_SRC_GID);
  }
  for (const type of KNOWN_TYPES) t.equal(decode(packet(60, { type }))[0], DecodeError.OK, `type ${type} is known to the decoder`);
  // A type extension between byte 40 and hdr_len (as SRD will use) is accepted.
  const [err, h] = decode(packet(80, { type: PacketType.SRD_DATA, hdrLen: 56 }));
  t.equal(err, DecodeError.OK, 'hdr_len > 40 decodes');
  t.equal(h.hdrLen, 56);
  t.equal(h.payloadLen, 24);

  // A datagram sitting at the front of a larger buffer: seal and decode the first `len` bytes.
  const big = Buffer.alloc(300, 0x55);
  encodeHeader(big, PacketType.UD_SEND, 0, 40, 1, 2, 60, 3, 0, GID);
  sealPacket(big, 100);
  t.equal(decode(Buffer.from(big), 100)[0], DecodeError.OK, 'len shorter than the buffer');
  big[150] ^= 0xff;
  t.equal(decode(big, 100)[0], DecodeError.OK, 'bytes past len are not covered');

  // finishUdPacket writes a header around a payload gathered at UD_PAYLOAD_OFFSET.
  const ud = Buffer.alloc(40 + 5);
  ud.set([1, 2, 3, 4, 5], UD_PAYLOAD_OFFSET);
  const len = finishUdPacket(ud, 5, 7, 9, 0x1111, 0x2222, GID);
  t.equal(len, 45);
  const [e2, h2] = decode(ud, len);
  t.equal(e2, DecodeError.OK, 'finishUdPacket output decodes');
  t.same([h2.type, h2.flags, h2.srcQpn, h2.dstQpn, h2.qkey, h2.imm, h2.payloadLen], [PacketType.UD_SEND, FLAG_HAS_IMM, 7, 9, 0x1111, 0x2222, 5]);
  t.same([...ud.subarray(40)], [1, 2, 3, 4, 5], 'payload untouched');
  const noImm = Buffer.alloc(40);
  finishUdPacket(noImm, 0, 7, 9, 0x1111, undefined, GID);
  const [e3, h3] = decode(noImm);
  t.equal(e3, DecodeError.OK);
  t.equal(h3.flags & FLAG_HAS_IMM, 0, 'no immediate: HAS_IMM clear');
  t.ok(udQkeyMatches(5, 5));
  t.notOk(udQkeyMatches(5, 6));
});

t.test('writeGrh fills the 40-byte GRH area', async (t) => {
  const out = new Uint8Array(40).fill(0xaa);
  const framed = new Uint8Array(36);
  framed.set(GID, 20);
  const dgid = makeGid(0x0a0b0c0d, 9);
  writeGrh(out, 0x1234, framed, 20, dgid);
  t.equal(out[0], 0x60, 'IP version 6');
  t.same([...out.subarray(1, 4)], [0, 0, 0], 'traffic class / flow label zero');
  t.same([...out.subarray(4, 6)], [0x12, 0x34], 'payload length');
  t.equal(out[6], 0x1b, 'next header: IB transport');
  t.equal(out[7], 64, 'hop limit');
  t.same([...out.subarray(8, 24)], [...GID], 'source GID');
  t.same([...out.subarray(24, 40)], [...dgid], 'destination GID');
});

t.test('every single-bit flip of a 100-byte packet is detected', async (t) => {
  const good = packet(100, { flags: FLAG_HAS_IMM, imm: 0x01020304 });
  t.equal(decode(Buffer.from(good))[0], DecodeError.OK, 'the unflipped packet is OK');
  const undetected: string[] = [];
  const byResult = new Map<number, number>();
  for (let byte = 0; byte < good.length; byte++) {
    for (let bit = 0; bit < 8; bit++) {
      const b = Buffer.from(good); // decode zeroes the crc field in place: a fresh copy each time
      b[byte] ^= 1 << bit;
      const [err] = decode(b);
      byResult.set(err, (byResult.get(err) ?? 0) + 1);
      if (err === DecodeError.OK) undetected.push(`byte ${byte} bit ${bit}`);
    }
  }
  t.same(undetected, [], 'no flip of the 800 decodes OK');
  t.ok((byResult.get(DecodeError.BAD_CHECKSUM) ?? 0) >= 60 * 8, 'payload and crc flips are checksum failures');
  // Flips in the payload and in the crc field itself are caught by the CRC alone.
  for (const off of [OFF_CRC, OFF_CRC + 3, 40, 99, 12, 16, 20, 35]) {
    const b = Buffer.from(good);
    b[off] ^= 0x80;
    t.equal(decode(b)[0], DecodeError.BAD_CHECKSUM, `flip at byte ${off}: BAD_CHECKSUM`);
  }
});

t.test('wrong magic, version, type and length are each detected', async (t) => {
  const mutate = (fn: (b: Buffer) => void, reseal = true): Buffer => {
    const b = packet(100);
    fn(b);
    if (reseal) sealPacket(b, b.length);
    return b;
  };
  // Resealed, so the CRC is right and only the named check can refuse them.
  t.equal(decode(mutate((b) => (b[OFF_MAGIC] = 0x45)))[0], DecodeError.BAD_MAGIC, 'magic');
  t.equal(decode(mutate((b) => b.writeUInt16BE(0xa1ef, OFF_MAGIC)))[0], DecodeError.BAD_MAGIC, 'byte-swapped magic');
  t.equal(decode(mutate((b) => (b[OFF_VERSION] = 0)))[0], DecodeError.BAD_VERSION, 'version 0');
  t.equal(decode(mutate((b) => (b[OFF_VERSION] = WIRE_VERSION + 1)))[0], DecodeError.BAD_VERSION, 'the next version');
  t.equal(decode(mutate((b) => (b[OFF_VERSION] = WIRE_VERSION - 1)))[0], DecodeError.BAD_VERSION, 'the previous version');
  for (const type of [0, MAX_TYPE + 1, 0x81, 255]) {
    t.equal(decode(mutate((b) => (b[OFF_TYPE] = type)))[0], DecodeError.BAD_TYPE, `type ${type}`);
  }
  t.equal(decode(mutate((b) => (b[OFF_HDR_LEN] = 39)))[0], DecodeError.BAD_LENGTH, 'hdr_len below 40');
  t.equal(decode(mutate((b) => (b[OFF_HDR_LEN] = 41)))[0], DecodeError.BAD_LENGTH, 'hdr_len + payload_len past the datagram');
  t.equal(decode(mutate((b) => b.writeUInt16BE(61, OFF_PAYLOAD_LEN)))[0], DecodeError.BAD_LENGTH, 'payload_len one too many');
  t.equal(decode(mutate((b) => b.writeUInt16BE(59, OFF_PAYLOAD_LEN)))[0], DecodeError.BAD_LENGTH, 'payload_len one too few');
  const p = packet(100);
  t.equal(decode(p.subarray(0, 99))[0], DecodeError.BAD_LENGTH, 'datagram cut by one byte');
  t.equal(decode(Buffer.concat([packet(100), Buffer.from([0])]))[0], DecodeError.BAD_LENGTH, 'datagram with a trailing byte');
  t.equal(decode(packet(100), 99)[0], DecodeError.BAD_LENGTH, 'len shorter than the packet');
  for (const n of [0, 1, 2, 39]) t.equal(decode(packet(100).subarray(0, n))[0], DecodeError.TRUNCATED, `${n} bytes: TRUNCATED`);
  // The order of checks: magic before version before type before length before CRC.
  const all = packet(100);
  all[OFF_MAGIC] = 0;
  all[OFF_VERSION] = 9;
  all[OFF_TYPE] = 99;
  t.equal(decode(all)[0], DecodeError.BAD_MAGIC, 'magic is checked first');
  const vt = packet(100);
  vt[OFF_VERSION] = 9;
  vt[OFF_TYPE] = 99;
  t.equal(decode(vt)[0], DecodeError.BAD_VERSION, 'version before type');
});

t.test('decode never throws on random buffers and never accepts them', async (t) => {
  const rnd = mulberry32(20240601);
  const h = new PacketHeader();
  let threw = 0;
  let unknown = 0;
  let accepted = 0;
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(rnd() * 201); // 0..200
    const b = Buffer.alloc(len);
    for (let k = 0; k < len; k++) b[k] = (rnd() * 256) | 0;
    // A third get a valid magic/version/type and a fitting length, to reach the later checks.
    if (len >= 40 && i % 3 === 0) {
      b.writeUInt16BE(WIRE_MAGIC, 0);
      b[OFF_VERSION] = WIRE_VERSION;
      b[OFF_TYPE] = KNOWN_TYPES[i % KNOWN_TYPES.length];
      const hdrLen = 40 + Math.floor(rnd() * (len - 39));
      b[OFF_HDR_LEN] = hdrLen;
      b.writeUInt16BE(len - hdrLen, OFF_PAYLOAD_LEN);
    }
    try {
      const err = decodeHeader(b, b.length, h);
      seen.add(err);
      if (!ERROR_VALUES.has(err)) unknown++;
      if (err === DecodeError.OK) accepted++;
    } catch {
      threw++;
    }
  }
  t.equal(threw, 0, 'no throw in 2000 random buffers');
  t.equal(unknown, 0, 'every result is a DecodeError value');
  t.equal(accepted, 0, 'no random buffer is accepted');
  for (const e of [DecodeError.TRUNCATED, DecodeError.BAD_MAGIC, DecodeError.BAD_CHECKSUM]) {
    t.ok(seen.has(e), `the corpus reached ${e}`);
  }
});

t.test('the JavaScript and native CRC-32 paths agree with zlib at every length', async (t) => {
  const { crc32: zlibCrc } = await import('node:zlib');
  const { crc32: ours } = await import('../src/wire/checksum');
  let seed = 7;
  const bytes = Buffer.alloc(1200);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
  let mismatches = 0;
  for (let len = 0; len <= bytes.length; len++) if (ours(bytes, len) !== zlibCrc(bytes.subarray(0, len)) >>> 0) mismatches++;
  t.equal(mismatches, 0, 'lengths 0..1200');
});
