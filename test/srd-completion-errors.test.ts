// SRD error completions other than timeouts and RNR: a QP moved to ERR flushes its sends; a
// receiver whose buffer is too short, or that has no such QP, refuses the message with a
// final status the sender reports (and reports again, never SUCCESS, if the refusal is lost
// and the message resent).
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { QpState, WcOpcode } from '../src/device/constants';
import { PacketType } from '../src/wire/header';
import { dataSends, patternPayload, postRecvs, postSrdRecv, postSrdSend, SIM_QKEY, sentOfType, srdSim, watchEnds } from './helpers/sim-network';

const SRD = { unresponsiveTimeoutMs: 200, maxRtoMs: 20, initialRtoMs: 5, minRtoMs: 1 };

t.test('a QP moved to ERR completes its outstanding SRD sends with FLUSHED', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: { ...SRD, window: 2 }, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  sim.partitionDevice(2, 0, Infinity);
  const [logA] = watchEnds(sim, [a, b]);
  postRecvs(a, 2);
  for (let j = 0; j < 5; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100));
  sim.runFor(20);
  t.equal(logA.sends.length, 0, 'nothing completed yet (2 in flight, 3 queued)');
  t.equal(a.dev.srd.outstanding, 5, '5 outstanding in the engine');
  await a.dev.modifyQp(a.qp, { qpState: QpState.ERR });
  sim.poll();
  t.equal(logA.sends.length, 5, 'all five completed at once');
  t.ok(logA.sends.every((w) => w.status === EfaStatus.FLUSHED), 'with FLUSHED (1)');
  t.equal(EfaStatus.FLUSHED, 1);
  t.same(
    logA.sends.map((w) => w.wrId),
    [0, 1, 2, 3, 4],
    'in posting order',
  );
  t.equal(a.dev.srd.outstanding, 0, 'nothing outstanding');
  t.equal(logA.recvs.length, 2, 'the posted receives were flushed too');
  t.ok(logA.recvs.every((w) => w.status === EfaStatus.FLUSHED), 'with FLUSHED');
  const sentBefore = dataSends(sim, 1, 2).length;
  sim.runFor(1000);
  t.equal(logA.sends.length, 5, 'no completion later');
  t.equal(dataSends(sim, 1, 2).length, sentBefore, 'and no more resends');
});

t.test('a message longer than the receive buffer: LOCAL_ERROR_BAD_LENGTH / REMOTE_ERROR_BAD_LENGTH', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postSrdRecv(b, 0, 0, 100);
  postSrdRecv(b, 1, 8192, 8192);
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 500));
  postSrdSend(a, ahs[0][1], b, 2, patternPayload(2, 500));
  sim.runUntil(() => logA.sends.length === 2, 1000);
  t.equal(logB.recvs[0]?.status, EfaStatus.LOCAL_ERROR_BAD_LENGTH, 'the receiver: LOCAL_ERROR_BAD_LENGTH (6) on the short buffer');
  t.equal(EfaStatus.LOCAL_ERROR_BAD_LENGTH, 6);
  t.equal(logA.sends.find((w) => w.wrId === 1)?.status, EfaStatus.REMOTE_ERROR_BAD_LENGTH, 'the sender: REMOTE_ERROR_BAD_LENGTH (11)');
  t.equal(EfaStatus.REMOTE_ERROR_BAD_LENGTH, 11);
  t.equal(logB.recvs[1]?.status, EfaStatus.SUCCESS, 'the next message took the next (long enough) buffer');
  t.equal(logA.sends.find((w) => w.wrId === 2)?.status, EfaStatus.SUCCESS, 'and its send succeeded');
  t.same(logB.payloads[1], patternPayload(2, 500), 'intact');
  sim.drain(sim.now + 1000);
  t.equal(logB.recvs.length, 2, 'no receive consumed twice');
});

t.test('REMOTE_ERROR_BAD_LENGTH survives a lost NAK: the resend gets the same answer', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  let naks = 0;
  sim.intercept = (p) => !(p.info.type === PacketType.SRD_NAK && naks++ === 0);
  const [logA, logB] = watchEnds(sim, [a, b]);
  postSrdRecv(b, 0, 0, 100);
  postSrdRecv(b, 1, 8192, 8192);
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 500));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  t.equal(dataSends(sim, 1, 2).length, 2, 'the message was resent once');
  t.equal(logA.sends[0].status, EfaStatus.REMOTE_ERROR_BAD_LENGTH, 'REMOTE_ERROR_BAD_LENGTH, not SUCCESS');
  t.equal(logB.recvs.length, 1, 'the resend did not consume another receive');
});

t.test('a send to a QPN that does not exist: REMOTE_ERROR_BAD_DEST_QPN', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 2);
  postSrdSend(a, ahs[0][1], { qpn: 999, qkey: SIM_QKEY }, 1, patternPayload(1, 100));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  t.equal(logA.sends[0].status, EfaStatus.REMOTE_ERROR_BAD_DEST_QPN, 'REMOTE_ERROR_BAD_DEST_QPN (9)');
  t.equal(EfaStatus.REMOTE_ERROR_BAD_DEST_QPN, 9);
  t.equal(b.dev.stats.rx_drop_unknown_qpn, 1, 'the receiver counted rx_drop_unknown_qpn');
  t.ok(logA.sends[0].t < 1, 'at once, on the NAK');
  postSrdSend(a, ahs[0][1], b, 2, patternPayload(2, 100));
  sim.runUntil(() => logA.sends.length === 2, 1000);
  t.equal(logA.sends[1].status, EfaStatus.SUCCESS, 'the next send, to the right QPN, succeeds');
  t.equal(logB.recvs.length, 1, 'and is the only delivery');
});

t.test('REMOTE_ERROR_BAD_DEST_QPN survives a lost NAK: never SUCCESS', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  let naks = 0;
  sim.intercept = (p) => !(p.info.type === PacketType.SRD_NAK && naks++ === 0);
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 2);
  postSrdSend(a, ahs[0][1], { qpn: 999, qkey: SIM_QKEY }, 1, patternPayload(1, 100));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  t.equal(naks, 2, 'two NAKs were sent, the first lost');
  t.equal(dataSends(sim, 1, 2).length, 2, 'the message was resent after its RTO');
  t.equal(logA.sends[0].status, EfaStatus.REMOTE_ERROR_BAD_DEST_QPN, 'the resend got the same answer');
  sim.drain(sim.now + 1000);
  t.equal(logA.sends.length, 1, 'one completion only');
  t.equal(logB.recvs.length, 0, 'nothing delivered');
});

t.test('REMOTE_ERROR_BAD_DEST_QPN survives a lost NAK behind later packets (fast retransmit)', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  let naks = 0;
  sim.intercept = (p) => !(p.info.type === PacketType.SRD_NAK && naks++ === 0);
  const [logA, logB] = watchEnds(sim, [a, b], 256);
  postRecvs(b, 8, 256);
  postSrdSend(a, ahs[0][1], { qpn: 999, qkey: SIM_QKEY }, 100, patternPayload(1, 100));
  for (let j = 0; j < 6; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100));
  sim.runUntil(() => logA.sends.length === 7, 1000);
  t.equal(logA.sends.find((w) => w.wrId === 100)?.status, EfaStatus.REMOTE_ERROR_BAD_DEST_QPN, 'BAD_DEST_QPN, not SUCCESS');
  t.ok(logA.sends.filter((w) => w.wrId !== 100).every((w) => w.status === EfaStatus.SUCCESS), 'the others SUCCESS');
  t.equal(logB.recvs.length, 6, 'six delivered');
});

t.test('a QKey mismatch is refused like a wrong QPN, never delivered', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 1);
  postSrdSend(a, ahs[0][1], { qpn: b.qp.qpNum, qkey: 0x1234 }, 1, patternPayload(1, 100));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  t.equal(logA.sends[0].status, EfaStatus.REMOTE_ERROR_BAD_DEST_QPN, 'REMOTE_ERROR_BAD_DEST_QPN');
  t.equal(b.dev.stats.rx_drop_qkey_mismatch, 1, 'rx_drop_qkey_mismatch 1');
  t.equal(logB.recvs.length, 0, 'nothing delivered');
});

t.test('completions report the opcode, the QPs, the length and the immediate data', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 1);
  postSrdSend(a, ahs[0][1], b, 42, patternPayload(1, 333), { immData: 0xdeadbeef });
  sim.runUntil(() => logA.sends.length === 1, 1000);
  t.match(logA.sends[0], { wrId: 42, status: EfaStatus.SUCCESS, opcode: WcOpcode.SEND, byteLen: 333, qpNum: a.qp.qpNum });
  t.match(logB.recvs[0], { wrId: 0, status: EfaStatus.SUCCESS, opcode: WcOpcode.RECV, byteLen: 333, qpNum: b.qp.qpNum, srcQp: a.qp.qpNum, immData: 0xdeadbeef });
  t.equal(sentOfType(sim, 2, 1, PacketType.SRD_ACK).length, 1, 'one ack');
});
