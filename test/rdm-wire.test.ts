/*
 * The RDM packets on the wire: every packet type encodes at the byte offsets of libfabric's
 * protocol v4 and decodes back to the same fields; truncated, wrong-version and contradictory
 * packets are refused (decode returns false, never throws). Then through the device path:
 * garbage, mutated and spoofed packets an endpoint receives are dropped and counted, packets
 * corrupted in flight between two endpoints crash nothing, and both go on working. Last, the
 * handshake's feature bits: a device without RDMA read makes long messages go long-CTS.
 */
import t from 'tap';
import { Prng } from '../src/common/prng';
import { FI_ADDR_UNSPEC } from '../src/rdm/rdm-peer';
import {
  CtrlFields,
  CTS_LEN,
  CTSDATA_HDR_LEN,
  decodeCtrl,
  decodeReq,
  encodeCts,
  encodeCtsData,
  encodeEor,
  encodeHandshake,
  encodeReq,
  EOR_LEN,
  HANDSHAKE_LEN,
  RdmFeature,
  RdmPktType,
  ReqFields,
  ReqFlags,
  reqHeaderLen,
  rtmProtocol,
} from '../src/rdm/rdm-wire';
import { encodeRawAddress } from '../src/rdm/raw-address';
import { OFF_HDR_LEN, OFF_TYPE, PacketType, sealPacket } from '../src/wire/header';
import { cqLogs, describeErr, pattern, pollLogs } from './helpers/rdm-scenario';
import { rdmSim } from './helpers/rdm-sim';
import { createSrdEnd, postSrdSend } from './helpers/sim-network';

const REQ_TYPES = [
  RdmPktType.EAGER_MSGRTM,
  RdmPktType.EAGER_TAGRTM,
  RdmPktType.MEDIUM_MSGRTM,
  RdmPktType.MEDIUM_TAGRTM,
  RdmPktType.LONGCTS_MSGRTM,
  RdmPktType.LONGCTS_TAGRTM,
  RdmPktType.LONGREAD_MSGRTM,
  RdmPktType.LONGREAD_TAGRTM,
];
const RAW = encodeRawAddress(Uint8Array.from({ length: 16 }, (_, i) => 0xf0 + i), 0x1234, 0x0abc_def1);
const le = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** A REQ of `type` with every field set, the way the endpoint fills one. */
function reqFields(type: number, raw: boolean, cq: boolean): ReqFields {
  const f = new ReqFields();
  const tagged = (type & 1) === 1;
  f.type = type;
  f.flags = (tagged ? ReqFlags.TAGGED : ReqFlags.MSG) | (raw ? ReqFlags.RAW_ADDR_HDR : ReqFlags.CONNID_HDR) | (cq ? ReqFlags.CQ_DATA_HDR : 0);
  f.msgId = 0xfedc_ba98;
  f.tagLo = tagged ? 0x8765_4321 : 0;
  f.tagHi = tagged ? 0xdead_beef : 0;
  f.msgLength = 5_000_000_123;
  f.segOffset = type === RdmPktType.MEDIUM_MSGRTM || type === RdmPktType.MEDIUM_TAGRTM ? 4_000_000_000 : 0;
  const proto = rtmProtocol(type);
  f.sendId = proto === 'longcts' || proto === 'longread' ? 0x7000_0001 : 0;
  f.creditRequest = 32;
  f.cqDataLo = cq ? 0x0102_0304 : 0;
  f.cqDataHi = cq ? 0x0506_0708 : 0;
  f.connid = raw ? 0x0abc_def1 : 0x1357_9bdf;
  f.readAddr = 0x1_0000_0040;
  f.readLen = f.msgLength;
  f.readKey = 0x00c0_ffee;
  return f;
}

/** Encodes `f` with `payload` bytes after the header; returns the packet. */
function encodeWithPayload(f: ReqFields, payload: number): Buffer {
  const buf = Buffer.alloc(512 + payload);
  const hdr = encodeReq(buf, f, (f.flags & ReqFlags.RAW_ADDR_HDR) !== 0 ? RAW : null);
  pattern(7, payload).copy(buf, hdr);
  return buf.subarray(0, hdr + payload);
}

t.test('every REQ type round-trips, at protocol v4 offsets', async (t) => {
  for (const type of REQ_TYPES) {
    const proto = rtmProtocol(type);
    const tagged = (type & 1) === 1;
    for (const raw of [true, false]) {
      for (const cq of [false, true]) {
        const f = reqFields(type, raw, cq);
        const payload = proto === 'longread' ? 0 : 100;
        if (proto === 'eager') f.msgLength = payload;
        const pkt = encodeWithPayload(f, payload);
        const what = `${type} raw=${raw} cq=${cq}`;
        const hdr = reqHeaderLen(type, raw, cq, proto === 'longread' ? 1 : 0);
        t.equal(pkt.length, hdr + payload, `${what}: header length`);
        // Base header.
        t.equal(pkt[0], type, `${what}: type @0`);
        t.equal(pkt[1], 4, `${what}: version 4 @1`);
        t.equal(pkt.readUInt16LE(2), f.flags, `${what}: flags @2`);
        t.equal(pkt.readUInt32LE(4), f.msgId, `${what}: msg_id @4`);
        // Mandatory headers.
        const base = proto === 'eager' ? (tagged ? 16 : 8) : tagged ? 32 : 24;
        if (proto === 'eager' && tagged) t.equal(pkt.readBigUInt64LE(8), 0xdead_beef_8765_4321n, `${what}: tag @8`);
        if (proto !== 'eager') {
          t.equal(Number(pkt.readBigUInt64LE(8)), f.msgLength, `${what}: msg_length @8`);
          if (tagged) t.equal(pkt.readBigUInt64LE(24), 0xdead_beef_8765_4321n, `${what}: tag @24`);
        }
        if (proto === 'medium') t.equal(Number(pkt.readBigUInt64LE(16)), f.segOffset, `${what}: seg_offset @16`);
        if (proto === 'longcts') t.same([pkt.readUInt32LE(16), pkt.readUInt32LE(20)], [f.sendId, 32], `${what}: send_id @16, credit_request @20`);
        if (proto === 'longread') t.same([pkt.readUInt32LE(16), pkt.readUInt32LE(20)], [f.sendId, 1], `${what}: send_id @16, read_iov_count @20`);
        // Optional headers, in flag-bit order: raw address, CQ data, connid.
        let off = base;
        if (raw) {
          t.equal(pkt.readUInt32LE(off), 36, `${what}: addr_len 36`);
          t.ok(pkt.subarray(off + 4, off + 36).equals(le(RAW)), `${what}: the raw address`);
          off += 40;
        }
        if (cq) {
          t.equal(pkt.readBigUInt64LE(off), 0x0506_0708_0102_0304n, `${what}: cq_data`);
          off += 8;
        }
        if (!raw) {
          t.equal(pkt.readUInt32LE(off), f.connid, `${what}: connid`);
          off += 4;
        }
        if (proto === 'longread') {
          t.same([Number(pkt.readBigUInt64LE(off)), Number(pkt.readBigUInt64LE(off + 8)), Number(pkt.readBigUInt64LE(off + 16))], [f.readAddr, f.readLen, f.readKey], `${what}: read iov {addr, len, key}`);
          off += 24;
        }
        t.equal(off, hdr, `${what}: nothing else in the header`);
        const d = new ReqFields();
        t.ok(decodeReq(pkt, pkt.length, d), `${what}: decodes`);
        const keys: Array<keyof ReqFields> = ['type', 'flags', 'msgId', 'tagLo', 'tagHi', 'msgLength', 'segOffset', 'sendId', 'connid', 'cqDataLo', 'cqDataHi'];
        if (proto === 'longcts') keys.push('creditRequest');
        if (proto === 'longread') keys.push('readAddr', 'readLen', 'readKey');
        t.same(Object.fromEntries(keys.map((k) => [k, d[k]])), Object.fromEntries(keys.map((k) => [k, f[k]])), `${what}: the same fields`);
        t.same([d.payloadOff, d.payloadLen], [hdr, payload], `${what}: payload where it is`);
        t.equal(d.rawAddr !== null, raw, `${what}: raw address seen`);
      }
    }
  }
  // The fact sheet's examples: an eager header is 48 B before the handshake, 12 after, 20 with CQ data.
  t.same([reqHeaderLen(RdmPktType.EAGER_MSGRTM, true, false), reqHeaderLen(RdmPktType.EAGER_MSGRTM, false, false), reqHeaderLen(RdmPktType.EAGER_MSGRTM, false, true)], [48, 12, 20], 'eager header sizes');
});

t.test('CTS, CTSDATA, EOR and HANDSHAKE round-trip, at protocol v4 offsets', async (t) => {
  const buf = Buffer.alloc(256);
  const d = new CtrlFields();
  const connid = 0x2468_ace0;
  t.equal(encodeCts(buf, connid, 11, 22, 3_000_000_000), CTS_LEN, 'CTS is 24 B');
  t.same([buf[0], buf[1], buf.readUInt16LE(2), buf.readUInt32LE(4), buf.readUInt32LE(8), buf.readUInt32LE(12), Number(buf.readBigUInt64LE(16))], [3, 4, 0x8000, connid, 11, 22, 3_000_000_000], 'CTS: type, version, CONNID_HDR, connid @4, send_id @8, recv_id @12, recv_length @16');
  t.ok(decodeCtrl(buf, CTS_LEN, d), 'CTS decodes');
  t.same([d.type, d.connid, d.sendId, d.recvId, d.recvLength], [3, connid, 11, 22, 3_000_000_000], 'CTS fields');

  const hdr = encodeCtsData(buf, connid, 33, 100, 5_000_000_000);
  t.equal(hdr, CTSDATA_HDR_LEN, 'CTSDATA header is 32 B with the connid');
  t.same([buf[0], buf.readUInt16LE(2), buf.readUInt32LE(4), Number(buf.readBigUInt64LE(8)), Number(buf.readBigUInt64LE(16)), buf.readUInt32LE(24)], [4, 0x8000, 33, 100, 5_000_000_000, connid], 'CTSDATA: recv_id @4, seg_length @8, seg_offset @16, connid @24');
  t.ok(decodeCtrl(buf, hdr + 100, d), 'CTSDATA decodes');
  t.same([d.type, d.recvId, d.segLength, d.segOffset, d.connid, d.payloadOff], [4, 33, 100, 5_000_000_000, connid, 32], 'CTSDATA fields');

  t.equal(encodeEor(buf, connid, 44, 55), EOR_LEN, 'EOR is 16 B');
  t.same([buf[0], buf.readUInt16LE(2), buf.readUInt32LE(4), buf.readUInt32LE(8), buf.readUInt32LE(12)], [7, 0x8000, 44, 55, connid], 'EOR: send_id @4, recv_id @8, connid @12');
  t.ok(decodeCtrl(buf, EOR_LEN, d), 'EOR decodes');
  t.same([d.type, d.sendId, d.recvId, d.connid], [7, 44, 55, connid], 'EOR fields');

  const features = RdmFeature.RDMA_READ | RdmFeature.CONNID_HEADER;
  t.equal(encodeHandshake(buf, features, connid, 0xefa1), HANDSHAKE_LEN, 'HANDSHAKE is 40 B');
  t.same([buf[0], buf.readUInt16LE(2), buf.readUInt32LE(4), Number(buf.readBigUInt64LE(8)), buf.readUInt32LE(16), buf.readUInt32LE(24)], [9, 0x800a, 4, features, connid, 0xefa1], 'HANDSHAKE: flags 0x800A, nextra_p3 4, extra_info, connid, device_version');
  t.ok(decodeCtrl(buf, HANDSHAKE_LEN, d), 'HANDSHAKE decodes');
  t.same([d.type, d.features, d.connid, d.deviceVersion], [9, features, connid, 0xefa1], 'HANDSHAKE fields');
  // A peer with more extra-info words and a host id: the words are skipped, the host id read.
  const big = Buffer.alloc(64);
  big[0] = 9;
  big[1] = 4;
  big.writeUInt16LE(0x8001, 2);
  big.writeUInt32LE(5, 4);
  big.writeBigUInt64LE(0x9n, 8);
  big.writeBigUInt64LE(0xffn, 16);
  big.writeUInt32LE(connid, 24);
  big.writeBigUInt64LE(0x1234_5678n, 32);
  t.ok(decodeCtrl(big, 40, d), 'a handshake with two extra words and a host id decodes');
  t.same([d.features, d.connid, d.hostId], [9, connid, 0x1234_5678], 'its fields');
});

/** Every valid packet the tests above build, for the malformed-input tests. */
function validPackets(): Array<[string, Buffer, 'req' | 'ctrl']> {
  const out: Array<[string, Buffer, 'req' | 'ctrl']> = [];
  for (const type of REQ_TYPES) {
    for (const raw of [true, false]) {
      const f = reqFields(type, raw, true);
      const proto = rtmProtocol(type);
      if (proto === 'eager') f.msgLength = 10;
      out.push([`REQ ${type} raw=${raw}`, Buffer.from(encodeWithPayload(f, proto === 'longread' ? 0 : 10)), 'req']);
    }
  }
  const b = Buffer.alloc(128);
  out.push(['CTS', Buffer.from(b.subarray(0, encodeCts(b, 1, 2, 3, 4))), 'ctrl']);
  out.push(['CTSDATA', Buffer.from(b.subarray(0, encodeCtsData(b, 1, 2, 10, 0) + 10)), 'ctrl']);
  out.push(['EOR', Buffer.from(b.subarray(0, encodeEor(b, 1, 2, 3))), 'ctrl']);
  out.push(['HANDSHAKE', Buffer.from(b.subarray(0, encodeHandshake(b, 1, 2, 0xefa3))), 'ctrl']);
  return out;
}

const decode = (kind: 'req' | 'ctrl', b: Buffer, len = b.length): boolean => (kind === 'req' ? decodeReq(b, len, new ReqFields()) : decodeCtrl(b, len, new CtrlFields()));

t.test('malformed packets are refused: truncated, wrong version, unknown type, contradictory flags', async (t) => {
  for (const [name, pkt, kind] of validPackets()) {
    t.ok(decode(kind, pkt), `${name}: the intact packet decodes`);
    // Cut anywhere in its headers: refused. (An eager or medium packet cut in its payload is a
    // shorter payload; control packets have no slack at all, CTSDATA's seg_length included.)
    const fields = new ReqFields();
    const headerEnd = kind === 'req' && decodeReq(pkt, pkt.length, fields) ? fields.payloadOff : pkt.length;
    const accepted: number[] = [];
    for (let n = 0; n < headerEnd; n++) if (decode(kind, pkt.subarray(0, n))) accepted.push(n);
    t.same(accepted, [], `${name}: every cut inside the header (${headerEnd} B) is refused`);
    const v3 = Buffer.from(pkt);
    v3[1] = 3;
    t.notOk(decode(kind, v3), `${name}: version 3 refused`);
  }
  const f = reqFields(RdmPktType.EAGER_TAGRTM, false, false);
  const refuse = (what: string, edit: (b: Buffer) => void, fields = f, payload = 10): void => {
    const b = Buffer.from(encodeWithPayload(fields, payload));
    edit(b);
    t.notOk(decodeReq(b, b.length, new ReqFields()), what);
  };
  refuse('a tagged type with the MSG flag', (b) => b.writeUInt16LE(b.readUInt16LE(2) | ReqFlags.MSG, 2));
  refuse('an untagged type with the TAGGED flag', (b) => b.writeUInt16LE(ReqFlags.TAGGED | ReqFlags.CONNID_HDR, 2), reqFields(RdmPktType.EAGER_MSGRTM, false, false));
  refuse('raw address and connid headers both', (b) => b.writeUInt16LE(b.readUInt16LE(2) | ReqFlags.CONNID_HDR, 2), reqFields(RdmPktType.EAGER_MSGRTM, true, false));
  refuse('a raw address header with the wrong addr_len', (b) => b.writeUInt32LE(32, 8), reqFields(RdmPktType.EAGER_MSGRTM, true, false));
  for (const type of [0, 1, 2, 5, 8, 10, 11, 12, 70, 72, 130, 142, 255]) refuse(`type ${type} (not one the endpoint speaks)`, (b) => (b[0] = type));
  const lr = reqFields(RdmPktType.LONGREAD_MSGRTM, false, false);
  refuse('a long-read with two read IOVs', (b) => b.writeUInt32LE(2, 20), lr, 0);
  refuse('a long-read whose IOV length is not the message length', (b) => b.writeBigUInt64LE(7n, 24 + 4 + 8), lr, 0);
  refuse('a long-read with a payload', () => {}, lr, 5);
  const md = reqFields(RdmPktType.MEDIUM_MSGRTM, false, false);
  md.msgLength = 100;
  md.segOffset = 95;
  refuse('a medium segment past the message end', () => {}, md, 10);
  const lc = reqFields(RdmPktType.LONGCTS_MSGRTM, false, false);
  lc.msgLength = 5;
  refuse('a long-CTS request carrying more than the message', () => {}, lc, 10);
  const cb = Buffer.alloc(64);
  encodeCts(cb, 1, 2, 3, 4);
  t.notOk(decodeCtrl(cb, CTS_LEN + 1, new CtrlFields()), 'a CTS with a byte too many');
  encodeCtsData(cb, 1, 2, 10, 0);
  t.notOk(decodeCtrl(cb, CTSDATA_HDR_LEN + 9, new CtrlFields()), 'CTSDATA whose seg_length is not its payload');
  encodeHandshake(cb, 1, 2, 3);
  cb.writeUInt32LE(2, 4);
  t.notOk(decodeCtrl(cb, HANDSHAKE_LEN, new CtrlFields()), 'a handshake with nextra_p3 < 3');
  encodeHandshake(cb, 1, 2, 3);
  cb.writeUInt32LE(1000, 4);
  t.notOk(decodeCtrl(cb, HANDSHAKE_LEN, new CtrlFields()), 'a handshake claiming more extra words than it has');
  encodeHandshake(cb, 1, 2, 3);
  t.notOk(decodeCtrl(cb, HANDSHAKE_LEN - 8, new CtrlFields()), 'a handshake whose p2p header is cut off');
  t.notOk(decodeCtrl(cb, 0, new CtrlFields()), 'an empty packet');
});

t.test('random and mutated bytes never make a decoder throw', async (t) => {
  const r = new Prng(99);
  const valid = validPackets();
  let accepted = 0;
  let refused = 0;
  const threw: string[] = [];
  for (let i = 0; i < 20_000; i++) {
    let b: Buffer;
    if (i % 2 === 0) {
      b = Buffer.alloc(r.int(300));
      for (let k = 0; k < b.length; k++) b[k] = r.int(256);
      // Keep the version right half the time, so decoding gets past the first check.
      if (b.length > 1 && r.next() < 0.5) b[1] = 4;
    } else {
      const [, pkt] = valid[r.int(valid.length)];
      b = Buffer.from(pkt.subarray(0, r.int(pkt.length + 1)));
      for (let k = 1 + r.int(4); k > 0 && b.length > 0; k--) b[r.int(b.length)] ^= 1 + r.int(255);
    }
    for (const kind of ['req', 'ctrl'] as const) {
      try {
        if (decode(kind, b)) accepted++;
        else refused++;
      } catch (err) {
        threw.push(`${kind} ${b.toString('hex')}: ${(err as Error).message}`);
      }
    }
  }
  t.same(threw.slice(0, 5), [], 'no decode threw');
  t.ok(refused > accepted && accepted > 0, `mostly refused (${refused} refused, ${accepted} accepted)`);
});

t.test('hostile packets through the device: garbage, mutated and spoofed packets are dropped and counted; the endpoint goes on', async (t) => {
  const s = await rdmSim({ n: 2, seed: 71 });
  const [a, b] = s.eps;
  const logs = cqLogs(s);
  const evilNode = s.sim.addDevice('evil');
  const evil = await createSrdEnd(evilNode.device, { qkey: 0x1111, maxSendWr: 1024, cqe: 4096 });
  const bName = Buffer.from(b.getName());
  const aName = Buffer.from(a.getName());
  const target = { qpn: bName.readUInt16LE(16), qkey: bName.readUInt32LE(20) };
  const ah = await evilNode.device.createAh(evil.pd, { gid: s.sim.node(2).device.gidText });
  // The attacker's own raw address, and one claiming to be A.
  const evilRaw = encodeRawAddress(evilNode.device.gid, evil.qp.qpNum, 0x1111);
  const aRaw = Uint8Array.from(aName);
  t.equal(aName.readUInt16LE(16), evil.qp.qpNum, 'the attacker has the same QPN as A (so only the GID tells them apart)');
  const r = new Prng(5);
  const pkts: Buffer[] = [];
  const req = (type: number, raw: Uint8Array | null, edit?: (f: ReqFields) => void, payload = 16): Buffer => {
    const f = reqFields(type, raw !== null, false);
    if (raw !== null) f.connid = Buffer.from(raw).readUInt32LE(20);
    const proto = rtmProtocol(type);
    f.msgLength = proto === 'eager' ? payload : 100_000;
    f.segOffset = 0;
    edit?.(f);
    const buf = Buffer.alloc(600);
    const hdr = encodeReq(buf, f, raw);
    return buf.subarray(0, hdr + (proto === 'longread' ? 0 : payload));
  };
  // Garbage.
  for (let i = 0; i < 200; i++) pkts.push(Buffer.from(Array.from({ length: r.int(200) }, () => r.int(256))));
  // Well-formed requests claiming A's address from the attacker's QPN: spoofed. With A's
  // connection id they would pass for A's messages; with another, for A restarted (failing
  // A's operations).
  const aRestarted = Uint8Array.from(aRaw);
  Buffer.from(aRestarted.buffer).writeUInt32LE(0x0bad_0bad, 20);
  for (const type of REQ_TYPES) pkts.push(req(type, aRaw), req(type, aRestarted));
  // Requests without a raw address from a sender B does not know.
  for (const type of REQ_TYPES) pkts.push(req(type, null));
  // The attacker introduces itself, then sends mutations of valid requests and control packets.
  pkts.push(req(RdmPktType.EAGER_MSGRTM, evilRaw));
  // A medium message whose header claims 2^60 bytes: it must cost what arrived, not what it claims.
  pkts.push(req(RdmPktType.MEDIUM_MSGRTM, evilRaw, (f) => (f.msgLength = 2 ** 60), 100));
  pkts.push(req(RdmPktType.MEDIUM_TAGRTM, evilRaw, (f) => ((f.msgLength = 2 ** 40), (f.segOffset = 2 ** 39)), 100));
  pkts.push(req(RdmPktType.LONGCTS_MSGRTM, evilRaw, (f) => (f.msgLength = 2 ** 62), 100));
  for (let i = 0; i < 300; i++) {
    const base = req(REQ_TYPES[r.int(REQ_TYPES.length)], r.next() < 0.5 ? evilRaw : null);
    for (let k = 1 + r.int(3); k > 0; k--) base[r.int(Math.min(base.length, 90))] ^= 1 + r.int(255);
    pkts.push(base);
  }
  const cb = Buffer.alloc(128);
  for (let i = 0; i < 100; i++) {
    const connid = r.next() < 0.5 ? 0x1111 : r.nextU32();
    const kind = r.int(4);
    const n = kind === 0 ? encodeCts(cb, connid, r.int(10), r.int(10), r.nextU32()) : kind === 1 ? encodeCtsData(cb, connid, r.int(10), 8, r.int(1000)) + 8 : kind === 2 ? encodeEor(cb, connid, r.int(10), r.int(10)) : encodeHandshake(cb, r.nextU32(), connid, r.nextU32());
    const p = Buffer.from(cb.subarray(0, n));
    if (r.next() < 0.5) p[r.int(p.length)] ^= 1 + r.int(255);
    pkts.push(p);
  }
  // Meanwhile A has a long-CTS and a long-read message in flight to B (their ids are small
  // numbers the attacker's CTS and EOR packets guess at).
  const lens = [200_000, 1_200_000];
  const bufs = lens.map((n) => Buffer.alloc(n));
  bufs.forEach((buf, i) => b.trecv(buf, s.addr[1][0], 0xc1ea_0000n + BigInt(i), 0n, `r${i}`));
  lens.forEach((n, i) => a.tsend(pattern(i, n), s.addr[0][1], 0xc1ea_0000n + BigInt(i), `s${i}`));
  let sent = 0;
  const step = (): void => {
    for (let k = 0; k < 8 && sent < pkts.length; k++, sent++) postSrdSend(evil, ah, target, sent, pkts[sent], { addr: 0 });
  };
  step();
  const done = await s.run(() => {
    pollLogs(logs);
    evilNode.device.pollCq(evil.sendCq, 64, []);
    step();
    return sent === pkts.length && logs[1].ok.length + logs[1].errs.length >= 2 && logs[0].ok.length + logs[0].errs.length >= 2;
  }, 10_000);
  t.ok(done, `the attack was delivered (${pkts.length} packets) and A's messages completed`);
  t.same([...logs[0].errs, ...logs[1].errs].map(describeErr), [], "A's messages: no errors");
  t.ok(bufs.every((buf, i) => buf.equals(pattern(i, lens[i]))), "A's messages intact");
  const st = b.statsSnapshot();
  for (const k of ['rx_drop_malformed', 'rx_drop_spoofed_addr', 'rx_drop_unknown_peer']) t.ok(st[k] > 0, `${k}: ${st[k]}`);
  const dropped = Object.entries(st).filter(([k]) => k.startsWith('rx_drop_')).reduce((n, [, v]) => n + v, 0);
  t.ok(dropped >= 200, `drops counted (${dropped})`);
  // Requests claiming A's address with other connection ids would have replaced A (a restarted
  // endpoint at its QPN) and failed its operations, had they been believed.
  t.ok(Buffer.from(b.av.lookup(s.addr[1][0])).equals(aName), "A is still in B's AV, under its own connection id");
  // No spoofed message passed for A's: an untagged receive directed at A waits for A's own.
  const fromA = Buffer.alloc(16);
  b.recv(fromA, s.addr[1][0], 'fromA');
  // (Posting matches the unexpected list at once: a spoofed message would complete it now.)
  logs[1].poll();
  t.equal(logs[1].has('fromA'), false, 'no message from "A" is waiting');
  a.send(pattern(77, 16), s.addr[0][1], 'fromAs');
  t.ok(await s.run(() => (pollLogs(logs), logs[1].has('fromA')), 2000), "A's own message arrived");
  t.ok(fromA.equals(pattern(77, 16)), 'and is the one the receive got');
  // A still talks to B normally, every protocol.
  const after = [100, 30_000, 300_000, 1_100_000].map((n, i) => ({ n, buf: Buffer.alloc(n), ctx: `after${i}` }));
  for (const m of after) b.trecv(m.buf, s.addr[1][0], 0xaf7e_0000n + BigInt(m.n), 0n, m.ctx);
  for (const m of after) a.tsend(pattern(m.n, m.n), s.addr[0][1], 0xaf7e_0000n + BigInt(m.n), `${m.ctx}s`);
  t.ok(await s.run(() => (pollLogs(logs), after.every((m) => logs[1].has(m.ctx))), 5000), 'later messages from A arrived');
  t.ok(after.every((m) => logs[1].okOf(m.ctx) !== undefined && m.buf.equals(pattern(m.n, m.n))), 'intact, without errors');
  await a.close();
  await b.close();
});

t.test('RDM packets corrupted in flight (CRC made good again) crash nothing; drops are counted; the endpoints recover', async (t) => {
  const s = await rdmSim({ n: 2, seed: 72 });
  const [a, b] = s.eps;
  const logs = cqLogs(s);
  const r = new Prng(72);
  let corrupted = 0;
  let on = true;
  s.sim.intercept = (p) => {
    if (!on || p.info.type !== PacketType.SRD_DATA || r.next() >= 0.08) return undefined;
    // Flip bytes in the RDM packet, mostly in its headers, and seal the datagram again so the
    // device takes it: the endpoint, not the CRC, must cope.
    const start = p.buf[OFF_HDR_LEN];
    const span = Math.min(p.buf.length - start, r.next() < 0.8 ? 64 : p.buf.length);
    if (span <= 0 || p.buf[OFF_TYPE] !== PacketType.SRD_DATA) return undefined;
    for (let k = 1 + r.int(3); k > 0; k--) p.buf[start + r.int(span)] ^= 1 << r.int(8);
    sealPacket(p.buf, p.buf.length);
    corrupted++;
    return undefined;
  };
  const sizes = Array.from({ length: 60 }, (_, i) => [0, 64, 5000, 20_000, 70_000, 200_000, 1_100_000][i % 7]);
  sizes.forEach((n, i) => {
    b.trecv(Buffer.alloc(n), FI_ADDR_UNSPEC, i, 0n, `r${i}`);
    a.tsend(pattern(i, n), s.addr[0][1], i, `s${i}`);
    b.trecv(Buffer.alloc(n), FI_ADDR_UNSPEC, 1000 + i, 0n, `rb${i}`);
    b.tsend(pattern(i, n), s.addr[1][0], 1000 + i, `sb${i}`);
    a.trecv(Buffer.alloc(n), FI_ADDR_UNSPEC, 1000 + i, 0n, `ra${i}`);
  });
  // Corrupted traffic may leave operations waiting for good (a CTS whose ids were garbled is
  // dropped); run a while, not until done.
  await s.run(() => (pollLogs(logs), false), 2000);
  on = false;
  t.ok(corrupted > 20, `${corrupted} packets corrupted`);
  const drops = (ep: typeof a): number => Object.entries(ep.statsSnapshot()).filter(([k]) => k.startsWith('rx_drop_')).reduce((n, [, v]) => n + v, 0);
  t.ok(drops(a) + drops(b) > 0, `drops counted (A ${drops(a)}, B ${drops(b)})`);
  // Fresh traffic, both ways, with tags the corrupted phase did not use.
  const fresh = [10, 9000, 100_000, 1_050_000].flatMap((n, i) => [
    { from: a, to: b, fromI: 0, toI: 1, n, tag: 0xf4e5_0000n + BigInt(i), ctx: `fab${i}` },
    { from: b, to: a, fromI: 1, toI: 0, n, tag: 0xf4e6_0000n + BigInt(i), ctx: `fba${i}` },
  ]);
  const bufs = fresh.map((m) => Buffer.alloc(m.n));
  fresh.forEach((m, i) => m.to.trecv(bufs[i], s.addr[m.toI][m.fromI], m.tag, 0n, m.ctx));
  fresh.forEach((m, i) => m.from.tsend(pattern(7000 + i, m.n), s.addr[m.fromI][m.toI], m.tag, `${m.ctx}s`));
  t.ok(await s.run(() => (pollLogs(logs), fresh.every((m) => logs[m.toI].has(m.ctx))), 5000), 'fresh messages arrived');
  t.ok(fresh.every((m, i) => logs[m.toI].okOf(m.ctx) !== undefined && bufs[i].equals(pattern(7000 + i, m.n))), 'intact, without errors');
  await a.close();
  await b.close();
});

t.test('a device without RDMA read (efa0): its handshake says so, and messages above readMinSize go long-CTS both ways', async (t) => {
  const s = await rdmSim({ n: 2, seed: 73, generation: (i) => (i === 1 ? 'efa0' : undefined) });
  const [a, b] = s.eps;
  const logs = cqLogs(s);
  const features = new Map<number, number>();
  s.sim.onDeliver = (p) => {
    if (p.info.type !== PacketType.SRD_DATA) return;
    const off = p.buf[OFF_HDR_LEN];
    const d = new CtrlFields();
    if (p.buf[off] === RdmPktType.HANDSHAKE && decodeCtrl(p.buf.subarray(off), p.buf.length - off, d)) features.set(p.from, d.features);
  };
  const len = (1 << 20) + 12_345;
  t.equal(a.protocolFor(len, true), 'longread', 'to a reader, A would read');
  t.equal(b.protocolFor(len, true), 'longcts', 'B cannot read at all');
  const into = [Buffer.alloc(len), Buffer.alloc(len)];
  b.recv(into[0], FI_ADDR_UNSPEC, 'atob');
  a.recv(into[1], FI_ADDR_UNSPEC, 'btoa');
  // A's first message to B: A waits for B's handshake to learn whether B can read.
  a.send(pattern(1, len), s.addr[0][1], 'sa');
  b.send(pattern(2, len), s.addr[1][0], 'sb');
  t.ok(await s.run(() => (pollLogs(logs), logs[0].ok.length === 2 && logs[1].ok.length === 2), 10_000), 'both messages and sends completed');
  t.same([...logs[0].errs, ...logs[1].errs].map(describeErr), [], 'no errors');
  t.ok(into[0].equals(pattern(1, len)) && into[1].equals(pattern(2, len)), 'intact');
  t.equal((features.get(2) ?? -1) & RdmFeature.RDMA_READ, 0, "B's handshake lacks RDMA_READ");
  t.equal((features.get(1) ?? 0) & RdmFeature.RDMA_READ, RdmFeature.RDMA_READ, "A's handshake has it");
  t.same([a.stats.txMessages('longcts'), a.stats.txMessages('longread'), b.stats.txMessages('longcts'), b.stats.txMessages('longread')], [1, 0, 1, 0], 'both went long-CTS');
  t.equal(a.stats.get('rdma_reads') + b.stats.get('rdma_reads'), 0, 'no RDMA read was issued');
  await a.close();
  await b.close();
});
