// SRD receivers coalesce acknowledgements: one cumulative ack (plus selective bits) answers
// every packet that arrived in the same turn, and at least every `ackEvery` packets, so a
// dense stream costs far fewer acks than messages while every send still completes.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { PacketType } from '../src/wire/header';
import { patternPayload, postRecvs, postSrdSend, sentOfType, srdSim, watchEnds } from './helpers/sim-network';

const N = 200;

async function stream(srd: Record<string, number>) {
  const s = await srdSim({ srd, faults: { delayMs: 0.1 }, a: { bufSize: 128 * 1024 }, b: { bufSize: 128 * 1024 } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b], 256);
  postRecvs(b, N, 256);
  for (let j = 0; j < N; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 64), { immData: j });
  sim.runUntil(() => logA.sends.length === N, 10_000);
  sim.drain(sim.now + 1000);
  return { ...s, a, b, logA, logB };
}

t.test(`a dense stream of ${N} messages is acknowledged with far fewer acks`, async (t) => {
  const { sim, a, b, logA, logB } = await stream({});
  t.equal(logA.sends.length, N, 'every send completed');
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'all SUCCESS');
  t.equal(logB.recvs.length, N, 'every message delivered once');
  const acks = b.dev.stats.acks_sent;
  t.ok(acks < N / 2, `acks_sent ${acks} < ${N / 2}`);
  t.equal(sentOfType(sim, 2, 1, PacketType.SRD_ACK).length, acks, 'acks_sent counts the acks on the wire');
  t.equal(a.dev.stats.acks_received, acks, 'the sender got each of them');
  t.equal(a.dev.stats.retrans_pkts, 0, 'nothing resent on a clean link');
  t.comment(`${N} messages, ${acks} acks`);
});

t.test('ackEvery bounds how many packets one ack may wait for', async (t) => {
  const { b, logA } = await stream({ ackEvery: 1 });
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS) && logA.sends.length === N, 'every send SUCCESS');
  t.ok(b.dev.stats.acks_sent >= N, `ackEvery 1: one ack per message at least (${b.dev.stats.acks_sent})`);
});

t.test('acks coalesce per burst: a stream that keeps arriving is acked together, a pause is acked at once', async (t) => {
  // 100 packets in 10 bursts (a burst arrives in one instant, like the datagrams one turn of
  // the event loop reads): the receiver acks once the burst is over, not once per packet.
  const s = await srdSim({ srd: { ackDelayMs: 1 }, faults: { delayMs: 0.1 }, a: { bufSize: 128 * 1024 }, b: { bufSize: 128 * 1024 } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  const [logA] = watchEnds(sim, [a, b], 256);
  postRecvs(b, 100, 256);
  for (let burst = 0; burst < 10; burst++) {
    sim.at(burst * 0.5, () => {
      for (let k = 0; k < 10; k++) postSrdSend(a, ahs[0][1], b, burst * 10 + k, patternPayload(burst * 10 + k, 64));
    });
  }
  sim.runUntil(() => logA.sends.length === 100, 10_000);
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS) && logA.sends.length === 100, 'every send SUCCESS');
  t.ok(b.dev.stats.acks_sent <= 20, `100 packets in 10 bursts, ${b.dev.stats.acks_sent} acks`);
  const last = logA.sends[logA.sends.length - 1].t;
  t.ok(last < 4.5 + 0.1 * 2 + 1, `the last burst is acked without waiting out a retransmission timeout (${last.toFixed(3)} ms)`);
});
