// SRD delivers a message to the application at most once, ever: duplicates made by the
// network, resends whose ack was lost, copies that arrive long after the receiver moved on
// are all dropped (rx_drop_duplicate); a corrupted packet is dropped (rx_drop_bad_checksum)
// and the message still arrives intact; a restarted sender (same GID, new session) is talked
// to from scratch and the late packets of its earlier session are dropped (rx_drop_stale).
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { PacketType, sealPacket, writeU32 } from '../src/wire/header';
import { OFF_PSN } from '../src/wire/srd-header';
import { MAX_PSN_SPAN } from '../src/srd/psn-ledger';
import {
  createSrdEnd,
  dataSends,
  patternPayload,
  postRecvs,
  postSrdSend,
  srdSim,
  watchEnds,
  type SimPacket,
} from './helpers/sim-network';

const SRD = { unresponsiveTimeoutMs: 500, maxRtoMs: 20, initialRtoMs: 5, minRtoMs: 1 };

t.test('packets the network duplicates are delivered once', async (t) => {
  // Every packet both ways twice, each copy 0.1..1.1 ms late; one data packet in four once more, 300 ms later.
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.6, jitterMs: 0.5, dup: 1 } });
  const [a, b] = ends;
  let n = 0;
  sim.intercept = (p) => {
    if (p.info.type === PacketType.SRD_DATA && n++ % 4 === 0) sim.replay(p, sim.now + 300);
    return true;
  };
  const [logA, logB] = watchEnds(sim, [a, b], 512);
  postRecvs(b, 20, 512);
  for (let j = 0; j < 20; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 200), { immData: j });
  sim.runUntil(() => logA.sends.length === 20, 10_000);
  sim.drain(sim.now + 10_000);
  t.ok(logA.sends.length === 20 && logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'every send SUCCESS, once');
  t.equal(logB.recvs.length, 20, 'twenty receives');
  t.equal(new Set(logB.recvs.map((r) => r.immData)).size, 20, 'of twenty different messages');
  logB.recvs.forEach((r, i) => t.same(logB.payloads[i], patternPayload(r.immData, 200), `message ${r.immData} intact`));
  t.ok(b.dev.stats.rx_drop_duplicate >= 20, `rx_drop_duplicate ${b.dev.stats.rx_drop_duplicate}`);
  t.ok(b.dev.stats.rx_drops >= b.dev.stats.rx_drop_duplicate, 'counted in rx_drops');
});

t.test('a resend whose ack was lost is not delivered again', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  // No ack gets through for the first 30 ms: the sender resends what was delivered.
  sim.partitionLink(2, 1, 0, 30, true);
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 5);
  for (let j = 0; j < 5; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100), { immData: j });
  sim.runUntil(() => logA.sends.length === 5, 10_000);
  sim.drain(sim.now + 1000);
  t.ok(a.dev.stats.retrans_pkts >= 1, `the sender resent (retrans_pkts ${a.dev.stats.retrans_pkts})`);
  t.equal(b.dev.stats.rx_drop_duplicate, a.dev.stats.retrans_pkts, `the receiver dropped every resend as a duplicate (rx_drop_duplicate ${b.dev.stats.rx_drop_duplicate})`);
  t.equal(logB.recvs.length, 5, 'each message delivered once');
  t.ok(logB.recvs.every((r) => r.t < 1), 'all of them on their first arrival');
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS && w.t >= 30), 'the sends complete SUCCESS once acks get through');
});

t.test('a copy arriving after the receive window moved far past it is still a duplicate', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 }, a: { bufSize: 128 * 1024 }, b: { bufSize: 128 * 1024 } });
  const [a, b] = ends;
  const early: SimPacket[] = [];
  sim.intercept = (p) => {
    if (p.info.type === PacketType.SRD_DATA && p.info.psn < 3) early.push(p);
    return true;
  };
  const [logA, logB] = watchEnds(sim, [a, b], 64);
  const N = 600; // more than twice the receiver's 256-PSN window
  let posted = 0;
  let reposted = 0;
  postRecvs(b, 200, 64);
  sim.afterEvent = ((prev) => (node) => {
    prev?.(node);
    while (reposted < logB.recvs.length) postRecvs(b, 1, 64, logB.recvs[reposted++].wrId);
    while (posted < N && posted - logA.sends.length < 100) {
      postSrdSend(a, ahs[0][1], b, posted, patternPayload(posted, 16), { immData: posted });
      posted++;
    }
  })(sim.afterEvent);
  sim.poll();
  sim.runUntil(() => logA.sends.length === N, 100_000);
  t.equal(logB.recvs.length, N, `${N} messages delivered`);
  const dupsBefore = b.dev.stats.rx_drop_duplicate;
  for (const p of early) sim.replay(p, sim.now + 1);
  sim.drain(sim.now + 1000);
  t.equal(logB.recvs.length, N, 'the old copies of PSN 0..2 were not delivered again');
  t.equal(b.dev.stats.rx_drop_duplicate - dupsBefore, early.length, 'they were counted as duplicates');
  t.equal(logA.sends.filter((w) => w.status === EfaStatus.SUCCESS).length, N, 'every send SUCCESS');
});

t.test('a corrupted data packet is dropped and the message arrives intact by retransmission', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  let hit = false;
  sim.intercept = (p) => {
    if (!hit && p.info.type === PacketType.SRD_DATA) {
      hit = true;
      p.buf[p.buf.length - 10] ^= 0x04; // a payload bit
    }
    return true;
  };
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 1);
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 1000));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  t.equal(b.dev.stats.rx_drop_bad_checksum, 1, 'rx_drop_bad_checksum 1');
  t.equal(dataSends(sim, 1, 2).length, 2, 'resent once');
  t.equal(logA.sends[0].status, EfaStatus.SUCCESS, 'SUCCESS');
  t.equal(logB.recvs.length, 1, 'delivered once');
  t.same(logB.payloads[0], patternPayload(1, 1000), 'intact');
});

t.test('a corrupted ack is dropped; the resend gets a fresh one', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  let hit = false;
  sim.intercept = (p) => {
    if (!hit && p.info.type === PacketType.SRD_ACK) {
      hit = true;
      p.buf[45] ^= 0x01; // cum_ack
    }
    return true;
  };
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 1);
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 100));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  t.equal(a.dev.stats.rx_drop_bad_checksum, 1, 'the sender dropped the bad ack');
  t.equal(logA.sends[0].status, EfaStatus.SUCCESS, 'SUCCESS after the resend');
  t.equal(logB.recvs.length, 1, 'delivered once');
  t.equal(b.dev.stats.rx_drop_duplicate, 1, 'the resend was a duplicate');
});

t.test('a restarted sender is talked to from scratch; late packets of its old session are stale', async (t) => {
  const { sim, nodes, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const old: SimPacket[] = [];
  sim.intercept = (p) => {
    if (p.from === 1 && p.info.type === PacketType.SRD_DATA) old.push(p);
    return true;
  };
  const logs = watchEnds(sim, [a, b]);
  const logB = logs[1];
  postRecvs(b, 8);
  for (let j = 0; j < 5; j++) postSrdSend(a, ahs[0][1], b, j, patternPayload(j, 100), { immData: j });
  sim.runUntil(() => logs[0].sends.length === 5, 1000);
  t.equal(logB.recvs.length, 5, 'five messages from the first incarnation');
  const oldSession = old[0].info.session;
  sim.intercept = null;

  // The process restarts: a new device with the same GID and endpoint, a new QP, a new session.
  const dev2 = sim.restartDevice(nodes[0]);
  const a2 = await createSrdEnd(dev2);
  t.equal(a2.qp.qpNum, a.qp.qpNum, 'the new QP even got the same number');
  const ah2 = await dev2.createAh(a2.pd, { gid: nodes[1].device.gidText });
  const [logA2] = watchEnds(sim, [a2]);
  for (let j = 0; j < 3; j++) postSrdSend(a2, ah2, b, 100 + j, patternPayload(100 + j, 100), { immData: 100 + j });
  sim.runUntil(() => logA2.sends.length === 3, 1000);
  t.ok(logA2.sends.every((w) => w.status === EfaStatus.SUCCESS), 'the new incarnation\'s sends succeed');
  t.same(
    logB.recvs.slice(5).map((r) => r.immData),
    [100, 101, 102],
    'and are delivered, though their PSNs 0..2 were used by the old session',
  );
  const newSession = dataSends(sim, 1, 2).at(-1)!.info.session;
  t.not(newSession, oldSession, 'with a new session id');
  t.equal(b.dev.stats.rx_drop_duplicate, 0, 'nothing was taken for a duplicate');

  // Packets of the old session arrive late.
  for (const p of old) sim.replay(p, sim.now + 1);
  sim.drain(sim.now + 1000);
  t.equal(b.dev.stats.rx_drop_stale, old.length, `its ${old.length} late packets were dropped as stale`);
  t.equal(logB.recvs.length, 8, 'none delivered');
  t.equal(logA2.sends.length, 3, 'no stray completion on the new incarnation');

  // And the new session keeps working after them.
  postSrdSend(a2, ah2, b, 103, patternPayload(103, 100), { immData: 103 });
  postRecvs(b, 1);
  sim.runUntil(() => logA2.sends.length === 4, sim.now + 1000);
  t.equal(logA2.sends[3]?.status, EfaStatus.SUCCESS, 'a later send succeeds');
});

t.test('a late packet of an old session the receiver never saw does not take over the current one', async (t) => {
  const { sim, nodes, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  // The first incarnation's only packet is held back by the network; the process restarts.
  const held: SimPacket[] = [];
  sim.intercept = (p) => {
    if (p.from === 1 && p.info.type === PacketType.SRD_DATA) {
      held.push(p);
      return false;
    }
    return true;
  };
  postRecvs(b, 8);
  postSrdSend(a, ahs[0][1], b, 0, patternPayload(0, 100), { immData: 0 });
  sim.runFor(1);
  sim.intercept = null;
  const dev2 = sim.restartDevice(nodes[0]);
  const a2 = await createSrdEnd(dev2);
  const ah2 = await dev2.createAh(a2.pd, { gid: nodes[1].device.gidText });
  const [logA2, logB] = watchEnds(sim, [a2, b]);
  postSrdSend(a2, ah2, b, 1, patternPayload(1, 100), { immData: 1 });
  sim.runUntil(() => logA2.sends.length === 1, 1000);
  t.equal(logA2.sends[0].status, EfaStatus.SUCCESS, 'the new incarnation talks to the receiver');

  // The old incarnation's packet finally arrives, then the new incarnation sends again.
  sim.replay(held[0], sim.now + 1);
  sim.runFor(5);
  for (let j = 2; j < 5; j++) postSrdSend(a2, ah2, b, j, patternPayload(j, 100), { immData: j });
  sim.runUntil(() => logA2.sends.length === 4, sim.now + 5000);
  t.same(
    logA2.sends.slice(1).map((w) => w.status),
    [EfaStatus.SUCCESS, EfaStatus.SUCCESS, EfaStatus.SUCCESS],
    'the current session still gets its messages through',
  );
  t.ok(b.dev.stats.rx_drop_stale <= 1, `the current session's packets are not dropped as stale, at most the late one is (rx_drop_stale ${b.dev.stats.rx_drop_stale})`);
  t.ok(
    logB.recvs.every((r) => r.immData !== 0 || r.t < logA2.sends[0].t),
    'the dead incarnation\'s message is not delivered after the new one took over',
  );
});

t.test('a restarted receiver does not get messages sent to its previous incarnation', async (t) => {
  const { sim, nodes, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  const [logA] = watchEnds(sim, [a]);
  postRecvs(b, 4);
  // b gets message 0 but its ack is lost, then b's process restarts before a resends.
  sim.partitionLink(2, 1, 0, Infinity, true);
  postSrdSend(a, ahs[0][1], b, 0, patternPayload(0, 100), { immData: 0 });
  sim.runFor(0.5);
  t.equal(b.dev.stats.recv_bytes, 100, 'the first incarnation got the message');
  sim.healAll();
  const dev2 = sim.restartDevice(nodes[1]);
  const b2 = await createSrdEnd(dev2);
  t.equal(b2.qp.qpNum, b.qp.qpNum, 'the new QP got the same number');
  const [logB2] = watchEnds(sim, [b2]);
  postRecvs(b2, 4);
  sim.runUntil(() => logA.sends.length === 1, 5000);
  sim.drain(sim.now + 1000);
  t.equal(logB2.recvs.length, 0, 'the resend of a message the old incarnation consumed is not delivered to the new QP');
});

t.test('a data packet far beyond the receive window is dropped and counted', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.1 } });
  const [a, b] = ends;
  let crafted: SimPacket | null = null;
  sim.intercept = (p) => {
    if (crafted === null && p.info.type === PacketType.SRD_DATA) {
      // A copy claiming a PSN further above the receiver's cumulative point than any sender goes.
      const buf = Buffer.from(p.buf);
      writeU32(buf, OFF_PSN, MAX_PSN_SPAN + 5);
      sealPacket(buf, buf.length);
      crafted = { ...p, buf };
    }
    return true;
  };
  const [logA, logB] = watchEnds(sim, [a, b]);
  postRecvs(b, 2);
  postSrdSend(a, ahs[0][1], b, 0, patternPayload(0, 100));
  sim.runUntil(() => logA.sends.length === 1, 1000);
  const drops = b.dev.stats.rx_drops;
  sim.replay(crafted!, sim.now + 1);
  sim.drain(sim.now + 100);
  t.equal(logB.recvs.length, 1, 'not delivered');
  t.equal(b.dev.stats.rx_drops, drops + 1, 'counted in rx_drops');
  t.equal(b.dev.stats.rx_drop_window, 1, 'under rx_drop_window');
  postSrdSend(a, ahs[0][1], b, 1, patternPayload(1, 100));
  sim.runUntil(() => logA.sends.length === 2, sim.now + 1000);
  t.equal(logA.sends[1].status, EfaStatus.SUCCESS, 'the session goes on unharmed');
});
