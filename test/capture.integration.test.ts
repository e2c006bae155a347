import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { readPcap } from '../src/io/pcap-writer';
import { decodeHeader, DecodeError, PacketHeader, PacketType } from '../src/wire/header';
import { ROOT, runCli } from './helpers/run-cli';
import { tsharkProblem } from './helpers/tshark';

const noTshark = tsharkProblem();

t.test('launch --capture: one pcap of every datagram, whose count matches the counters', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-capture-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'run.pcap');
  const run = await runCli(['launch', '-n', '2', '--capture', file, '--fault', 'loss=5%,dup=5%,seed=4', path.join('dist', 'test', 'fixtures', 'capture-rank.js')], {
    timeoutMs: 60_000,
  });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr})`);
  t.same(fs.readdirSync(dir), ['run.pcap'], 'the per-rank parts were merged and removed');
  const stats = run.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l.replace(/^\[\d+\] /, '')) as Record<string, number>);
  t.equal(stats.length, 2);
  const records = readPcap(file);
  const sum = (k: string): number => stats.reduce((a, s) => a + (s[k] ?? 0), 0);
  t.equal(records.length, sum('capture_pkts'), 'every captured packet is in the merged file');
  // Sends are captured after the faults: a lost one is absent, a duplicated one twice.
  t.equal(records.length, sum('tx_pkts') - sum('tx_drop_injected') + sum('tx_injected_duplicates') + sum('rx_pkts'), 'count = sent (after faults) + received');
  t.ok(sum('tx_drop_injected') > 0, 'some packets were lost on purpose');
  let backwards = 0;
  for (let i = 1; i < records.length; i++) if (records[i].tsMs < records[i - 1].tsMs) backwards++;
  t.equal(backwards, 0, 'records in time order');
  const types = new Set<number>();
  const hdr = new PacketHeader();
  let bad = 0;
  for (const r of records) {
    const copy = Buffer.from(r.payload);
    if (decodeHeader(copy, copy.length, hdr) !== DecodeError.OK) bad++;
    types.add(hdr.type);
  }
  t.equal(bad, 0, 'each record is an intact efa-emu datagram');
  t.ok(types.has(PacketType.SRD_DATA) && types.has(PacketType.SRD_ACK), 'data and acks were captured');
  t.ok(records.every((r) => r.src.host === '127.0.0.1' && r.dst.host === '127.0.0.1'), 'UDP/IPv4 on loopback');

  // Nested so that it is skipped, with its reason, where tshark cannot run: the capture
  // itself has been checked above either way.
  await t.test('tshark dissects every captured packet as efa-emu', { skip: noTshark }, async (t) => {
    const out = spawnSync('tshark', ['-r', file, '-X', `lua_script:${path.join(ROOT, 'contrib', 'wireshark', 'efa-emu.lua')}`, '-T', 'fields', '-e', 'efa_emu.type'], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    t.equal(out.status, 0, `tshark exits 0 (stderr: ${out.stderr})`);
    const lines = out.stdout.trim().split('\n');
    t.equal(lines.length, records.length, 'tshark decodes every packet');
    t.ok(lines.every((l) => l.trim() !== ''), 'every packet is dissected as efa-emu');
  });
});
