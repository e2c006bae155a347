// A peer that stops answering makes SRD sends fail instead of hang: within the unresponsive
// timeout (plus at most one maxRto of timer slack) each send completes with
// LOCAL_ERROR_UNRESP_REMOTE (13) when the peer answered before, LOCAL_ERROR_UNREACH_REMOTE
// (15) when it never did. The QP is not broken by it: other peers, and the same peer once it
// is back, are served as before.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { QpState } from '../src/device/constants';
import { PacketType } from '../src/wire/header';
import { patternPayload, postRecvs, postSrdSend, srdSim, watchEnds, type SimPacket } from './helpers/sim-network';

const TIMEOUT = 200;
const MAX_RTO = 20;
const SRD = { unresponsiveTimeoutMs: TIMEOUT, maxRtoMs: MAX_RTO, initialRtoMs: 5, minRtoMs: 1 };

t.test('a peer that answered before and then goes dark: LOCAL_ERROR_UNRESP_REMOTE within the timeout', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 6);
  for (let j = 0; j < 5; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100));
  sim.runUntil(() => logA.sends.length === 5, 1000);
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'five sends went through');

  const darkAt = 10;
  sim.partitionDevice(2, darkAt, Infinity);
  sim.runUntil(() => false, darkAt);
  postSrdSend(a, ahs[0][1], b, 5, patternPayload(5, 100));
  sim.runUntil(() => logA.sends.length === 6, 10_000);
  const wc = logA.sends[5];
  t.equal(wc.wrId, 5);
  t.equal(wc.status, EfaStatus.LOCAL_ERROR_UNRESP_REMOTE, 'LOCAL_ERROR_UNRESP_REMOTE (13)');
  t.equal(EfaStatus.LOCAL_ERROR_UNRESP_REMOTE, 13);
  const waited = wc.t - darkAt;
  t.ok(waited >= TIMEOUT && waited <= TIMEOUT + MAX_RTO, `completed ${waited} ms after it was posted: in [timeout, timeout + maxRto]`);
  t.equal(a.dev.stats.unresponsive_remote_events, 1, 'unresponsive_remote_events 1');
  t.equal(a.dev.stats.unreachable_remote_events, 0, 'unreachable_remote_events 0');
  t.equal(a.dev.srd.outstanding, 0, 'nothing outstanding');
  t.equal(logB.recvs.length, 5, 'the dark peer got nothing more');
});

t.test('a peer that never answered: LOCAL_ERROR_UNREACH_REMOTE within the timeout', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  sim.partitionDevice(2, 0, Infinity);
  const [logA] = watchEnds(sim, [a, b]);
  postRecvs(b, 1);
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 100));
  sim.runUntil(() => logA.sends.length === 1, 10_000);
  const wc = logA.sends[0];
  t.equal(wc.status, EfaStatus.LOCAL_ERROR_UNREACH_REMOTE, 'LOCAL_ERROR_UNREACH_REMOTE (15)');
  t.equal(EfaStatus.LOCAL_ERROR_UNREACH_REMOTE, 15);
  t.ok(wc.t >= TIMEOUT && wc.t <= TIMEOUT + MAX_RTO, `completed at ${wc.t} ms: in [timeout, timeout + maxRto]`);
  t.equal(a.dev.stats.unreachable_remote_events, 1, 'unreachable_remote_events 1');
  t.equal(a.dev.stats.unresponsive_remote_events, 0, 'unresponsive_remote_events 0');
});

t.test('the QP keeps serving other peers while one is unreachable, and afterwards', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 }, more: 1 });
  const [a, b, c] = ends;
  sim.partitionDevice(2, 0, Infinity);
  const [logA, , logC] = watchEnds(sim, [a, b, c]);
  postRecvs(c, 8);
  postSrdSend(a, ahs[0][1], b, 1000, patternPayload(0, 100));
  let toC = 0;
  for (let k = 0; k < 15; k++) {
    sim.at(k * 20, () => {
      postSrdSend(a, ahs[0][2], c, toC, patternPayload(toC, 100));
      toC++;
    });
  }
  // c reposts its receives as they complete
  let reposted = 0;
  sim.afterEvent = ((prev) => (node) => {
    prev?.(node);
    while (reposted < logC.recvs.length) postRecvs(c, 1, 8192, logC.recvs[reposted++].wrId);
  })(sim.afterEvent);
  sim.runUntil(() => logA.sends.some((w) => w.wrId === 1000), 10_000);
  const failed = logA.sends.find((w) => w.wrId === 1000)!;
  t.equal(failed.status, EfaStatus.LOCAL_ERROR_UNREACH_REMOTE, 'the send to the dead peer failed UNREACH_REMOTE');
  const beforeFailure = logA.sends.filter((w) => w.wrId !== 1000);
  t.ok(beforeFailure.length >= 10, `${beforeFailure.length} sends to the live peer completed while it waited`);
  t.ok(beforeFailure.every((w) => w.status === EfaStatus.SUCCESS && w.t < failed.t), 'all SUCCESS, before the failure');
  t.equal((await a.dev.queryQp(a.qp)).qpState, QpState.RTS, 'the QP is still in RTS');

  sim.runUntil(() => logA.sends.length === 16, sim.now + 10_000);
  postSrdSend(a, ahs[0][2], c, 2000, patternPayload(1, 100));
  postSrdSend(a, ahs[0][1], b, 3000, patternPayload(2, 100));
  sim.runUntil(() => logA.sends.length === 18, sim.now + 10_000);
  t.equal(logA.sends.find((w) => w.wrId === 2000)?.status, EfaStatus.SUCCESS, 'a send to the live peer after the failure: SUCCESS');
  t.equal(logA.sends.find((w) => w.wrId === 3000)?.status, EfaStatus.LOCAL_ERROR_UNREACH_REMOTE, 'another send to the dead peer fails again');
  t.equal(logC.recvs.length, 16, 'the live peer got every message');
});

t.test('sends queued behind a full window to a dark peer fail within the timeout too', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: { ...SRD, window: 2 }, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA] = watchEnds(sim, [a, b]);
  postRecvs(b, 1);
  postSrdSend(a, ahs[0][1], b, 0, patternPayload(0, 10));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  sim.partitionDevice(2, sim.now, Infinity);
  const postedAt = sim.now;
  for (let j = 1; j <= 6; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 10));
  sim.runUntil(() => logA.sends.length === 7, 10_000);
  const failed = logA.sends.slice(1);
  t.ok(failed.every((w) => w.status === EfaStatus.LOCAL_ERROR_UNRESP_REMOTE), 'all six fail UNRESP_REMOTE');
  for (const w of failed) t.ok(w.t - postedAt <= TIMEOUT + MAX_RTO, `send ${w.wrId} failed ${w.t - postedAt} ms after it was posted`);
});

t.test('a peer dark for less than the timeout: every send still succeeds', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 6);
  postSrdSend(a, ahs[0][1], b, 0, patternPayload(0, 100));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  sim.partitionDevice(2, 10, 10 + TIMEOUT / 2);
  sim.runUntil(() => false, 10);
  for (let j = 1; j <= 5; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100));
  sim.runUntil(() => logA.sends.length === 6, 10_000);
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'all SUCCESS');
  t.ok(logA.sends.slice(1).every((w) => w.t >= 10 + TIMEOUT / 2), 'completed after the peer came back');
  t.equal(logB.recvs.length, 6, 'all delivered once');
  t.equal(a.dev.stats.unresponsive_remote_events + a.dev.stats.unreachable_remote_events, 0, 'no unresponsive-peer event');
});

t.test('acks lost on the way back: the send fails UNRESP_REMOTE although the data arrived', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 2);
  postSrdSend(a, ahs[0][1], b, 0, patternPayload(0, 100));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  sim.partitionLink(2, 1, sim.now, Infinity, true);
  const postedAt = sim.now;
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 100));
  sim.runUntil(() => logA.sends.length === 2, 10_000);
  t.equal(logA.sends[1].status, EfaStatus.LOCAL_ERROR_UNRESP_REMOTE, 'UNRESP_REMOTE');
  t.ok(logA.sends[1].t - postedAt <= TIMEOUT + MAX_RTO, 'within the timeout');
  t.equal(logB.recvs.length, 2, 'the message was delivered, once, despite every resend');
  t.ok(b.dev.stats.rx_drop_duplicate > 0, 'the resends were dropped as duplicates');
});

t.test('a peer that comes back after its sends failed is served again', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 6);
  postSrdSend(a, ahs[0][1], b, 0, patternPayload(0, 100));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  sim.partitionDevice(2, sim.now, 2 * TIMEOUT);
  for (let j = 1; j <= 3; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100));
  sim.runUntil(() => logA.sends.length === 4, 10_000);
  t.ok(logA.sends.slice(1).every((w) => w.status === EfaStatus.LOCAL_ERROR_UNRESP_REMOTE), 'three sends failed while it was dark');
  sim.runUntil(() => false, 2 * TIMEOUT + 1);
  for (let j = 4; j <= 5; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100), { immData: j });
  sim.runUntil(() => logA.sends.length === 6, sim.now + 10_000);
  t.ok(logA.sends.slice(4).every((w) => w.status === EfaStatus.SUCCESS), 'the next two sends succeed');
  t.same(
    logB.recvs.slice(1).map((r) => r.immData),
    [4, 5],
    'the receiver got exactly those (the failed ones never reached it)',
  );
});

t.test('answers to copies already settled are not signs of life: the send still fails on time', async (t) => {
  // The receiver never posts a receive (RNR, rnr_retry 7); then the data direction goes dark
  // while old copies of earlier attempts keep reaching the receiver, which keeps answering
  // them, and the answers do get back. They are about PSNs the sender retired: they must not
  // keep the send alive.
  const { sim, ends, ahs } = await srdSim({ srd: { ...SRD, rnrBackoffMaxMs: 4 }, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  const early: SimPacket[] = [];
  const cut = 50;
  sim.intercept = (p) => {
    if (p.from === 1 && p.info.type === PacketType.SRD_DATA && sim.now < cut) early.push(p);
    return true;
  };
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 100));
  sim.runUntil(() => false, cut);
  t.ok(b.dev.stats.rnr_sent > 5, `refused with RNR before the cut (rnr_sent ${b.dev.stats.rnr_sent})`);
  sim.partitionLink(1, 2, cut, Infinity, true);
  // An old copy reaches the receiver every 10 ms from then on.
  for (let k = 0; k < 60; k++) sim.at(cut + k * 10, () => sim.replay(early[k % early.length], sim.now));
  const answersBefore = a.dev.stats.rnr_received + a.dev.stats.acks_received;
  sim.runUntil(() => logA.sends.length === 1, 10_000);
  const answers = a.dev.stats.rnr_received + a.dev.stats.acks_received - answersBefore;
  t.ok(answers > 10, `the old copies were answered (acks of settled PSNs, RNR NAKs) and the answers arrived (${answers})`);
  const wc = logA.sends[0];
  t.equal(wc.status, EfaStatus.LOCAL_ERROR_UNRESP_REMOTE, 'the send failed UNRESP_REMOTE');
  t.ok(wc.t - cut <= TIMEOUT + SRD.maxRtoMs, `${(wc.t - cut).toFixed(1)} ms after the cut: within the timeout`);
  t.equal(logB.recvs.length, 0, 'nothing was delivered');
});
