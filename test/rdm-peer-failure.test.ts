/*
 * A peer that dies in the middle of a long message. Its process stops and its device becomes
 * unreachable; the survivor's operations on it end with an error completion (FI_ECONNABORTED
 * or FI_EHOSTUNREACH, prov_errno the unresponsive or unreachable status) in bounded time,
 * whichever side it was on: a sender waiting for a CTS or an EOR, or a receive waiting for
 * data it had already started to get (the endpoint probes the peers its operations wait on).
 * Operations with other peers go on as if nothing happened.
 */
import t, { type Test } from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { EfaProvErrno, FI_ECONNABORTED, FI_EHOSTUNREACH } from '../src/rdm/fi-errno';
import { FI_ADDR_UNSPEC } from '../src/rdm/rdm-peer';
import { PacketType } from '../src/wire/header';
import { CqLog, cqLogs, describeErr, pattern } from './helpers/rdm-scenario';
import { rdmSim, type RdmSim } from './helpers/rdm-sim';

/** Sizes of the protocols (long-read from 1 MiB). */
const LEN = { longcts: 900_000, longread: 2 << 20 } as const;
/** rdmSim's SRD gives up on a silent peer after 400 ms; probes go every 50 ms. */
const BOUND_MS = 1500;
const DEAD_PROV: number[] = [EfaProvErrno.ESTABLISHED_RECV_UNRESP, EfaProvErrno.UNESTABLISHED_RECV_UNRESP, EfaStatus.LOCAL_ERROR_UNRESP_REMOTE, EfaStatus.LOCAL_ERROR_UNREACH_REMOTE];

/** Endpoint `i` dies: its progress stops and its device is cut off from everyone. */
function kill(s: RdmSim, i: number): void {
  s.freeze(i);
  s.sim.partitionDevice(i + 1, s.sim.now, s.sim.now + 1e7);
}

async function setup(seed: number) {
  // Two packets' worth per CTS: a long-CTS message takes many round trips.
  const s = await rdmSim({ n: 3, seed, rdm: { ctsCredits: 2 } });
  const logs = cqLogs(s);
  // Warm up every pair (handshakes exchanged), so the failures below are mid-message ones.
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      if (i === j) continue;
      s.eps[j].recv(Buffer.alloc(8), s.addr[j][i], `warm${i}${j}`);
      s.eps[i].send(Buffer.alloc(8), s.addr[i][j], `warm${i}${j}s`);
    }
  }
  await s.run(() => (logs.forEach((l) => l.poll()), logs.every((l) => l.ok.length === 4)), 2000);
  return { s, logs };
}

/** While `dead` is dead: the two survivors exchange a long and a medium message both ways. */
function unrelated(s: RdmSim, x: number, y: number) {
  const msgs = [
    { from: x, to: y, len: 300_000 },
    { from: y, to: x, len: 40_000 },
    { from: x, to: y, len: LEN.longread },
  ].map((m, k) => ({ ...m, buf: Buffer.alloc(m.len), data: pattern(500 + k, m.len), ctx: `u${k}` }));
  for (const m of msgs) {
    s.eps[m.to].recv(m.buf, s.addr[m.to][m.from], m.ctx);
    s.eps[m.from].send(m.data, s.addr[m.from][m.to], `${m.ctx}s`);
  }
  return msgs;
}

function checkDeadError(t: Test, e: ReturnType<CqLog['errOf']>, what: string): void {
  t.ok(e !== undefined, `${what}: an error completion`);
  if (e === undefined) return;
  t.ok(e.err === FI_ECONNABORTED || e.err === FI_EHOSTUNREACH, `${what}: ${describeErr(e)}`);
  t.ok(DEAD_PROV.includes(e.provErrno), `${what}: prov_errno ${e.provErrno} is an unresponsive/unreachable one`);
}

for (const proto of ['longcts', 'longread'] as const) {
  t.test(`the receiver dies mid ${proto}: the send fails in bounded time; the other peer is unaffected`, async (t) => {
    const { s, logs } = await setup(proto === 'longcts' ? 41 : 42);
    const [a, b] = s.eps;
    const into = Buffer.alloc(LEN[proto]);
    b.recv(into, FI_ADDR_UNSPEC, 'r');
    a.send(pattern(1, LEN[proto]), s.addr[0][1], 'long');
    // Mid-message: long-CTS after a few CTS rounds, long-read once B's RDMA read is under way.
    const mid = proto === 'longcts' ? () => b.statsSnapshot().pkts_CTS >= 3 : () => b.stats.get('rdma_reads') === 1;
    t.ok(await s.run(() => (logs[0].poll(), logs[1].poll(), mid()), 2000), `the ${proto} transfer is under way`);
    t.equal(b.stats.rxMessages(proto), 1, `as ${proto}`);
    t.equal(logs[0].has('long') || logs[1].has('r'), false, 'nothing completed yet');
    kill(s, 1);
    const diedAt = s.sim.now;
    const other = unrelated(s, 0, 2);
    const poll = (): void => {
      logs[0].poll();
      logs[2].poll();
    };
    t.ok(await s.run(() => (poll(), logs[0].has('long')), BOUND_MS), `the send completed within ${BOUND_MS} ms (${(s.sim.now - diedAt).toFixed(0)} ms)`);
    checkDeadError(t, logs[0].errOf('long'), 'the send to the dead receiver');
    t.ok(await s.run(() => (poll(), other.every((m) => logs[m.to].has(m.ctx) && logs[m.from].has(`${m.ctx}s`))), 5000), 'the survivors’ messages completed');
    t.same([...logs[0].errs, ...logs[2].errs].filter((e) => e.opContext !== 'long').map(describeErr), [], 'without errors');
    t.ok(other.every((m) => m.buf.equals(m.data)), 'intact');
    t.ok(a.stats.get('peers_failed') >= 1, 'the dead peer was counted');
    await a.close();
    await s.eps[2].close();
  });

  t.test(`the sender dies mid ${proto}: the matched receive fails in bounded time, not hangs`, async (t) => {
    const { s, logs } = await setup(proto === 'longcts' ? 43 : 44);
    const [a, b] = s.eps;
    const into = Buffer.alloc(LEN[proto]);
    b.recv(into, FI_ADDR_UNSPEC, 'r');
    a.send(pattern(2, LEN[proto]), s.addr[0][1], 'long');
    const mid = proto === 'longcts' ? () => b.statsSnapshot().pkts_CTS >= 3 : () => b.stats.get('rdma_reads') === 1;
    t.ok(await s.run(() => (logs[0].poll(), logs[1].poll(), mid()), 2000), `the ${proto} transfer is under way`);
    t.equal(logs[1].has('r'), false, 'the receive has not completed');
    kill(s, 0);
    const diedAt = s.sim.now;
    const other = unrelated(s, 1, 2);
    const poll = (): void => {
      logs[1].poll();
      logs[2].poll();
    };
    t.ok(await s.run(() => (poll(), logs[1].has('r')), BOUND_MS), `the receive completed within ${BOUND_MS} ms (${(s.sim.now - diedAt).toFixed(0)} ms)`);
    checkDeadError(t, logs[1].errOf('r'), 'the receive from the dead sender');
    t.equal(logs[1].errOf('r')?.srcAddr, s.addr[1][0], 'the error names the sender');
    t.ok(await s.run(() => (poll(), other.every((m) => logs[m.to].has(m.ctx) && logs[m.from].has(`${m.ctx}s`))), 5000), 'the survivors’ messages completed');
    t.same([...logs[1].errs, ...logs[2].errs].filter((e) => e.opContext !== 'r').map(describeErr), [], 'without errors');
    t.ok(other.every((m) => m.buf.equals(m.data)), 'intact');
    t.equal(b.statsSnapshot().rx_posted, 0, 'nothing left posted');
    await b.close();
    await s.eps[2].close();
  });
}

t.test('the sender dies after the first segment of a medium message: the receive it matched fails', async (t) => {
  const { s, logs } = await setup(45);
  const [a, b] = s.eps;
  const len = 60_000;
  // A's first data packet gets through; nothing after it does (the process died right then).
  let first = true;
  s.sim.intercept = (p) => {
    if (p.from !== 1 || p.info.type !== PacketType.SRD_DATA) return undefined;
    if (first) {
      first = false;
      return undefined;
    }
    return false;
  };
  const into = Buffer.alloc(len);
  b.recv(into, FI_ADDR_UNSPEC, 'r');
  a.send(pattern(3, len), s.addr[0][1], 'm');
  t.ok(await s.run(() => (logs[1].poll(), b.stats.rxMessages('medium') === 1), 1000), 'the first segment matched the receive');
  kill(s, 0);
  const diedAt = s.sim.now;
  t.ok(await s.run(() => (logs[1].poll(), logs[1].has('r')), BOUND_MS), `the receive completed within ${BOUND_MS} ms (${(s.sim.now - diedAt).toFixed(0)} ms)`);
  checkDeadError(t, logs[1].errOf('r'), 'the partial medium receive');
  t.ok((logs[1].errOf('r')?.len ?? 0) < len, 'it reports only what arrived');
  await b.close();
  await s.eps[2].close();
});

t.test('a destroyed device: the survivor’s long-CTS receive fails and its sends to it fail', async (t) => {
  const { s, logs } = await setup(46);
  const [a, b] = s.eps;
  const into = Buffer.alloc(LEN.longcts);
  b.recv(into, FI_ADDR_UNSPEC, 'r');
  a.send(pattern(4, LEN.longcts), s.addr[0][1], 'long');
  t.ok(await s.run(() => (logs[0].poll(), logs[1].poll(), b.statsSnapshot().pkts_CTS >= 2), 2000), 'under way');
  s.freeze(0);
  s.sim.node(1).device.destroyAll();
  b.send(pattern(5, 1000), s.addr[1][0], 'to-dead');
  t.ok(await s.run(() => (logs[1].poll(), logs[1].has('r') && logs[1].has('to-dead')), BOUND_MS), 'both completed in bounded time');
  checkDeadError(t, logs[1].errOf('r'), 'the receive');
  checkDeadError(t, logs[1].errOf('to-dead'), 'the send to the destroyed device');
  await b.close();
  await s.eps[2].close();
});
