// SRD delivers out of order: a message is handed to the receiver the moment it arrives, so a
// lost packet never holds back the messages sent after it (no head-of-line blocking), and the
// selective acks of those later messages get the hole resent before its RTO (fast retransmit).
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { PacketType } from '../src/wire/header';
import { dataSends, patternPayload, postRecvs, postSrdSend, sentOfType, srdSim, watchEnds } from './helpers/sim-network';

const BURST = 10;
const K = 3;
const LEN = 100;

/** A burst of BURST sends from a to b at t=0 whose first transmission of PSN K is lost. */
async function burstWithLoss(srd: Record<string, number>) {
  const s = await srdSim({ srd: { initialRtoMs: 10, minRtoMs: 5, maxRtoMs: 250, ...srd }, faults: { delayMs: 0.1 } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  let dropped = 0;
  sim.intercept = (p) => {
    if (p.from === 1 && p.info.type === PacketType.SRD_DATA && p.info.psn === K && dropped === 0) {
      dropped++;
      return false;
    }
    return true;
  };
  const [logA, logB] = watchEnds(sim, [a, b], 256);
  postRecvs(b, BURST, 256);
  for (let j = 0; j < BURST; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, LEN), { immData: j });
  sim.runUntil(() => logA.sends.length === BURST, 5000);
  return { ...s, a, b, logA, logB, dropped };
}

t.test('a lost packet does not delay the messages sent after it (no fast retransmit)', async (t) => {
  // dupThresh larger than the burst: only the RTO resends the hole.
  const { sim, a, b, logA, logB, dropped } = await burstWithLoss({ dupThresh: 1000 });
  t.equal(dropped, 1, 'the first transmission of PSN K was lost');
  const sends = dataSends(sim, 1, 2, K);
  t.equal(sends.length, 2, 'PSN K was sent twice');
  const resentAt = sends[1].t;
  t.ok(resentAt >= 10 - 1e-9, `resent by its RTO (at ${resentAt} ms)`);

  t.equal(logB.recvs.length, BURST, 'every message arrived');
  const byImm = new Map(logB.recvs.map((r) => [r.immData, r]));
  for (let j = 0; j < BURST; j++) {
    const r = byImm.get(j);
    t.ok(r !== undefined && r.status === EfaStatus.SUCCESS, `message ${j} received`);
    if (j !== K) t.ok((r?.t ?? Infinity) < resentAt, `message ${j} completed at the receiver (t=${r?.t}) before PSN K was resent (t=${resentAt})`);
  }
  t.ok((byImm.get(K)?.t ?? -1) > resentAt, 'message K arrived only with its retransmission');
  t.equal(logB.recvs.at(-1)?.immData, K, 'message K was the last one delivered');
  for (let i = 0; i < logB.recvs.length; i++) {
    const r = logB.recvs[i];
    t.same(logB.payloads[i], patternPayload(r.immData, LEN), `message ${r.immData} intact`);
  }

  t.equal(logA.sends.length, BURST, 'every send completed');
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'all SUCCESS');
  const sendK = logA.sends.find((w) => w.wrId === K);
  for (const w of logA.sends) {
    if (w.wrId !== K) t.ok(w.t < resentAt, `send ${w.wrId} completed (t=${w.t}) before PSN K was resent`);
  }
  t.ok((sendK?.t ?? -1) > resentAt, 'send K completed after its retransmission');
  t.equal(a.dev.stats.retrans_pkts, 1, 'one retransmission');
  t.equal(b.dev.stats.rx_drop_duplicate, 0, 'nothing arrived twice');
});

t.test('selective acks get a single hole resent before its RTO (fast retransmit)', async (t) => {
  const { sim, a, logA, logB } = await burstWithLoss({ dupThresh: 3 });
  const sends = dataSends(sim, 1, 2, K);
  t.equal(sends.length, 2, 'PSN K was sent twice');
  const rto = 10;
  const resentAt = sends[1].t;
  t.ok(resentAt < rto / 2, `resent at ${resentAt} ms, long before its ${rto} ms RTO`);
  t.equal(a.dev.stats.retrans_pkts, 1, 'one retransmission');
  t.equal(a.dev.stats.retrans_timeout_events, 0, 'no retransmission timeout');

  // The acks that triggered it selectively acknowledged at least dupThresh later PSNs.
  const acks = sentOfType(sim, 2, 1, PacketType.SRD_ACK).filter((r) => r.t < resentAt);
  t.ok(acks.length >= 1, 'acks came back before the resend');
  t.ok(acks.every((r) => r.info.cumAck <= K), 'their cumulative ack stops at the hole');

  const byImm = new Map(logB.recvs.map((r) => [r.immData, r]));
  for (let j = 0; j < BURST; j++) if (j !== K) t.ok((byImm.get(j)?.t ?? Infinity) < resentAt, `message ${j} delivered before the resend`);
  t.equal(logB.recvs.length, BURST, 'every message arrived once');
  const sendK = logA.sends.find((w) => w.wrId === K);
  t.equal(sendK?.status, EfaStatus.SUCCESS, 'the lost message completed SUCCESS');
  t.ok((sendK?.t ?? Infinity) < rto, `and completed at ${sendK?.t} ms, before its RTO would even have fired`);
});

t.test('messages reordered by the network are delivered in arrival order, each once', async (t) => {
  const { sim, ends, ahs } = await srdSim({ faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  // Even PSNs take 5 ms longer: the odd ones overtake them.
  sim.intercept = (p) => (p.from === 1 && p.info.type === PacketType.SRD_DATA && p.info.psn % 2 === 0 ? 5 : 0);
  const [logA, logB] = watchEnds(sim, [a, b], 256);
  postRecvs(b, 8, 256);
  for (let j = 0; j < 8; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 64), { immData: j });
  sim.runUntil(() => logA.sends.length === 8, 1000);
  t.same(
    logB.recvs.map((r) => r.immData),
    [1, 3, 5, 7, 0, 2, 4, 6],
    'delivered as they arrived: odd PSNs first',
  );
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'every send SUCCESS');
  sim.drain(sim.now + 1000);
  t.equal(logB.recvs.length, 8, 'each delivered once, whatever was resent meanwhile');
});
