// No head-of-line blocking across QPs: one message waiting for a receive (RNR, rnr_retry 7)
// on QP A holds nothing that QP B's messages to the same peer device need. 10,000 messages
// flow on B, at the pace they flow with no stuck message at all, while A's message waits
// longer than the unresponsive timeout; once a receive is posted on A, it completes.
import t, { type Test } from 'tap';

type Tap = Test;
import { EfaStatus } from '../src/common/efa-status';
import { createSrdEnd, patternPayload, postRecvs, postSrdSend, srdSim, watchEnds, type SrdEnd, type SrdSim } from './helpers/sim-network';

const SRD = { unresponsiveTimeoutMs: 200, initialRtoMs: 5, minRtoMs: 1, maxRtoMs: 20, rnrBackoffMaxMs: 8 };
const N = 10_000;
const SLOT = 256;
const DEPTH = 128;

interface Rig extends SrdSim {
  qpA: SrdEnd;
  qpA2: SrdEnd;
  qpB: SrdEnd;
  qpB2: SrdEnd;
}

/** Devices a and b; QPs A (a) -> A2 (b) and B (a) -> B2 (b), all AHs in the PD of a's QPs. */
async function rig(): Promise<Rig> {
  const s = await srdSim({ srd: SRD, faults: { delayMs: 0.5 }, a: { maxSendWr: 512 }, b: { bufSize: DEPTH * SLOT } });
  const [qpA, qpA2] = s.ends;
  const qpB = await createSrdEnd(qpA.dev, { pd: qpA.pd, bufSize: 64 * 1024 });
  const qpB2 = await createSrdEnd(qpA2.dev, { pd: qpA2.pd, bufSize: DEPTH * SLOT, maxRecvWr: DEPTH });
  return { ...s, qpA, qpA2, qpB, qpB2 };
}

/** Streams N messages B -> B2, DEPTH outstanding, B2 reposting each receive; returns when all completed. */
function stream(t: Tap, r: Rig): { finishedAt: number } {
  const { sim, qpB, qpB2, ahs } = r;
  const [logB, logB2] = watchEnds(sim, [qpB, qpB2], SLOT);
  postRecvs(qpB2, DEPTH, SLOT);
  let posted = 0;
  let reposted = 0;
  let finishedAt = -1;
  const pump = (): void => {
    while (reposted < logB2.recvs.length) postRecvs(qpB2, 1, SLOT, logB2.recvs[reposted++].wrId);
    while (posted < N && posted - logB.sends.length < DEPTH) {
      postSrdSend(qpB, ahs[0][1], qpB2, posted, patternPayload(posted, 32), { immData: posted, addr: 32 * (posted % DEPTH) });
      posted++;
    }
    if (finishedAt < 0 && logB.sends.length === N) finishedAt = sim.now;
  };
  sim.afterEvent = ((prev) => (node) => {
    prev?.(node);
    pump();
  })(sim.afterEvent);
  pump();
  sim.runUntil(() => logB.sends.length === N, 120_000);
  t.equal(logB.sends.length, N, `all ${N} sends on B completed`);
  t.ok(logB.sends.every((w) => w.status === EfaStatus.SUCCESS), 'every one SUCCESS');
  t.equal(new Set(logB2.recvs.map((w) => w.immData)).size, N, 'each message delivered');
  t.equal(logB2.recvs.length, N, 'exactly once');
  return { finishedAt };
}

t.test('10,000 messages flow on QP B while a message on QP A to the same peer waits for a receive', async (t) => {
  // The pace of the stream with no stuck message, for comparison.
  const base = await rig();
  const baseStart = base.sim.now;
  const baseline = stream(t, base);
  const baselineMs = baseline.finishedAt - baseStart;

  const r = await rig();
  const { sim, qpA, qpA2, ahs } = r;
  const [logA, logA2] = watchEnds(sim, [qpA, qpA2], SLOT);
  // QP A2 has no receive posted: A's message is refused with RNR again and again.
  postSrdSend(qpA, ahs[0][1], qpA2, 7, patternPayload(7, 100), { immData: 7 });
  sim.runUntil(() => qpA2.dev.stats.rnr_sent > 0, 100);
  t.ok(qpA2.dev.stats.rnr_sent > 0, 'A\'s message was refused: receiver not ready');
  const start = sim.now;
  const s = stream(t, r);
  const streamMs = s.finishedAt - start;
  t.equal(logA.sends.length, 0, 'A\'s message is still waiting while all of B\'s completed');
  t.ok(streamMs <= baselineMs * 1.5 + 1, `B's stream took ${streamMs.toFixed(1)} ms, ${baselineMs.toFixed(1)} ms without the stuck message`);
  t.ok(qpA.dev.stats.rnr_retries > 5, `A's message was retried meanwhile (rnr_retries ${qpA.dev.stats.rnr_retries})`);

  // Longer than the unresponsive timeout: RNR answers are answers.
  sim.runFor(2 * SRD.unresponsiveTimeoutMs);
  t.equal(logA.sends.length, 0, 'after twice the unresponsive timeout, still waiting (rnr_retry 7), not failed');
  t.equal(qpA.dev.stats.unresponsive_remote_events + qpA.dev.stats.unreachable_remote_events, 0, 'no unresponsive-peer event');

  postRecvs(qpA2, 1, SLOT);
  sim.runUntil(() => logA.sends.length === 1, sim.now + 1000);
  t.equal(logA.sends[0]?.status, EfaStatus.SUCCESS, 'once a receive is posted on A, its message completes SUCCESS');
  sim.drain(sim.now + 1000);
  t.equal(logA2.recvs.length, 1, 'delivered once');
  t.same(logA2.payloads[0], patternPayload(7, 100), 'intact');
  t.equal(qpA.dev.srd.outstanding, 0, 'nothing outstanding');
});

t.test('more waiting messages than a window, on several QPs: the others still flow', async (t) => {
  // 300 messages parked by RNR on A (more than the 128-packet window) and B still streams.
  const r = await rig();
  const { sim, qpA, qpA2, ahs } = r;
  const [logA, logA2] = watchEnds(sim, [qpA, qpA2], SLOT);
  for (let j = 0; j < 300; j++) postSrdSend(qpA, ahs[0][1], qpA2, j, patternPayload(j, 16), { immData: j });
  stream(t, r);
  t.equal(logA.sends.length, 0, 'the 300 on A are all still waiting');
  postRecvs(qpA2, DEPTH, SLOT);
  let reposted = 0;
  sim.afterEvent = ((prev) => (node) => {
    prev?.(node);
    while (reposted < logA2.recvs.length) postRecvs(qpA2, 1, SLOT, logA2.recvs[reposted++].wrId);
  })(sim.afterEvent);
  sim.runUntil(() => logA.sends.length === 300, sim.now + 10_000);
  t.ok(logA.sends.length === 300 && logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'then all 300 complete SUCCESS');
  t.equal(new Set(logA2.recvs.map((w) => w.immData)).size, 300, 'each delivered');
  t.equal(logA2.recvs.length, 300, 'once');
});
