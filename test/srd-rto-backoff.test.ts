import { SRD_DATA_HDR_LEN } from '../src/wire/srd-header';
// SRD retransmission timeouts: a packet that gets no answer is resent after an RTO that
// doubles on every attempt, never beyond maxRtoMs, until the unresponsive timeout fails it;
// the RTO itself follows the measured round-trip time (RFC 6298), so a fast link drives it
// down to minRtoMs and a slow one up.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { dataSends, patternPayload, postRecvs, postSrdSend, srdSim, watchEnds } from './helpers/sim-network';

const CFG = { initialRtoMs: 10, minRtoMs: 5, maxRtoMs: 250, unresponsiveTimeoutMs: 2000 };

t.test('on a blackholed link the RTO doubles per attempt up to maxRtoMs', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: CFG, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  sim.partitionLink(1, 2, 0, Infinity, true);
  const [logA] = watchEnds(sim, [a, b]);
  postRecvs(b, 1);
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 100));

  const stats = a.dev.stats;
  let lastRetrans = 0;
  let grew = true;
  sim.afterEvent = ((prev) => (node) => {
    prev?.(node);
    if (stats.retrans_pkts < lastRetrans) grew = false;
    lastRetrans = stats.retrans_pkts;
  })(sim.afterEvent);
  sim.runUntil(() => logA.sends.length === 1, 10_000);

  const times = dataSends(sim, 1, 2, 0).map((r) => r.t);
  t.ok(times.length >= 8, `sent ${times.length} times`);
  const gaps = times.slice(1).map((x, i) => x - times[i]);
  const expected = gaps.map((_, i) => Math.min(CFG.initialRtoMs * 2 ** i, CFG.maxRtoMs));
  t.same(
    gaps.map((g) => Number(g.toFixed(6))),
    expected,
    `gaps between attempts double from ${CFG.initialRtoMs} ms and stop at ${CFG.maxRtoMs} ms`,
  );
  for (let i = 1; i < gaps.length; i++) t.ok(gaps[i] >= gaps[i - 1] - 1e-9, `gap ${i} did not shrink`);
  t.ok(gaps.every((g) => g <= CFG.maxRtoMs + 1e-9), 'no gap beyond maxRtoMs');

  t.equal(stats.retrans_pkts, times.length - 1, 'retrans_pkts counts every resend');
  t.equal(stats.retrans_timeout_events, times.length - 1, 'retrans_timeout_events counts every timeout');
  t.ok(grew, 'the counters only grew');
  t.equal(stats.retrans_bytes, (times.length - 1) * (SRD_DATA_HDR_LEN + 100), 'retrans_bytes counts whole datagrams');

  const wc = logA.sends[0];
  t.equal(wc.status, EfaStatus.LOCAL_ERROR_UNREACH_REMOTE, 'in the end the send fails (the peer never answered)');
  t.ok(wc.t >= CFG.unresponsiveTimeoutMs && wc.t <= CFG.unresponsiveTimeoutMs + CFG.maxRtoMs, `after the unresponsive timeout (at ${wc.t} ms)`);
  t.ok(times.at(-1)! < wc.t, 'no resend after it failed');
});

t.test('a silent peer is probed one packet at a time: the oldest, with back-off; one timeout event per expiry', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: { ...CFG, unresponsiveTimeoutMs: 500 }, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  sim.partitionLink(1, 2, 0, Infinity, true);
  const [logA] = watchEnds(sim, [a, b]);
  for (let j = 0; j < 3; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 10));
  sim.runUntil(() => logA.sends.length === 3, 10_000);
  const per = [0, 1, 2].map((psn) => dataSends(sim, 1, 2, psn).length);
  t.ok(per[0] > 3, `the oldest packet was resent (sent ${per[0]} times)`);
  t.same(per.slice(1), [1, 1], 'the others waited: once the window collapsed there was room for one probe only');
  t.equal(a.dev.stats.retrans_pkts, per[0] - 1, 'retrans_pkts counts each resent packet');
  t.equal(a.dev.stats.retrans_timeout_events, per[0] - 1, 'packets that expire together make one timeout event');
  const times = dataSends(sim, 1, 2, 0).map((r) => r.t);
  const gaps = times.slice(1).map((x, i) => x - times[i]);
  for (let i = 1; i < gaps.length && gaps[i] < CFG.maxRtoMs; i++) t.ok(gaps[i] >= gaps[i - 1] * 2 - 1e-9, `probe ${i + 1} waited twice as long as the one before`);
  t.ok(logA.sends.every((w) => w.status === EfaStatus.LOCAL_ERROR_UNREACH_REMOTE), 'all fail UNREACH_REMOTE');
});

/** Sends `n` messages one at a time (each after the previous completed) from a to b. */
async function warmUp(delayMs: number, srd: Record<string, number>, n = 30) {
  const s = await srdSim({ srd, faults: { delayMs } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 4);
  for (let j = 0; j < n; j++) {
    postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 32));
    sim.runUntil(() => logA.sends.length === j + 1 && logB.recvs.length === j + 1, sim.now + 10_000);
    postRecvs(b, 1, 8192, j % 4);
  }
  return { ...s, a, b, logA, logB };
}

/** Blackholes a -> b and posts one more send: the gap between its first two transmissions. */
function firstRto(s: Awaited<ReturnType<typeof warmUp>>): number {
  const { sim, a, b, ahs, logA } = s;
  const before = logA.sends.length;
  sim.partitionLink(1, 2, sim.now, Infinity, true);
  postSrdSend(a, ahs[0][1], b, 999, patternPayload(999, 32));
  const psn = before; // PSNs count from 0, one per message
  sim.runUntil(() => dataSends(sim, 1, 2, psn).length >= 2, sim.now + 10_000);
  const times = dataSends(sim, 1, 2, psn).map((r) => r.t);
  return times[1] - times[0];
}

t.test('RTT samples on a fast link lower the RTO to minRtoMs', async (t) => {
  const srd = { initialRtoMs: 50, minRtoMs: 1, maxRtoMs: 250 };
  const cold = await warmUp(0.05, srd, 0);
  t.equal(Number(firstRto(cold).toFixed(6)), 50, 'before any sample the RTO is initialRtoMs');
  const warm = await warmUp(0.05, srd);
  t.equal(warm.logA.sends.filter((w) => w.status === EfaStatus.SUCCESS).length, 30, 'the warm-up went through');
  t.equal(warm.a.dev.stats.retrans_pkts, 0, 'without resends');
  const rto = firstRto(warm);
  t.ok(rto >= srd.minRtoMs - 1e-9 && rto <= srd.minRtoMs * 1.5, `after 30 round trips of 0.1 ms the RTO is ${rto} ms, at minRtoMs (${srd.minRtoMs})`);
});

t.test('RTT samples on a slow link raise the RTO above the round trip', async (t) => {
  const srd = { initialRtoMs: 10, minRtoMs: 1, maxRtoMs: 250 };
  const warm = await warmUp(20, srd, 20);
  t.equal(warm.logA.sends.filter((w) => w.status === EfaStatus.SUCCESS).length, 20, 'the warm-up went through');
  const rto = firstRto(warm);
  t.ok(rto > 40 && rto <= 250, `with a 40 ms round trip the RTO is ${rto} ms (above 40, at most maxRtoMs)`);
});
