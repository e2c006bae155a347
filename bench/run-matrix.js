#!/usr/bin/env node
'use strict';
/*
 * Runs the whole benchmark matrix and writes a Markdown table:
 *   sizes 64..8192, lat and bw, raw/ud/srd, with and without 1% loss on the devices.
 *
 *   node bench/run-matrix.js [--iters-lat N] [--iters-bw N] [--poll event|busy] [--out bench/RESULTS.md]
 *
 * Every row is a ratio to raw UDP measured in the same run (raw itself never gets faults).
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { values } = parseArgs({
  options: {
    'iters-lat': { type: 'string', default: '5000' },
    'iters-bw': { type: 'string', default: '20000' },
    poll: { type: 'string', default: 'event' },
    sizes: { type: 'string', default: '64,256,1024,4096,8192' },
    out: { type: 'string', default: path.join(__dirname, 'RESULTS.md') },
  },
});
const cli = path.join(__dirname, '..', 'bin', 'efa-emu.js');

function run(test, fault) {
  const args = [cli, 'bench', '--test', test, '--type', 'all', '--size', values.sizes, '--poll', values.poll, '--json',
    '--iters', test === 'lat' ? values['iters-lat'] : values['iters-bw']];
  if (fault) args.push('--fault', fault);
  process.stderr.write(`efa-emu ${args.slice(1).join(' ')}\n`);
  const out = execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const lines = out.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]).results;
}

const rows = [];
for (const fault of [null, 'loss=1%,seed=1']) {
  for (const test of ['lat', 'bw']) {
    for (const r of run(test, fault)) rows.push({ ...r, fault: fault ?? '-' });
  }
}

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const lines = [
  `# efa-emu benchmark matrix`,
  '',
  `${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} × ${cpu}, Node ${process.version}, poll mode \`${values.poll}\`.`,
  'Latency is t_typical (median half round trip); bandwidth is the message rate. `ratio` is against raw node:dgram',
  'measured in the same run (lower is better for latency, higher for bandwidth); faults apply to the devices only.',
  '',
  '| test | fault | bytes | raw | ud | srd | ud ratio | srd ratio | srd retransmits |',
  '|---|---|---:|---:|---:|---:|---:|---:|---:|',
];
const fig = (r) => (r === undefined ? '-' : r.test === 'lat' ? `${r.t_typical_usec} µs` : `${Math.round(r.msg_rate_mpps * 1e6)} msg/s`);
const keys = [...new Set(rows.map((r) => `${r.test}|${r.fault}|${r.size}`))];
for (const k of keys) {
  const [test, fault, size] = k.split('|');
  const pick = (type) => rows.find((r) => r.test === test && r.fault === fault && String(r.size) === size && r.type === type);
  const raw = pick('raw');
  const ud = pick('ud');
  const srd = pick('srd');
  lines.push(`| ${test} | ${fault} | ${size} | ${fig(raw)} | ${fig(ud)} | ${fig(srd)} | ${ud?.ratio_to_raw ?? '-'} | ${srd?.ratio_to_raw ?? '-'} | ${srd?.retransmits ?? 0} |`);
}
fs.writeFileSync(values.out, `${lines.join('\n')}\n`);
process.stdout.write(`${lines.join('\n')}\n`);
