// A bench-style stream over a lossy link: for each size from 64 B to a full 8 KiB packet,
// thousands of messages with 1% loss both ways (data and acks), the sender keeping a window
// of sends in flight and the receiver reposting each receive as it completes, fewer receives
// than sends in flight so RNR happens too. Every message must arrive exactly once and intact,
// every send complete SUCCESS, and the stream finish in bounded time.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { patternPayload, postRecvs, postSrdSend, srdSim, watchEnds } from './helpers/sim-network';

const SIZES = [64, 256, 1024, 4096, 8192];
const N = 4000;
const DEPTH = 64;
const IN_FLIGHT = 200;

for (const size of SIZES) {
  t.test(`${N} messages of ${size} B with loss=1%: all delivered once, all SUCCESS`, async (t) => {
    const { sim, ends, ahs } = await srdSim({
      seed: size,
      trace: false,
      faults: `loss=1%,delay=20us,jitter=10us,seed=${size}`,
      a: { maxSendWr: 512, bufSize: 2 * size * IN_FLIGHT + 64 },
      b: { bufSize: DEPTH * size, maxRecvWr: DEPTH },
    });
    const [a, b] = ends;
    const [logA, logB] = watchEnds(sim, [a, b], size);
    postRecvs(b, DEPTH, size);
    let posted = 0;
    let reposted = 0;
    sim.afterEvent = ((prev) => (node) => {
      prev?.(node);
      // Reposted a moment later, as an application does after reading the message.
      while (reposted < logB.recvs.length) {
        const slot = logB.recvs[reposted++].wrId;
        sim.after(0.05, () => postRecvs(b, 1, size, slot));
      }
      while (posted < N && posted - logA.sends.length < IN_FLIGHT) {
        postSrdSend(a, ahs[0][1], b, posted, patternPayload(posted, size), { immData: posted, addr: size * (posted % IN_FLIGHT) });
        posted++;
      }
    })(sim.afterEvent);
    sim.poll();
    const finished = sim.runUntil(() => logA.sends.length === N, 60_000);
    t.ok(finished, `the stream finished (t=${sim.now.toFixed(1)} ms virtual)`);
    t.ok(logA.sends.every((w) => w.status === EfaStatus.SUCCESS), 'every send SUCCESS');
    sim.drain(sim.now + 1000);
    t.equal(logB.recvs.length, N, 'every message delivered');
    t.equal(new Set(logB.recvs.map((r) => r.immData)).size, N, 'exactly once');
    let intact = 0;
    logB.recvs.forEach((r, i) => {
      if (logB.payloads[i].equals(patternPayload(r.immData, size))) intact++;
    });
    t.equal(intact, N, 'intact');
    const st = a.dev.stats;
    t.ok(st.retrans_pkts > 0, `losses were repaired (retrans_pkts ${st.retrans_pkts})`);
    t.ok(st.rnr_retries > 0, `receivers ran short and were waited for (rnr_retries ${st.rnr_retries})`);
    t.ok(st.retrans_pkts < N * 0.05, 'few packets sent twice: 1% loss costs about 1% resends, not a reordering storm');
    t.equal(a.dev.srd.outstanding, 0, 'nothing outstanding');
    if (process.env.DEBUG_STREAM) t.comment(JSON.stringify({ a: a.dev.statsSnapshot(), b: b.dev.statsSnapshot(), plan: sim.nodes.map((n) => n.plan.stats.toJSON()) }));
  });
}
