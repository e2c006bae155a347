// The capture merge at scale: hundreds of thousands of records across the ranks' parts are
// merged in time order, every one of them (no stack overflow, no record dropped at the
// writer's bound for live captures), and the parts removed.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { mergeCapture } from '../src/job/capture-merge';
import { PcapWriter, readPcap } from '../src/io/pcap-writer';

t.test('350,000 records in 2 parts merge whole and in order', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-merge-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const target = path.join(dir, 'big.pcap');
  const per = 175_000;
  const payload = Buffer.alloc(64);
  for (let part = 0; part < 2; part++) {
    // Large enough in-memory bounds that writing the parts themselves drops nothing.
    const w = PcapWriter.open(`${target}.rank${part}.part`, { bufferBytes: 2 ** 30 });
    for (let i = 0; i < per; i++) {
      payload.writeUInt32BE(i, 0);
      payload[4] = part;
      // Interleaved stamps: part 0 at even, part 1 at odd microseconds.
      w.writeUdp(payload, payload.length, '127.0.0.1', 5000 + part, '127.0.0.1', 6000, 1_700_000_000_000 + (2 * i + part) / 1000);
    }
    await w.close();
    t.equal(w.dropped, 0, `part ${part} written whole`);
  }
  const n = await mergeCapture(target);
  t.equal(n, 2 * per, 'every record merged');
  const merged = readPcap(target);
  t.equal(merged.length, 2 * per, 'and in the file');
  let ordered = true;
  for (let i = 1; i < merged.length; i++) if (merged[i].tsMs < merged[i - 1].tsMs) ordered = false;
  t.ok(ordered, 'in time order');
  t.same([merged[0].payload[4], merged[1].payload[4], merged[2].payload[4]], [0, 1, 0], 'the parts interleaved by time');
  t.same(fs.readdirSync(dir), ['big.pcap'], 'the parts removed');
});

t.test('a part that is not pcap fails the merge and keeps every part, writing no target', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-merge-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const target = path.join(dir, 'cap.pcap');
  const w = PcapWriter.open(`${target}.rank0.part`);
  w.writeUdp(Buffer.alloc(8), 8, '127.0.0.1', 1, '127.0.0.1', 2);
  await w.close();
  fs.writeFileSync(`${target}.rank1.part`, 'not a capture at all, but long enough');
  await t.rejects(mergeCapture(target), { code: 'EINVAL', message: /rank1\.part: not a pcap file.*parts are kept/ });
  t.same(fs.readdirSync(dir).sort(), ['cap.pcap.rank0.part', 'cap.pcap.rank1.part'], 'both parts kept, no target, no temporary file');
});

t.test('records with equal stamps come out in rank order; a part cut short ends at its last whole record', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-merge-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const target = path.join(dir, 'cap.pcap');
  // Rank 10 before rank 2 in a directory listing: order must come from the rank number.
  for (const rank of [10, 2]) {
    const w = PcapWriter.open(`${target}.rank${rank}.part`);
    for (let i = 0; i < 3; i++) w.writeUdp(Buffer.from([rank, i]), 2, '127.0.0.1', 1000 + rank, '127.0.0.1', 9, 1_700_000_000_000 + i);
    await w.close();
  }
  // A rank killed mid-write leaves half a record at the end.
  const cut = `${target}.rank10.part`;
  fs.truncateSync(cut, fs.statSync(cut).size - 3);
  t.equal(await mergeCapture(target), 5, 'three records of rank 2, two whole ones of rank 10');
  const got = readPcap(target).map((r) => [r.payload[0], r.payload[1]]);
  t.same(got, [[2, 0], [10, 0], [2, 1], [10, 1], [2, 2]], 'time order, rank 2 first on each tie');
});
