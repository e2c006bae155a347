/*
 * The RDM endpoint's receive matching, as libfabric defines it: tags compared except for the
 * ignored bits, a receive from FI_ADDR_UNSPEC or from one fi_addr (also a sender the receiver
 * inserts only after its message arrived), messages that arrive before their receive (for
 * every protocol), oldest-first on both the posted and the unexpected list, tagged and
 * untagged kept apart, truncation, cancel, and remote CQ data.
 */
import t from 'tap';
import { FI_ECANCELED, FI_ETRUNC } from '../src/rdm/fi-errno';
import { FI_MSG, FI_RECV, FI_REMOTE_CQ_DATA, FI_SEND, FI_TAGGED } from '../src/rdm/rdm-endpoint';
import { FI_ADDR_NOTAVAIL, FI_ADDR_UNSPEC } from '../src/rdm/rdm-peer';
import type { RdmProtocol } from '../src/rdm/rdm-wire';
import { addEndpoint, CqLog, cqLogs, describeErr, pattern, pollLogs } from './helpers/rdm-scenario';
import { rdmSim } from './helpers/rdm-sim';

const ALL = 0xffff_ffff_ffff_ffffn;
/** One size per protocol (long-read: at least readMinSize, both devices read). */
const SIZES: Array<[RdmProtocol, number]> = [
  ['eager', 700],
  ['medium', 30_001],
  ['longcts', 200_003],
  ['longread', (1 << 20) + 4097],
];

async function pair(seed = 1, n = 2) {
  const s = await rdmSim({ n, seed });
  const logs = cqLogs(s);
  const until = (pred: () => boolean, ms = 5000): Promise<boolean> =>
    s.run(() => {
      pollLogs(logs);
      return pred();
    }, ms);
  return { s, logs, until, close: async () => Promise.all(s.eps.map((e) => e.close())) };
}

t.test('tags match except where the receive ignores bits; ignoring every bit takes any tag', async (t) => {
  const { s, logs, until, close } = await pair(11);
  const [a, b] = s.eps;
  const to = s.addr[0][1];
  const r1 = Buffer.alloc(64);
  const r2 = Buffer.alloc(64);
  const r3 = Buffer.alloc(64);
  // r1 wants 0x12?? (low byte ignored), r2 anything whose bit 40 is set, r3 any tag at all.
  b.trecv(r1, FI_ADDR_UNSPEC, 0x1200n, 0xffn, 'r1');
  b.trecv(r2, FI_ADDR_UNSPEC, 1n << 40n, ~(1n << 40n) & ALL, 'r2');
  // 0x13ab differs in a bit r1 compares, and has no bit 40: only the wildcard takes it.
  a.tsend(pattern(1, 10), to, 0x13abn, 's1');
  t.ok(await until(() => logs[1].ok.length > 0 || b.statsSnapshot().unexpected_queued === 1), 'the first message arrived');
  t.equal(logs[1].ok.length, 0, 'neither r1 nor r2 matched tag 0x13ab');
  t.equal(b.statsSnapshot().unexpected_queued, 1, 'it waits as unexpected');
  b.trecv(r3, FI_ADDR_UNSPEC, 0n, ALL, 'r3');
  a.tsend(pattern(2, 20), to, 0x12abn, 's2');
  a.tsend(pattern(3, 30), to, (1n << 40n) | 0x7777n, 's3');
  t.ok(await until(() => logs[1].ok.length === 3), 'three receives completed');
  t.same(logs[1].errs, [], 'no errors');
  const r3e = logs[1].okOf('r3');
  t.equal(r3e?.tag, 0x13abn, 'the all-ignoring receive took the unexpected message, and reports its tag');
  t.ok(r3.subarray(0, 10).equals(pattern(1, 10)), 'its payload');
  t.equal(logs[1].okOf('r1')?.tag, 0x12abn, 'r1 took 0x12ab (only ignored bits differ)');
  t.ok(r1.subarray(0, 20).equals(pattern(2, 20)), 'r1 payload');
  t.equal(logs[1].okOf('r2')?.tag, (1n << 40n) | 0x7777n, 'r2 took the tag with bit 40 (high half compared)');
  t.equal(logs[1].okOf('r2')?.flags, FI_RECV | FI_TAGGED, 'tagged receive flags');
  t.ok(await until(() => logs[0].ok.length === 3), 'sends completed');
  t.ok(logs[0].ok.every((e) => e.flags === (FI_SEND | FI_TAGGED)), 'tagged send flags');
  await close();
});

t.test('FI_ADDR_UNSPEC takes any sender; a directed receive only its own', async (t) => {
  const { s, logs, until, close } = await pair(12, 3);
  const [a, b, c] = s.eps;
  const fromA = s.addr[1][0];
  const fromC = s.addr[1][2];
  const dirC = Buffer.alloc(100);
  const any = Buffer.alloc(100);
  const dirA = Buffer.alloc(100);
  b.recv(dirC, fromC, 'dirC');
  a.send(pattern(10, 50), s.addr[0][1], 'a1');
  t.ok(await until(() => b.statsSnapshot().unexpected_queued === 1), "A's message does not match the receive directed at C");
  b.recv(any, FI_ADDR_UNSPEC, 'any');
  t.ok(await until(() => logs[1].has('any')), 'an FI_ADDR_UNSPEC receive takes it');
  t.equal(logs[1].okOf('any')?.srcAddr, fromA, "reported from A's fi_addr");
  t.ok(any.subarray(0, 50).equals(pattern(10, 50)), 'intact');
  c.send(pattern(11, 60), s.addr[2][1], 'c1');
  t.ok(await until(() => logs[1].has('dirC')), "C's message goes to the receive directed at C");
  t.equal(logs[1].okOf('dirC')?.srcAddr, fromC, "from C's fi_addr");
  t.ok(dirC.subarray(0, 60).equals(pattern(11, 60)), 'intact');
  // Directed tagged: same tag from both, each to its own receive.
  const tA = Buffer.alloc(8);
  const tC = Buffer.alloc(8);
  b.trecv(tC, fromC, 5n, 0n, 'tC');
  b.trecv(tA, fromA, 5n, 0n, 'tA');
  a.tsend(Buffer.from('from a!!'), s.addr[0][1], 5n, 'ta');
  c.tsend(Buffer.from('from c!!'), s.addr[2][1], 5n, 'tc');
  t.ok(await until(() => logs[1].has('tA') && logs[1].has('tC')), 'both tagged receives completed');
  t.equal(tA.toString(), 'from a!!', 'the receive directed at A got A’s message although C’s was posted first');
  t.equal(tC.toString(), 'from c!!', 'and C’s got C’s');
  b.recv(dirA, fromA, 'dirA');
  t.equal(logs[1].has('dirA'), false, 'nothing for a directed receive with nothing sent');
  t.equal(b.cancel('dirA'), true, 'cancelled');
  t.same(logs[1].errs, [], 'no errors before the cancel');
  await close();
});

t.test('a sender not in the AV: its messages report FI_ADDR_NOTAVAIL, and match a directed receive once inserted', async (t) => {
  const { s, logs, close } = await pair(13);
  const b = s.eps[1];
  const x = await addEndpoint(s);
  const xLog = new CqLog(x.cq);
  const xToB = await x.av.insert(b.getName());
  const both = (): void => {
    pollLogs(logs);
    xLog.poll();
  };
  const any = Buffer.alloc(32);
  b.recv(any, FI_ADDR_UNSPEC, 'any');
  x.send(pattern(20, 32), xToB, 'x1');
  t.ok(await s.run(() => (both(), logs[1].has('any')), 5000), "B received from X, which is not in B's AV");
  t.equal(logs[1].okOf('any')?.srcAddr, FI_ADDR_NOTAVAIL, 'reported as FI_ADDR_NOTAVAIL');
  t.ok(any.equals(pattern(20, 32)), 'intact');
  t.ok(b.stats.get('implicit_peers') >= 1, 'B learnt X from its raw address');
  // The long protocols too: B's CTS and RDMA read go to a peer it learnt from a packet, and
  // X's long-read waits for B's handshake, which X's own handshake asked for.
  const longs = [200_000, (1 << 20) + 3].map((n, i) => ({ n, buf: Buffer.alloc(n), ctx: `long${i}` }));
  for (const m of longs) b.trecv(m.buf, FI_ADDR_UNSPEC, m.n, 0n, m.ctx);
  for (const m of longs) x.tsend(pattern(m.n, m.n), xToB, m.n, `${m.ctx}s`);
  t.ok(await s.run(() => (both(), longs.every((m) => logs[1].has(m.ctx) && xLog.has(`${m.ctx}s`))), 5000), 'long-CTS and long-read from X completed');
  t.same([...logs[1].errs, ...xLog.errs].map(describeErr), [], 'without errors');
  t.ok(longs.every((m) => logs[1].okOf(m.ctx)?.srcAddr === FI_ADDR_NOTAVAIL && m.buf.equals(pattern(m.n, m.n))), 'intact, from FI_ADDR_NOTAVAIL');
  t.same([x.stats.txMessages('longcts'), x.stats.txMessages('longread')], [1, 1], 'one of each protocol');
  // A receive directed at A must not take X's next message; it waits as unexpected.
  const dirA = Buffer.alloc(40);
  b.recv(dirA, s.addr[1][0], 'dirA');
  x.tsend(pattern(21, 40), xToB, 9n, 'x2');
  x.send(pattern(22, 40), xToB, 'x3');
  t.ok(await s.run(() => (both(), b.statsSnapshot().unexpected_queued === 2), 5000), "X's next messages wait as unexpected");
  t.equal(logs[1].has('dirA'), false, "the receive directed at A did not take X's message");
  // Inserted after the messages arrived: a receive directed at the new fi_addr takes them.
  const bToX = await b.av.insert(x.getName());
  t.not(bToX, FI_ADDR_NOTAVAIL, 'X has an fi_addr now');
  const dirX = Buffer.alloc(40);
  const tagX = Buffer.alloc(40);
  b.recv(dirX, bToX, 'dirX');
  b.trecv(tagX, bToX, 9n, 0n, 'tagX');
  t.ok(await s.run(() => (both(), logs[1].has('dirX') && logs[1].has('tagX')), 5000), 'directed receives at the inserted address matched the unexpected messages');
  t.equal(logs[1].okOf('dirX')?.srcAddr, bToX, 'reported from the new fi_addr');
  t.equal(logs[1].okOf('tagX')?.srcAddr, bToX, 'tagged too');
  t.ok(dirX.equals(pattern(22, 40)), 'untagged intact');
  t.ok(tagX.equals(pattern(21, 40)), 'tagged intact');
  t.equal(logs[1].has('dirA'), false, 'the receive directed at A still waits');
  t.equal(b.cancel('dirA'), true, 'cancel it');
  logs[1].poll();
  t.same(logs[1].errs.map((e) => e.err), [FI_ECANCELED], 'only the cancel error');
  await x.close();
  await close();
});

for (const [proto, len] of SIZES) {
  t.test(`${proto}: a message sent before its receive is kept and delivered intact`, async (t) => {
    const { s, logs, until, close } = await pair(20 + len);
    const [a, b] = s.eps;
    const msg = pattern(len, len);
    const tmsg = pattern(len + 1, len);
    a.send(msg, s.addr[0][1], 'u');
    a.tsend(tmsg, s.addr[0][1], 77n, 't');
    t.ok(await until(() => b.statsSnapshot().unexpected_queued === 2), 'both arrived unexpected');
    // The long protocols wait for the receive to ask (CTS) or read: nothing completes yet.
    if (proto === 'longcts' || proto === 'longread') t.equal(logs[0].ok.length, 0, 'the sends wait for the receiver');
    const into = Buffer.alloc(len);
    const tinto = Buffer.alloc(len);
    b.trecv(tinto, FI_ADDR_UNSPEC, 77n, 0n, 'rt');
    b.recv(into, FI_ADDR_UNSPEC, 'ru');
    t.ok(await until(() => logs[1].ok.length === 2 && logs[0].ok.length === 2), 'receives and sends completed');
    t.same(logs[1].errs.concat(logs[0].errs).map(describeErr), [], 'no errors');
    t.ok(into.equals(msg), 'untagged intact');
    t.ok(tinto.equals(tmsg), 'tagged intact');
    t.equal(logs[1].okOf('ru')?.len, len, 'untagged length');
    t.equal(b.stats.rxMessages(proto), 2, `received as ${proto}`);
    t.equal(b.stats.get('unexpected_matched'), 2, 'counted as unexpected matches');
    t.equal(b.statsSnapshot().unexpected_queued, 0, 'none left');
    await close();
  });
}

t.test('medium: a receive posted while the message is still arriving takes the rest directly', async (t) => {
  const { s, logs, until, close } = await pair(31);
  const [a, b] = s.eps;
  const len = 60_000;
  const msg = pattern(5, len);
  a.send(msg, s.addr[0][1], 's');
  t.ok(await until(() => b.statsSnapshot().unexpected_queued === 1), 'the first segment arrived');
  t.equal(logs[0].ok.length, 0, 'not all of it yet (the sender has not completed)');
  const into = Buffer.alloc(len);
  b.recv(into, FI_ADDR_UNSPEC, 'r');
  t.ok(await until(() => logs[1].has('r')), 'received');
  t.ok(into.equals(msg), 'intact');
  await close();
});

t.test('posted receives match oldest first; unexpected messages are taken oldest first', async (t) => {
  const { s, logs, until, close } = await pair(32);
  const [a, b] = s.eps;
  const to = s.addr[0][1];
  const bufs = [0, 1, 2].map(() => Buffer.alloc(16));
  // Three receives every message can match: one tag exact, then two wildcards.
  b.trecv(bufs[0], FI_ADDR_UNSPEC, 0x40n, 0n, 'p0');
  b.trecv(bufs[1], FI_ADDR_UNSPEC, 0n, ALL, 'p1');
  b.trecv(bufs[2], FI_ADDR_UNSPEC, 0x40n, 0xffn, 'p2');
  const sendOne = async (tag: bigint, id: number): Promise<void> => {
    const before = logs[1].ok.length;
    a.tsend(pattern(id, 16), to, tag, `m${id}`);
    await until(() => logs[1].ok.length > before);
  };
  await sendOne(0x40n, 0);
  await sendOne(0x40n, 1);
  await sendOne(0x41n, 2);
  t.equal(logs[1].ok.map((e) => e.opContext).join(','), 'p0,p1,p2', 'each message went to the oldest receive that matched it');
  t.ok(bufs[1].equals(pattern(1, 16)), 'the second 0x40 skipped nothing: p0 was taken, p1 is next');
  // Unexpected: three messages arrive one after the other; receives take them in that order.
  for (const id of [10, 11, 12]) {
    a.send(pattern(id, 16), to, `u${id}`);
    await until(() => b.statsSnapshot().unexpected_queued === id - 9);
  }
  t.equal(b.statsSnapshot().unexpected_queued, 3, 'three unexpected');
  const got = [0, 1, 2].map(() => Buffer.alloc(16));
  for (const [i, g] of got.entries()) b.recv(g, FI_ADDR_UNSPEC, `q${i}`);
  t.ok(await until(() => logs[1].ok.length === 6), 'taken');
  t.same(got.map((g) => g.equals(pattern(10, 16)) ? 10 : g.equals(pattern(11, 16)) ? 11 : g.equals(pattern(12, 16)) ? 12 : -1), [10, 11, 12], 'in arrival order');
  t.same(logs[1].errs, [], 'no errors');
  await close();
});

t.test('tagged and untagged never match each other', async (t) => {
  const { s, logs, until, close } = await pair(33);
  const [a, b] = s.eps;
  const to = s.addr[0][1];
  const wild = Buffer.alloc(32);
  b.trecv(wild, FI_ADDR_UNSPEC, 0n, ALL, 'wild');
  a.send(pattern(1, 32), to, 'u');
  t.ok(await until(() => b.statsSnapshot().unexpected_queued === 1), 'an untagged message does not match a tagged receive, even one ignoring every bit');
  t.equal(logs[1].ok.length, 0, 'nothing completed');
  const plain = Buffer.alloc(32);
  b.recv(plain, FI_ADDR_UNSPEC, 'plain');
  a.tsend(pattern(2, 32), to, 3n, 't');
  t.ok(await until(() => logs[1].ok.length === 2), 'both received');
  t.equal(logs[1].okOf('plain')?.flags, FI_RECV | FI_MSG, 'the untagged receive: FI_MSG');
  t.ok(plain.equals(pattern(1, 32)), 'the untagged receive got the untagged message');
  t.equal(logs[1].okOf('wild')?.flags, FI_RECV | FI_TAGGED, 'the tagged receive: FI_TAGGED');
  t.ok(wild.equals(pattern(2, 32)), 'the tagged receive got the tagged message');
  // The other way: a tagged message never lands in a posted untagged receive.
  const plain2 = Buffer.alloc(32);
  b.recv(plain2, FI_ADDR_UNSPEC, 'plain2');
  a.tsend(pattern(3, 32), to, 0n, 't2');
  t.ok(await until(() => b.statsSnapshot().unexpected_queued === 1), 'a tagged message does not match an untagged receive');
  t.equal(logs[1].has('plain2'), false, 'the untagged receive still waits');
  b.cancel('plain2');
  await close();
});

for (const [proto, len] of SIZES) {
  for (const unexpected of [false, true]) {
    t.test(`${proto}${unexpected ? ' (unexpected)' : ''}: a message longer than the receive truncates (FI_ETRUNC), the buffer holds its start`, async (t) => {
      const { s, logs, until, close } = await pair(40 + len);
      const [a, b] = s.eps;
      const cap = proto === 'eager' ? 100 : proto === 'medium' ? 9000 : Math.floor(len / 3);
      const msg = pattern(len, len);
      // The receive is a window into a larger buffer: nothing may land past its end.
      const backing = Buffer.alloc(cap + 64, 0xee);
      const into = backing.subarray(0, cap);
      if (!unexpected) b.recv(into, FI_ADDR_UNSPEC, 'r');
      a.send(msg, s.addr[0][1], 's');
      if (unexpected) {
        t.ok(await until(() => b.statsSnapshot().unexpected_queued === 1), 'arrived unexpected');
        b.recv(into, FI_ADDR_UNSPEC, 'r');
      }
      t.ok(await until(() => logs[1].has('r') && logs[0].has('s')), 'the receive and the send completed');
      const e = logs[1].errOf('r');
      t.ok(e !== undefined, 'the receive completed with an error entry');
      t.equal(e?.err, FI_ETRUNC, 'FI_ETRUNC');
      t.equal(e?.len, cap, 'len is the capacity');
      t.equal(e?.olen, len - cap, 'olen is what did not fit');
      t.equal(e?.flags, FI_RECV | FI_MSG, 'receive flags');
      t.equal(e?.srcAddr, s.addr[1][0], 'from the sender');
      t.ok(into.equals(msg.subarray(0, cap)), 'the buffer holds the message up to its capacity');
      t.ok(backing.subarray(cap).every((x) => x === 0xee), 'nothing written past it');
      t.ok(logs[0].okOf('s') !== undefined, 'the send succeeded');
      t.equal(b.stats.rxMessages(proto), 1, `as ${proto}`);
      // The endpoint goes on: the next message fits.
      const next = Buffer.alloc(50);
      b.recv(next, FI_ADDR_UNSPEC, 'r2');
      a.send(pattern(9, 50), s.addr[0][1], 's2');
      t.ok(await until(() => logs[1].has('r2')), 'the next message arrived');
      t.ok(next.equals(pattern(9, 50)), 'intact');
      await close();
    });
  }
}

t.test('cancel: a posted receive completes with FI_ECANCELED; a matched one is not cancelled', async (t) => {
  const { s, logs, until, close } = await pair(50);
  const [a, b] = s.eps;
  const buf = Buffer.alloc(64);
  b.trecv(buf, FI_ADDR_UNSPEC, 1n, 0n, 'c1');
  t.equal(b.cancel('c1'), true, 'cancelled');
  t.equal(b.cancel('c1'), false, 'not twice');
  t.equal(b.cancel('nothing'), false, 'an unknown context: false');
  logs[1].poll();
  const e = logs[1].errOf('c1');
  t.equal(e?.err, FI_ECANCELED, 'FI_ECANCELED');
  t.equal(e?.flags, FI_RECV | FI_TAGGED, 'the receive flags');
  t.equal(e?.len, 0, 'nothing received');
  a.tsend(pattern(1, 64), s.addr[0][1], 1n, 's1');
  t.ok(await until(() => b.statsSnapshot().unexpected_queued === 1), 'the message no longer matches it');
  t.ok(buf.every((x) => x === 0), 'the cancelled buffer untouched');
  // A long-CTS receive, matched and in progress: cancel leaves it alone.
  const len = 300_000;
  const big = Buffer.alloc(len);
  b.recv(big, FI_ADDR_UNSPEC, 'long');
  a.send(pattern(2, len), s.addr[0][1], 's2');
  t.ok(await until(() => b.stats.rxMessages('longcts') === 1), 'the long message matched');
  t.equal(b.cancel('long'), false, 'a matched receive is not cancelled');
  t.ok(await until(() => logs[1].has('long')), 'it completes');
  t.ok(logs[1].okOf('long') !== undefined && big.equals(pattern(2, len)), 'successfully, intact');
  await close();
});

t.test('senddata and tsenddata: remote CQ data and FI_REMOTE_CQ_DATA for every protocol; plain sends carry none', async (t) => {
  const { s, logs, until, close } = await pair(60);
  const [a, b] = s.eps;
  const to = s.addr[0][1];
  const values = [0, 1, 0xffff_ffff, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER];
  let k = 0;
  for (const [proto, len] of SIZES) {
    const data = values[k++ % values.length];
    const tdata = values[k++ % values.length];
    const u = Buffer.alloc(len);
    const tg = Buffer.alloc(len);
    const plain = Buffer.alloc(len);
    b.recv(u, FI_ADDR_UNSPEC, `u-${proto}`);
    b.trecv(tg, FI_ADDR_UNSPEC, 0xabcn, 0n, `t-${proto}`);
    a.senddata(pattern(1, len), data, to, `su-${proto}`);
    a.tsenddata(pattern(2, len), tdata, to, 0xabcn, `st-${proto}`);
    t.ok(await until(() => logs[1].has(`u-${proto}`) && logs[1].has(`t-${proto}`)), `${proto}: both received`);
    const eu = logs[1].okOf(`u-${proto}`);
    const et = logs[1].okOf(`t-${proto}`);
    t.equal(eu?.flags, FI_RECV | FI_MSG | FI_REMOTE_CQ_DATA, `${proto} senddata: FI_REMOTE_CQ_DATA`);
    t.equal(eu?.data, data, `${proto} senddata: data ${data}`);
    t.equal(et?.flags, FI_RECV | FI_TAGGED | FI_REMOTE_CQ_DATA, `${proto} tsenddata: FI_REMOTE_CQ_DATA`);
    t.equal(et?.data, tdata, `${proto} tsenddata: data ${tdata}`);
    t.equal(et?.tag, 0xabcn, `${proto} tsenddata: the tag`);
    t.ok(u.equals(pattern(1, len)) && tg.equals(pattern(2, len)), `${proto}: payloads intact`);
    b.recv(plain, FI_ADDR_UNSPEC, `p-${proto}`);
    a.send(pattern(3, len), to, `sp-${proto}`);
    t.ok(await until(() => logs[1].has(`p-${proto}`)), `${proto}: plain received`);
    t.equal(logs[1].okOf(`p-${proto}`)?.flags, FI_RECV | FI_MSG, `${proto} plain send: no FI_REMOTE_CQ_DATA`);
    t.equal(logs[1].okOf(`p-${proto}`)?.data, 0, `${proto} plain send: data 0`);
    t.equal(b.stats.rxMessages(proto), 3, `${proto}: all three as ${proto}`);
  }
  // Unexpected with data: the data survives the wait.
  a.senddata(pattern(4, 10), 123456789, to, 'late');
  t.ok(await until(() => b.statsSnapshot().unexpected_queued === 1), 'unexpected');
  const late = Buffer.alloc(10);
  b.recv(late, FI_ADDR_UNSPEC, 'r-late');
  t.ok(await until(() => logs[1].has('r-late')), 'received');
  t.equal(logs[1].okOf('r-late')?.data, 123456789, 'data kept while unexpected');
  t.throws(() => a.senddata(Buffer.alloc(1), -1, to), { code: 'EINVAL' }, 'negative data is EINVAL');
  t.throws(() => a.senddata(Buffer.alloc(1), 1.5, to), { code: 'EINVAL' }, 'non-integer data is EINVAL');
  t.same(logs[1].errs.concat(logs[0].errs).map(describeErr), [], 'no errors');
  await close();
});

t.test('plain Uint8Array buffers (not Buffers) send and receive with every protocol', async (t) => {
  const { s, logs, until, close } = await pair(61);
  const [a, b] = s.eps;
  for (const [proto, len] of SIZES) {
    const msg = new Uint8Array(pattern(len, len));
    const into = new Uint8Array(len);
    const early = new Uint8Array(len);
    b.recv(into, FI_ADDR_UNSPEC, `r-${proto}`);
    a.send(msg, s.addr[0][1], `s-${proto}`);
    t.ok(await until(() => logs[1].has(`r-${proto}`) && logs[0].has(`s-${proto}`)), `${proto}: completed`);
    t.ok(Buffer.from(into).equals(Buffer.from(msg)), `${proto}: intact`);
    // And unexpected, then claimed by a Uint8Array receive.
    a.send(msg, s.addr[0][1], `s2-${proto}`);
    t.ok(await until(() => b.statsSnapshot().unexpected_queued === 1), `${proto}: unexpected`);
    b.recv(early, FI_ADDR_UNSPEC, `r2-${proto}`);
    t.ok(await until(() => logs[1].has(`r2-${proto}`) && logs[0].has(`s2-${proto}`)), `${proto}: claimed`);
    t.ok(Buffer.from(early).equals(Buffer.from(msg)), `${proto}: intact`);
  }
  t.same([...logs[0].errs, ...logs[1].errs].map(describeErr), [], 'no errors');
  await close();
});
