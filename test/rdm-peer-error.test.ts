/*
 * PEER_ERROR: when one side gives up on an operation while its peer is alive but stalled (RNR
 * past the endpoint's patience), the peer's side would otherwise wait for ever: a receive
 * matched to a long-CTS request waits for data that will not come, and ordered receives wait
 * for a message id that will never arrive. The side that gave up tells the peer, which ends its
 * side too, once it takes packets again.
 */
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { FI_ENORX } from '../src/rdm/fi-errno';
import { FI_ADDR_UNSPEC } from '../src/rdm/rdm-peer';
import { cqLogs, pattern, pauseEndpoint } from './helpers/rdm-scenario';
import { rdmSim } from './helpers/rdm-sim';

const RNR_TIMEOUT_MS = 300;
/** Long enough that the sender's patience runs out well before the receiver resumes. */
const PAUSE_MS = 4000;

t.test('a receive matched to a long-CTS request the sender gave up on ends with the sender\'s error', async (t) => {
  const s = await rdmSim({ n: 2, seed: 31, rdm: { rnrTimeoutMs: RNR_TIMEOUT_MS }, perEp: (i) => (i === 1 ? { rxSize: 8 } : {}) });
  const [a, b] = s.eps;
  const [logA, logB] = cqLogs(s);
  // Let the handshake happen first: PEER_ERROR goes only to a peer that announced it.
  b.recv(Buffer.alloc(8), FI_ADDR_UNSPEC, 'warm-rx');
  a.send(Buffer.alloc(8), s.addr[0][1], 'warm');
  t.ok(await s.run(() => (logA.poll(), logB.poll(), logA.has('warm') && logB.has('warm-rx') && a.statsSnapshot().handshakes_received > 0), 1000), 'warm-up done');
  b.recv(Buffer.alloc(150_000), FI_ADDR_UNSPEC, 'long-rx');
  const resumeAt = s.sim.now + PAUSE_MS;
  pauseEndpoint(s, b, resumeAt);
  a.send(pattern(1, 150_000), s.addr[0][1], 'long');
  t.ok(await s.run(() => (logA.poll(), logA.has('long')), PAUSE_MS - 500), 'the send ended');
  t.equal(logA.errOf('long')?.err, FI_ENORX, 'with FI_ENORX: the receiver took no CTS-less data, nor answered');
  t.ok(s.sim.now < resumeAt, 'before the receiver resumed');
  // The receiver resumes, takes the request (its device had a buffer for it), matches it and
  // would wait for data for ever; the sender's PEER_ERROR ends it.
  const ended = await s.run(() => (logB.poll(), logB.has('long-rx')), 5000);
  t.ok(ended, `the matched receive ended (at ${s.sim.now.toFixed(0)} ms)`);
  const e = logB.errOf('long-rx');
  t.equal(e?.err, FI_ENORX, 'with the error the sender had');
  t.equal(e?.provErrno, EfaStatus.REMOTE_ERROR_RNR, 'prov_errno REMOTE_ERROR_RNR');
  t.ok(a.stats.get('peer_errors_sent') >= 1 && b.stats.get('peer_errors_received') >= 1, 'a PEER_ERROR went from A to B');
  // And the pair works on.
  const next = Buffer.alloc(100_000);
  b.recv(next, FI_ADDR_UNSPEC, 'next-rx');
  a.send(pattern(2, 100_000), s.addr[0][1], 'next');
  t.ok(await s.run(() => (logA.poll(), logB.poll(), logA.has('next') && logB.has('next-rx')), 3000), 'the next long message went through');
  t.ok(next.equals(pattern(2, 100_000)), 'intact');
  await a.close();
  await b.close();
});

t.test('ordered receives skip the message ids the sender gave up on', async (t) => {
  const s = await rdmSim({ n: 2, seed: 32, rdm: { rnrTimeoutMs: RNR_TIMEOUT_MS, ordered: true }, perEp: (i) => (i === 1 ? { rxSize: 8 } : {}) });
  const [a, b] = s.eps;
  const [logA, logB] = cqLogs(s);
  b.recv(Buffer.alloc(8), FI_ADDR_UNSPEC, 'warm-rx');
  a.send(Buffer.alloc(8), s.addr[0][1], 'warm');
  t.ok(await s.run(() => (logA.poll(), logB.poll(), logA.has('warm') && logB.has('warm-rx') && a.statsSnapshot().handshakes_received > 0), 1000), 'warm-up done');
  const resumeAt = s.sim.now + PAUSE_MS;
  pauseEndpoint(s, b, resumeAt);
  const burst = 20;
  for (let i = 0; i < burst; i++) a.send(pattern(10 + i, 200 + i), s.addr[0][1], `m${i}`);
  t.ok(await s.run(() => (logA.poll(), logA.ok.length + logA.errs.length === burst + 1), PAUSE_MS - 500), 'every send of the burst ended, before the receiver resumed');
  const failed = logA.errs.length;
  t.ok(failed > 0 && failed < burst, `some sends failed (${failed}), some got into the receiver's buffers`);
  t.ok(await s.run(() => s.sim.now >= resumeAt, PAUSE_MS), 'the receiver resumed');
  // The receiver posts receives for the survivors and two more messages: all complete, in order.
  const survivors = burst - failed;
  const bufs = Array.from({ length: survivors + 2 }, () => Buffer.alloc(512));
  bufs.forEach((buf, i) => b.recv(buf, FI_ADDR_UNSPEC, `r${i}`));
  a.send(pattern(100, 300), s.addr[0][1], 'after0');
  a.send(pattern(101, 301), s.addr[0][1], 'after1');
  const all = await s.run(() => (logA.poll(), logB.poll(), logB.ok.length === 1 + survivors + 2), 5000);
  t.ok(all, `every receive completed (${logB.ok.length - 1} of ${survivors + 2})`);
  const lens = logB.ok.slice(1).map((e) => e.len);
  const sent = Array.from({ length: burst }, (_, i) => 200 + i).filter((_, i) => logA.okOf(`m${i}`) !== undefined);
  t.same(lens, [...sent, 300, 301], 'in send order, the failed ids skipped');
  await a.close();
  await b.close();
});
