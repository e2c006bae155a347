// The Wireshark dissector in contrib/wireshark/efa-emu.lua, checked two ways: its tables
// (types, statuses, header lengths, flags) against the TypeScript wire definitions, always;
// and, when tshark is installed, by decoding a capture of packets built with the project's
// own encoders and comparing every field tshark reports with what was encoded.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { PcapWriter } from '../src/io/pcap-writer';
import { BASE_HEADER_LEN, encodeHeader, FLAG_HAS_IMM, isSrdData, OFF_CRC, packetPath, PacketType, readU32, sealPacket, setPacketPath, WIRE_MAGIC, WIRE_VERSION } from '../src/wire/header';
import * as srd from '../src/wire/srd-header';
import * as header from '../src/wire/header';
import * as rdma from '../src/wire/rdma-header';
import { tshark, tsharkFields, tsharkProblem } from './helpers/tshark';
import {
  GID_A,
  GID_B,
  HOST_A,
  HOST_B,
  INCARNATION_B,
  QKEY,
  RKEY_WRITE,
  READ_OP_ID,
  SESSION,
  WRITE_ADDR,
  WRITE_IMM,
  rdmaPacket,
  samplePackets,
  writeSampleCapture,
  type SamplePacket,
} from './fixtures/make-capture';

// dist/test/ -> repository root; the Lua file is not compiled, so it is read from the source tree.
const ROOT = path.resolve(__dirname, '..', '..');
const LUA = path.join(ROOT, 'contrib', 'wireshark', 'efa-emu.lua');
const lua = fs.readFileSync(LUA, 'utf8');

type HasTeardown = { teardown(fn: () => unknown): void };

function tempdir(t: HasTeardown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-wireshark-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// False where the tshark tests can run; otherwise each is reported skipped with this reason.
const noTshark = tsharkProblem();


const FIELDS = [
  'efa_emu.magic',
  'efa_emu.version',
  'efa_emu.type',
  'efa_emu.flags',
  'efa_emu.flags.has_imm',
  'efa_emu.flags.rnr_last',
  'efa_emu.hdr_len',
  'efa_emu.src_qpn',
  'efa_emu.dst_qpn',
  'efa_emu.payload_len',
  'efa_emu.qkey',
  'efa_emu.imm',
  'efa_emu.src_gid',
  'efa_emu.src_gid.device_index',
  'efa_emu.crc',
  'efa_emu.crc.status',
  'efa_emu.srd.session',
  'efa_emu.srd.psn',
  'efa_emu.srd.window_start',
  'efa_emu.srd.tx_time',
  'efa_emu.srd.dest_incarnation',
  'efa_emu.srd.piggyback.session',
  'efa_emu.srd.piggyback.cum_ack',
  'efa_emu.srd.piggyback.echo_time',
  'efa_emu.srd.cum_ack',
  'efa_emu.srd.echo_time',
  'efa_emu.srd.incarnation',
  'efa_emu.srd.sack_base',
  'efa_emu.srd.sack',
  'efa_emu.srd.sack_count',
  'efa_emu.srd.sacked_psn',
  'efa_emu.srd.sack_ranges',
  'efa_emu.srd.nak_status',
  'efa_emu.srd.ext_unknown',
  'efa_emu.rdma.rkey',
  'efa_emu.rdma.addr',
  'efa_emu.rdma.length',
  'efa_emu.rdma.op_id',
  '_ws.expert.message',
  'ip.checksum.status',
  'data.len',
  'frame.protocols',
  '_ws.col.Info',
] as const;
type Row = Record<(typeof FIELDS)[number], string>;

function decodeFields(file: string, extra: string[] = []): Promise<Row[]> {
  return tsharkFields(file, FIELDS, ['-o', 'ip.check_checksum:TRUE', ...extra]);
}

const hex = (v: number, width: number): string => `0x${v.toString(16).padStart(width, '0')}`;
/** Packet types as the dissector's value strings name them. */
const typeName = (v: number): string => Object.entries(PacketType).find(([, n]) => n === v)?.[0] ?? '?';
const gidText = (gid: Uint8Array): string => {
  // fe80::1a2b:3c4d:0:<index> for the fixture's GIDs (index < 0x10000)
  const w = [];
  for (let i = 0; i < 16; i += 2) w.push(((gid[i] << 8) | gid[i + 1]).toString(16));
  return `${w[0]}::${w.slice(4).join(':')}`;
};

t.test('the dissector knows the same types, statuses, lengths and flags as the TypeScript', async (t) => {
  const num = (name: string): number => {
    const m = new RegExp(`local ${name} = (0x[0-9a-fA-F]+|\\d+)`).exec(lua);
    if (m === null) throw new Error(`${name} not found in the Lua file`);
    return Number(m[1]);
  };
  t.equal(num('WIRE_MAGIC'), WIRE_MAGIC);
  t.equal(num('WIRE_VERSION'), WIRE_VERSION);
  t.equal(num('BASE_HEADER_LEN'), BASE_HEADER_LEN);
  t.equal(num('SRD_DATA_HDR_LEN'), srd.SRD_DATA_HDR_LEN);
  t.equal(num('SRD_ACK_HDR_LEN'), srd.SRD_ACK_HDR_LEN);
  t.equal(num('SRD_NAK_HDR_LEN'), srd.SRD_NAK_HDR_LEN);
  t.equal(num('SACK_BITS'), srd.SACK_BITS);
  t.equal(num('FLAG_HAS_IMM'), FLAG_HAS_IMM);
  // The path field's mask: the flag bits from FLAG_PATH_SHIFT up, room for every path.
  t.equal(num('FLAG_PATH_MASK'), ((header.MAX_PATHS - 1) << header.FLAG_PATH_SHIFT) & 0xff, 'FLAG_PATH_MASK covers paths 0..MAX_PATHS-1');
  t.equal(num('FLAG_PATH_MASK') >> header.FLAG_PATH_SHIFT, header.MAX_PATHS - 1, 'and nothing above them');
  // Every flag bit the wire defines has a field in the dissector.
  for (const [name, value] of Object.entries(header).filter(([k]) => k.startsWith('FLAG_'))) {
    t.equal(num(name), value, `${name} known to the dissector`);
  }

  const typeLine = /local UD_SEND, SRD_DATA, SRD_ACK, SRD_NAK = (\d+), (\d+), (\d+), (\d+)/.exec(lua);
  t.ok(typeLine, 'type constants');
  t.same(typeLine?.slice(1).map(Number), [PacketType.UD_SEND, PacketType.SRD_DATA, PacketType.SRD_ACK, PacketType.SRD_NAK]);
  const rdmaTypeLine = /local SRD_RDMA_WRITE, SRD_READ_REQ, SRD_READ_RESP = (\d+), (\d+), (\d+)/.exec(lua);
  t.ok(rdmaTypeLine, 'RDMA type constants');
  t.same(rdmaTypeLine?.slice(1).map(Number), [PacketType.SRD_RDMA_WRITE, PacketType.SRD_READ_REQ, PacketType.SRD_READ_RESP]);
  t.same(
    Object.keys(PacketType).sort(),
    ['SRD_ACK', 'SRD_DATA', 'SRD_NAK', 'SRD_RDMA_WRITE', 'SRD_READ_REQ', 'SRD_READ_RESP', 'UD_SEND'],
    'no packet type the dissector lacks',
  );
  // The value strings name every type as the TypeScript does.
  const typeBlock = /local type_names = \{([\s\S]*?)\n\}/.exec(lua)?.[1] ?? '';
  const luaTypeNames = [...typeBlock.matchAll(/\[([A-Z_]+)\] = "([A-Z_]+)"/g)].map((m) => [m[1], m[2]]);
  t.same(luaTypeNames.map(([k]) => k).sort(), Object.keys(PacketType).sort(), 'type_names has every type');
  for (const [k, v] of luaTypeNames) t.equal(v, k, `type_names names ${k} after its constant`);
  // The types decoded as SRD data plus an RDMA extension: isSrdData less SRD_DATA itself.
  const rdmaTypes = /local function is_rdma\(ptype\)\s*return ([^\n]*)/.exec(lua)?.[1] ?? '';
  const srdDataTypes = Object.entries(PacketType).filter(([, v]) => isSrdData(v) && v !== PacketType.SRD_DATA).map(([k]) => k);
  t.same([...rdmaTypes.matchAll(/ptype == ([A-Z_]+)/g)].map((m) => m[1]).sort(), srdDataTypes.sort(), 'is_rdma covers the RDMA types of isSrdData');
  t.match(lua, /local function is_srd_data\(ptype\)\s*return ptype == SRD_DATA or is_rdma\(ptype\)/, 'is_srd_data as isSrdData');

  // The RDMA extension: its length and where the dissector reads each field.
  t.equal(num('RDMA_HDR_LEN'), rdma.RDMA_HDR_LEN);
  const fieldOffset = (field: string, len: number): number => {
    const m = new RegExp(`add\\(f\\.${field}, (\\d+), ${len}\\)`).exec(lua);
    if (m === null) throw new Error(`no add(f.${field}, ..., ${len}) in the Lua file`);
    return Number(m[1]);
  };
  t.equal(fieldOffset('rkey', 4), rdma.OFF_RKEY, 'rkey offset');
  t.equal(fieldOffset('addr', 8), rdma.OFF_ADDR_HI, 'addr offset (u64: hi then lo)');
  t.equal(rdma.OFF_ADDR_LO, rdma.OFF_ADDR_HI + 4, 'addr is one big-endian u64 on the wire');
  t.equal(fieldOffset('rdma_length', 4), rdma.OFF_RDMA_LENGTH, 'length offset');
  t.equal(fieldOffset('op_id', 4), rdma.OFF_OP_ID, 'op_id offset');
  t.equal(rdma.OFF_OP_ID + 4, rdma.RDMA_HDR_LEN, 'op_id is the last field');
  // The header comment lists every field the dissector defines.
  const comment = lua.slice(0, lua.indexOf('local efa = Proto('));
  for (const m of lua.matchAll(/ProtoField\.[a-z0-9]+\("(efa_emu\.[a-z0-9_.]+)"/g)) {
    t.ok(comment.includes(m[1]), `${m[1]} listed in the header comment`);
  }

  const statusBlock = /local efa_status_names = \{([\s\S]*?)\n\}/.exec(lua)?.[1] ?? '';
  const statuses: Record<string, number> = {};
  for (const m of statusBlock.matchAll(/\[(\d+)\] = "([A-Z_]+)"/g)) statuses[m[2]] = Number(m[1]);
  t.same(statuses, EfaStatus, 'completion status names and numbers as in DESIGN section 6');
});

t.test('tshark decodes every field of each packet type', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 'sample.pcap');
  const sent = await writeSampleCapture(file);
  const rows = await decodeFields(file);
  t.equal(rows.length, sent.length, 'one row per packet');

  sent.forEach((p: SamplePacket, i) => {
    const r = rows[i];
    t.test(`${p.name}`, async (t) => {
      const corrupted = p.name.includes('corrupted');
      t.equal(r['frame.protocols'], p.payloadLen > 0 ? 'eth:ethertype:ip:udp:efa_emu:data' : 'eth:ethertype:ip:udp:efa_emu', 'found by the heuristic, once');
      t.equal(r['ip.checksum.status'], '1', 'IPv4 header checksum good');
      t.equal(r['efa_emu.magic'], hex(WIRE_MAGIC, 4));
      t.equal(r['efa_emu.version'], String(WIRE_VERSION));
      t.equal(r['efa_emu.type'], String(p.type));
      const flags = p.flags ?? (p.imm !== undefined ? FLAG_HAS_IMM : 0);
      t.equal(r['efa_emu.flags'], hex(flags, 2));
      t.equal(r['efa_emu.flags.has_imm'], flags & FLAG_HAS_IMM ? '1' : '0');
      t.equal(r['efa_emu.flags.rnr_last'], '', 'no RNR_LAST flag in version 2');
      t.equal(r['efa_emu.hdr_len'], String(p.hdrLen));
      t.equal(r['efa_emu.src_qpn'], String(p.srcQpn));
      t.equal(r['efa_emu.dst_qpn'], String(p.dstQpn));
      t.equal(r['efa_emu.payload_len'], String(p.payloadLen));
      t.equal(r['efa_emu.qkey'], hex(QKEY, 8));
      t.equal(r['efa_emu.imm'], hex(p.imm ?? 0, 8));
      const gid = p.src === sent[0].src ? GID_A : GID_B;
      t.equal(r['efa_emu.src_gid'], gidText(gid), 'GID shown as IPv6');
      t.equal(r['efa_emu.src_gid.device_index'], String(gid[15]));
      t.equal(r['efa_emu.crc'], hex(readU32(p.buf, OFF_CRC), 8));
      t.equal(r['efa_emu.crc.status'], corrupted ? '0' : '1', corrupted ? 'flipped bit caught' : 'CRC verified');
      t.equal(r['data.len'], p.payloadLen > 0 ? String(p.payloadLen) : '', 'payload handed to the data dissector');

      const srdField = (name: string, v: number | undefined): void => {
        t.equal(r[`efa_emu.srd.${name}` as keyof Row], v === undefined ? '' : String(v), `srd.${name}`);
      };
      t.equal(r['efa_emu.srd.session'], p.session === undefined ? '' : hex(p.session, 8), 'srd.session');
      const pb = p.piggyback;
      t.equal(r['efa_emu.srd.piggyback.session'], pb === undefined ? '' : hex(pb[0], 8), 'piggyback session');
      t.equal(r['efa_emu.srd.piggyback.cum_ack'], pb === undefined ? '' : String(pb[1]), 'piggyback cum_ack');
      t.equal(r['efa_emu.srd.piggyback.echo_time'], pb === undefined ? '' : String(pb[2]), 'piggyback echo_time');
      srdField('psn', p.psn);
      srdField('window_start', p.windowStart);
      srdField('tx_time', p.txTime);
      srdField('dest_incarnation', p.destIncarnation);
      srdField('cum_ack', p.cumAck);
      srdField('echo_time', p.echoTime);
      srdField('incarnation', p.incarnation);
      srdField('nak_status', p.nakStatus);
      srdField('sack_base', p.sackBase);
      if (p.sacked !== undefined) {
        t.equal(r['efa_emu.srd.sack'], p.buf.subarray(srd.OFF_SACK, srd.OFF_SACK + 16).toString('hex'), 'bitmap');
        t.equal(r['efa_emu.srd.sack_count'], String(p.sacked.length), 'number of SACKed PSNs');
        t.equal(r['efa_emu.srd.sacked_psn'], p.sacked.join(','), 'the SACKed PSNs');
        t.equal(r['efa_emu.srd.sack_ranges'], '200-201,204');
      } else {
        t.equal(r['efa_emu.srd.sack_count'], '');
      }
      // The RDMA extension (values as encoded by writeRdma; addr a 64-bit field).
      t.equal(r['efa_emu.rdma.rkey'], p.rkey === undefined ? '' : hex(p.rkey, 8), 'rdma.rkey');
      t.equal(r['efa_emu.rdma.addr'], p.addr === undefined ? '' : hex(p.addr, 16), 'rdma.addr');
      t.equal(r['efa_emu.rdma.length'], p.rdmaLength === undefined ? '' : String(p.rdmaLength), 'rdma.length');
      t.equal(r['efa_emu.rdma.op_id'], p.opId === undefined ? '' : String(p.opId), 'rdma.op_id');
      t.equal(r['efa_emu.srd.ext_unknown'], '', 'no extension bytes left unexplained');
      const experts = r['_ws.expert.message'];
      t.notMatch(experts, /hdr_len|Unknown packet type|differs from the datagram length/, 'nothing flagged malformed');
      const writeImmFinal = p.type === PacketType.SRD_RDMA_WRITE && p.imm !== undefined;
      t.equal(/write with immediate/.test(experts), writeImmFinal, writeImmFinal ? 'final write-with-imm packet marked' : 'not marked as a write-with-imm final');
    });
  });

  t.equal(rows[0]['_ws.col.Info'], 'UD_SEND 5->6 len=32 imm=0xdeadbeef');
  t.equal(rows[1]['_ws.col.Info'], 'SRD_DATA psn=12 2->3 len=64');
  t.equal(rows[2]['_ws.col.Info'], 'SRD_ACK cum_ack=13 sacked=3 3->2');
  t.equal(rows[3]['_ws.col.Info'], 'SRD_NAK psn=12 status=REMOTE_ERROR_RNR 3->2');
  t.equal(rows[4]['_ws.col.Info'], 'SRD_DATA psn=12 2->3 len=64 [bad CRC]');
  const pbAck = sent[5].piggyback === undefined ? '' : ` ack=${sent[5].piggyback[1]}`;
  t.equal(rows[5]['_ws.col.Info'], `SRD_DATA psn=40${pbAck} 3->2 len=16`);
  // RDMA: the operation (len= its total bytes), then this packet's payload.
  const addrText = (v: number): string => `0x${v.toString(16)}`;
  t.equal(rows[6]['_ws.col.Info'], `SRD_RDMA_WRITE psn=13 addr=${addrText(WRITE_ADDR)} len=96 rkey=${hex(RKEY_WRITE, 8)} 2->3 payload=64`);
  t.equal(
    rows[7]['_ws.col.Info'],
    `SRD_RDMA_WRITE psn=14 addr=${addrText(WRITE_ADDR + 64)} len=96 rkey=${hex(RKEY_WRITE, 8)} 2->3 payload=32 imm=${hex(WRITE_IMM, 8)} [write-with-imm final]`,
  );
  t.equal(rows[8]['_ws.col.Info'], `SRD_READ_REQ psn=15 op_id=${READ_OP_ID} addr=0x3000 len=128 rkey=0x00c0de02 2->3`);
  const respAck = sent[9].piggyback === undefined ? '' : ` ack=${sent[9].piggyback[1]}`;
  t.equal(rows[9]['_ws.col.Info'], `SRD_READ_RESP psn=42${respAck} op_id=${READ_OP_ID} off=64 len=128 3->2 payload=64`);

  // Value names as a user sees them in the tree (PDML "showname").
  const pdml = await tshark(file, ['-T', 'pdml']);
  const shown = (field: string): string[] => [...pdml.matchAll(new RegExp(`name="${field.replace(/\./g, '\\.')}" showname="([^"]*)"`, 'g'))].map((m) => m[1]);
  t.same(shown('efa_emu.type'), sent.map((p) => `Type: ${typeName(p.type)} (${p.type})`));
  t.same(shown('efa_emu.srd.nak_status'), ['Status: REMOTE_ERROR_RNR (10)']);
  t.same(shown('efa_emu.flags.has_imm').slice(0, 2), ['.... ...1 = HAS_IMM: Immediate data present', '.... ...0 = HAS_IMM: No immediate data']);
});

t.test('tshark shows the path of each packet (flags bits 2-7) as efa_emu.path and in the Info', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  // The sample packets less the corrupted one, each moved to a path of its own (the ack on its
  // data packet's path, as an echo travels); the read response stays on path 0.
  const paths: Record<string, number> = {
    UD_SEND: 0,
    SRD_DATA: 1,
    SRD_ACK: 1,
    SRD_NAK: 2,
    'SRD_DATA (reverse, piggybacked ack)': 3,
    SRD_RDMA_WRITE: 62,
    'SRD_RDMA_WRITE (last, with immediate)': 63,
    SRD_READ_REQ: 5,
    SRD_READ_RESP: 0,
  };
  const plain = samplePackets().filter((p) => p.name in paths);
  t.equal(plain.length, Object.keys(paths).length, 'every named sample packet found');
  const moved = samplePackets()
    .filter((p) => p.name in paths)
    .map((p) => {
      setPacketPath(p.buf, paths[p.name]);
      sealPacket(p.buf, p.buf.length);
      return p;
    });
  t.equal(packetPath(moved[1].buf), 1, 'setPacketPath as the dissector will read it');
  const write = (file: string, packets: SamplePacket[]): Promise<void> => {
    const w = PcapWriter.open(file);
    packets.forEach((p, i) => w.write(p.buf, p.buf.length, p.src, p.dst, Date.UTC(2024, 0, 1) + i));
    return w.close();
  };
  const plainFile = path.join(dir, 'path0.pcap');
  const file = path.join(dir, 'paths.pcap');
  await Promise.all([write(plainFile, plain), write(file, moved)]);
  const [before, rows] = await Promise.all([decodeFields(plainFile), tsharkFields(file, [...FIELDS, 'efa_emu.path'] as const)]);
  t.equal(rows.length, moved.length);

  moved.forEach((p, i) => {
    const r = rows[i];
    const n = paths[p.name];
    const flags = (p.flags ?? (p.imm !== undefined ? FLAG_HAS_IMM : 0)) | (n << header.FLAG_PATH_SHIFT);
    t.equal(r['efa_emu.path'], String(n), `${p.name}: path ${n}`);
    t.equal(r['efa_emu.flags'], hex(flags, 2), `${p.name}: flags byte`);
    t.equal(r['efa_emu.flags.has_imm'], flags & FLAG_HAS_IMM ? '1' : '0', `${p.name}: HAS_IMM read apart from the path`);
    t.equal(r['efa_emu.crc.status'], '1', `${p.name}: CRC over the path verified`);
    t.equal(r['efa_emu.srd.psn'], before[i]['efa_emu.srd.psn'], `${p.name}: the rest decodes as on path 0`);
    // Path 0 leaves the Info as it was; any other path follows the QPNs.
    const expected = n === 0 ? before[i]['_ws.col.Info'] : before[i]['_ws.col.Info'].replace(/ (\d+->\d+)/, ` $1 path=${n}`);
    t.equal(r['_ws.col.Info'], expected, `${p.name}: Info`);
  });
  t.equal(rows[1]['_ws.col.Info'], 'SRD_DATA psn=12 2->3 path=1 len=64');
  t.equal(rows[2]['_ws.col.Info'], 'SRD_ACK cum_ack=13 sacked=3 3->2 path=1');
  t.equal(rows[3]['_ws.col.Info'], 'SRD_NAK psn=12 status=REMOTE_ERROR_RNR 3->2 path=2');
  t.equal(
    rows[6]['_ws.col.Info'],
    `SRD_RDMA_WRITE psn=14 addr=0x100002040 len=96 rkey=${hex(RKEY_WRITE, 8)} 2->3 path=63 payload=32 imm=${hex(WRITE_IMM, 8)} [write-with-imm final]`,
  );
  t.equal(rows[8]['_ws.col.Info'], 'SRD_READ_RESP psn=42 ack=16 op_id=7 off=64 len=128 3->2 payload=64', 'path 0: no path= in the Info');

  // A filter on the path finds that path's packets.
  const onPath1 = await tsharkFields(file, ['efa_emu.type'] as const, ['-Y', 'efa_emu.path == 1']);
  t.same(onPath1.map((r) => r['efa_emu.type']), [String(PacketType.SRD_DATA), String(PacketType.SRD_ACK)], 'efa_emu.path == 1: the data packet and its ack');

  // In the tree: the flags item names what is set, the path its bits.
  const pdml = await tshark(file, ['-T', 'pdml']);
  const shown = (field: string): string[] => [...pdml.matchAll(new RegExp(`name="${field.replace(/\./g, '\\.')}" showname="([^"]*)"`, 'g'))].map((m) => m[1]);
  const flagsShown = shown('efa_emu.flags');
  t.equal(flagsShown[0], 'Flags: 0x01 (HAS_IMM)', 'UD on path 0');
  t.equal(flagsShown[1], 'Flags: 0x04 (path 1)');
  t.equal(flagsShown[6], 'Flags: 0xfd (HAS_IMM, path 63)');
  t.equal(flagsShown[8], 'Flags: 0x00', 'path 0, no flag: nothing to name');
  const pathShown = shown('efa_emu.path');
  t.equal(pathShown[1], '0000 01.. = Path: 1');
  t.equal(pathShown[6], '1111 11.. = Path: 63');
  t.equal(pathShown[8], '0000 00.. = Path: 0');
  const protoShown = [...pdml.matchAll(/<proto name="efa_emu" showname="([^"]*)"/g)].map((m) => m[1].replace(/&gt;/g, '>'));
  t.match(protoShown[3], /, SRD_NAK, QPN 3 -> 2, path 2$/, 'the protocol item names the path');
  t.notMatch(protoShown[8], /path/, 'but not path 0');
});

t.test('Decode As and the port preference take a port another dissector owns', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 'vxlan-port.pcap');
  // 4789 is VXLAN's port: its dissector claims the datagrams before any heuristic runs.
  const w = PcapWriter.open(file);
  const packets = samplePackets();
  for (const p of packets) w.write(p.buf, p.buf.length, { host: '127.0.0.1', port: 4789 }, { host: '127.0.0.1', port: 4789 });
  await w.close();

  const plain = await decodeFields(file);
  t.ok(plain.every((r) => r['efa_emu.type'] === ''), 'not decoded without being told');
  const viaDecodeAs = await decodeFields(file, ['-d', 'udp.port==4789,efa_emu']);
  t.same(viaDecodeAs.map((r) => r['efa_emu.type']), packets.map((p) => String(p.type)), 'Decode As');
  const viaPref = await decodeFields(file, ['-o', 'efa_emu.udp_port:4789']);
  t.same(viaPref.map((r) => r['efa_emu.type']), packets.map((p) => String(p.type)), 'port preference');
});

t.test('a capture cut by a small snaplen still decodes what it holds', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 'snap.pcap');
  const w = PcapWriter.open(file, { snaplen: 42 + 52 });
  const packets = samplePackets();
  for (const p of packets) w.write(p.buf, p.buf.length, p.src, p.dst);
  await w.close();
  const rows = await decodeFields(file);
  t.same(rows.map((r) => r['efa_emu.type']), packets.map((p) => String(p.type)));
  t.same(rows.map((r) => r['efa_emu.crc.status']), packets.map((p) => (p.buf.length > 52 ? '2' : '1')), 'CRC unverified when cut');
  t.equal(rows[1]['efa_emu.srd.psn'], '12', 'PSN of the data packet captured');
  t.equal(rows[1]['efa_emu.srd.tx_time'], '', 'fields past the snaplen left out');
  t.equal(rows[2]['_ws.col.Info'], 'SRD_ACK cum_ack=13 3->2', 'ack without its SACK bitmap');
  const write = rows[packets.findIndex((p) => p.type === PacketType.SRD_RDMA_WRITE)];
  t.equal(write['efa_emu.srd.psn'], '13', 'PSN of an RDMA write captured');
  t.equal(write['efa_emu.rdma.rkey'], '', 'its RDMA extension past the snaplen left out');
  t.equal(write['_ws.col.Info'], 'SRD_RDMA_WRITE psn=13 2->3 payload=64');
});

t.test('an RDMA extension cut by the snaplen shows the fields it holds', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 'snap-rdma.pcap');
  // 80 bytes of each datagram: the SRD part and the rkey, not the address.
  const w = PcapWriter.open(file, { snaplen: 42 + 80 });
  const packets = samplePackets().filter((p) => p.rkey !== undefined);
  for (const p of packets) w.write(p.buf, p.buf.length, p.src, p.dst);
  await w.close();
  const rows = await decodeFields(file);
  t.same(rows.map((r) => r['efa_emu.type']), packets.map((p) => String(p.type)));
  t.same(rows.map((r) => r['efa_emu.rdma.rkey']), packets.map((p) => hex(p.rkey as number, 8)), 'rkey captured');
  t.same(rows.map((r) => r['efa_emu.rdma.addr']), packets.map(() => ''), 'address past the snaplen left out');
  t.same(rows.map((r) => r['efa_emu.srd.piggyback.session'] !== ''), packets.map(() => true), 'SRD data part decoded whole');
  t.equal(rows[0]['_ws.col.Info'], `SRD_RDMA_WRITE psn=13 rkey=${hex(RKEY_WRITE, 8)} 2->3 payload=64`);
});

t.test('an RDMA packet with a short or longer extension is flagged, not misread', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 'odd-rdma.pcap');
  const cases: { name: string; hdrLen: number }[] = [
    { name: 'hdr_len 60: not even the SRD data part', hdrLen: 60 },
    { name: 'hdr_len 72: SRD data part only', hdrLen: srd.SRD_DATA_HDR_LEN },
    { name: 'hdr_len 80: half an RDMA extension', hdrLen: 80 },
    { name: 'hdr_len 100: 8 bytes more than this dissector knows', hdrLen: rdma.RDMA_HDR_LEN + 8 },
  ];
  const w = PcapWriter.open(file);
  for (const c of cases) {
    const buf = rdmaPacket(PacketType.SRD_RDMA_WRITE, 0, 2, 3, 16, 0, GID_A, SESSION, 13, 13, 1, INCARNATION_B, c.hdrLen);
    // Fill the bytes after the SRD part as far as the header goes, then the RDMA fields that fit.
    if (c.hdrLen >= rdma.RDMA_HDR_LEN) rdma.writeRdma(buf, RKEY_WRITE, WRITE_ADDR, 16, 0);
    else buf.fill(0xab, Math.max(srd.SRD_DATA_HDR_LEN, BASE_HEADER_LEN), c.hdrLen);
    if (c.hdrLen > rdma.RDMA_HDR_LEN) buf.fill(0xcd, rdma.RDMA_HDR_LEN, c.hdrLen);
    sealPacket(buf, buf.length);
    w.write(buf, buf.length, HOST_A, HOST_B);
  }
  // A type this dissector does not know, with an RDMA-sized header.
  const unknown = Buffer.alloc(rdma.RDMA_HDR_LEN);
  encodeHeader(unknown, 8 as PacketType, 0, rdma.RDMA_HDR_LEN, 2, 3, 0, QKEY, 0, GID_A);
  sealPacket(unknown, unknown.length);
  w.write(unknown, unknown.length, HOST_A, HOST_B);
  await w.close();

  const rows = await decodeFields(file);
  t.equal(rows.length, cases.length + 1);
  const [r60, r72, r80, r100, r8] = rows;
  t.match(r60['_ws.expert.message'], /hdr_len 60 < 72/, cases[0].name);
  t.equal(r60['efa_emu.srd.psn'], '', 'nothing read from a short SRD part');
  t.equal(r60['efa_emu.rdma.rkey'], '');
  t.match(r72['_ws.expert.message'], /hdr_len 72 < 92/, cases[1].name);
  t.equal(r72['efa_emu.srd.psn'], '13', 'its SRD data part still decoded');
  t.equal(r72['efa_emu.rdma.rkey'], '', 'no RDMA field made up');
  t.match(r80['_ws.expert.message'], /hdr_len 80 < 92/, cases[2].name);
  t.equal(r80['efa_emu.rdma.rkey'], '', 'no RDMA field read from a partial extension');
  t.equal(r80['efa_emu.srd.ext_unknown'], '');
  t.notMatch(r100['_ws.expert.message'], /hdr_len/, cases[3].name);
  t.equal(r100['efa_emu.rdma.addr'], hex(WRITE_ADDR, 16), 'known fields decoded');
  t.equal(r100['efa_emu.srd.ext_unknown'], 'cd'.repeat(8), 'the unknown bytes shown as such');
  t.equal(r100['data.len'], '16', 'payload found after hdr_len');
  t.equal(r8['efa_emu.type'], '8');
  t.match(r8['_ws.expert.message'], /Unknown packet type/, 'unknown type flagged');
  t.equal(r8['efa_emu.rdma.rkey'], '', 'not decoded as RDMA');
});
