// A receiver that stops posting receives and resumes later: while it posts nothing, its
// sender's messages are refused with RNR and wait (rnr_retry 7) however long the pause, and
// nothing else is lost, duplicated or failed; once it resumes, every message is delivered
// exactly once. With a finite rnr_retry, the messages that run out of retries fail with
// REMOTE_ERROR_RNR and are never delivered, later copies included.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { patternPayload, postRecvs, postSrdSend, srdSim, watchEnds } from './helpers/sim-network';

const SRD = { unresponsiveTimeoutMs: 100, initialRtoMs: 2, minRtoMs: 0.5, maxRtoMs: 10, rnrBackoffMs: 0.5, rnrBackoffMaxMs: 8 };
const SLOT = 256;
const DEPTH = 32;
const N = 2000;

/** Streams N messages a -> b; b reposts receives except in [pauseFrom, pauseUntil). */
async function pausedStream(rnrRetry: number, pauseFrom: number, pauseUntil: number) {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.2, dup: 0.02, reorder: 0.05 }, a: { rnrRetry, maxSendWr: 512 }, b: { bufSize: DEPTH * SLOT, maxRecvWr: DEPTH } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b], SLOT);
  postRecvs(b, DEPTH, SLOT);
  let posted = 0;
  let reposted = 0;
  const pending: number[] = [];
  const pump = (): void => {
    while (reposted < logB.recvs.length) pending.push(logB.recvs[reposted++].wrId);
    const paused = sim.now >= pauseFrom && sim.now < pauseUntil;
    while (!paused && pending.length > 0) postRecvs(b, 1, SLOT, pending.shift() as number);
    while (posted < N && posted - logA.sends.length < 256) {
      postSrdSend(a, ahs[0][1], b, posted, patternPayload(posted, 48), { immData: posted, addr: 48 * (posted % 512) });
      posted++;
    }
  };
  sim.afterEvent = ((prev) => (node) => {
    prev?.(node);
    pump();
  })(sim.afterEvent);
  // Wakes the receiver when the pause ends even if nothing else happens then.
  sim.at(pauseUntil, () => undefined);
  pump();
  sim.runUntil(() => logA.sends.length === N, 60_000);
  sim.drain(sim.now + 2000);
  return { sim, a, b, logA, logB };
}

t.test('a receiver that pauses for 5 unresponsive timeouts, then resumes: everything arrives, once', async (t) => {
  const pauseFrom = 1;
  const pauseUntil = pauseFrom + 5 * SRD.unresponsiveTimeoutMs;
  const { a, b, logA, logB } = await pausedStream(7, pauseFrom, pauseUntil);
  t.equal(logA.sends.length, N, 'every send completed');
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'all SUCCESS: an RNR wait is not a timeout');
  const during = logB.recvs.filter((r) => r.t >= pauseFrom + 1 && r.t < pauseUntil).length;
  t.ok(during <= DEPTH, `at most the posted receives were used during the pause (${during})`);
  t.ok(logA.sends.some((w) => w.t > pauseUntil), 'some sends waited out the pause');
  t.equal(logB.recvs.length, N, 'every message delivered');
  t.equal(new Set(logB.recvs.map((r) => r.immData)).size, N, 'exactly once each');
  t.ok(b.dev.stats.rnr_sent > 0 && a.dev.stats.rnr_retries > 0, `RNR refused and retried (rnr_sent ${b.dev.stats.rnr_sent}, rnr_retries ${a.dev.stats.rnr_retries})`);
  t.equal(a.dev.stats.unresponsive_remote_events, 0, 'no unresponsive-peer event');
  t.equal(a.dev.srd.outstanding, 0, 'nothing outstanding');
});

t.test('with rnr_retry 2, the messages refused too often fail REMOTE_ERROR_RNR and never arrive', async (t) => {
  const pauseFrom = 1;
  const pauseUntil = pauseFrom + 3 * SRD.unresponsiveTimeoutMs;
  const { a, logA, logB } = await pausedStream(2, pauseFrom, pauseUntil);
  t.equal(logA.sends.length, N, 'every send completed');
  const rnr = logA.sends.filter((w) => w.status === EfaStatus.REMOTE_ERROR_RNR);
  const ok = logA.sends.filter((w) => w.status === EfaStatus.SUCCESS);
  t.ok(rnr.length > 0, `some failed REMOTE_ERROR_RNR (${rnr.length})`);
  t.equal(rnr.length + ok.length, N, 'the others SUCCESS, nothing else');
  const delivered = new Set(logB.recvs.map((r) => r.immData));
  t.equal(delivered.size, logB.recvs.length, 'nothing delivered twice');
  t.ok(rnr.every((w) => !delivered.has(w.wrId)), 'no message whose send failed RNR was delivered');
  t.ok(ok.every((w) => delivered.has(w.wrId)), 'every SUCCESS was delivered');
  t.equal(a.dev.stats.rnr_retry_exceeded, rnr.length, 'rnr_retry_exceeded counts them');
});
