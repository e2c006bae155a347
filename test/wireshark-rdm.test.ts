// The dissector's EFA RDM protocol v4 decoding (contrib/wireshark/efa-emu.lua), checked two
// ways: its tables (types, header lengths, flags, features) against src/rdm/rdm-wire.ts,
// always; and, when tshark is installed, on a real capture of two RDM endpoints sending one
// message of each protocol, on payloads that are almost RDM packets (which must stay data), and
// on a capture cut by a snaplen.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { PcapWriter, readPcap } from '../src/io/pcap-writer';
import { DEFAULT_RDM_CONFIG } from '../src/rdm/rdm-config';
import * as wire from '../src/rdm/rdm-wire';
import { encodeHeader, PacketType, sealPacket } from '../src/wire/header';
import { SRD_DATA_HDR_LEN, writeSrdData } from '../src/wire/srd-header';
import { GID_A, HOST_A, HOST_B, INCARNATION_B, QKEY, SESSION } from './fixtures/make-capture';
import { writeRdmCapture, type RdmCapture } from './fixtures/rdm-capture';
import { tshark, tsharkFields, tsharkProblem } from './helpers/tshark';

const { RdmPktType, ReqFlags, HandshakeFlags, RdmFeature } = wire;

// dist/test/ -> repository root; the Lua file is not compiled, so it is read from the source tree.
const ROOT = path.resolve(__dirname, '..', '..');
const LUA = path.join(ROOT, 'contrib', 'wireshark', 'efa-emu.lua');
const lua = fs.readFileSync(LUA, 'utf8');

// False where the tshark tests can run; otherwise each is reported skipped with this reason.
const noTshark = tsharkProblem();

type HasTeardown = { teardown(fn: () => unknown): void };

function tempdir(t: HasTeardown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-wireshark-rdm-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}


const FIELDS = [
  'frame.number',
  'udp.srcport',
  'efa_emu.type',
  'efa_emu.srd.psn',
  'efa_emu.payload_len',
  'efa_emu.crc.status',
  'efa_emu.rdma.rkey',
  'frame.protocols',
  '_ws.col.Protocol',
  '_ws.col.Info',
  'data.len',
  'efa_rdm.type',
  'efa_rdm.version',
  'efa_rdm.flags',
  'efa_rdm.flags.raw_addr_hdr',
  'efa_rdm.flags.cq_data_hdr',
  'efa_rdm.flags.msg',
  'efa_rdm.flags.tagged',
  'efa_rdm.flags.connid_hdr',
  'efa_rdm.msg_id',
  'efa_rdm.tag',
  'efa_rdm.msg_length',
  'efa_rdm.seg_offset',
  'efa_rdm.seg_length',
  'efa_rdm.send_id',
  'efa_rdm.recv_id',
  'efa_rdm.credit_request',
  'efa_rdm.read_iov_count',
  'efa_rdm.recv_length',
  'efa_rdm.cq_data',
  'efa_rdm.connid',
  'efa_rdm.peer_error.op_id',
  'efa_rdm.peer_error.ref_kind',
  'efa_rdm.peer_error.prov_errno',
  'efa_rdm.raw_addr.len',
  'efa_rdm.raw_addr.gid',
  'efa_rdm.raw_addr.qpn',
  'efa_rdm.raw_addr.connid',
  'efa_rdm.read_iov.addr',
  'efa_rdm.read_iov.len',
  'efa_rdm.read_iov.key',
  'efa_rdm.handshake.nextra_p3',
  'efa_rdm.handshake.extra_info',
  'efa_rdm.handshake.features',
  'efa_rdm.handshake.feature.rdma_read',
  'efa_rdm.handshake.feature.connid_header',
  'efa_rdm.handshake.feature.delivery_complete',
  'efa_rdm.handshake.device_version',
  'efa_rdm.handshake.p2p_supported',
  'efa_rdm.protocol',
  'efa_rdm.payload_len',
] as const;
type Row = Record<(typeof FIELDS)[number], string>;

function decodeFields(file: string, extra: string[] = []): Promise<Row[]> {
  return tsharkFields(file, FIELDS, extra);
}

const hex = (v: number | bigint, width: number): string => `0x${v.toString(16).padStart(width, '0')}`;
/** A GID as Wireshark prints an IPv6 address (RFC 5952 compressed form). */
const ipv6Text = (gid: string): string => new URL(`http://[${gid}]`).hostname.replace(/^\[|\]$/g, '');
const num = (s: string): number => Number(s);

// ------------------------------------------------------------------ the Lua tables

/** `local A, B = 1, 0x2` lines of the Lua file, as name -> value. */
function luaConstants(): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of lua.matchAll(/^local ([A-Z][A-Z0-9_]*(?:, [A-Z][A-Z0-9_]*)*) = ((?:0x[0-9A-Fa-f]+|\d+)(?:, (?:0x[0-9A-Fa-f]+|\d+))*)$/gm)) {
    const names = m[1].split(', ');
    const values = m[2].split(', ').map(Number);
    names.forEach((n, i) => out.set(n, values[i]));
  }
  return out;
}

/** The `[KEY] = value` entries of the Lua table `local <name> = { ... }`. */
function luaTable(name: string): Array<[string, string]> {
  const block = new RegExp(`local ${name} = \\{([\\s\\S]*?)\\n\\}`).exec(lua)?.[1];
  if (block === undefined) throw new Error(`no table ${name} in the Lua file`);
  return [...block.matchAll(/\[([A-Z0-9_]+)\] = ("?[A-Za-z0-9_]+"?)/g)].map((m) => [m[1], m[2].replace(/"/g, '')]);
}

t.test('the RDM tables match src/rdm/rdm-wire.ts', async (t) => {
  const c = luaConstants();
  const k = (name: string): number => {
    const v = c.get(name);
    if (v === undefined) throw new Error(`no constant ${name} in the Lua file`);
    return v;
  };
  t.equal(k('RDM_VERSION'), wire.RDM_PROTOCOL_VERSION, 'protocol version');

  // The types decoded are those the endpoint sends: every RdmPktType but READRSP and RECEIPT,
  // which src/rdm defines for completeness and never sends (a new type sent must be added here).
  const names = luaTable('rdm_type_names');
  const notSent = new Set(['READRSP', 'RECEIPT']);
  t.same(names.map(([, v]) => v).sort(), Object.keys(RdmPktType).filter((n) => !notSent.has(n)).sort(), 'rdm_type_names: the types the endpoint sends');
  for (const [key, name] of names) {
    t.equal(key, `RDM_${name}`, `${name} named after its constant`);
    t.equal(k(key), RdmPktType[name as keyof typeof RdmPktType], `${name} = ${RdmPktType[name as keyof typeof RdmPktType]}`);
  }

  const rtmTypes = Object.values(RdmPktType).filter((v) => wire.rtmProtocol(v) !== null);
  const byNumber = (key: string): number => k(key);
  const base = new Map(luaTable('rdm_req_base').map(([key, v]) => [byNumber(key), Number(v)]));
  const protoOf = new Map(luaTable('rdm_protocol_of').map(([key, v]) => [byNumber(key), v]));
  const tagged = new Set(luaTable('rdm_tagged').map(([key]) => byNumber(key)));
  t.same([...base.keys()].sort(), rtmTypes.sort(), 'a REQ base length for each message REQ type');
  for (const type of rtmTypes) {
    const name = wire.rdmPktTypeName(type);
    // reqHeaderLen without the raw address counts the 4-byte connid header.
    t.equal(base.get(type), wire.reqHeaderLen(type, false, false) - k('RDM_CONNID_HDR_LEN'), `${name} fixed header length`);
    t.equal(protoOf.get(type), wire.rtmProtocol(type), `${name} protocol`);
    t.equal(tagged.has(type), wire.rtmType(wire.rtmProtocol(type) as wire.RdmProtocol, true) === type, `${name} tagged or not`);
  }
  const eager = RdmPktType.EAGER_MSGRTM;
  t.equal(wire.reqHeaderLen(eager, true, false) - wire.reqHeaderLen(eager, false, false) + k('RDM_CONNID_HDR_LEN'), k('RDM_RAW_ADDR_HDR_LEN'), 'raw address header length');
  t.equal(wire.reqHeaderLen(eager, false, true) - wire.reqHeaderLen(eager, false, false), k('RDM_CQ_DATA_HDR_LEN'), 'CQ data header length');
  t.equal(k('RDM_RAW_ADDR_FIELD_LEN'), k('RDM_RAW_ADDR_LEN') + 4, 'the length word counts the address and its padding');
  t.equal(k('RDM_RAW_ADDR_LEN'), wire.RAW_ADDR_LEN);
  t.equal(k('RDM_RMA_IOV_LEN'), wire.RMA_IOV_LEN);
  t.equal(k('RDM_CTS_LEN'), wire.CTS_LEN);
  t.equal(k('RDM_EOR_LEN'), wire.EOR_LEN);
  t.equal(k('RDM_CTSDATA_HDR_LEN'), wire.CTSDATA_HDR_LEN);

  t.equal(k('PKT_CONNID_HDR'), wire.PKT_CONNID_HDR);
  t.equal(k('PKT_CONNID_HDR'), ReqFlags.CONNID_HDR);
  t.equal(k('REQ_RAW_ADDR_HDR'), ReqFlags.RAW_ADDR_HDR);
  t.equal(k('REQ_CQ_DATA_HDR'), ReqFlags.CQ_DATA_HDR);
  t.equal(k('REQ_MSG'), ReqFlags.MSG);
  t.equal(k('REQ_TAGGED'), ReqFlags.TAGGED);
  t.equal(k('HS_HOST_ID_HDR'), HandshakeFlags.HOST_ID_HDR);
  t.equal(k('HS_DEVICE_VERSION_HDR'), HandshakeFlags.DEVICE_VERSION_HDR);
  t.equal(k('HS_USER_RECV_QP_HDR'), HandshakeFlags.USER_RECV_QP_HDR);
  t.equal(k('HS_HMEM_P2P_HDR'), HandshakeFlags.HMEM_P2P_HDR);

  const features = [...lua.matchAll(/\{ (0x[0-9a-f]+), "([A-Z_]+)", "([a-z_]+)" \}/g)].map((m) => ({ bit: Number(m[1]), name: m[2], abbr: m[3] }));
  t.same(
    features.map((f) => [f.name, f.bit]),
    Object.entries(RdmFeature),
    'rdm_features: every feature of RdmFeature, in bit order',
  );
  for (const f of features) t.equal(f.abbr, f.name.toLowerCase(), `${f.name} field abbreviation`);

  // The header comment lists every field, the generated feature fields by their names.
  const comment = lua.slice(0, lua.indexOf('local efa = Proto('));
  for (const m of lua.matchAll(/ProtoField\.[a-z0-9]+\("(efa_rdm\.[a-z0-9_.]+)"/g)) t.ok(comment.includes(m[1]), `${m[1]} listed in the header comment`);
  for (const m of lua.matchAll(/flag_field\("([a-z_]+)"/g)) t.ok(comment.includes(`efa_rdm.flags.${m[1]}`), `efa_rdm.flags.${m[1]} listed in the header comment`);
  for (const f of features) t.ok(comment.includes(f.abbr), `feature ${f.abbr} listed in the header comment`);
  t.match(lua, /efa\.prefs\.decode_rdm = Pref\.bool\("Decode RDM packets", true,/, 'a preference turns RDM decoding off, on by default');
});

// ------------------------------------------------------------------ a real capture

/** Rows of one RDM type, each packet once (SRD may retransmit: the first copy of a PSN counts). */
function byType(rows: Row[]): Map<number, Row[]> {
  const seen = new Set<string>();
  const out = new Map<number, Row[]>();
  for (const r of rows) {
    if (r['efa_rdm.type'] === '') continue;
    const key = `${r['udp.srcport']}/${r['efa_emu.srd.psn']}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const list = out.get(num(r['efa_rdm.type'])) ?? [];
    list.push(r);
    out.set(num(r['efa_rdm.type']), list);
  }
  return out;
}

t.test('tshark decodes a real capture of each RDM protocol', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 'rdm.pcap');
  const cap: RdmCapture = await writeRdmCapture(file);
  const rows = await decodeFields(file);
  t.ok(rows.length > 0, 'tshark read the capture');
  const types = byType(rows);
  const of = (type: number): Row[] => types.get(type) ?? [];

  const srdData = rows.filter((r) => r['efa_emu.type'] === String(PacketType.SRD_DATA));
  t.ok(
    srdData.every((r) => r['efa_rdm.type'] !== ''),
    'every SRD send of the endpoints is decoded as RDM',
  );
  t.ok(
    rows.every((r) => r['efa_emu.type'] === String(PacketType.SRD_DATA) || r['efa_rdm.type'] === ''),
    'RDM only inside SRD_DATA (acks and RDMA reads are not)',
  );
  for (const type of Object.values(RdmPktType)) {
    const name = wire.rdmPktTypeName(type);
    const sent = (cap.statsA[`pkts_${name}`] ?? 0) + (cap.statsB[`pkts_${name}`] ?? 0);
    t.equal(of(type).length, sent, `${name}: as many in the capture as the endpoints sent`);
  }
  for (const r of srdData) {
    t.equal(r['efa_rdm.version'], '4');
    t.match(r['frame.protocols'], /:efa_emu:efa_rdm(:data)?$/, 'the RDM packet is a layer of its own');
    t.equal(r['_ws.col.Protocol'], 'EFA-RDM');
    t.match(r['_ws.col.Info'], / \| SRD_DATA psn=\d+ /, 'the SRD part follows in the Info column');
    t.equal(r['efa_emu.crc.status'], '1', 'intact datagram');
    t.equal(num(r['efa_rdm.payload_len']), r['data.len'] === '' ? 0 : num(r['data.len']), 'the RDM payload is handed to the data dissector');
  }

  const portA = of(RdmPktType.EAGER_MSGRTM)[0]?.['udp.srcport'];
  const fromA = (r: Row): boolean => r['udp.srcport'] === portA;
  const connidA = hex(cap.connidA, 8);
  const connidB = hex(cap.connidB, 8);
  const [eagerMsg, mediumMsg, longctsMsg, longreadMsg] = cap.messages;

  await t.test('eager: the first message, with the raw address and CQ data', async (t) => {
    const rs = of(RdmPktType.EAGER_MSGRTM);
    t.equal(rs.length, 1);
    const r = rs[0];
    t.ok(fromA(r), 'from A');
    t.equal(r['efa_rdm.flags'], hex(ReqFlags.RAW_ADDR_HDR | ReqFlags.CQ_DATA_HDR | ReqFlags.MSG, 4));
    t.same([r['efa_rdm.flags.raw_addr_hdr'], r['efa_rdm.flags.cq_data_hdr'], r['efa_rdm.flags.msg'], r['efa_rdm.flags.tagged'], r['efa_rdm.flags.connid_hdr']], ['1', '1', '1', '0', '0']);
    t.equal(r['efa_rdm.msg_id'], '0', 'the first message to this peer');
    t.equal(r['efa_rdm.payload_len'], String(eagerMsg.len), 'the whole message in one packet');
    t.equal(r['efa_rdm.cq_data'], hex(eagerMsg.data as number, 16));
    t.equal(r['efa_rdm.raw_addr.len'], '36');
    t.equal(r['efa_rdm.raw_addr.gid'], ipv6Text(cap.gidA), "A's GID");
    t.equal(r['efa_rdm.raw_addr.qpn'], String(cap.qpnA), "A's QPN");
    t.equal(r['efa_rdm.raw_addr.connid'], connidA, "A's connection id");
    t.equal(r['efa_rdm.connid'], '', 'no connid header beside the raw address');
    t.equal(r['efa_rdm.protocol'], 'eager');
    t.match(r['_ws.col.Info'], new RegExp(`^RDM EAGER_MSGRTM msg_id=0 len=100 data=0x11223344 \\(eager\\) \\| SRD_DATA psn=\\d+ .*len=${r['efa_emu.payload_len']}$`));
  });

  await t.test('handshakes: one each way, after the first packet', async (t) => {
    const rs = of(RdmPktType.HANDSHAKE);
    t.equal(rs.length, 2);
    t.same(rs.map(fromA).sort(), [false, true], 'one from each side');
    for (const r of rs) {
      t.equal(r['efa_rdm.flags'], hex(wire.PKT_CONNID_HDR | HandshakeFlags.DEVICE_VERSION_HDR | HandshakeFlags.HMEM_P2P_HDR, 4));
      t.equal(r['efa_rdm.handshake.nextra_p3'], '4', 'one extra-info word');
      t.equal(r['efa_rdm.handshake.extra_info'], hex(RdmFeature.RDMA_READ | RdmFeature.CONNID_HEADER | RdmFeature.PEER_ERROR, 16));
      t.equal(r['efa_rdm.handshake.features'], 'RDMA_READ|CONNID_HEADER|PEER_ERROR');
      t.same([r['efa_rdm.handshake.feature.rdma_read'], r['efa_rdm.handshake.feature.connid_header'], r['efa_rdm.handshake.feature.delivery_complete']], ['1', '1', '0']);
      t.equal(r['efa_rdm.connid'], fromA(r) ? connidA : connidB, "the sender's connection id");
      t.equal(r['efa_rdm.handshake.device_version'], hex(cap.vendorPartId, 8));
      t.equal(r['efa_rdm.handshake.p2p_supported'], '0');
      t.equal(r['efa_rdm.payload_len'], '0');
      t.equal(num(r['efa_emu.payload_len']), wire.HANDSHAKE_LEN, 'nothing after the optional headers');
      t.match(r['_ws.col.Info'], /^RDM HANDSHAKE features=RDMA_READ\|CONNID_HEADER\|PEER_ERROR \| SRD_DATA /);
    }
  });

  await t.test(`medium: ${mediumMsg.len} B in segments of one msg_id`, async (t) => {
    const rs = of(RdmPktType.MEDIUM_TAGRTM).sort((x, y) => num(x['efa_rdm.seg_offset']) - num(y['efa_rdm.seg_offset']));
    t.ok(rs.length > 1, `several packets (${rs.length})`);
    let next = 0;
    for (const r of rs) {
      t.ok(fromA(r));
      t.equal(r['efa_rdm.flags'], hex(ReqFlags.TAGGED | ReqFlags.CONNID_HDR, 4), 'tagged, connid (the handshake came)');
      t.equal(r['efa_rdm.msg_id'], '1');
      t.equal(r['efa_rdm.msg_length'], String(mediumMsg.len));
      t.equal(r['efa_rdm.tag'], hex(mediumMsg.tag as bigint, 16));
      t.equal(r['efa_rdm.connid'], connidA);
      t.equal(r['efa_rdm.raw_addr.len'], '', 'no raw address once the peer knows the sender');
      t.equal(r['efa_rdm.protocol'], 'medium');
      t.equal(num(r['efa_rdm.seg_offset']), next, 'segments follow each other');
      t.match(r['_ws.col.Info'], new RegExp(`^RDM MEDIUM_TAGRTM msg_id=1 seg ${next}/${mediumMsg.len} tag=0x2a \\(medium\\) \\| SRD_DATA `));
      next += num(r['efa_rdm.payload_len']);
    }
    t.equal(next, mediumMsg.len, 'and cover the message');
  });

  await t.test(`long-CTS: ${longctsMsg.len} B, its CTS and CTSDATA`, async (t) => {
    const [req] = of(RdmPktType.LONGCTS_MSGRTM);
    t.equal(of(RdmPktType.LONGCTS_MSGRTM).length, 1);
    t.ok(fromA(req));
    t.equal(req['efa_rdm.flags'], hex(ReqFlags.MSG | ReqFlags.CONNID_HDR, 4));
    t.equal(req['efa_rdm.msg_id'], '2');
    t.equal(req['efa_rdm.msg_length'], String(longctsMsg.len));
    t.equal(req['efa_rdm.credit_request'], String(DEFAULT_RDM_CONFIG.ctsCredits));
    t.equal(req['efa_rdm.protocol'], 'longcts');
    const sendId = req['efa_rdm.send_id'];
    const first = num(req['efa_rdm.payload_len']);
    t.ok(first > 0, 'the REQ carries the first segment');
    t.match(req['_ws.col.Info'], new RegExp(`^RDM LONGCTS_MSGRTM msg_id=2 send_id=${sendId} msg_length=${longctsMsg.len} \\(longcts\\) \\| SRD_DATA `));

    const cts = of(RdmPktType.CTS);
    t.ok(cts.length >= 1, 'a CTS');
    let granted = 0;
    for (const r of cts) {
      t.notOk(fromA(r), 'from the receiver');
      t.equal(r['efa_rdm.flags'], hex(wire.PKT_CONNID_HDR, 4));
      t.equal(r['efa_rdm.send_id'], sendId, "names the sender's operation");
      t.equal(r['efa_rdm.connid'], connidB);
      t.equal(num(r['efa_emu.payload_len']), wire.CTS_LEN);
      t.match(r['_ws.col.Info'], new RegExp(`^RDM CTS send_id=${sendId} recv_id=${r['efa_rdm.recv_id']} recv_length=${r['efa_rdm.recv_length']} \\| SRD_DATA `));
      granted += num(r['efa_rdm.recv_length']);
    }
    t.equal(granted, longctsMsg.len - first, 'the CTSs grant the rest of the message');

    const data = of(RdmPktType.CTSDATA).sort((x, y) => num(x['efa_rdm.seg_offset']) - num(y['efa_rdm.seg_offset']));
    let next = first;
    for (const r of data) {
      t.ok(fromA(r));
      t.equal(r['efa_rdm.recv_id'], cts[0]['efa_rdm.recv_id'], "names the receiver's operation");
      t.equal(num(r['efa_rdm.seg_offset']), next, 'segments follow each other');
      t.equal(r['efa_rdm.seg_length'], r['efa_rdm.payload_len'], 'seg_length is the payload');
      t.equal(r['efa_rdm.connid'], connidA);
      t.match(r['_ws.col.Info'], new RegExp(`^RDM CTSDATA recv_id=\\d+ seg_offset=${next} seg_length=${r['efa_rdm.seg_length']} \\| SRD_DATA `));
      next += num(r['efa_rdm.seg_length']);
    }
    t.equal(next, longctsMsg.len, 'CTSDATA covers the rest');
  });

  await t.test(`long-read: ${longreadMsg.len} B, read by the receiver, then EOR`, async (t) => {
    const [req] = of(RdmPktType.LONGREAD_TAGRTM);
    t.equal(of(RdmPktType.LONGREAD_TAGRTM).length, 1);
    t.ok(fromA(req));
    t.equal(req['efa_rdm.flags'], hex(ReqFlags.CQ_DATA_HDR | ReqFlags.TAGGED | ReqFlags.CONNID_HDR, 4));
    t.equal(req['efa_rdm.msg_id'], '3');
    t.equal(req['efa_rdm.msg_length'], String(longreadMsg.len));
    t.equal(req['efa_rdm.tag'], hex(longreadMsg.tag as bigint, 16));
    t.equal(req['efa_rdm.cq_data'], hex(longreadMsg.data as number, 16));
    t.equal(req['efa_rdm.read_iov_count'], '1');
    t.equal(req['efa_rdm.read_iov.len'], String(longreadMsg.len), 'one IOV: the whole message');
    t.ok(req['efa_rdm.read_iov.addr'] !== '', 'its address');
    t.equal(req['efa_rdm.payload_len'], '0', 'no data in the REQ');
    t.equal(req['efa_rdm.protocol'], 'longread');
    const sendId = req['efa_rdm.send_id'];
    t.match(req['_ws.col.Info'], new RegExp(`^RDM LONGREAD_TAGRTM msg_id=3 send_id=${sendId} msg_length=${longreadMsg.len} tag=0xfeed0000cafe data=0x55667788 \\(longread\\) \\| SRD_DATA `));
    const reads = rows.filter((r) => r['efa_emu.type'] === String(PacketType.SRD_READ_REQ));
    t.ok(reads.length >= 1, 'the receiver reads it');
    t.ok(
      reads.every((r) => num(r['efa_emu.rdma.rkey']) === num(req['efa_rdm.read_iov.key'])),
      "with the key the REQ's IOV names",
    );

    const eor = of(RdmPktType.EOR);
    t.equal(eor.length, 1);
    t.notOk(fromA(eor[0]), 'from the receiver');
    t.equal(eor[0]['efa_rdm.send_id'], sendId);
    t.equal(eor[0]['efa_rdm.connid'], connidB);
    t.equal(num(eor[0]['efa_emu.payload_len']), wire.EOR_LEN);
    t.match(eor[0]['_ws.col.Info'], new RegExp(`^RDM EOR send_id=${sendId} recv_id=\\d+ \\| SRD_DATA `));
  });

  await t.test('the tree as a user sees it', async (t) => {
    const text = await tshark(file, ['-Y', 'efa_rdm.type == 67 || efa_rdm.type == 64', '-O', 'efa_rdm']);
    t.match(text, /^EFA RDM protocol v4, MEDIUM_TAGRTM msg_id=1 seg 0\/20000 tag=0x2a \(medium\)$/m, 'protocol item named with its summary');
    t.match(text, /^ {4}Packet type: MEDIUM_TAGRTM \(67\)$/m);
    t.match(text, /^ {8}\.\.\.\. \.\.\.\. \.\.\.\. 1\.\.\. = TAGGED: Tagged message$/m, 'flag bits');
    t.match(text, /^ {4}Raw address header: QPN \d+, connid 0x[0-9a-f]{8} \(the receiver may not know the sender yet\)$/m);
    t.match(text, /^ {4}Payload: \d+ bytes at message offset \d+$/m, "where a segment's payload lands");
    t.match(text, /^ {4}\[Protocol: medium\]$/m, 'the protocol, generated');
  });

  await t.test('the preference turns RDM decoding off', async (t) => {
    const off = await decodeFields(file, ['-o', 'efa_emu.decode_rdm:FALSE']);
    t.equal(off.length, rows.length);
    t.ok(off.every((r) => r['efa_rdm.type'] === ''), 'no RDM field');
    const data = off.filter((r) => r['efa_emu.type'] === String(PacketType.SRD_DATA));
    t.ok(data.every((r) => r['data.len'] === r['efa_emu.payload_len']), 'the whole SRD payload is data');
    t.ok(data.every((r) => /^SRD_DATA psn=/.test(r['_ws.col.Info']) && r['_ws.col.Protocol'] === 'EFA-EMU'), 'the Info column as without RDM');
  });

  await t.test('a snaplen that cuts an RDM header leaves the payload as data', async (t) => {
    const cut = path.join(dir, 'rdm-cut.pcap');
    // Ethernet + IPv4 + UDP, the SRD_DATA header, then 36 bytes of the RDM packet: enough for
    // the medium (36), long-CTS (28), CTSDATA (32), CTS (24) and EOR (16) headers, not the
    // handshake (40), the eager REQ with its raw address (56) or the long-read REQ (68).
    const w = PcapWriter.open(cut, { snaplen: 42 + SRD_DATA_HDR_LEN + 36 });
    for (const rec of readPcap(file)) w.write(rec.payload, rec.origLen, rec.src, rec.dst);
    await w.close();
    const cutRows = await decodeFields(cut);
    const decoded = new Set(cutRows.filter((r) => r['efa_rdm.type'] !== '').map((r) => num(r['efa_rdm.type'])));
    t.same(
      [...decoded].sort((x, y) => x - y),
      [RdmPktType.CTS, RdmPktType.CTSDATA, RdmPktType.EOR, RdmPktType.MEDIUM_TAGRTM, RdmPktType.LONGCTS_MSGRTM],
      'decoded exactly the packets whose header was captured whole',
    );
    const medium = cutRows.find((r) => r['efa_rdm.type'] === String(RdmPktType.MEDIUM_TAGRTM)) as Row;
    const whole = rows.find((r) => r['frame.number'] === medium['frame.number']) as Row;
    t.equal(medium['efa_rdm.payload_len'], whole['efa_rdm.payload_len'], 'payload length from the wire length');
    t.equal(medium['efa_rdm.seg_offset'], whole['efa_rdm.seg_offset'], 'header fields read');
    t.equal(medium['data.len'], '', 'no payload captured, none shown');
    t.ok(cutRows.every((r) => r['efa_emu.crc.status'] === '2' || r['efa_emu.payload_len'] === '0' || num(r['efa_emu.payload_len']) <= 36), 'CRC unverified where cut');
  });
});

// ------------------------------------------------------------------ what must stay data

/** An SRD_DATA datagram carrying `payload`. */
function srdData(payload: Uint8Array, psn: number): Buffer {
  const buf = Buffer.alloc(SRD_DATA_HDR_LEN + payload.length);
  encodeHeader(buf, PacketType.SRD_DATA, 0, SRD_DATA_HDR_LEN, 2, 3, payload.length, QKEY, 0, GID_A);
  writeSrdData(buf, SESSION, psn, psn, 1000 + psn, INCARNATION_B);
  buf.set(payload, SRD_DATA_HDR_LEN);
  sealPacket(buf, buf.length);
  return buf;
}

/** A REQ packet as the endpoint encodes it, then `payload` bytes; `edit` may change the fields first. */
function req(type: number, payload: number, edit: (f: wire.ReqFields) => void = () => {}): Buffer {
  const f = new wire.ReqFields();
  f.type = type;
  const tagged = wire.rtmType(wire.rtmProtocol(type) as wire.RdmProtocol, true) === type;
  f.flags = (tagged ? ReqFlags.TAGGED : ReqFlags.MSG) | ReqFlags.CONNID_HDR;
  f.msgId = 9;
  f.tagLo = 5;
  f.tagHi = 6;
  f.msgLength = 4096;
  f.sendId = 7;
  f.readAddr = 0x100;
  f.readLen = 4096;
  f.readKey = 0x303;
  f.connid = 0x1234;
  edit(f);
  // A raw address of QPN 0x1234, connid 0x89abcdef (GID left zero).
  const raw = new Uint8Array(wire.RAW_ADDR_LEN);
  raw[16] = 0x34;
  raw[17] = 0x12;
  Buffer.from(raw.buffer).writeUInt32LE(0x89abcdef, 20);
  const buf = Buffer.alloc(512);
  const hdr = wire.encodeReq(buf, f, (f.flags & ReqFlags.RAW_ADDR_HDR) !== 0 ? raw : null);
  return buf.subarray(0, hdr + payload);
}

function ctrl(encode: (buf: Uint8Array) => number, extra = 0): Buffer {
  const buf = Buffer.alloc(512);
  return buf.subarray(0, encode(buf) + extra);
}

/** A small seeded PRNG (mulberry32), so a failure replays. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  };
}

t.test('payloads that are not RDM packets stay data', { skip: noTshark }, async (t) => {
  // rdm: the RDM payload length and fields the dissector must find, or null for data.
  type Expect = { payload: number } & Partial<Row>;
  const cases: Array<{ name: string; payload: Buffer; rdm: Expect | null }> = [];
  const add = (name: string, payload: Buffer, rdm: Expect | null = null): void => {
    cases.push({ name, payload, rdm });
  };
  // Every field a distinct value, so a field read at another's offset shows.
  const cts = (): Buffer => ctrl((b) => wire.encodeCts(b, 0x77, 11, 22, 8192));
  const connid = hex(0x77, 8);
  // Controls: the encoders' own packets decode, each field where the encoder put it.
  add('CTS', cts(), { payload: 0, 'efa_rdm.connid': connid, 'efa_rdm.send_id': '11', 'efa_rdm.recv_id': '22', 'efa_rdm.recv_length': '8192' });
  add('eager REQ with raw address', req(RdmPktType.EAGER_MSGRTM, 10, (f) => (f.flags = ReqFlags.MSG | ReqFlags.RAW_ADDR_HDR)), {
    payload: 10,
    'efa_rdm.msg_id': '9',
    'efa_rdm.raw_addr.len': '36',
    'efa_rdm.raw_addr.qpn': '4660',
    'efa_rdm.raw_addr.connid': hex(0x89abcdef, 8),
  });
  add('medium REQ', req(RdmPktType.MEDIUM_TAGRTM, 100, (f) => (f.segOffset = 3996)), {
    payload: 100,
    'efa_rdm.msg_id': '9',
    'efa_rdm.msg_length': '4096',
    'efa_rdm.seg_offset': '3996',
    'efa_rdm.tag': '0x0000000600000005',
    'efa_rdm.connid': hex(0x1234, 8),
  });
  add('long-read REQ', req(RdmPktType.LONGREAD_MSGRTM, 0), {
    payload: 0,
    'efa_rdm.send_id': '7',
    'efa_rdm.read_iov_count': '1',
    'efa_rdm.read_iov.addr': '0x0000000000000100',
    'efa_rdm.read_iov.len': '4096',
    'efa_rdm.read_iov.key': '0x0000000000000303',
  });
  add('CTSDATA', ctrl((b) => wire.encodeCtsData(b, 0x77, 55, 100, 66), 100), { payload: 100, 'efa_rdm.recv_id': '55', 'efa_rdm.seg_length': '100', 'efa_rdm.seg_offset': '66', 'efa_rdm.connid': connid });
  add('EOR', ctrl((b) => wire.encodeEor(b, 0x77, 33, 44)), { payload: 0, 'efa_rdm.send_id': '33', 'efa_rdm.recv_id': '44', 'efa_rdm.connid': connid });
  add('PEER_ERROR', ctrl((b) => wire.encodePeerError(b, 0x77, 66, wire.PeerErrorRef.MSG_ID, 10)), {
    payload: 0,
    'efa_rdm.peer_error.op_id': '66',
    'efa_rdm.peer_error.ref_kind': '1',
    'efa_rdm.peer_error.prov_errno': '10',
    'efa_rdm.connid': connid,
  });
  add('HANDSHAKE', ctrl((b) => wire.encodeHandshake(b, 0x9, 0x77, 0xefa1)), {
    payload: 0,
    'efa_rdm.connid': connid,
    'efa_rdm.handshake.features': 'RDMA_READ|CONNID_HEADER',
    'efa_rdm.handshake.device_version': '0x0000efa1',
  });

  // One rule broken each.
  const v3 = cts();
  v3[1] = 3;
  add('version 3', v3);
  const readrsp = cts();
  readrsp[0] = RdmPktType.READRSP;
  add('a type it does not decode (READRSP)', readrsp);
  add('CTS one byte long', ctrl((b) => wire.encodeCts(b, 0x77, 1, 2, 8192), 1));
  add('CTS one byte short', cts().subarray(0, wire.CTS_LEN - 1));
  const ctsFlag = cts();
  ctsFlag.writeUInt16LE(wire.PKT_CONNID_HDR | 0x1, 2);
  add('CTS with a flag CTS does not define', ctsFlag);
  add('eager REQ without MSG', req(RdmPktType.EAGER_MSGRTM, 10, (f) => (f.flags = ReqFlags.CONNID_HDR)));
  add('untagged type with TAGGED', req(RdmPktType.EAGER_MSGRTM, 10, (f) => (f.flags = ReqFlags.TAGGED | ReqFlags.CONNID_HDR)));
  add('tagged type with MSG and TAGGED', req(RdmPktType.EAGER_TAGRTM, 10, (f) => (f.flags |= ReqFlags.MSG)));
  add('REQ with raw address and connid', req(RdmPktType.EAGER_MSGRTM, 10, (f) => (f.flags |= ReqFlags.RAW_ADDR_HDR)));
  const badRaw = req(RdmPktType.EAGER_MSGRTM, 10, (f) => (f.flags = ReqFlags.MSG | ReqFlags.RAW_ADDR_HDR));
  badRaw.writeUInt32LE(35, 8);
  add('raw-address length word 35', badRaw);
  add('REQ with an unknown flag', req(RdmPktType.EAGER_MSGRTM, 10, (f) => (f.flags |= 0x0100)));
  add('REQ shorter than its raw-address header', req(RdmPktType.EAGER_MSGRTM, 0, (f) => (f.flags = ReqFlags.MSG | ReqFlags.RAW_ADDR_HDR)).subarray(0, 30));
  add('medium segment past msg_length', req(RdmPktType.MEDIUM_TAGRTM, 101, (f) => (f.segOffset = 3996)));
  add('long-CTS first segment longer than the message', req(RdmPktType.LONGCTS_MSGRTM, 200, (f) => (f.msgLength = 100)));
  add('long-read REQ with bytes after its IOV', req(RdmPktType.LONGREAD_MSGRTM, 1));
  const noIov = req(RdmPktType.LONGREAD_MSGRTM, 0);
  noIov.writeUInt32LE(0, 20);
  add('long-read REQ with no IOV', noIov);
  add('CTSDATA whose seg_length is not its payload', ctrl((b) => wire.encodeCtsData(b, 0x77, 2, 100, 0), 99));
  add('EOR one byte long', ctrl((b) => wire.encodeEor(b, 0x77, 1, 2), 1));
  add('HANDSHAKE with bytes after its headers', ctrl((b) => wire.encodeHandshake(b, 0x9, 0x77, 0xefa1), 8));
  const hsWords = ctrl((b) => wire.encodeHandshake(b, 0x9, 0x77, 0xefa1));
  hsWords.writeUInt32LE(2, 4);
  add('HANDSHAKE with nextra_p3 2', hsWords);

  // Arbitrary application bytes, half of them made to start like an RDM packet (version 4,
  // a decoded type): the flag and length rules must still turn them away.
  const rnd = prng(20260806);
  const types = [3, 4, 7, 9, 64, 65, 66, 67, 68, 69, 128, 129];
  for (let i = 0; i < 800; i++) {
    const p = Buffer.alloc(1 + (rnd() % 400));
    for (let j = 0; j < p.length; j++) p[j] = rnd() & 0xff;
    if (i % 2 === 1 && p.length >= 2) {
      p[0] = types[rnd() % types.length];
      p[1] = wire.RDM_PROTOCOL_VERSION;
    }
    add(`random ${i}`, p);
  }

  const dir = tempdir(t);
  const file = path.join(dir, 'not-rdm.pcap');
  const w = PcapWriter.open(file);
  cases.forEach((c, i) => {
    const buf = srdData(c.payload, i);
    w.write(buf, buf.length, HOST_A, HOST_B);
  });
  await w.close();
  const rows = await decodeFields(file);
  t.equal(rows.length, cases.length);
  const wrong = cases.filter((c, i) => (rows[i]['efa_rdm.type'] !== '') !== (c.rdm !== null)).map((c) => c.name);
  t.same(wrong, [], 'decoded as RDM exactly the real packets');
  cases.forEach((c, i) => {
    const r = rows[i];
    if (c.rdm !== null) {
      const { payload, ...fields } = c.rdm;
      t.equal(r['efa_rdm.type'], String(c.payload[0]), `${c.name}: decoded`);
      t.equal(r['efa_rdm.payload_len'], String(payload), `${c.name}: its payload found`);
      for (const [k, v] of Object.entries(fields)) t.equal(r[k as keyof Row], v, `${c.name}: ${k}`);
    } else if (!c.name.startsWith('random')) {
      t.equal(r['data.len'], String(c.payload.length), `${c.name}: all data`);
      t.match(r['_ws.col.Info'], /^SRD_DATA psn=/, `${c.name}: Info as for any SRD send`);
    }
  });
  const randomData = cases.filter((c, i) => c.name.startsWith('random') && rows[i]['data.len'] === String(c.payload.length)).length;
  t.equal(randomData, 800, 'every random payload shown whole as data');
});
