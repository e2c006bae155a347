// Receiver not ready: a message for a QP with no receive posted is refused with an RNR NAK;
// the sender waits a back-off and tries again, up to the QP's rnr_retry (7 = forever), then
// completes with REMOTE_ERROR_RNR. An RNR NAK is an answer: a receiver that is slow to post
// is not an unresponsive one.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { QpState } from '../src/device/constants';
import { PacketType } from '../src/wire/header';
import { dataSends, patternPayload, postRecvs, postSrdSend, sentOfType, srdSim, watchEnds } from './helpers/sim-network';

const SRD = { unresponsiveTimeoutMs: 200, rnrBackoffMs: 1, rnrBackoffMaxMs: 16, initialRtoMs: 10, minRtoMs: 2, maxRtoMs: 50 };

t.test('a receiver that posts its receives late still gets every message (rnr_retry 7)', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b], 512);
  for (let j = 0; j < 20; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 300), { immData: j });
  sim.at(30, () => postRecvs(b, 20, 512));
  sim.runUntil(() => logA.sends.length === 20, 10_000);
  sim.drain(sim.now + 1000);
  t.equal(logA.sends.length, 20, 'every send completed');
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'all SUCCESS');
  t.ok(logA.sends.every((w) => w.t >= 30), 'none before the receives were posted');
  t.equal(logB.recvs.length, 20, 'every message delivered once');
  t.same(new Set(logB.recvs.map((r) => r.immData)).size, 20, 'twenty different messages');
  logB.recvs.forEach((r, i) => t.same(logB.payloads[i], patternPayload(r.immData, 300), `message ${r.immData} intact`));
  t.ok(b.dev.stats.rnr_sent > 0, `the receiver sent RNR NAKs (rnr_sent ${b.dev.stats.rnr_sent})`);
  t.ok(a.dev.stats.rnr_received > 0, `the sender got them (rnr_received ${a.dev.stats.rnr_received})`);
  t.ok(a.dev.stats.rnr_retries > 0, 'and retried');
  t.equal(a.dev.stats.rnr_retry_exceeded, 0, 'never gave up');
});

t.test('RNR for longer than the unresponsive timeout is still not a timeout (rnr_retry 7)', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b], 512);
  for (let j = 0; j < 5; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100), { immData: j });
  sim.at(3 * SRD.unresponsiveTimeoutMs, () => postRecvs(b, 5, 512));
  sim.runUntil(() => logA.sends.length === 5, 10_000);
  t.ok(logA.sends.length === 5 && logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'all five SUCCESS after three timeouts of RNR');
  t.equal(logB.recvs.length, 5, 'all delivered');
  t.equal(a.dev.stats.unresponsive_remote_events + a.dev.stats.unreachable_remote_events, 0, 'no unresponsive-peer event');
  // Back-off: the retries of one message are spaced out up to rnrBackoffMaxMs, not sent back
  // to back. Each retry goes out under a new PSN: every RNR answer is final for its PSN.
  const tries = dataSends(sim, 1, 2).filter((r) => r.info.imm === 0);
  const times = tries.map((r) => r.t);
  const gaps = times.slice(1).map((x, i) => x - times[i]);
  t.ok(gaps.length > 5, `message 0 was retried ${gaps.length} times`);
  t.equal(new Set(tries.map((r) => r.info.psn)).size, tries.length, 'each try under a PSN of its own');
  t.ok(gaps.every((g) => g <= SRD.rnrBackoffMaxMs + 0.2 + 1e-9), 'no gap beyond the back-off cap and a round trip');
  t.ok(gaps.at(-2)! >= SRD.rnrBackoffMaxMs, 'the back-off reached its cap');
  for (let i = 1; i < Math.min(gaps.length, 4); i++) t.ok(gaps[i] >= gaps[i - 1] - 1e-9, `back-off ${i} did not shrink`);
});

/** A sends one message to B, which never posts a receive; A's QP has rnr_retry `retry`. */
async function neverPosts(retry: number, opts: { dupNaks?: boolean } = {}) {
  // With dupNaks, a 5 ms link: a NAK arrives at +5 ms and its copy at +10 ms, while the
  // retry the NAK caused (sent after a back-off of at most 4 ms) waits for its own answer.
  const srd = opts.dupNaks ? { ...SRD, initialRtoMs: 50 } : SRD;
  const s = await srdSim({ srd, faults: { delayMs: opts.dupNaks ? 5 : 0.1 }, a: { rnrRetry: retry } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  if (opts.dupNaks) {
    sim.intercept = (p) => {
      if (p.from === 2 && p.info.type === PacketType.SRD_NAK) sim.replay(p, sim.now + 10);
      return true;
    };
  }
  const [logA, logB] = watchEnds(sim, [a, b]);
  postSrdSend(a, ahs[0][1], b, 7, patternPayload(7, 100));
  sim.runUntil(() => logA.sends.length === 1, 10_000);
  sim.drain(sim.now + 1000);
  return { ...s, a, b, logA, logB };
}

t.test('a receiver that never posts: REMOTE_ERROR_RNR after exactly rnr_retry retries', async (t) => {
  const { sim, a, b, logA, logB } = await neverPosts(3);
  t.equal((await a.dev.queryQp(a.qp)).rnrRetry, 3, 'the QP has rnr_retry 3 (set on RTR -> RTS)');
  t.equal(logA.sends.length, 1, 'the send completed');
  t.equal(logA.sends[0].status, EfaStatus.REMOTE_ERROR_RNR, 'with REMOTE_ERROR_RNR (10)');
  t.equal(EfaStatus.REMOTE_ERROR_RNR, 10);
  t.equal(dataSends(sim, 1, 2).length, 4, 'the packet went out 4 times: once and 3 retries');
  t.equal(a.dev.stats.rnr_retries, 3, 'rnr_retries 3');
  t.equal(a.dev.stats.rnr_received, 4, 'rnr_received 4');
  t.equal(a.dev.stats.rnr_retry_exceeded, 1, 'rnr_retry_exceeded 1');
  t.equal(b.dev.stats.rnr_sent, 4, 'the receiver sent 4 RNR NAKs');
  t.equal(sentOfType(sim, 2, 1, PacketType.SRD_NAK).length, 4, '4 NAKs on the wire');
  t.equal(logB.recvs.length, 0, 'nothing was delivered');
  t.equal(a.dev.srd.outstanding, 0, 'nothing outstanding');
  t.ok(logA.sends[0].t < SRD.unresponsiveTimeoutMs, 'it failed on RNR, not on a timeout');
});

t.test('rnr_retry 0 fails on the first RNR NAK', async (t) => {
  const { sim, a, logA } = await neverPosts(0);
  t.equal(logA.sends[0]?.status, EfaStatus.REMOTE_ERROR_RNR, 'REMOTE_ERROR_RNR');
  t.equal(dataSends(sim, 1, 2).length, 1, 'sent once, never retried');
  t.equal(a.dev.stats.rnr_retries, 0, 'rnr_retries 0');
});

t.test('duplicated RNR NAKs do not use up the retries', async (t) => {
  const { sim, a, logA } = await neverPosts(3, { dupNaks: true });
  t.equal(logA.sends[0]?.status, EfaStatus.REMOTE_ERROR_RNR, 'REMOTE_ERROR_RNR');
  t.ok(a.dev.stats.rnr_received >= 7, `the copies arrived too (rnr_received ${a.dev.stats.rnr_received})`);
  const sends = dataSends(sim, 1, 2);
  t.equal(sends.length, 4, 'still once and 3 retries');
  t.ok(logA.sends[0].t >= sends[3].t + 10 - 1e-9, 'it failed on the answer to the last retry (a round trip after it), not on an old copy');
  t.equal(a.dev.stats.rnr_retries, 3, 'rnr_retries 3');
  t.equal(a.dev.stats.rnr_retry_exceeded, 1, 'rnr_retry_exceeded 1');
});

t.test('a receive posted between retries ends the RNR wait with SUCCESS', async (t) => {
  const s = await srdSim({ srd: SRD, faults: { delayMs: 0.1 }, a: { rnrRetry: 3 } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 100));
  // Post once the second RNR NAK went out.
  sim.runUntil(() => b.dev.stats.rnr_sent === 2, 1000);
  postRecvs(b, 1);
  sim.runUntil(() => logA.sends.length === 1, 1000);
  t.equal(logA.sends[0]?.status, EfaStatus.SUCCESS, 'SUCCESS');
  t.equal(logB.recvs.length, 1, 'delivered once');
  t.equal(dataSends(sim, 1, 2).length, 3, 'after two RNR retries');
});

t.test('a QP still in INIT is not ready either: RNR until it reaches RTR', async (t) => {
  const s = await srdSim({ srd: SRD, faults: { delayMs: 0.1 }, b: { state: 'INIT' } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 1);
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 100));
  sim.runFor(20);
  t.equal(logA.sends.length, 0, 'not complete while the receiver is in INIT');
  t.ok(b.dev.stats.rnr_sent > 0, 'the receiver answered RNR');
  await b.dev.modifyQp(b.qp, { qpState: QpState.RTR });
  sim.runUntil(() => logA.sends.length === 1, sim.now + 1000);
  t.equal(logA.sends[0]?.status, EfaStatus.SUCCESS, 'SUCCESS once it is in RTR');
  t.equal(logB.recvs.length, 1, 'delivered once');
});
