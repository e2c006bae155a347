// Congestion control, in the simulation: eight senders into one receiver whose ingress is a
// shared bottleneck (a link rate and a buffer, dropping when full). With the delay-based
// controller the link stays busy, the buffer rarely overflows and the senders share fairly;
// without it (a fixed window) the buffer overflows and the senders retransmit.
import t from 'tap';
import { CongestionControl } from '../src/srd/congestion';
import { PathCounters, PathSet } from '../src/srd/path-set';
import { SendState } from '../src/srd/send-state';
import { resolveSrdConfig, type CcMode } from '../src/srd/srd-config';
import { EfaStatus } from '../src/common/efa-status';
import { patternPayload, postRecvs, postSrdSend, srdSim, watchEnds } from './helpers/sim-network';

const SENDERS = 8;
const SIZE = 4096;
const RATE = 50_000_000; // bytes/s: 50 kB per ms, about 12 packets per ms
const OUTSTANDING = 64;
const RUN_MS = 600;
const WARMUP_MS = 100;

interface IncastResult {
  goodputShare: number;
  dropShare: number;
  jain: number;
  retrans: number;
  errors: number;
  p99: number;
}

async function incast(cc: CcMode, seed: number): Promise<IncastResult> {
  const depth = 1024;
  const s = await srdSim({
    seed,
    more: SENDERS - 1,
    srd: { cc, unresponsiveTimeoutMs: 2000 },
    faults: `delay=50us,bottleneck=${RATE}bps,bottleneck-buffer=256KiB`,
    a: { bufSize: depth * SIZE, maxRecvWr: depth },
  });
  const { sim, ends, ahs } = s;
  const rx = ends[0];
  const logs = watchEnds(sim, ends, SIZE);
  postRecvs(rx, depth, SIZE);
  let reposted = 0;
  const posted = ends.map(() => 0);
  const postedAt: number[][] = ends.map(() => []);
  const bytesInWindow = ends.map(() => 0);
  let counted = 0;
  const pump = (): void => {
    const rlog = logs[0];
    while (reposted < rlog.recvs.length) postRecvs(rx, 1, SIZE, rlog.recvs[reposted++].wrId);
    for (; counted < rlog.recvs.length; counted++) {
      const w = rlog.recvs[counted];
      if (w.t >= WARMUP_MS && w.t < RUN_MS) bytesInWindow[w.immData >>> 24] += w.byteLen;
    }
    for (let i = 1; i <= SENDERS; i++) {
      if (sim.now >= RUN_MS) break;
      while (posted[i] - logs[i].sends.length < OUTSTANDING) {
        const n = posted[i]++;
        postSrdSend(ends[i], ahs[i][0], rx, n, patternPayload(n, SIZE), { immData: ((i << 24) | (n & 0xffffff)) >>> 0, addr: 0 });
        postedAt[i].push(sim.now);
      }
    }
  };
  const prev = sim.afterEvent;
  sim.afterEvent = (node) => {
    prev?.(node);
    pump();
  };
  pump();
  sim.runUntil(() => sim.now >= RUN_MS, RUN_MS);
  sim.afterEvent = prev;
  sim.drain(RUN_MS + 5000);
  const per = bytesInWindow.slice(1);
  const total = per.reduce((x, y) => x + y, 0);
  const sq = per.reduce((x, y) => x + y * y, 0);
  const stats = rx.dev.statsSnapshot();
  let retrans = 0;
  let errors = 0;
  const lat: number[] = [];
  for (let i = 1; i <= SENDERS; i++) {
    retrans += ends[i].dev.stats.retrans_pkts;
    for (const w of logs[i].sends) {
      if (w.status !== EfaStatus.SUCCESS) errors++;
      lat.push(w.t - postedAt[i][w.wrId]);
    }
  }
  lat.sort((x, y) => x - y);
  const arrived = sim.stats.bottleneckDrops + stats.rx_pkts;
  return {
    goodputShare: total / ((RATE / 1000) * (RUN_MS - WARMUP_MS)),
    dropShare: sim.stats.bottleneckDrops / Math.max(1, arrived),
    jain: (total * total) / (SENDERS * sq),
    retrans,
    errors,
    p99: lat[Math.floor(lat.length * 0.99)],
  };
}

t.test('incast through a shared bottleneck: delay-based cc keeps the link busy, the buffer short and the senders fair', async (t) => {
  const on = await incast('delay', 5);
  const off = await incast('off', 5);
  const show = (r: IncastResult): string =>
    `goodput ${(r.goodputShare * 100).toFixed(1)}%, drops ${(r.dropShare * 100).toFixed(2)}%, Jain ${r.jain.toFixed(3)}, retrans ${r.retrans}, p99 ${r.p99.toFixed(1)} ms`;
  t.comment(`cc=delay: ${show(on)}`);
  t.comment(`cc=off:   ${show(off)}`);
  t.equal(on.errors + off.errors, 0, 'no app-visible errors either way');
  t.ok(on.goodputShare >= 0.85, `cc=delay goodput ${(on.goodputShare * 100).toFixed(1)}% of the bottleneck`);
  t.ok(on.dropShare <= 0.01, `cc=delay drops ${(on.dropShare * 100).toFixed(2)}% at the bottleneck`);
  t.ok(on.jain >= 0.9, `cc=delay Jain index ${on.jain.toFixed(3)}`);
  t.ok(off.dropShare > 5 * Math.max(on.dropShare, 0.001), `cc=off overflows the buffer (${(off.dropShare * 100).toFixed(2)}% dropped)`);
  t.ok(off.retrans > on.retrans, `and retransmits more (${off.retrans} vs ${on.retrans})`);
  t.ok(on.p99 < off.p99, `cc=delay keeps the p99 latency lower (${on.p99.toFixed(1)} vs ${off.p99.toFixed(1)} ms)`);
});

t.test('the delay controller: grows below target, shrinks once per round when the whole round is above it', async (t) => {
  const cfg = resolveSrdConfig({ cc: 'delay', ccTargetMs: 1, ccInitialWindow: 4, window: 128 });
  const counters = new PathCounters(cfg.paths);
  const cc = new CongestionControl(cfg, counters);
  const tx = new SendState(1, cfg, new PathSet(cfg, counters), cc.initialWindow);
  t.equal(tx.cwnd, 4, 'starts at ccInitialWindow');
  let now = 0;
  for (let i = 0; i < 4; i++) cc.onAck(tx, (now += 0.1), 0.2, 1);
  t.equal(tx.cwnd, 8, 'slow start: one more packet per packet acked while under target');
  tx.rto.sample(0.2);
  // One late packet in a round of short ones: no decrease.
  cc.onAck(tx, (now += 1), 5, 1);
  cc.onAck(tx, (now += 0.05), 0.2, 1);
  cc.onAck(tx, (now += 1), 0.2, 1);
  t.equal(counters.ccDecreases, 0, 'a single late round trip in a round does not shrink the window');
  const before = tx.cwnd;
  // A whole round above target: one decrease at the round's end, not one per ack.
  for (let i = 0; i < 20; i++) cc.onAck(tx, (now += 0.05), 3, 1);
  t.equal(counters.ccDecreases >= 1 && counters.ccDecreases <= 5, true, `decreases: ${counters.ccDecreases} over 20 acks spanning a few rounds`);
  t.ok(tx.cwnd < before, `window shrank (${before.toFixed(2)} -> ${tx.cwnd.toFixed(2)})`);
  t.ok(tx.cwnd >= before * 0.5 ** counters.ccDecreases - 1e-9, 'by at most half per decrease');
  let lowest = tx.cwnd;
  for (let i = 0; i < 40; i++) {
    cc.onAck(tx, (now += 5), 50, 1);
    if (tx.cwnd < lowest) lowest = tx.cwnd;
  }
  t.equal(lowest, 1, 'never below one packet');
  // A link that adds its own delay (an injected one) moves the target by it.
  cc.setLinkDelay(49.5);
  t.equal(cc.target, 50.5, 'the target is the queueing budget plus the link delay');
  const decreases = counters.ccDecreases;
  for (let i = 0; i < 200; i++) cc.onAck(tx, (now += 5), 50, 1);
  t.equal(counters.ccDecreases, decreases, 'round trips of the link itself are no queue');
  t.ok(tx.cwnd > 2, `so the window grows on that link (${tx.cwnd.toFixed(2)})`);
  const off = new CongestionControl(resolveSrdConfig({ cc: 'off' }), counters);
  const tx2 = new SendState(1, resolveSrdConfig({ cc: 'off' }), new PathSet(cfg, counters), off.initialWindow);
  t.equal(tx2.cwnd, 128, 'cc=off starts with the whole window');
  off.onAck(tx2, 1, 50, 10);
  t.equal(tx2.cwnd, 128, 'and ignores delay');
});
