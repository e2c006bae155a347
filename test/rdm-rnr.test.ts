/*
 * Receiver-not-ready at the RDM level. A receiver whose process stops reposting its few
 * receive buffers makes its device refuse packets; the sender's device gives up after its
 * retries and the endpoint queues the packet, backs the peer off, and resends. A short stall
 * costs only time: every message arrives intact. A stall longer than the endpoint's RNR
 * patience fails the operations waiting on that receiver with FI_ENORX (prov_errno 10,
 * REMOTE_ERROR_RNR), in bounded time, while other peers are served as usual.
 */
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { FI_ENORX } from '../src/rdm/fi-errno';
import { FI_ADDR_UNSPEC } from '../src/rdm/rdm-peer';
import { cqLogs, describeErr, pattern, pauseEndpoint, pollLogs } from './helpers/rdm-scenario';
import { rdmSim } from './helpers/rdm-sim';
import { PacketType } from '../src/wire/header';

/** A burst: eager and medium messages, and one long-CTS. */
const BURST = [...Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? 20_000 + i : 500 + i * 37)), 150_000];

t.test('a receiver stalled for a while under a burst: RNR, back-off, then everything arrives intact', async (t) => {
  const s = await rdmSim({ n: 2, seed: 21, perEp: (i) => (i === 1 ? { rxSize: 8 } : {}) });
  const [a, b] = s.eps;
  const logs = cqLogs(s);
  const bufs = BURST.map((len) => Buffer.alloc(len));
  // Tagged by index: resent packets arrive out of order, and each buffer is sized for one message.
  bufs.forEach((buf, i) => b.trecv(buf, FI_ADDR_UNSPEC, i, 0n, i));
  const stallMs = 300;
  pauseEndpoint(s, b, s.sim.now + stallMs);
  const start = s.sim.now;
  const posted = BURST.map((len, i) => a.tsend(pattern(i, len), s.addr[0][1], i, `s${i}`));
  t.same(posted, BURST.map(() => 0), 'the burst was posted');
  // While it is stalled, the sender sees RNR and backs off.
  t.ok(await s.run(() => (pollLogs(logs), a.stats.get('rnr_backoffs') > 0), stallMs - 10), 'the sender backed off within the stall');
  const done = await s.run(() => (pollLogs(logs), logs[1].ok.length + logs[1].errs.length === BURST.length && logs[0].ok.length + logs[0].errs.length === BURST.length), 10_000);
  t.ok(done, 'every send and receive completed');
  t.ok(s.sim.now - start >= stallMs, 'not before the receiver came back');
  t.same([...logs[0].errs, ...logs[1].errs].map(describeErr), [], 'no errors');
  t.ok(
    bufs.every((buf, i) => buf.equals(pattern(i, BURST[i]))),
    'every message intact',
  );
  const st = a.statsSnapshot();
  t.ok(st.rnr_packets > 0, `RNR packets: ${st.rnr_packets}`);
  t.ok(st.rnr_backoffs > 0, `back-offs: ${st.rnr_backoffs}`);
  t.ok(st.rnr_resent_ok > 0, `resent packets got through: ${st.rnr_resent_ok}`);
  await a.close();
  await b.close();
});

t.test('a receiver stalled beyond the RNR timeout: its operations fail with FI_ENORX in bounded time; another peer is unaffected', async (t) => {
  const rnrTimeoutMs = 300;
  const s = await rdmSim({ n: 3, seed: 22, rdm: { rnrTimeoutMs }, perEp: (i) => (i === 1 ? { rxSize: 8 } : {}) });
  const [a, b, c] = s.eps;
  const logs = cqLogs(s);
  // Reading B's CQ would progress it: only A's and C's are read.
  const poll = (): void => {
    logs[0].poll();
    logs[2].poll();
  };
  s.freeze(1);
  const start = s.sim.now;
  BURST.forEach((len, i) => a.send(pattern(i, len), s.addr[0][1], `b${i}`));
  // Meanwhile C gets its messages: the stalled peer's back-off holds back only its own packets.
  const cBufs = [100, 30_000, 200_000].map((len) => Buffer.alloc(len));
  cBufs.forEach((buf, i) => c.recv(buf, FI_ADDR_UNSPEC, `rc${i}`));
  cBufs.forEach((buf, i) => a.send(pattern(100 + i, buf.length), s.addr[0][2], `c${i}`));
  t.ok(await s.run(() => (poll(), logs[2].ok.length === 3), 2000), 'C received its messages while B was stalled');
  t.ok(cBufs.every((buf, i) => buf.equals(pattern(100 + i, buf.length))), "C's messages intact");
  const bound = 4 * rnrTimeoutMs + 500;
  const all = BURST.length + 3;
  const done = await s.run(() => (poll(), logs[0].ok.length + logs[0].errs.length === all), bound);
  t.ok(done, `every send to B completed by ${bound} ms (took ${(s.sim.now - start).toFixed(0)} ms)`);
  const toB = logs[0].errs.filter((e) => String(e.opContext).startsWith('b'));
  t.ok(toB.length > 0, `${toB.length} sends to B failed`);
  t.ok(
    toB.every((e) => e.err === FI_ENORX && e.provErrno === EfaStatus.REMOTE_ERROR_RNR),
    `all with FI_ENORX / REMOTE_ERROR_RNR (${toB.map(describeErr).slice(0, 3).join('; ')})`,
  );
  // A send B's device took into one of its 8 buffers before the stall blocked it is complete.
  const okToB = logs[0].ok.filter((e) => String(e.opContext).startsWith('b')).length;
  t.ok(okToB <= 8, `at most the receiver's 8 buffers' worth succeeded (${okToB})`);
  t.equal(logs[0].errs.filter((e) => String(e.opContext).startsWith('c')).length, 0, 'no send to C failed');
  t.ok(a.stats.get('rnr_packets') > 0, 'RNR was seen');
  t.equal(a.statsSnapshot().tx_ops_outstanding, 0, 'nothing left outstanding');
  await a.close();
  await b.close();
  await c.close();
});

t.test('a long-CTS send whose request the stalled receiver took waits on a CTS that never comes: it fails with FI_ENORX too', async (t) => {
  const rnrTimeoutMs = 300;
  const s = await rdmSim({ n: 2, seed: 23, rdm: { rnrTimeoutMs }, perEp: (i) => (i === 1 ? { rxSize: 8 } : {}) });
  const [a, b] = s.eps;
  const logA = cqLogs(s)[0];
  s.freeze(1);
  a.send(pattern(1, 150_000), s.addr[0][1], 'long');
  // The request lands in a free buffer of B's device; then A's liveness probes fill the rest
  // and are refused. A refused probe has no operation of its own: what waits on B fails.
  const done = await s.run(() => (logA.poll(), logA.errs.length + logA.ok.length > 0), 5000);
  t.ok(done, `the send completed (at ${s.sim.now.toFixed(0)} ms)`);
  t.equal(a.statsSnapshot().pkts_LONGCTS_MSGRTM, 1, 'one request, and no data (no CTS came)');
  t.equal(a.statsSnapshot().pkts_CTSDATA, 0, 'no data sent');
  t.equal(logA.errOf('long')?.err, FI_ENORX, 'FI_ENORX');
  t.equal(logA.errOf('long')?.provErrno, EfaStatus.REMOTE_ERROR_RNR, 'REMOTE_ERROR_RNR');
  t.ok(a.stats.get('probes_sent') > 0, 'it was probing B');
  await a.close();
  await b.close();
});

t.test('a long-read receive that finishes while RNR holds every packet slot still sends its EOR', async (t) => {
  // B has 4 packet slots; A takes 4 packets and then stalls, so B's next packets to A wait
  // in B's slots, refused, while B's RDMA read of A's long message finishes.
  const s = await rdmSim({ n: 2, seed: 24, perEp: (i) => (i === 0 ? { rxSize: 4 } : { txSize: 4 }) });
  const [a, b] = s.eps;
  const logs = cqLogs(s);
  b.recv(Buffer.alloc(8), FI_ADDR_UNSPEC, 'warm');
  a.send(Buffer.alloc(8), s.addr[0][1], 'warm-s');
  t.ok(await s.run(() => (pollLogs(logs), logs[1].has('warm') && logs[0].has('warm-s')), 1000), 'handshakes exchanged');
  // The read's data comes back slowly, so it ends after B's slots filled up. (20 ms more per
  // packet reads as a standing queue to A's delay-based congestion control, which then sends
  // the read's data one packet per round trip: the waits below allow for that.)
  s.sim.intercept = (p) => (p.from === 1 && p.info.type === PacketType.SRD_READ_RESP ? 20 : undefined);
  const len = (1 << 20) + 1000;
  const into = Buffer.alloc(len);
  b.recv(into, FI_ADDR_UNSPEC, 'long');
  a.send(pattern(1, len), s.addr[0][1], 'long-s');
  t.ok(await s.run(() => (pollLogs(logs), b.stats.get('rdma_reads') === 1), 1000), 'B is reading');
  pauseEndpoint(s, a, s.sim.now + 200);
  let queued = 0;
  const more = (): void => {
    while (queued < 12 && b.send(pattern(100 + queued, 100), s.addr[1][0], `b${queued}`) === 0) queued++;
  };
  more();
  t.ok(await s.run(() => (logs[1].poll(), more(), logs[1].has('long')), 5000), 'the long-read receive completed');
  t.ok(b.stats.get('rnr_packets') > 0, "meanwhile B's packets to A were refused");
  t.ok(await s.run(() => (pollLogs(logs), more(), logs[0].has('long-s')), 5000), "A's long-read send completed: the EOR reached it");
  t.ok(logs[0].okOf('long-s') !== undefined && into.equals(pattern(1, len)), 'successfully, the data intact');
  t.equal(b.statsSnapshot().pkts_EOR, 1, 'one EOR');
  await a.close();
  await b.close();
});
