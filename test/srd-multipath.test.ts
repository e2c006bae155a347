// SRD over several paths, in the simulation: packets are sprayed over every path, a path
// that black-holes is routed around within a few round trips with nothing lost to the
// application, it is probed and taken back once it heals, and one path alone under the same
// fault stalls for the fault's whole length.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { PathCounters, PathSet, PathState } from '../src/srd/path-set';
import { resolveSrdConfig, type SrdConfig } from '../src/srd/srd-config';
import { patternPayload, postRecvs, postSrdSend, srdSim, watchEnds } from './helpers/sim-network';

const SLOT = 1024;
const DEPTH = 512;
const SRD: Partial<SrdConfig> = { unresponsiveTimeoutMs: 2000 };

interface StreamResult {
  /** Post-to-completion latency of every message (ms). */
  latencies: number[];
  /** Completion time of every message. */
  doneAt: number[];
  errors: number;
  deliveries: number;
  distinct: number;
  stats: { a: Record<string, number>; b: Record<string, number> };
  pathState: (p: number) => number;
}

/**
 * Streams `n` messages a -> b at `perMs` messages per ms (virtual time), b reposting each
 * receive, under `faults`; returns when every send completed.
 */
async function stream(paths: number, faults: string, n: number, perMs: number, srd: Partial<SrdConfig> = {}): Promise<StreamResult> {
  const s = await srdSim({ srd: { ...SRD, paths, ...srd }, faults, a: { maxSendWr: 1024 }, b: { bufSize: DEPTH * SLOT, maxRecvWr: DEPTH } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b], SLOT);
  postRecvs(b, DEPTH, SLOT);
  const postedAt: number[] = [];
  let reposted = 0;
  const start = sim.now;
  const tick = (): void => {
    while (reposted < logB.recvs.length) postRecvs(b, 1, SLOT, logB.recvs[reposted++].wrId % DEPTH);
    const due = Math.min(n, Math.floor((sim.now - start) * perMs) + 1);
    while (postedAt.length < due && postedAt.length - logA.sends.length < 1000) {
      const i = postedAt.length;
      postSrdSend(a, ahs[0][1], b, i, patternPayload(i, 64), { immData: i, addr: 64 * (i % 1024) });
      postedAt.push(sim.now);
    }
    if (postedAt.length < n) sim.after(0.05, tick);
  };
  const prev = sim.afterEvent;
  sim.afterEvent = (node) => {
    prev?.(node);
    while (reposted < logB.recvs.length) postRecvs(b, 1, SLOT, logB.recvs[reposted++].wrId % DEPTH);
  };
  tick();
  sim.runUntil(() => logA.sends.length === n, start + n / perMs + 10_000);
  const latencies = logA.sends.map((w) => w.t - postedAt[w.wrId]);
  const tx = [...(a.dev.srd as unknown as { channels: Array<{ tx: { paths: { stateOf(p: number): number } } }> }).channels][0].tx;
  return {
    latencies,
    doneAt: logA.sends.map((w) => w.t - start),
    errors: logA.sends.filter((w) => w.status !== EfaStatus.SUCCESS).length,
    deliveries: logB.recvs.length,
    distinct: new Set(logB.recvs.map((w) => w.immData)).size,
    stats: { a: a.dev.statsSnapshot(), b: b.dev.statsSnapshot() },
    pathState: (p) => tx.paths.stateOf(p),
  };
}

function percentile(xs: number[], q: number): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

t.test('packets are sprayed over every path', async (t) => {
  const r = await stream(4, 'delay=100us', 4000, 20);
  t.equal(r.errors, 0, 'no errors');
  t.equal(r.distinct, 4000, 'every message delivered');
  t.equal(r.deliveries, 4000, 'once');
  const tx = [0, 1, 2, 3].map((p) => r.stats.a[`path${p}_tx_pkts`]);
  const total = tx.reduce((x, y) => x + y, 0);
  for (let p = 0; p < 4; p++) t.ok(tx[p] > total * 0.2 && tx[p] < total * 0.3, `path ${p} carried ${tx[p]} of ${total} packets`);
  const rx = [0, 1, 2, 3].map((p) => r.stats.b[`path${p}_rx_pkts`]);
  t.same(rx, tx, 'the receiver saw each path carry what the sender put on it');
  t.equal(r.stats.a.path4_tx_pkts, undefined, 'no counters for paths that do not exist');
  t.ok(r.stats.a.path0_rtt_us > 0, `path 0 RTT measured (${r.stats.a.path0_rtt_us} us)`);
});

t.test('a black-holed path is routed around: no errors, latency stays low; one path alone stalls', async (t) => {
  // Path 2 (of 4) to b drops everything from 200 ms for 300 ms; with one path, path 0 does.
  const multi = await stream(4, 'delay=100us,partition=b#2@200ms+300ms', 12_000, 20);
  const single = await stream(1, 'delay=100us,partition=b#0@200ms+300ms', 12_000, 20);
  t.equal(multi.errors, 0, '4 paths: no app-visible errors');
  t.equal(multi.distinct, 12_000, '4 paths: every message delivered');
  t.equal(multi.deliveries, 12_000, '4 paths: exactly once');
  t.ok(multi.stats.a.path2_down_events >= 1, `path 2 was taken out of use (${multi.stats.a.path2_down_events} times)`);
  t.ok(multi.stats.a.path2_lost_pkts <= 40, `few packets were lost on it before (${multi.stats.a.path2_lost_pkts})`);
  t.ok(multi.stats.a.path_probes >= 1, `it was probed (${multi.stats.a.path_probes} probes)`);
  t.equal(multi.pathState(2), PathState.UP, 'and is in use again once the fault is over');
  // Messages posted during the fault complete within a few round trips.
  const during = multi.latencies.filter((_, i) => i >= 200 * 20 && i < 500 * 20);
  const worst = Math.max(...during);
  t.ok(worst < 20, `worst latency during the fault with 4 paths: ${worst.toFixed(2)} ms`);
  t.equal(single.errors, 0, '1 path: no errors either (the fault is shorter than the unresponsive timeout)');
  t.equal(single.distinct, 12_000, '1 path: every message delivered in the end');
  const p999m = percentile(multi.latencies, 0.999);
  const p999s = percentile(single.latencies, 0.999);
  t.ok(p999s >= 200, `1 path: p99.9 ${p999s.toFixed(1)} ms (messages wait out the fault)`);
  t.ok(p999s >= 5 * p999m, `p99.9 with 4 paths (${p999m.toFixed(2)} ms) is at least 5x better than with 1 (${p999s.toFixed(1)} ms)`);
});

t.test('a lossy path is avoided; the others carry the flow', async (t) => {
  const r = await stream(4, 'delay=100us,path=1,loss=50%', 6000, 20);
  t.equal(r.errors, 0, 'no errors');
  t.equal(r.distinct, 6000, 'every message delivered');
  t.ok(r.stats.a.path1_down_events >= 1, `path 1 went out of use (${r.stats.a.path1_down_events} times)`);
  const tx = [0, 1, 2, 3].map((p) => r.stats.a[`path${p}_tx_pkts`]);
  t.ok(tx[1] < tx[0] / 3, `path 1 carried ${tx[1]} packets, path 0 ${tx[0]}`);
  t.ok(r.stats.a.path1_retrans_pkts === 0 || r.stats.a.path1_lost_pkts > 0, 'losses are counted on the path they happened on');
});

t.test('with every path but one black-holed, the last one carries everything', async (t) => {
  const r = await stream(4, 'delay=100us,partition=b#0@0ms+inf,partition=b#1@0ms+inf,partition=b#3@0ms+inf', 3000, 10);
  t.equal(r.errors, 0, 'no errors');
  t.equal(r.distinct, 3000, 'every message delivered');
  t.equal(r.pathState(2), PathState.UP, 'path 2 stays in use');
  for (const p of [0, 1, 3]) t.not(r.pathState(p), PathState.UP, `path ${p} is out of use`);
});

t.test('a slow path carries less: turns are weighted by each path\'s round trip', async (t) => {
  // Path 1 adds 5 ms each way (every device runs the spec, so its acks too); the others 0.1 ms.
  const r = await stream(4, 'delay=100us', 6000, 20);
  const slow = await stream(4, 'path=1,delay=5ms', 6000, 20);
  t.equal(slow.errors, 0, 'no errors');
  t.equal(slow.distinct, 6000, 'every message delivered');
  const tx = [0, 1, 2, 3].map((p) => slow.stats.a[`path${p}_tx_pkts`]);
  const total = tx.reduce((x, y) => x + y, 0);
  t.ok(tx[1] < total * 0.1, `the slow path carried ${tx[1]} of ${total} packets`);
  t.ok(tx[1] > 0, 'but is still used (and measured)');
  t.ok(slow.stats.a.path1_rtt_us > 5 * slow.stats.a.path0_rtt_us, `its RTT is known to be longer (${slow.stats.a.path1_rtt_us} vs ${slow.stats.a.path0_rtt_us} us)`);
  const p99 = percentile(slow.latencies, 0.99);
  t.ok(p99 < 10, `p99 latency ${p99.toFixed(2)} ms: messages rarely wait for the slow path`);
  t.ok(percentile(r.latencies, 0.5) < 1, 'the fast-path baseline for comparison');
});

t.test('a copy lost on the only path in use is resent there, not on a path out of use', async (t) => {
  const cfg = resolveSrdConfig({ paths: 2 });
  const paths = new PathSet(cfg, new PathCounters(cfg.paths));
  for (let i = 0; i < cfg.pathDownLosses; i++) paths.lost(i, 0);
  t.equal(paths.stateOf(0), PathState.DOWN, 'path 0 lost pathDownLosses in a row: out of use');
  // One loss on path 1, which still delivers as far as the sender knows: its copy goes there
  // again (seed 929937 sent every other copy into the dead path 0).
  paths.lost(3, 1);
  t.equal(paths.pick(3, 1), 1);
  paths.lost(4, 1);
  t.equal(paths.pick(4, 1), 1);
  // A third loss in a row on the last path: path 0 is probed at once, by this copy, but is
  // not back in use until something on it is delivered.
  paths.lost(5, 1);
  t.equal(paths.pick(5, 1), 0, 'the copy probes path 0');
  t.equal(paths.stateOf(0), PathState.PROBING);
  t.equal(paths.pick(5, 1), 1, 'the next copy goes to the path in use: one probe at a time');
  paths.lost(6, 0);
  t.equal(paths.stateOf(0), PathState.DOWN, 'the probe lost: out of use again');
  t.equal(paths.pick(7, -1), 1, 'new packets keep to path 1 until the next probe is due');
  paths.delivered(0);
  t.equal(paths.stateOf(0), PathState.UP, 'a delivery on path 0 brings it back');
});
