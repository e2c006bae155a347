// The pcap writer: a standard pcap file (Ethernet + IPv4/IPv6 + UDP around each datagram)
// that readPcap and other tools read back; header fields and checksums as the RFCs want them;
// records batched off the hot path, memory bounded with drops counted, close idempotent, and
// nothing lost when the process exits without closing.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { EfaError } from '../src/common/errors';
import {
  LINKTYPE_ETHERNET,
  LINKTYPE_RAW,
  PCAP_MAGIC_NS,
  PCAP_MAGIC_US,
  PcapWriter,
  readPcap,
} from '../src/io/pcap-writer';

type HasTeardown = { teardown(fn: () => unknown): void };

/** A fresh directory under the OS temp dir, removed at teardown (safe for parallel runs). */
function tempdir(t: HasTeardown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-pcap-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Opens a writer that is closed at teardown even if the test fails first. */
function openWriter(t: HasTeardown, file: string, opts?: Parameters<typeof PcapWriter.open>[1]): PcapWriter {
  const w = PcapWriter.open(file, opts);
  t.teardown(() => w.close());
  return w;
}

function payload(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** One's-complement sum of 16-bit big-endian words, folded; 0xffff for a valid checksummed block. */
function onesSum(b: Buffer, start: number, end: number, acc = 0): number {
  for (let i = start; i < end; i += 2) acc += (b[i] << 8) | (i + 1 < end ? b[i + 1] : 0);
  while (acc > 0xffff) acc = (acc & 0xffff) + Math.floor(acc / 0x10000);
  return acc;
}

/** The raw records of a little-endian pcap file: header fields and frame bytes. */
function rawRecords(file: string): { sec: number; usec: number; incl: number; orig: number; frame: Buffer }[] {
  const b = fs.readFileSync(file);
  const out = [];
  for (let o = 24; o + 16 <= b.length; ) {
    const incl = b.readUInt32LE(o + 8);
    out.push({ sec: b.readUInt32LE(o), usec: b.readUInt32LE(o + 4), incl, orig: b.readUInt32LE(o + 12), frame: b.subarray(o + 16, o + 16 + incl) });
    o += 16 + incl;
  }
  return out;
}

const A = { host: '127.0.0.1', port: 40001 };
const B = { host: '10.1.2.3', port: 40002 };

t.test('round trip: every datagram comes back with its endpoints, bytes and time', async (t) => {
  const file = path.join(tempdir(t), 'rt.pcap');
  const w = openWriter(t, file);
  const t0 = Date.UTC(2024, 5, 1, 12, 0, 0);
  const sent: { p: Buffer; src: typeof A; dst: typeof A; ts: number }[] = [];
  for (let i = 0; i < 50; i++) {
    const p = payload(i === 0 ? 0 : (i * 97) % 9000, i);
    const [src, dst] = i % 2 === 0 ? [A, B] : [B, A];
    const ts = t0 + i * 1.25 + 0.001; // sub-millisecond parts must survive (microseconds)
    w.write(p, p.length, src, dst, ts);
    sent.push({ p, src, dst, ts });
  }
  t.equal(w.packets, 50, 'counted as captured at once');
  t.equal(w.dropped, 0);
  await w.close();

  const recs = readPcap(file);
  t.equal(recs.length, 50, 'every record read back');
  recs.forEach((r, i) => {
    t.same(r.src, sent[i].src, `#${i} source`);
    t.same(r.dst, sent[i].dst, `#${i} destination`);
    t.ok(r.payload.equals(sent[i].p), `#${i} payload bytes`);
    t.equal(r.origLen, sent[i].p.length);
    t.ok(Math.abs(r.tsMs - sent[i].ts) < 0.0015, `#${i} timestamp to the microsecond`);
  });
});

t.test('file and frame layout: pcap 2.4, Ethernet, IPv4 with a valid checksum, UDP', async (t) => {
  const file = path.join(tempdir(t), 'layout.pcap');
  const w = openWriter(t, file);
  const p = payload(101, 7); // odd length: checksums must handle the last byte
  w.write(p, p.length, A, B);
  w.write(p, 60, B, A); // len shorter than the buffer: only len bytes are the datagram
  await w.close();

  const head = fs.readFileSync(file).subarray(0, 24);
  t.equal(head.readUInt32LE(0), PCAP_MAGIC_US, 'magic (little-endian, microseconds)');
  t.equal(head.readUInt16LE(4), 2, 'version major');
  t.equal(head.readUInt16LE(6), 4, 'version minor');
  t.equal(head.readUInt32LE(16), 65535, 'default snaplen');
  t.equal(head.readUInt32LE(20), LINKTYPE_ETHERNET, 'link type');

  const recs = rawRecords(file);
  t.equal(recs.length, 2);
  for (const [i, len] of [[0, 101], [1, 60]] as const) {
    const f = recs[i].frame;
    t.equal(recs[i].incl, 14 + 20 + 8 + len, 'captured length');
    t.equal(recs[i].orig, recs[i].incl, 'nothing cut');
    t.equal(f.readUInt16BE(12), 0x0800, 'ethertype IPv4');
    t.equal(f[0] & 0x03, 0x02, 'destination MAC locally administered, unicast');
    const ip = 14;
    t.equal(f[ip], 0x45, 'IPv4, 20-byte header');
    t.equal(f.readUInt16BE(ip + 2), 20 + 8 + len, 'IPv4 total length');
    t.equal(f[ip + 8], 64, 'TTL 64');
    t.equal(f[ip + 9], 17, 'protocol UDP');
    t.equal(onesSum(f, ip, ip + 20), 0xffff, 'IPv4 header checksum verifies');
    t.not(f.readUInt16BE(ip + 10), 0, 'checksum present');
    const udp = ip + 20;
    t.equal(f.readUInt16BE(udp + 4), 8 + len, 'UDP length');
    t.equal(f.readUInt16BE(udp + 6), 0, 'UDP checksum 0 (none), allowed on IPv4');
  }
  const f0 = recs[0].frame;
  t.same([...f0.subarray(14 + 12, 14 + 20)], [127, 0, 0, 1, 10, 1, 2, 3], 'addresses from the hosts');
  t.same([f0.readUInt16BE(34), f0.readUInt16BE(36)], [40001, 40002], 'ports');
  t.not(recs[0].frame.readUInt16BE(18), recs[1].frame.readUInt16BE(18), 'IP ids differ between records');
});

t.test('the caller may reuse its buffer right after write', async (t) => {
  const file = path.join(tempdir(t), 'reuse.pcap');
  const w = openWriter(t, file);
  const buf = Buffer.from('first datagram');
  w.write(buf, buf.length, A, B);
  buf.fill(0x21);
  w.write(buf, buf.length, A, B);
  await w.close();
  const [r1, r2] = readPcap(file);
  t.equal(r1.payload.toString(), 'first datagram');
  t.equal(r2.payload.toString(), '!'.repeat(buf.length));
});

t.test('default timestamps: wall clock, microsecond resolution, never going back', async (t) => {
  const file = path.join(tempdir(t), 'ts.pcap');
  const w = openWriter(t, file);
  const before = Date.now();
  for (let i = 0; i < 200; i++) w.write(Buffer.alloc(8), 8, A, B);
  const after = Date.now();
  await w.close();
  const ts = readPcap(file).map((r) => r.tsMs);
  t.ok(ts[0] >= before - 5 && ts[ts.length - 1] <= after + 5, 'within the writing window');
  t.ok(ts.every((v, i) => i === 0 || v >= ts[i - 1]), 'non-decreasing');
  t.ok(ts.some((v) => v !== Math.round(v)), 'sub-millisecond parts present');
});

t.test('close is idempotent, flushes, and later writes are ignored', async (t) => {
  const file = path.join(tempdir(t), 'close.pcap');
  const w = PcapWriter.open(file);
  w.write(Buffer.alloc(10), 10, A, B);
  const c1 = w.close();
  const c2 = w.close();
  t.equal(c1, c2, 'the same promise');
  w.write(Buffer.alloc(10), 10, A, B);
  await c1;
  t.equal(await w.close(), undefined, 'resolves again after it is done');
  t.equal(w.packets, 1, 'the write after close was not counted');
  t.equal(w.dropped, 0, 'nor counted as a drop');
  t.equal(readPcap(file).length, 1, 'the buffered record reached the file');
  t.same(w.toJSON(), { packets: 1, dropped: 0, bytes: 16 + 42 + 10 });
  t.equal(w.error, null);
});

t.test('a snaplen cuts long frames; the record keeps the original length', async (t) => {
  const file = path.join(tempdir(t), 'snap.pcap');
  const w = openWriter(t, file, { snaplen: 100 });
  const big = payload(500, 3);
  const small = payload(20, 4);
  w.write(big, big.length, A, B);
  w.write(small, small.length, A, B);
  await w.close();
  t.equal(fs.readFileSync(file).readUInt32LE(16), 100, 'snaplen in the file header');
  const raw = rawRecords(file);
  t.same([raw[0].incl, raw[0].orig], [100, 42 + 500], 'cut to the snaplen');
  t.same([raw[1].incl, raw[1].orig], [62, 62], 'short frames whole');
  const [r1, r2] = readPcap(file);
  t.equal(r1.origLen, 500);
  t.ok(r1.payload.equals(big.subarray(0, 100 - 42)), 'captured prefix');
  t.ok(r2.payload.equals(small));
});

t.test('memory is bounded: when the disk falls behind, records are dropped and counted', async (t) => {
  const file = path.join(tempdir(t), 'bounded.pcap');
  // Two 1 KiB chunks at most; one synchronous burst cannot wait for any write to finish.
  const w = openWriter(t, file, { snaplen: 128, chunkBytes: 1024, bufferBytes: 2048 });
  const p = payload(64, 1);
  const n = 1000;
  for (let i = 0; i < n; i++) w.write(p, p.length, A, B);
  t.ok(w.dropped > 0, `dropped ${w.dropped}`);
  t.ok(w.packets <= 2048 / (16 + 42 + 64) + 1, `no more than the bound kept (${w.packets})`);
  t.equal(w.packets + w.dropped, n, 'every write is either captured or dropped');
  await w.close();
  t.equal(readPcap(file).length, w.packets, 'the file holds exactly the captured records');

  // Once the disk caught up, capturing resumes.
  const file2 = path.join(tempdir(t), 'bounded2.pcap');
  const w2 = openWriter(t, file2, { snaplen: 128, chunkBytes: 1024, bufferBytes: 2048 });
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 10; i++) w2.write(p, p.length, A, B);
    await w2.flush();
  }
  t.equal(w2.dropped, 0, 'no drops when the writes keep up');
  await w2.close();
  t.equal(readPcap(file2).length, 50);
});

t.test('thin traffic is written by the flush timer without close', async (t) => {
  const file = path.join(tempdir(t), 'timer.pcap');
  const w = openWriter(t, file, { flushIntervalMs: 10 });
  w.write(Buffer.from('x'), 1, A, B);
  const deadline = Date.now() + 5000;
  while (readPcap(file).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  t.equal(readPcap(file).length, 1, 'on disk while still open');
});

t.test('a process that exits without closing still writes its records', async (t) => {
  const file = path.join(tempdir(t), 'exit.pcap');
  const mod = require.resolve('../src/io/pcap-writer');
  const script = `
    const { PcapWriter } = require(${JSON.stringify(mod)});
    const w = PcapWriter.open(${JSON.stringify(file)}, { chunkBytes: 4096 });
    for (let i = 0; i < 300; i++) w.write(Buffer.alloc(100, i & 0xff), 100, { host: '127.0.0.1', port: 1 }, { host: '127.0.0.1', port: 2 });
    process.exit(0);`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30000 });
  t.equal(r.status, 0, r.stderr);
  const recs = readPcap(file);
  t.equal(recs.length, 300, 'all records, including those never handed to an async write');
  t.equal(recs[299].payload[0], 299 & 0xff);
});

t.test('IPv6 endpoints get an IPv6 header and a valid UDP checksum; mapped IPv4 stays IPv4', async (t) => {
  const file = path.join(tempdir(t), 'v6.pcap');
  const w = openWriter(t, file);
  const p = payload(33, 9);
  w.write(p, p.length, { host: '::1', port: 5000 }, { host: 'fe80::1:2%eth0', port: 5001 });
  w.write(p, p.length, { host: '::ffff:192.168.0.7', port: 5000 }, { host: '192.168.0.8', port: 5001 });
  w.write(p, p.length, { host: '2001:db8::1.2.3.4', port: 5000 }, { host: '127.0.0.1', port: 5001 });
  await w.close();
  const recs = readPcap(file);
  t.same(recs.map((r) => [r.src.host, r.dst.host]), [
    ['::1', 'fe80::1:2'],
    ['192.168.0.7', '192.168.0.8'],
    ['2001:db8::102:304', '::ffff:127.0.0.1'],
  ]);
  const f = rawRecords(file)[0].frame;
  t.equal(f.readUInt16BE(12), 0x86dd, 'ethertype IPv6');
  t.equal(f[14] >> 4, 6);
  t.equal(f.readUInt16BE(14 + 4), 8 + 33, 'payload length');
  t.equal(f[14 + 6], 17, 'next header UDP');
  t.equal(f[14 + 7], 64, 'hop limit');
  const udp = 14 + 40;
  // Pseudo-header (addresses, length, next header) + UDP header + payload sums to 0xffff.
  let s = onesSum(f, 14 + 8, 14 + 40);
  s = onesSum(f, udp, f.length, s + (8 + 33) + 17);
  t.equal(s, 0xffff, 'UDP checksum verifies');
  t.not(f.readUInt16BE(udp + 6), 0);
});

t.test('options are validated, a file that cannot be created is a typed error', async (t) => {
  const dir = tempdir(t);
  t.throws(() => PcapWriter.open(path.join(dir, 'a.pcap'), { snaplen: 10 }), { code: 'EINVAL', message: /snaplen/ });
  t.throws(() => PcapWriter.open(path.join(dir, 'a.pcap'), { bufferBytes: -1 }), { code: 'EINVAL', message: /bufferBytes/ });
  t.throws(() => PcapWriter.open(path.join(dir, 'a.pcap'), { flushIntervalMs: 0.5 }), { code: 'EINVAL', message: /flushIntervalMs/ });
  t.throws(() => PcapWriter.open(''), { code: 'EINVAL' });
  const err = (() => {
    try {
      PcapWriter.open(path.join(dir, 'no', 'such', 'dir.pcap'));
    } catch (e) {
      return e;
    }
    return null;
  })();
  t.ok(err instanceof EfaError, 'an EfaError');
  t.equal((err as EfaError).code, 'ENOENT');
});

t.test('readPcap: other byte orders, nanosecond files, raw IP links, junk', async (t) => {
  const dir = tempdir(t);
  // A big-endian, nanosecond, LINKTYPE_RAW file as another tool might write it.
  const ip = Buffer.alloc(20 + 8 + 4);
  ip[0] = 0x45;
  ip.writeUInt16BE(ip.length, 2);
  ip[9] = 17;
  ip.set([192, 0, 2, 1, 192, 0, 2, 2], 12);
  ip.writeUInt16BE(7, 20);
  ip.writeUInt16BE(8, 22);
  ip.writeUInt16BE(12, 24);
  ip.write('efa!', 28);
  const head = Buffer.alloc(24);
  head.writeUInt32BE(PCAP_MAGIC_NS, 0);
  head.writeUInt16BE(2, 4);
  head.writeUInt16BE(4, 6);
  head.writeUInt32BE(65535, 16);
  head.writeUInt32BE(LINKTYPE_RAW, 20);
  const rec = Buffer.alloc(16);
  rec.writeUInt32BE(1000, 0);
  rec.writeUInt32BE(500000, 4); // 0.5 ms in nanoseconds
  rec.writeUInt32BE(ip.length, 8);
  rec.writeUInt32BE(ip.length, 12);
  const file = path.join(dir, 'be.pcap');
  // A last record cut off mid-way (a capture still being written) is ignored.
  fs.writeFileSync(file, Buffer.concat([head, rec, ip, rec, ip.subarray(0, 10)]));
  const recs = readPcap(file);
  t.equal(recs.length, 1);
  t.same(recs[0].src, { host: '192.0.2.1', port: 7 });
  t.same(recs[0].dst, { host: '192.0.2.2', port: 8 });
  t.equal(recs[0].payload.toString(), 'efa!');
  t.equal(recs[0].tsMs, 1000000.5);

  const junk = path.join(dir, 'junk.pcap');
  fs.writeFileSync(junk, Buffer.from('this is not a capture file at all'));
  t.throws(() => readPcap(junk), { code: 'EINVAL', message: /not a pcap file/ });
});
