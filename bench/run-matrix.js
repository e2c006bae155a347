#!/usr/bin/env node
'use strict';
/*
 * Runs the whole benchmark matrix and writes a Markdown table and an SVG chart:
 *   sizes 64..8192, lat and bw, raw / raw-batched / ud / srd (and libfabric's udp;ofi_rxd for
 *   latency, when installed), with and without 1% loss on the devices.
 *
 *   node bench/run-matrix.js [--iters-lat N] [--iters-bw N] [--poll event|busy] [--out bench/RESULTS.md] [--svg bench/results.svg]
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
    svg: { type: 'string', default: path.join(__dirname, 'results.svg') },
  },
});
const { chart } = require('./svg-chart');
const cli = path.join(__dirname, '..', 'bin', 'efa-emu.js');

function run(test, fault) {
  const args = [cli, 'bench', '--test', test, '--type', 'all', '--size', values.sizes, '--poll', values.poll, '--json',
    '--iters', test === 'lat' ? values['iters-lat'] : values['iters-bw']];
  if (fault) args.push('--fault', fault);
  process.stderr.write(`efa-emu ${args.slice(1).join(' ')}\n`);
  const out = execFileSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const lines = out.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]);
}

const rows = [];
/** libfabric rxd's one-way averages by size (lossless latency run only: rxd gets no faults). */
const rxd = new Map();
let rxdNote = null;
for (const fault of [null, 'loss=1%,seed=1']) {
  for (const test of ['lat', 'bw']) {
    const doc = run(test, fault);
    for (const r of doc.results) rows.push({ ...r, fault: fault ?? '-' });
    if (test === 'lat' && fault === null && doc.rxd) {
      if (doc.rxd.skipped) rxdNote = doc.rxd.skipped;
      for (const x of doc.rxd.results ?? []) rxd.set(x.size, x.usec_per_xfer);
    }
  }
}

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
const lines = [
  `# efa-emu benchmark matrix`,
  '',
  `${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} × ${cpu}, Node ${process.version}, poll mode \`${values.poll}\`.`,
  'Latency is t_typical (median half round trip); bandwidth is the message rate. `ratio` is against raw node:dgram',
  'measured in the same run (lower is better for latency, higher for bandwidth); faults apply to the devices only.',
  '`raw-batched` is the raw harness packing each run of messages into datagrams as the devices do; `rxd` is libfabric\'s',
  `udp;ofi_rxd (fi_pingpong, one-way average, lossless latency only)${rxdNote ? `: not measured here (${rxdNote})` : ''}.`,
  '',
  `![message rate and latency by size](${path.basename(values.svg)})`,
  '',
  '| test | fault | bytes | raw | raw-batched | ud | srd | rxd | ud ratio | srd ratio | srd retransmits |',
  '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
];
const fig = (r) => (r === undefined ? '-' : r.test === 'lat' ? `${r.t_typical_usec} µs` : `${Math.round(r.msg_rate_mpps * 1e6)} msg/s`);
const keys = [...new Set(rows.map((r) => `${r.test}|${r.fault}|${r.size}`))];
for (const k of keys) {
  const [test, fault, size] = k.split('|');
  const pick = (type) => rows.find((r) => r.test === test && r.fault === fault && String(r.size) === size && r.type === type);
  const raw = pick('raw');
  const batched = pick('raw-batched');
  const ud = pick('ud');
  const srd = pick('srd');
  const x = test === 'lat' && fault === '-' ? rxd.get(Number(size)) : undefined;
  lines.push(`| ${test} | ${fault} | ${size} | ${fig(raw)} | ${fig(batched)} | ${fig(ud)} | ${fig(srd)} | ${x === undefined ? '-' : `${x} µs (avg)`} | ${ud?.ratio_to_raw ?? '-'} | ${srd?.ratio_to_raw ?? '-'} | ${srd?.retransmits ?? 0} |`);
}
fs.writeFileSync(values.out, `${lines.join('\n')}\n`);

// The chart: lossless runs, message rate and latency by size, one line per transport.
const series = (test, value) => {
  const out = {};
  for (const type of ['raw', 'raw-batched', 'ud', 'srd']) {
    out[type] = rows.filter((r) => r.test === test && r.fault === '-' && r.type === type).map((r) => ({ x: r.size, y: value(r) }));
  }
  return out;
};
const latSeries = series('lat', (r) => r.t_typical_usec);
latSeries.rxd = [...rxd].map(([x, y]) => ({ x, y }));
fs.writeFileSync(
  values.svg,
  chart(
    [
      { title: 'Message rate (one-way stream)', yLabel: 'messages per second (millions)', series: series('bw', (r) => r.msg_rate_mpps) },
      { title: 'Latency (ping-pong, one-way)', yLabel: 'usec (median; rxd: average)', series: latSeries },
    ],
    `efa-emu bench, ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} x ${cpu}, Node ${process.version}, poll ${values.poll}, no faults`,
  ),
);
process.stdout.write(`${lines.join('\n')}\n`);
