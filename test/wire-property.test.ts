// Property tests of the receive path: the base-header codec and the SRD extensions against
// arbitrary bytes and arbitrary field values, and Device.handleDatagram against arbitrary
// datagrams (random bytes and valid-CRC headers with random fields), checking that nothing
// throws and every packet is either delivered or dropped under exactly one counted cause.
import fc from 'fast-check';
import t from 'tap';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { makeGid } from '../src/common/gid';
import type { Device } from '../src/device/device';
import type { DeviceStats } from '../src/device/device-stats';
import { QpType } from '../src/device/constants';
import { WorkCompletion } from '../src/device/work-completion';
import {
  BASE_HEADER_LEN,
  decodeHeader,
  DecodeError,
  encodeHeader,
  OFF_CRC,
  PacketHeader,
  PacketType,
  readU32,
  sealPacket,
  WIRE_MAGIC,
  WIRE_VERSION,
} from '../src/wire/header';
import {
  decodeSrdAck,
  decodeSrdData,
  decodeSrdNak,
  SRD_ACK_HDR_LEN,
  SRD_DATA_HDR_LEN,
  SRD_NAK_HDR_LEN,
  SrdFields,
  writePiggyback,
  writeSrdAck,
  writeSrdData,
  writeSrdNak,
} from '../src/wire/srd-header';
import { createUdEnd, MemoryFabric, type UdEnd } from './helpers/memory-fabric';

// One seed for every property, so a run is repeatable (and the "was exercised" checks cannot
// flake); FC_SEED=n explores other inputs.
const FC_SEED = Number(process.env.FC_SEED ?? 0x5eed);
fc.configureGlobal({ seed: FC_SEED });
t.comment(`fast-check seed ${FC_SEED} (FC_SEED=n to change)`);

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const gidArb = fc.uint8Array({ minLength: 16, maxLength: 16 });
const KNOWN_TYPES = [PacketType.UD_SEND, PacketType.SRD_DATA, PacketType.SRD_ACK, PacketType.SRD_NAK] as const;

/** Independent check of the CRC rule: CRC-32 of the first `len` bytes with bytes 36..39 zero. */
function crcIsRight(orig: Uint8Array, len: number): boolean {
  if (len < BASE_HEADER_LEN || len > orig.length) return false;
  const copy = Buffer.from(orig.subarray(0, len));
  const wire = readU32(copy, OFF_CRC);
  copy.fill(0, OFF_CRC, OFF_CRC + 4);
  return (zlibCrc32(copy) >>> 0) === wire;
}

/** Base-header fields, as encodeHeader takes them. */
const headerFields = fc.record({
  flags: u8,
  srcQpn: u16,
  dstQpn: u16,
  qkey: u32,
  imm: u32,
  gid: gidArb,
  payload: fc.uint8Array({ minLength: 0, maxLength: 600 }),
});

/** A sealed, well-formed packet of a known type whose payload_len matches (hdr_len may exceed the type's minimum). */
const sealedPacket = fc
  .record({
    type: fc.constantFrom(...KNOWN_TYPES),
    extra: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 - SRD_ACK_HDR_LEN })),
    h: headerFields,
    ext: fc.array(u32, { minLength: 8, maxLength: 8 }),
    status: u8,
  })
  .map(({ type, extra, h, ext, status }) => {
    const minLen = type === PacketType.UD_SEND ? BASE_HEADER_LEN : type === PacketType.SRD_NAK ? SRD_NAK_HDR_LEN : type === PacketType.SRD_ACK ? SRD_ACK_HDR_LEN : SRD_DATA_HDR_LEN;
    const hdrLen = minLen + extra;
    const len = hdrLen + h.payload.length;
    const buf = Buffer.alloc(len);
    buf.set(h.payload, hdrLen);
    encodeHeader(buf, type, h.flags, hdrLen, h.srcQpn, h.dstQpn, h.payload.length, h.qkey, h.imm, h.gid);
    if (type === PacketType.SRD_DATA) {
      writeSrdData(buf, ext[0], ext[1], ext[2], ext[3], ext[4]);
      writePiggyback(buf, ext[5], ext[6], ext[7]);
    } else if (type === PacketType.SRD_ACK) {
      writeSrdAck(buf, ext[0], ext[1], ext[2], ext[3], ext[4]);
    } else if (type === PacketType.SRD_NAK) {
      writeSrdNak(buf, ext[0], ext[1], status, ext[2]);
    }
    sealPacket(buf, len);
    return { type, hdrLen, h, ext, status, buf };
  });

t.test('decodeHeader never throws on arbitrary bytes and returns a DecodeError; OK only with a right CRC', async (t) => {
  const errors = new Set<number>(Object.values(DecodeError));
  const out = new PacketHeader();
  let oks = 0;
  const check = (bytes: Uint8Array, len: number): boolean => {
    const orig = Uint8Array.from(bytes);
    let r: number;
    try {
      r = decodeHeader(bytes, len, out);
    } catch (err) {
      throw new Error(`decodeHeader threw on len ${len} of ${orig.length}: ${String(err)}`);
    }
    if (!errors.has(r)) return false;
    if (len > orig.length) return true; // outside the contract (len <= buf.length): only "never throws"
    if (r === DecodeError.OK) {
      oks++;
      return (
        crcIsRight(orig, len) &&
        ((orig[0] << 8) | orig[1]) === WIRE_MAGIC &&
        orig[2] === WIRE_VERSION &&
        (KNOWN_TYPES as readonly number[]).includes(orig[3]) &&
        orig[5] >= BASE_HEADER_LEN &&
        orig[5] + ((orig[10] << 8) | orig[11]) === len
      );
    }
    return true;
  };
  // Pure noise, with a length anywhere from 0 to a little past the buffer.
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 300 }).chain((b) => fc.tuple(fc.constant(b), fc.integer({ min: 0, max: b.length + 16 }))),
      ([b, len]) => check(b, len),
    ),
    { numRuns: 1500 },
  );
  // Noise that passes the cheap checks (magic, version, type, lengths), so the CRC decides.
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 40, maxLength: 300 }), fc.constantFrom(...KNOWN_TYPES), fc.integer({ min: 40, max: 255 }), fc.boolean(), (b, type, hdrLen, seal) => {
      b[0] = WIRE_MAGIC >> 8;
      b[1] = WIRE_MAGIC & 0xff;
      b[2] = WIRE_VERSION;
      b[3] = type;
      const h = Math.min(hdrLen, b.length);
      b[5] = h;
      b[10] = (b.length - h) >> 8;
      b[11] = (b.length - h) & 0xff;
      if (seal) sealPacket(b, b.length);
      const r = check(b, b.length);
      return r;
    }),
    { numRuns: 1500 },
  );
  // Sealed packets decode OK; and the same bytes under any shorter or longer len do not.
  fc.assert(
    fc.property(sealedPacket, fc.integer({ min: -60, max: 60 }), ({ buf }, delta) => {
      const len = Math.max(0, Math.min(buf.length, buf.length + delta));
      const r = decodeHeader(Buffer.from(buf), len, out);
      return len === buf.length ? r === DecodeError.OK : r !== DecodeError.OK;
    }),
    { numRuns: 1000 },
  );
  t.ok(oks > 0, `some random inputs decoded OK (${oks}), so the OK branch was checked`);
});

t.test('encode -> seal -> decode round-trips every field of every type', async (t) => {
  const hdr = new PacketHeader();
  const f = new SrdFields();
  fc.assert(
    fc.property(sealedPacket, ({ type, hdrLen, h, ext, status, buf }) => {
      const wire = Buffer.from(buf);
      if (decodeHeader(wire, wire.length, hdr) !== DecodeError.OK) return false;
      const baseOk =
        hdr.type === type &&
        hdr.flags === h.flags &&
        hdr.hdrLen === hdrLen &&
        hdr.srcQpn === h.srcQpn &&
        hdr.dstQpn === h.dstQpn &&
        hdr.payloadLen === h.payload.length &&
        hdr.qkey === h.qkey &&
        hdr.imm === h.imm &&
        Buffer.compare(wire.subarray(hdr.srcGidOffset, hdr.srcGidOffset + 16), Buffer.from(h.gid)) === 0 &&
        Buffer.compare(wire.subarray(hdr.hdrLen, hdr.hdrLen + hdr.payloadLen), Buffer.from(h.payload)) === 0;
      if (!baseOk) return false;
      switch (type) {
        case PacketType.UD_SEND:
          return true;
        case PacketType.SRD_DATA:
          return (
            decodeSrdData(wire, hdr.hdrLen, f) &&
            f.session === ext[0] &&
            f.psn === ext[1] &&
            f.windowStart === ext[2] &&
            f.txTime === ext[3] &&
            f.destIncarnation === ext[4] &&
            f.pbSession === ext[5] &&
            f.pbCum === ext[6] &&
            f.pbEcho === ext[7]
          );
        case PacketType.SRD_ACK:
          return decodeSrdAck(wire, hdr.hdrLen, f) && f.session === ext[0] && f.cumAck === ext[1] && f.echoTime === ext[2] && f.incarnation === ext[3];
        case PacketType.SRD_NAK:
          return decodeSrdNak(wire, hdr.hdrLen, f) && f.session === ext[0] && f.psn === ext[1] && f.status === status && f.echoTime === ext[2];
        default:
          return false;
      }
    }),
    { numRuns: 2000 },
  );
  // The extension decoders refuse an hdr_len too short for them, for any shorter value.
  fc.assert(
    fc.property(fc.integer({ min: 0, max: SRD_DATA_HDR_LEN - 1 }), (h) => {
      const b = Buffer.alloc(SRD_DATA_HDR_LEN);
      return !decodeSrdData(b, h, f) && !decodeSrdAck(b, h, f) && (h >= SRD_NAK_HDR_LEN) === decodeSrdNak(b, h, f);
    }),
    { numRuns: 200 },
  );
  t.equal(SRD_ACK_HDR_LEN, 76);
});

t.test('any single-bit flip of a sealed packet is rejected', async (t) => {
  const hdr = new PacketHeader();
  t.doesNotThrow(
    () =>
      fc.assert(
        fc.property(
          sealedPacket.chain((p) => fc.tuple(fc.constant(p), fc.integer({ min: 0, max: p.buf.length * 8 - 1 }))),
          ([p, bit]) => {
            const b = Buffer.from(p.buf);
            b[bit >> 3] ^= 0x80 >> (bit & 7);
            return decodeHeader(b, b.length, hdr) !== DecodeError.OK;
          },
        ),
        { numRuns: 2000 },
      ),
    'no flipped packet of 2000 decoded OK',
  );
  
});

// ------------------------------------------------------------------ Device.handleDatagram

const DROP_CAUSES = [
  'rx_drop_bad_header',
  'rx_drop_bad_checksum',
  'rx_drop_bad_version',
  'rx_drop_unknown_qpn',
  'rx_drop_qkey_mismatch',
  'rx_drop_qp_state',
  'rx_drop_no_recv_wr',
  'rx_drop_foreign_fabric',
  'rx_drop_duplicate',
  'rx_drop_stale',
  'rx_drop_window',
  'rx_drop_wrong_incarnation',
  'rx_drop_unknown_endpoint',
  'rx_drop_unverified',
  'rx_drop_injected',
] as const satisfies ReadonlyArray<keyof DeviceStats>;

const UD_QKEY = 0x11111111;
const SRD_QKEY = 0x22222222;

interface Rig {
  fabric: MemoryFabric;
  dev: Device;
  ud: UdEnd;
  srd: UdEnd;
  peerIndex: number;
  wcs: WorkCompletion[];
}

/** Device "a" (index 1) under test, with a UD and an SRD QP in RTS and receives posted; "b" (index 2) is its SRD peer. */
async function makeRig(): Promise<Rig> {
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('a');
  const peer = fabric.addDevice('b');
  const ud = await createUdEnd(dev, { qkey: UD_QKEY, cqe: 256, cap: { maxRecvWr: 16, maxRecvSge: 1 } });
  const srd = await createUdEnd(dev, { qkey: SRD_QKEY, qpType: QpType.SRD, cqe: 256, cap: { maxRecvWr: 16, maxSendWr: 64, maxRecvSge: 1 } });
  // Sends to b that stay unacknowledged, so random acks and NAKs from "b" find a live send context.
  const ah = await dev.createAh(srd.pd, { gid: peer.gidText });
  for (let i = 0; i < 8; i++) {
    dev.postSend(srd.qp, { wrId: 1000 + i, sgList: [{ addr: 8192, length: 32, lkey: srd.mr.lkey }], ah, remoteQpn: 1, remoteQkey: SRD_QKEY });
  }
  fabric.queued.length = 0;
  const wcs: WorkCompletion[] = [];
  for (let i = 0; i < 64; i++) wcs.push(new WorkCompletion());
  const rig: Rig = { fabric, dev, ud, srd, peerIndex: 2, wcs };
  topUp(rig);
  return rig;
}

/** Polls every CQ (returns the receive completions seen) and keeps 8 receives posted on each QP. */
function drain(rig: Rig): number {
  let recvs = 0;
  for (const end of [rig.ud, rig.srd]) {
    for (const cq of [end.recvCq, end.sendCq]) {
      let n: number;
      while ((n = rig.dev.pollCq(cq, 64, rig.wcs)) > 0) if (cq === end.recvCq) recvs += n;
    }
  }
  return recvs;
}

function topUp(rig: Rig): void {
  for (const end of [rig.ud, rig.srd]) {
    while (end.qp.rq.count < 8) rig.dev.postRecv(end.qp, { wrId: 1, sgList: [{ addr: 0, length: 1024, lkey: end.mr.lkey }] });
  }
}

/** Random datagrams: noise, or a valid-CRC header with random fields aimed at the rig's QPs now and then. */
function datagramArb(rig: Rig, incarnation: number) {
  const qpn = fc.oneof(fc.constant(rig.ud.qp.qpNum), fc.constant(rig.srd.qp.qpNum), u16);
  const qkey = fc.oneof(fc.constant(UD_QKEY), fc.constant(SRD_QKEY), u32);
  const small = fc.oneof(fc.integer({ min: 0, max: 8 }), u32, fc.constant(0xffffffff));
  const session = fc.oneof(fc.integer({ min: 1, max: 3 }), fc.constant(incarnation), u32);
  const structured = fc
    .record({
      type: fc.oneof(fc.constantFrom(...KNOWN_TYPES), u8),
      hdrLen: fc.oneof(fc.constantFrom(BASE_HEADER_LEN, SRD_NAK_HDR_LEN, SRD_DATA_HDR_LEN, SRD_ACK_HDR_LEN), u8),
      payload: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 2000 })),
      lengthMode: fc.constantFrom('right', 'right', 'right', 'huge', 'random'),
      claimed: u16,
      flags: u8,
      srcQpn: u16,
      dstQpn: qpn,
      qkey,
      imm: u32,
      fabricId: fc.oneof(fc.constant(rig.fabric.fabricId), fc.constant(rig.fabric.fabricId), u32),
      devIndex: fc.oneof(fc.constant(rig.peerIndex), fc.constant(rig.peerIndex), fc.constant(1), u32),
      ext: fc.tuple(session, small, small, u32, fc.oneof(fc.constant(0), fc.constant(rig.dev.incarnation), u32), session, small, u32),
      status: fc.oneof(fc.constant(10), u8),
      seal: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(true), fc.constant(false)),
      mangle: fc.constantFrom('none', 'none', 'none', 'none', 'magic', 'version'),
      // A third of the packets are aimed: right fabric, peer, lengths, CRC, and the QPN and
      // Q_Key of the rig's QP of their type, so they get deep into the receive path.
      aim: fc.constantFrom(false, false, true),
    })
    .map((r) => {
      if (r.aim) {
        const ud = r.flags % 3 === 0;
        r.type = ud ? PacketType.UD_SEND : PacketType.SRD_DATA;
        r.hdrLen = (ud ? BASE_HEADER_LEN : SRD_DATA_HDR_LEN) + (r.flags % 5 === 0 ? r.imm % 16 : 0);
        r.dstQpn = ud ? rig.ud.qp.qpNum : rig.srd.qp.qpNum;
        r.qkey = ud ? UD_QKEY : SRD_QKEY;
        r.fabricId = rig.fabric.fabricId;
        r.devIndex = rig.peerIndex;
        r.lengthMode = 'right';
        r.seal = true;
        r.mangle = 'none';
      }
      const len = Math.max(BASE_HEADER_LEN, r.hdrLen + r.payload);
      const buf = Buffer.alloc(Math.max(len, SRD_ACK_HDR_LEN));
      const claimed = r.lengthMode === 'right' ? len - r.hdrLen : r.lengthMode === 'huge' ? 0xffff : r.claimed;
      encodeHeader(buf, r.type as PacketType, r.flags, r.hdrLen, r.srcQpn, r.dstQpn, claimed & 0xffff, r.qkey, r.imm, makeGid(r.fabricId, r.devIndex));
      const e = r.ext;
      if (r.type === PacketType.SRD_DATA) {
        writeSrdData(buf, e[0], e[1], e[2], e[3], e[4]);
        writePiggyback(buf, e[5], e[6], e[7]);
      } else if (r.type === PacketType.SRD_ACK) writeSrdAck(buf, e[0], e[1], e[2], rig.dev.incarnation ^ e[3], e[4]);
      else if (r.type === PacketType.SRD_NAK) writeSrdNak(buf, e[0], e[1], r.status, e[3]);
      const out = Buffer.from(buf.subarray(0, len));
      if (r.mangle === 'magic') out[r.imm & 1] ^= 1 << (r.imm % 8);
      else if (r.mangle === 'version') out[2] = r.flags === WIRE_VERSION ? 0 : r.flags;
      if (r.seal) sealPacket(out, len);
      return out;
    });
  const noise = fc.uint8Array({ minLength: 0, maxLength: 200 }).map((b) => Buffer.from(b));
  return fc.oneof({ arbitrary: structured, weight: 4 }, { arbitrary: noise, weight: 1 });
}

t.test('Device.handleDatagram never throws; each packet is delivered or dropped under exactly one cause', async (t) => {
  const rig = await makeRig();
  const { dev, fabric } = rig;
  const stats = dev.stats;
  let delivered = 0;
  let dropped = 0;
  let silentRefusals = 0;
  let silentControl = 0;
  const causesSeen = new Set<string>();
  const before: Record<string, number> = {};
  fc.assert(
    fc.property(datagramArb(rig, dev.incarnation), (buf) => {
      const type = buf.length >= 4 ? buf[3] : -1;
      for (const k of DROP_CAUSES) before[k] = stats[k];
      const rxPkts = stats.rx_pkts;
      const rxDrops = stats.rx_drops;
      try {
        dev.handleDatagram(Buffer.from(buf), '127.0.0.1', 47002);
      } catch (err) {
        throw new Error(`handleDatagram threw: ${String((err as Error).stack)}`);
      }
      const recvs = drain(rig);
      topUp(rig);
      const sent = fabric.queued.splice(0);
      let causes = 0;
      for (const k of DROP_CAUSES) {
        const d = stats[k] - before[k];
        if (d !== 0) causesSeen.add(k);
        causes += d;
      }
      const drops = stats.rx_drops - rxDrops;
      if (stats.rx_pkts !== rxPkts + 1) throw new Error('rx_pkts did not grow by one');
      if (drops !== causes) throw new Error(`rx_drops grew by ${drops}, the causes by ${causes}`);
      if (recvs > 1) throw new Error(`one packet made ${recvs} receive completions`);
      if (recvs === 1) {
        delivered++;
        if (drops !== 0) throw new Error('a delivered packet was also counted as a drop');
        return true;
      }
      if (drops === 1) {
        dropped++;
        return true;
      }
      if (drops > 1) throw new Error(`one packet counted ${drops} drops`);
      // Neither delivered nor counted: only SRD control packets the engine consumed or ignored
      // (a copy of a refused data packet is a counted duplicate: see the test below).
      if (type === PacketType.SRD_ACK || type === PacketType.SRD_NAK) {
        silentControl++;
        return true;
      }
      if (type === PacketType.SRD_DATA && sent.some((p) => p.buf[3] === PacketType.SRD_NAK)) {
        silentRefusals++;
        return true;
      }
      throw new Error(`a type-${type} packet of ${buf.length} bytes was neither delivered nor counted`);
    }),
    { numRuns: 2000 },
  );
  t.equal(stats.rx_drops, DROP_CAUSES.reduce((s, k) => s + stats[k], 0), 'rx_drops is the sum of the rx_drop_* causes');
  t.ok(delivered > 0, `some random packets reached a QP and were delivered (${delivered})`);
  t.ok(dropped > 0, `some were dropped (${dropped})`);
  for (const k of ['rx_drop_bad_header', 'rx_drop_bad_checksum', 'rx_drop_bad_version', 'rx_drop_unknown_qpn', 'rx_drop_qkey_mismatch', 'rx_drop_foreign_fabric']) {
    t.ok(causesSeen.has(k), `cause ${k} was exercised`);
  }
  t.comment(`delivered ${delivered}, dropped ${dropped}, control consumed ${silentControl}, refused retransmissions ${silentRefusals}; causes ${[...causesSeen].join(' ')}`);
});

/** A sealed SRD data packet from device index `from` of the rig's fabric. */
function srdData(rig: Rig, opts: { from?: number; qkey?: number; session: number; psn: number; windowStart?: number; payload?: number }): Buffer {
  const payload = opts.payload ?? 16;
  const len = SRD_DATA_HDR_LEN + payload;
  const buf = Buffer.alloc(len);
  encodeHeader(buf, PacketType.SRD_DATA, 0, SRD_DATA_HDR_LEN, 1, rig.srd.qp.qpNum, payload, opts.qkey ?? SRD_QKEY, 0, makeGid(rig.fabric.fabricId, opts.from ?? rig.peerIndex));
  writeSrdData(buf, opts.session, opts.psn, opts.windowStart ?? 0, 1234, 0);
  sealPacket(buf, len);
  return buf;
}

t.test('a retransmission of a refused SRD packet is counted as a drop', async (t) => {
  const rig = await makeRig();
  const s = rig.dev.stats;
  // First copy: wrong qkey, refused with REMOTE_ERROR_BAD_DEST_QPN and counted.
  rig.dev.handleDatagram(srdData(rig, { qkey: 0xbad, session: 5, psn: 0 }), '127.0.0.1', 47002);
  t.equal(s.rx_drop_qkey_mismatch, 1, 'the first copy is counted as a qkey mismatch');
  const drops = s.rx_drops;
  rig.fabric.queued.length = 0;
  // The sender lost the NAK and retransmits the same PSN: it is refused again (NAK resent) ...
  rig.dev.handleDatagram(srdData(rig, { qkey: 0xbad, session: 5, psn: 0 }), '127.0.0.1', 47002);
  t.equal(drain(rig), 0, 'not delivered');
  t.equal(rig.fabric.queued.filter((p) => p.buf[3] === PacketType.SRD_NAK).length, 1, 'the same NAK is sent again');
  t.equal(s.rx_drops, drops + 1, 'and the second copy is counted in rx_drops (under a cause)');
});

t.test('an SRD ack or NAK that matches no send context is counted as a drop', async (t) => {
  const rig = await makeRig();
  const s = rig.dev.stats;
  const drops = s.rx_drops;
  const ack = Buffer.alloc(SRD_ACK_HDR_LEN);
  encodeHeader(ack, PacketType.SRD_ACK, 0, SRD_ACK_HDR_LEN, 0, 0, 0, 0, 0, makeGid(rig.fabric.fabricId, rig.peerIndex));
  writeSrdAck(ack, 1234, 5, 0, 77, 6);
  sealPacket(ack, SRD_ACK_HDR_LEN);
  rig.dev.handleDatagram(ack, '127.0.0.1', 47002);
  t.equal(s.rx_pkts > 0, true);
  t.equal(s.rx_drops, drops + 1, 'an ack for a session this device never sent is counted');
  t.equal(s.rx_drop_stale, 1, 'as rx_drop_stale');
});
