// Bundles (several packets in one datagram, src/io/datagram-coalescer.ts) in the Wireshark
// dissector. The datagrams are the coalescer's own output, not bytes laid out by hand here,
// so a change to the bundle format that the dissector misses fails this test. Each packet in a
// bundle must decode exactly as it does alone: the same packets are also written one per record
// and the two decodings compared item by item, besides the values they were encoded with.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { BUNDLE_ENTRY_LEN, BUNDLE_HEADER_LEN, BUNDLE_TYPE, DatagramCoalescer, isBundle } from '../src/io/datagram-coalescer';
import { PcapWriter, type PcapEndpoint } from '../src/io/pcap-writer';
import { encodeHeader, OFF_CRC, PacketType, readU32, sealPacket, setPacketPath, WIRE_MAGIC, WIRE_VERSION } from '../src/wire/header';
import { setSackBit, SRD_ACK_HDR_LEN, writeSrdAck } from '../src/wire/srd-header';
import { GID_A, HOST_A, HOST_B, INCARNATION_A, QKEY, SESSION_B, samplePackets, type SamplePacket } from './fixtures/make-capture';
import { tshark, tsharkFields, tsharkProblem } from './helpers/tshark';

// dist/test/ -> repository root; the Lua file is not compiled, so it is read from the source tree.
const ROOT = path.resolve(__dirname, '..', '..');
const lua = fs.readFileSync(path.join(ROOT, 'contrib', 'wireshark', 'efa-emu.lua'), 'utf8');

// False where the tshark tests can run; otherwise each is reported skipped with this reason.
const noTshark = tsharkProblem();

type HasTeardown = { teardown(fn: () => unknown): void };

function tempdir(t: HasTeardown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-wireshark-bundle-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const hex = (v: number, width: number): string => `0x${v.toString(16).padStart(width, '0')}`;
const T0 = Date.UTC(2024, 0, 1);

/** A's ack of B's stream, as A would send it to B in the same run as its data. */
function ackFromA(): SamplePacket {
  const buf = Buffer.alloc(SRD_ACK_HDR_LEN);
  encodeHeader(buf, PacketType.SRD_ACK, 0, SRD_ACK_HDR_LEN, 2, 3, 0, QKEY, 0, GID_A);
  writeSrdAck(buf, SESSION_B, 40, 654321, INCARNATION_A, 42);
  setSackBit(buf, 0);
  setSackBit(buf, 2);
  sealPacket(buf, buf.length);
  return {
    name: 'SRD_ACK', buf, src: HOST_A, dst: HOST_B, type: PacketType.SRD_ACK, srcQpn: 2, dstQpn: 3, hdrLen: SRD_ACK_HDR_LEN, payloadLen: 0,
    session: SESSION_B, cumAck: 40, echoTime: 654321, incarnation: INCARNATION_A, sackBase: 42, sacked: [42, 44],
  };
}

/**
 * A→B in one run: a read request, then data, the last segment of an RDMA write with immediate
 * and an ack of B's stream (the sample's SRD_READ_REQ, SRD_DATA, SRD_RDMA_WRITE (last) and a
 * fresh ack). The coalescer sends the run's first packet at once, unwrapped (a lone packet),
 * and the three after it as one bundle.
 */
function traffic(): { bundled: SamplePacket[]; lone: SamplePacket } {
  const s = samplePackets();
  const pick = (name: string): SamplePacket => {
    const p = s.find((x) => x.name === name);
    if (p === undefined) throw new Error(`no sample packet ${name}`);
    return p;
  };
  return { bundled: [pick('SRD_DATA'), pick('SRD_RDMA_WRITE (last, with immediate)'), ackFromA()], lone: pick('SRD_READ_REQ') };
}

interface Sent {
  buf: Buffer;
  dst: PcapEndpoint;
}

/**
 * What the coalescer hands its socket for `traffic()`, copied (it reuses its bundle buffers),
 * and the bundle among them.
 */
function coalesce(bundled: SamplePacket[], lone: SamplePacket): { datagrams: Sent[]; bundle: Buffer; coalescer: DatagramCoalescer } {
  const datagrams: Sent[] = [];
  const coalescer = new DatagramCoalescer((buf, len, host, port, onSent) => {
    datagrams.push({ buf: Buffer.from(buf.subarray(0, len)), dst: { host, port } });
    onSent?.();
  });
  for (const p of [lone, ...bundled]) coalescer.send(p.buf, p.buf.length, p.dst.host, p.dst.port);
  // The end of the run, without waiting for the microtask that would end it.
  coalescer.flush();
  const bundles = datagrams.filter((d) => isBundle(d.buf));
  if (bundles.length !== 1) throw new Error(`the coalescer sent ${bundles.length} bundles for one run, not 1: its policy changed, and this test with it`);
  return { datagrams, bundle: bundles[0].buf, coalescer };
}

/** The ways a bundle can be malformed, each made from the coalescer's well-formed one. */
function malformed(bundle: Buffer): { name: string; buf: Buffer; expert: RegExp }[] {
  const withCount = (n: number): Buffer => {
    const b = Buffer.from(bundle);
    b.writeUInt16BE(n, 4);
    return b;
  };
  const empty = Buffer.from(bundle.subarray(0, BUNDLE_HEADER_LEN));
  empty.writeUInt16BE(0, 4);
  return [
    { name: 'last length past the end', buf: bundle.subarray(0, bundle.length - 10), expert: /^Packet 3 length 76 runs past the end of the datagram \(66 bytes left\)/ },
    { name: 'count larger than the packets', buf: withCount(4), expert: /^Bundle count 4 but the datagram ends after 3 packets/ },
    { name: 'bytes after the last packet', buf: Buffer.concat([bundle, Buffer.from([1, 2, 3, 4, 5])]), expert: /^5 bytes after packet 3 of 3/ },
    { name: 'count smaller than the packets', buf: withCount(2), expert: /^78 bytes after packet 2 of 2/ },
    { name: 'no packets', buf: empty, expert: /^Bundle of no packets/ },
  ];
}

// ------------------------------------------------------------------ PDML, as a tree

interface PdmlNode {
  tag: string;
  attrs: Record<string, string>;
  children: PdmlNode[];
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (m, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return ENTITIES[e] ?? m;
  });
}

/** tshark's PDML as one node per packet; only the nesting and attributes matter here. */
function parsePdml(xml: string): PdmlNode[] {
  const root: PdmlNode = { tag: 'root', attrs: {}, children: [] };
  const stack = [root];
  for (const m of xml.matchAll(/<(\/?)(packet|proto|field)\b((?:[^>"]|"[^"]*")*?)(\/?)>/g)) {
    if (m[1] === '/') {
      stack.pop();
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of m[3].matchAll(/([\w.-]+)="([^"]*)"/g)) attrs[a[1]] = unescapeXml(a[2]);
    const node: PdmlNode = { tag: m[2], attrs, children: [] };
    stack[stack.length - 1].children.push(node);
    if (m[4] !== '/') stack.push(node);
  }
  return root.children.filter((n) => n.tag === 'packet');
}

/**
 * Every item under `nodes`, in tree order, as "name|showname|show|size|value": what a reader
 * sees of it, less its offset in the frame (which differs in a bundle by construction). The
 * Lua API's placeholder items say nothing about the packet and are left out.
 */
function items(nodes: PdmlNode[]): string[] {
  const out: string[] = [];
  const walk = (n: PdmlNode): void => {
    if (n.attrs.name === 'fake-field-wrapper' || n.attrs.name === '_ws.lua.fake') return n.children.forEach(walk);
    const a = n.attrs;
    out.push([a.name, a.showname ?? '', a.show ?? '', a.size ?? '', a.value ?? ''].join('|'));
    n.children.forEach(walk);
  };
  nodes.forEach(walk);
  return out;
}

/** Name -> every `show` under `nodes`, in order. */
function values(nodes: PdmlNode[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const walk = (n: PdmlNode): void => {
    const name = n.attrs.name;
    if (name !== undefined && n.attrs.show !== undefined) out.set(name, [...(out.get(name) ?? []), n.attrs.show]);
    n.children.forEach(walk);
  };
  nodes.forEach(walk);
  return out;
}

/** The protocol items of a packet above UDP: an efa-emu datagram and what it hands on. */
const aboveUdp = (packet: PdmlNode): PdmlNode[] => packet.children.slice(packet.children.findIndex((n) => n.attrs.name === 'udp') + 1);

function find(nodes: PdmlNode[], name: string): PdmlNode[] {
  const out: PdmlNode[] = [];
  const walk = (n: PdmlNode): void => {
    if (n.attrs.name === name) out.push(n);
    n.children.forEach(walk);
  };
  nodes.forEach(walk);
  return out;
}

// ------------------------------------------------------------------ tests

t.test('the dissector knows the bundle layout the coalescer writes', async (t) => {
  const num = (name: string): number => {
    const m = new RegExp(`^local ${name} = (0x[0-9a-fA-F]+|\\d+)$`, 'm').exec(lua);
    if (m === null) throw new Error(`${name} not found in the Lua file`);
    return Number(m[1]);
  };
  t.equal(num('BUNDLE_TYPE'), BUNDLE_TYPE);
  t.equal(num('BUNDLE_HEADER_LEN'), BUNDLE_HEADER_LEN);
  t.equal(num('BUNDLE_ENTRY_LEN'), BUNDLE_ENTRY_LEN);
  t.ok(Object.values(PacketType).every((v) => (v as number) !== BUNDLE_TYPE), 'no packet type is the bundle type');

  // The premise of the tshark tests: the coalescer bundles the three and leaves the lone one be.
  const { bundled, lone } = traffic();
  const { datagrams, bundle, coalescer } = coalesce(bundled, lone);
  t.equal(datagrams.length, 2, 'one lone packet, one bundle');
  t.same(datagrams[0].buf, lone.buf, 'the lone packet goes first, as it is');
  t.equal(datagrams[1].buf, bundle, 'the rest of the run in a bundle');
  t.equal(coalescer.stats.tx_bundles, 1);
  const delivered: Buffer[] = [];
  t.ok(coalescer.receive(bundle, HOST_A.host, HOST_A.port, (p) => delivered.push(Buffer.from(p))), 'the receiver takes the bundle');
  t.same(delivered, bundled.map((p) => p.buf), 'and finds the three packets in it');
  // The malformed cases are malformed to the receiver too, so the dissector flags what it drops.
  for (const m of malformed(bundle)) {
    t.notOk(coalescer.receive(m.buf, HOST_A.host, HOST_A.port, () => t.fail(`${m.name}: nothing delivered`)), `${m.name}: dropped by the receiver`);
  }
});

t.test('tshark shows a coalesced datagram as a bundle of packets, each as it decodes alone', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const { bundled, lone } = traffic();
  const { datagrams, bundle } = coalesce(bundled, lone);

  const file = path.join(dir, 'wire.pcap');
  const w = PcapWriter.open(file);
  datagrams.forEach((d, i) => w.writeUdp(d.buf, d.buf.length, HOST_A.host, HOST_A.port, d.dst.host, d.dst.port, T0 + i));
  await w.close();
  // The same packets one per record, as efa-emu's --capture writes them.
  const aloneFile = path.join(dir, 'alone.pcap');
  const wa = PcapWriter.open(aloneFile);
  bundled.forEach((p, i) => wa.write(p.buf, p.buf.length, p.src, p.dst, T0 + i));
  await wa.close();

  const FIELDS = [
    'frame.protocols',
    '_ws.col.Protocol',
    '_ws.col.Info',
    'efa_emu.bundle.magic',
    'efa_emu.bundle.version',
    'efa_emu.bundle.type',
    'efa_emu.bundle.count',
    'efa_emu.bundle.len',
    'efa_emu.type',
    'efa_emu.srd.psn',
    '_ws.expert.message',
    '_ws.malformed',
  ] as const;
  const rows = await tsharkFields(file, FIELDS);
  t.equal(rows.length, 2);
  const [l, b] = rows;
  t.equal(b['efa_emu.bundle.magic'], hex(WIRE_MAGIC, 4));
  t.equal(b['efa_emu.bundle.version'], String(WIRE_VERSION));
  t.equal(b['efa_emu.bundle.type'], hex(BUNDLE_TYPE, 2));
  t.equal(b['efa_emu.bundle.count'], '3');
  t.equal(b['efa_emu.bundle.len'], bundled.map((p) => p.buf.length).join(','), 'one length per packet');
  t.equal(b['efa_emu.type'], bundled.map((p) => p.type).join(','), 'efa_emu.type once per packet, not for the bundle header');
  t.equal(b['efa_emu.srd.psn'], '12,14');
  t.equal(b['frame.protocols'], 'eth:ethertype:ip:udp:efa_emu:data:data', 'found by the heuristic; each payload to the data dissector');
  t.equal(b['_ws.col.Protocol'], 'EFA-EMU');
  t.notMatch(b['_ws.expert.message'], /bundle|malformed|differs|hdr_len/i, 'nothing flagged malformed');
  t.equal(b['_ws.malformed'], '');
  t.equal(
    b['_ws.col.Info'],
    'Bundle of 3: SRD_DATA psn=12 2->3 len=64; ' +
      'SRD_RDMA_WRITE psn=14 addr=0x100002040 len=96 rkey=0x00c0de01 2->3 payload=32 imm=0xfeedf00d [write-with-imm final]; ' +
      'SRD_ACK cum_ack=40 sacked=2 2->3',
  );

  t.equal(l['_ws.col.Info'], 'SRD_READ_REQ psn=15 op_id=7 addr=0x3000 len=128 rkey=0x00c0de02 2->3', 'the lone packet decodes as ever');
  t.equal(l['efa_emu.bundle.count'], '', 'and is no bundle');
  t.equal(l['frame.protocols'], 'eth:ethertype:ip:udp:efa_emu');

  // Standalone, the same packets: the Info of each is what the bundle's Info lists.
  const alone = await tsharkFields(aloneFile, ['_ws.col.Info'] as const);
  t.equal(b['_ws.col.Info'], `Bundle of 3: ${alone.map((r) => r['_ws.col.Info']).join('; ')}`, "the bundle's Info is its packets' Info");

  const [wirePdml, alonePdml] = await Promise.all([tshark(file, ['-T', 'pdml']), tshark(aloneFile, ['-T', 'pdml'])]);
  const bundlePacket = parsePdml(wirePdml)[1];
  const top = aboveUdp(bundlePacket).filter((n) => n.attrs.name === 'efa_emu');
  t.equal(top.length, 1, 'one top-level efa_emu item');
  t.equal(top[0].attrs.showname, 'efa-emu bundle, 3 packets');
  t.equal(Number(top[0].attrs.size), bundle.length, 'spanning the whole datagram');
  const entries = top[0].children.filter((n) => n.attrs.name === 'efa_emu.bundle.packet');
  t.equal(entries.length, 3, 'a subtree per packet');
  const alonePackets = parsePdml(alonePdml);

  bundled.forEach((p, i) => {
    t.test(`packet ${i + 1}: ${p.name}`, async (t) => {
      const e = entries[i];
      const inner = e.children.filter((n) => n.attrs.name !== 'efa_emu.bundle.len');
      t.equal(e.attrs.showname, `Packet ${i + 1} of 3, ${p.buf.length} bytes: ${alone[i]['_ws.col.Info']}`, 'entry named with its Info');
      t.same(find([e], 'efa_emu.bundle.len').map((n) => n.attrs.show), [String(p.buf.length)]);
      t.same(items(inner), items(aboveUdp(alonePackets[i])), 'every item as when the packet comes alone');

      // And as encoded.
      const v = values(inner);
      const one = (name: string): string | undefined => {
        const all = v.get(name);
        t.ok(all === undefined || all.length === 1, `${name} at most once`);
        return all?.[0];
      };
      t.equal(one('efa_emu.type'), String(p.type));
      t.equal(one('efa_emu.hdr_len'), String(p.hdrLen));
      t.equal(one('efa_emu.src_qpn'), String(p.srcQpn));
      t.equal(one('efa_emu.dst_qpn'), String(p.dstQpn));
      t.equal(one('efa_emu.payload_len'), String(p.payloadLen));
      t.equal(one('efa_emu.qkey'), hex(QKEY, 8));
      t.equal(one('efa_emu.imm'), hex(p.imm ?? 0, 8));
      t.equal(one('efa_emu.flags.has_imm'), p.imm !== undefined ? '1' : '0');
      t.equal(one('efa_emu.crc'), hex(readU32(p.buf, OFF_CRC), 8));
      t.equal(one('efa_emu.crc.status'), '1', 'CRC checked over this packet alone');
      t.equal(one('efa_emu.srd.session'), p.session === undefined ? undefined : hex(p.session, 8));
      const field = (name: string, expected: number | undefined): void => {
        t.equal(one(`efa_emu.srd.${name}`), expected === undefined ? undefined : String(expected), `srd.${name}`);
      };
      field('psn', p.psn);
      field('window_start', p.windowStart);
      field('tx_time', p.txTime);
      field('dest_incarnation', p.destIncarnation);
      field('cum_ack', p.cumAck);
      field('echo_time', p.echoTime);
      field('incarnation', p.incarnation);
      field('sack_base', p.sackBase);
      t.same(v.get('efa_emu.srd.sacked_psn'), p.sacked?.map(String), 'SACKed PSNs');
      t.equal(one('efa_emu.rdma.rkey'), p.rkey === undefined ? undefined : hex(p.rkey, 8));
      t.equal(one('efa_emu.rdma.addr'), p.addr === undefined ? undefined : hex(p.addr, 16));
      t.equal(one('efa_emu.rdma.length'), p.rdmaLength === undefined ? undefined : String(p.rdmaLength));
      t.equal(one('efa_emu.rdma.op_id'), p.opId === undefined ? undefined : String(p.opId));
      t.equal(one('data.len'), p.payloadLen > 0 ? String(p.payloadLen) : undefined, 'payload under its own packet');
    });
  });
});

t.test('each packet in a bundle shows its own path', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const { bundled, lone } = traffic();
  // A requester spraying one run over its paths: data on 2, the write's last segment on 7,
  // the ack on 0 (the path of the packet it answers); the lone read request on 1.
  const paths = [2, 7, 0];
  bundled.forEach((p, i) => {
    setPacketPath(p.buf, paths[i]);
    sealPacket(p.buf, p.buf.length);
  });
  setPacketPath(lone.buf, 1);
  sealPacket(lone.buf, lone.buf.length);
  const { datagrams } = coalesce(bundled, lone);
  const file = path.join(dir, 'paths.pcap');
  const w = PcapWriter.open(file);
  datagrams.forEach((d, i) => w.writeUdp(d.buf, d.buf.length, HOST_A.host, HOST_A.port, d.dst.host, d.dst.port, T0 + i));
  await w.close();

  const FIELDS = ['_ws.col.Info', 'efa_emu.bundle.count', 'efa_emu.path', 'efa_emu.flags', 'efa_emu.crc.status'] as const;
  const [l, b] = await tsharkFields(file, FIELDS);
  t.equal(l['efa_emu.path'], '1', 'the lone packet');
  t.equal(l['_ws.col.Info'], 'SRD_READ_REQ psn=15 op_id=7 addr=0x3000 len=128 rkey=0x00c0de02 2->3 path=1');
  t.equal(b['efa_emu.bundle.count'], '3');
  t.equal(b['efa_emu.path'], paths.join(','), 'one path per bundled packet, in order');
  t.equal(b['efa_emu.flags'], '0x08,0x1d,0x00', 'HAS_IMM beside the path bits');
  t.equal(b['efa_emu.crc.status'], '1,1,1', 'each CRC covers its path');
  t.equal(
    b['_ws.col.Info'],
    'Bundle of 3: SRD_DATA psn=12 2->3 path=2 len=64; ' +
      'SRD_RDMA_WRITE psn=14 addr=0x100002040 len=96 rkey=0x00c0de01 2->3 path=7 payload=32 imm=0xfeedf00d [write-with-imm final]; ' +
      'SRD_ACK cum_ack=40 sacked=2 2->3',
  );
  // A filter on a path finds the bundle that holds a packet on it.
  const onPath7 = await tsharkFields(file, ['efa_emu.bundle.count'] as const, ['-Y', 'efa_emu.path == 7']);
  t.same(onPath7.map((r) => r['efa_emu.bundle.count']), ['3']);
});

t.test('tshark flags a malformed bundle, without a Lua error', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const { bundled, lone } = traffic();
  const { bundle } = coalesce(bundled, lone);
  const cases = malformed(bundle);
  const file = path.join(dir, 'malformed.pcap');
  const w = PcapWriter.open(file);
  cases.forEach((c, i) => w.write(c.buf, c.buf.length, HOST_A, HOST_B, T0 + i));
  await w.close();

  const rows = await tsharkFields(file, ['frame.protocols', '_ws.col.Info', 'efa_emu.bundle.count', 'efa_emu.type', '_ws.expert.message', '_ws.expert.severity', '_ws.malformed'] as const);
  t.equal(rows.length, cases.length);
  const [pastEnd, countLarge, trailing, countSmall, none] = rows;
  cases.forEach((c, i) => {
    const r = rows[i];
    t.match(r['frame.protocols'], /^eth:ethertype:ip:udp:efa_emu(:|$)/, `${c.name}: found by the heuristic`);
    t.ok(r['_ws.expert.message'].split(',').some((m) => c.expert.test(m)), `${c.name}: expert info says what is wrong (${r['_ws.expert.message']})`);
    t.match(r['_ws.col.Info'], /^Bundle of \d+(: .+)? \[malformed bundle\]$/, `${c.name}: Info says malformed`);
    // Wireshark marks a frame _ws.malformed for any expert of the Malformed group: the flag a
    // display filter finds. An exception would say so in its own expert message.
    t.equal(r['_ws.malformed'], '_ws.malformed', `${c.name}: marked malformed`);
    t.notMatch(r['_ws.expert.message'], /Lua|Exception|Dissector bug/i, `${c.name}: no Lua error, no exception`);
  });
  // 0x800000 is Wireshark's "error" severity: a bundle the receiver drops whole.
  t.ok(rows.every((r) => r['_ws.expert.severity'].split(',').includes(String(0x800000))), 'flagged as errors');

  // The packets before the fault are still shown, decoded as usual.
  const data = 'SRD_DATA psn=12 2->3 len=64';
  const write = 'SRD_RDMA_WRITE psn=14 addr=0x100002040 len=96 rkey=0x00c0de01 2->3 payload=32 imm=0xfeedf00d [write-with-imm final]';
  t.equal(pastEnd['_ws.col.Info'], `Bundle of 3: ${data}; ${write} [malformed bundle]`);
  t.equal(pastEnd['efa_emu.type'], '2,5', 'the two whole packets decoded');
  t.equal(countLarge['_ws.col.Info'], `Bundle of 4: ${data}; ${write}; SRD_ACK cum_ack=40 sacked=2 2->3 [malformed bundle]`);
  t.equal(countLarge['efa_emu.bundle.count'], '4');
  t.equal(trailing['efa_emu.type'], '2,5,3');
  t.equal(countSmall['_ws.col.Info'], `Bundle of 2: ${data}; ${write} [malformed bundle]`);
  t.equal(none['_ws.col.Info'], 'Bundle of 0 [malformed bundle]');
  t.equal(none['efa_emu.bundle.count'], '0', 'a bundle header alone (8 bytes) still found');

  // The tree says so too; tshark() rejects on any Lua error, in the tree or on stderr.
  const tops = parsePdml(await tshark(file, ['-T', 'pdml'])).map((p) => aboveUdp(p).find((n) => n.attrs.name === 'efa_emu'));
  t.same(
    tops.map((n) => n?.attrs.showname),
    ['efa-emu bundle, 3 packets', 'efa-emu bundle, 4 packets', 'efa-emu bundle, 3 packets', 'efa-emu bundle, 2 packets', 'efa-emu bundle, 0 packets'].map(
      (s) => `${s} [malformed: dropped by the receiver]`,
    ),
  );
  const trailingBytes = find(tops[2] ? [tops[2]] : [], 'efa_emu.bundle.trailing').map((n) => n.attrs.value);
  t.same(trailingBytes, ['0102030405'], 'the stray bytes shown as such');
  await tshark(file, ['-V']);
});

t.test('a bundle cut by the snaplen shows the packets it holds, unflagged', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const { bundled, lone } = traffic();
  const { bundle } = coalesce(bundled, lone);
  const file = path.join(dir, 'snap.pcap');
  // Ethernet, IPv4 and UDP (42), the bundle header, packet 1 whole and 60 bytes of packet 2:
  // its SRD part, not its RDMA extension; packet 3's length not at all.
  const [first, second] = bundled;
  const w = PcapWriter.open(file, { snaplen: 42 + BUNDLE_HEADER_LEN + BUNDLE_ENTRY_LEN + first.buf.length + BUNDLE_ENTRY_LEN + 60 });
  w.write(bundle, bundle.length, HOST_A, HOST_B, T0);
  await w.close();
  const [r] = await tsharkFields(file, ['_ws.col.Info', 'efa_emu.bundle.len', 'efa_emu.crc.status', 'efa_emu.srd.psn', 'efa_emu.rdma.rkey', '_ws.expert.message', '_ws.malformed'] as const);
  t.equal(r['efa_emu.bundle.len'], `${first.buf.length},${second.buf.length}`, 'the lengths captured');
  t.equal(r['efa_emu.crc.status'], '1,2', 'CRC of the cut packet unverified, not bad');
  t.equal(r['efa_emu.srd.psn'], '12,14');
  t.equal(r['efa_emu.rdma.rkey'], '', 'fields past the snaplen left out');
  t.equal(r['_ws.col.Info'], 'Bundle of 3: SRD_DATA psn=12 2->3 len=64; SRD_RDMA_WRITE psn=14 2->3 payload=32 imm=0xfeedf00d [write-with-imm final] [truncated]');
  t.notMatch(r['_ws.expert.message'], /bundle|differs from the datagram/i, 'a short capture is not a malformed bundle');
  t.equal(r['_ws.malformed'], '');
});

t.test('bytes in a bundle that are no efa-emu packet are flagged, the bundle is not', { skip: noTshark }, async (t) => {
  const dir = tempdir(t);
  const { bundled, lone } = traffic();
  const data = bundled[0];
  // The coalescer bundles whatever it is given; the receiver splits it and hands each on, so
  // only the device's decoder drops these: the bundle itself is well formed.
  const sent: Buffer[] = [];
  const c = new DatagramCoalescer((buf, len, _host, _port, onSent) => {
    sent.push(Buffer.from(buf.subarray(0, len)));
    onSent?.();
  });
  for (const b of [lone.buf, data.buf, Buffer.from([0xef, 0xa1, 0x02]), Buffer.alloc(0), Buffer.from('not efa-emu, just text')]) c.send(b, b.length, HOST_B.host, HOST_B.port);
  c.flush();
  const bundle = sent.find((b) => isBundle(b));
  if (bundle === undefined) throw new Error('no bundle sent');
  t.ok(c.receive(bundle, HOST_A.host, HOST_A.port, () => undefined), 'the receiver takes the bundle');

  const file = path.join(dir, 'odd.pcap');
  const w = PcapWriter.open(file);
  w.write(bundle, bundle.length, HOST_A, HOST_B, T0);
  await w.close();
  const [r] = await tsharkFields(file, ['_ws.col.Info', 'efa_emu.bundle.count', 'efa_emu.bundle.len', 'efa_emu.type', 'efa_emu.bundle.trailing', '_ws.expert.message'] as const);
  t.equal(r['efa_emu.bundle.count'], '4');
  t.equal(r['efa_emu.bundle.len'], `${data.buf.length},3,0,22`);
  t.equal(r['efa_emu.type'], String(data.type), 'only the real packet decoded as one');
  t.equal(r['_ws.col.Info'], 'Bundle of 4: SRD_DATA psn=12 2->3 len=64; [not efa-emu]; [empty]; [not efa-emu]', 'no [malformed bundle]');
  const experts = r['_ws.expert.message'].split(',');
  t.equal(experts.filter((m) => /not an efa-emu packet/.test(m)).length, 2, 'each non-packet flagged');
  t.equal(experts.filter((m) => /^Packet 3 is empty/.test(m)).length, 1, 'the empty one flagged');
  t.notOk(experts.some((m) => /whole bundle/.test(m)), 'the bundle not called malformed');
  t.equal(r['efa_emu.bundle.trailing'], `efa102,${Buffer.from('not efa-emu, just text').toString('hex')}`, 'their bytes shown');
});
