// No head-of-line blocking behind a lost message: every copy of one message is lost for a
// while, and 10,000 later messages to the same peer flow past it meanwhile, their PSNs
// running thousands beyond the stuck one. The receiver reports those deliveries however far
// above its cumulative point they are (acks anchor their selective map where the news is), so
// the sender neither stalls nor resends what arrived; the stuck message gets through once
// its copies stop being lost, delivered once.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { PacketType } from '../src/wire/header';
import { patternPayload, postRecvs, postSrdSend, srdSim, watchEnds } from './helpers/sim-network';

const SRD = { unresponsiveTimeoutMs: 1000, initialRtoMs: 5, minRtoMs: 1, maxRtoMs: 20 };
const N = 10_000;
const SLOT = 256;
const DEPTH = 128;
const STUCK = 5;
const LOST_UNTIL = 400;

t.test('10,000 messages flow past one whose every copy is lost, and it arrives afterwards', async (t) => {
  const { sim, ends, ahs } = await srdSim({ srd: SRD, faults: { delayMs: 0.5 }, b: { bufSize: DEPTH * SLOT, maxRecvWr: DEPTH } });
  const [a, b] = ends;
  let lostCopies = 0;
  sim.intercept = (p) => {
    if (p.from === 1 && p.info.type === PacketType.SRD_DATA && p.info.imm === STUCK && sim.now < LOST_UNTIL) {
      lostCopies++;
      return false;
    }
    return true;
  };
  const [logA, logB] = watchEnds(sim, [a, b], SLOT);
  postRecvs(b, DEPTH, SLOT);
  let posted = 0;
  let reposted = 0;
  const pump = (): void => {
    while (reposted < logB.recvs.length) postRecvs(b, 1, SLOT, logB.recvs[reposted++].wrId);
    // The stuck message holds one of the DEPTH send slots the whole time.
    while (posted < N + 1 && posted - logA.sends.length < DEPTH) {
      postSrdSend(a, ahs[0][1], b, posted, patternPayload(posted, 32), { immData: posted, addr: 32 * (posted % (2 * DEPTH)) });
      posted++;
    }
  };
  sim.afterEvent = ((prev) => (node) => {
    prev?.(node);
    pump();
  })(sim.afterEvent);
  pump();
  sim.runUntil(() => logA.sends.length === N, LOST_UNTIL);
  t.equal(logA.sends.length, N, `${N} sends completed while message ${STUCK} was still being lost (t=${sim.now.toFixed(1)} ms)`);
  t.notOk(logA.sends.some((w) => w.wrId === STUCK), `message ${STUCK} is not among them`);
  t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'all SUCCESS');
  t.ok(sim.now < LOST_UNTIL / 2, 'at the pace of a stream with nothing lost (a round trip per window)');
  t.ok(lostCopies >= 5, `every copy of message ${STUCK} was lost meanwhile (${lostCopies} copies)`);
  const retrans = a.dev.stats.retrans_pkts;
  t.ok(retrans - lostCopies < N / 50, `the others were hardly resent (${retrans} retransmissions in all; ${lostCopies} copies of the stuck message lost)`);

  sim.runUntil(() => logA.sends.length === N + 1, 10_000);
  const stuck = logA.sends.find((w) => w.wrId === STUCK);
  t.equal(stuck?.status, EfaStatus.SUCCESS, 'the stuck message completes SUCCESS once its copies get through');
  t.ok((stuck?.t ?? 0) >= LOST_UNTIL, 'after the losses ended');
  sim.drain(sim.now + 1000);
  t.equal(logB.recvs.length, N + 1, 'the receiver got every message');
  t.equal(new Set(logB.recvs.map((r) => r.immData)).size, N + 1, 'each exactly once');
  const at = logB.recvs.findIndex((r) => r.immData === STUCK);
  t.same(logB.payloads[at], patternPayload(STUCK, 32), 'intact');
  t.equal(a.dev.srd.outstanding, 0, 'nothing outstanding');
});
