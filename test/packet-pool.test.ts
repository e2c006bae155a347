// Send buffers on the hot path are reused once the transport lets go of them: acks and NAKs of
// a long SRD stream, and UD sends, make buffers only while the number in flight grows.
import t from 'tap';
import { PacketPool } from '../src/common/packet-pool';
import type { PacketPool as Pool } from '../src/common/packet-pool';
import { patternPayload, postRecvs, postSrdSend, srdSim, watchEnds } from './helpers/sim-network';
import { poll, postRecv, sendBytes, udPair } from './helpers/memory-fabric';

t.test('a buffer given back is the next one taken; beyond max, returns are dropped', async (t) => {
  const pool = new PacketPool(80, 2);
  const a = pool.take();
  const b = pool.take();
  const c = pool.take();
  t.equal(a.buf.length, 80, 'buffers of the pool size');
  t.equal(pool.created, 3, 'three made while none came back');
  a.release();
  t.equal(pool.take(), a, 'the returned one is reused');
  a.release();
  b.release();
  c.release();
  pool.take();
  pool.take();
  t.equal(pool.created, 3, 'two kept for reuse');
  t.not(pool.take(), c, 'the third return went beyond max and was dropped');
  t.equal(pool.created, 4);
});

t.test('acks of a 5,000-message SRD stream come from a handful of buffers', async (t) => {
  const s = await srdSim({ faults: 'delay=50us,loss=1%', a: { maxSendWr: 512 }, b: { bufSize: 512 * 256, maxRecvWr: 512 } });
  const { sim, ends, ahs } = s;
  const [a, b] = ends;
  const [logA, logB] = watchEnds(sim, [a, b], 256);
  postRecvs(b, 512, 256);
  let posted = 0;
  let reposted = 0;
  const pump = (): void => {
    while (reposted < logB.recvs.length) postRecvs(b, 1, 256, logB.recvs[reposted++].wrId % 512);
    while (posted < 5000 && posted - logA.sends.length < 256) {
      postSrdSend(a, ahs[0][1], b, posted, patternPayload(posted, 64), { immData: posted, addr: 64 * (posted % 256) });
      posted++;
    }
  };
  const prev = sim.afterEvent;
  sim.afterEvent = (node) => {
    prev?.(node);
    pump();
  };
  pump();
  sim.runUntil(() => logA.sends.length === 5000, 60_000);
  t.equal(logA.sends.length, 5000, 'every send completed');
  const acks = b.dev.stats.acks_sent;
  const pool = (b.dev.srd.responder as unknown as { ackPool: Pool }).ackPool;
  t.ok(acks > 200, `${acks} acks sent`);
  t.ok(pool.created <= 8, `from ${pool.created} buffers`);
});

t.test('UD sends reuse their buffers once the transport let go of them', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  for (let i = 0; i < 500; i++) {
    postRecv(b, i % 16, 0, 1000);
    sendBytes(a, ahAtoB, b, i, Buffer.from(`message ${i}`));
    poll(a.dev, a.sendCq);
    fabric.deliverAll();
    poll(b.dev, b.recvCq);
  }
  const pool = (a.dev as unknown as { udPool: Pool }).udPool;
  t.ok(pool.created <= 2, `500 UD sends from ${pool.created} buffer(s)`);
});
