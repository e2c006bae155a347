// Doorbell batching at the socket: the first packet of a run to a destination leaves at once,
// the rest of the run shares datagrams per destination, bundles split back into the
// same packets (views, no copy), buffers are handed back exactly once, and malformed bundles
// are dropped whole and counted, never thrown.
import t from 'tap';
import { BUNDLE_HEADER_LEN, BUNDLE_TYPE, DatagramCoalescer, isBundle } from '../src/io/datagram-coalescer';
import { Prng } from '../src/common/prng';

interface Sent {
  buf: Buffer;
  len: number;
  host: string;
  port: number;
  onSent: (() => void) | null;
}

function socket(): { sent: Sent[]; send: (buf: Buffer, len: number, host: string, port: number, onSent?: (() => void) | null) => void } {
  const sent: Sent[] = [];
  return { sent, send: (buf, len, host, port, onSent) => sent.push({ buf: Buffer.from(buf.subarray(0, len)), len, host, port, onSent: onSent ?? null }) };
}

/** A packet-like buffer: what the coalescer carries is opaque to it. */
function pkt(id: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (id * 7 + i) & 0xff;
  b.writeUInt16BE(id, 0);
  return b;
}

function split(c: DatagramCoalescer, dgram: Buffer): Buffer[] {
  const out: Buffer[] = [];
  t.ok(c.receive(dgram, 'h', 1, (p) => out.push(Buffer.from(p))), 'a well-formed datagram is accepted');
  return out;
}

const endOfTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

t.test('one run to one destination: the first packet at once, the rest in one datagram, split back identical; streams batch whole runs', async (t) => {
  const s = socket();
  const c = new DatagramCoalescer(s.send, 65000);
  const pkts = [pkt(1, 64), pkt(2, 100), pkt(3, 8232), pkt(4, 40)];
  for (const p of pkts) c.send(p, p.length, '127.0.0.1', 4000);
  t.equal(s.sent.length, 1, 'inside the run only the first has left');
  t.same(s.sent[0].buf, pkts[0], 'as it is');
  await endOfTurn();
  t.equal(s.sent.length, 2, 'then one datagram for the rest');
  t.ok(isBundle(s.sent[1].buf), 'a bundle');
  t.equal(s.sent[1].buf[3], BUNDLE_TYPE);
  const rest = pkts.slice(1);
  t.equal(s.sent[1].len, BUNDLE_HEADER_LEN + rest.reduce((a, p) => a + 2 + p.length, 0), 'header + a length per packet + the packets, nothing more');
  t.same(split(c, s.sent[1].buf), rest, 'the same packets, in order');
  t.match(c.stats, { tx_dgrams: 2, tx_bundles: 1, tx_coalesced_pkts: 4, rx_dgrams: 1, rx_bundles: 1 });
  // Runs of several packets look like a stream: the next run's packets all wait, so a run
  // costs one datagram.
  c.send(pkt(5, 64), 64, '127.0.0.1', 4000);
  c.send(pkt(6, 64), 64, '127.0.0.1', 4000);
  t.equal(s.sent.length, 2, 'after a run of several, nothing leaves inside the next run');
  await endOfTurn();
  t.equal(s.sent.length, 3, 'the whole run in one datagram');
  t.same(split(c, s.sent[2].buf).map((x) => x.readUInt16BE(0)), [5, 6]);
  // A run of one (a ping-pong again): the next run's first packet leaves at once.
  c.send(pkt(7, 64), 64, '127.0.0.1', 4000);
  await endOfTurn();
  c.send(pkt(8, 64), 64, '127.0.0.1', 4000);
  t.equal(s.sent.length, 5, 'after a run of one, the first packet leaves inside send() again');
});

t.test('a lone packet leaves unwrapped, inside send(); a lone packet after it at the end of the run, unwrapped too', async (t) => {
  const s = socket();
  const c = new DatagramCoalescer(s.send, 65000);
  const p = pkt(9, 64);
  c.send(p, 50, '127.0.0.1', 4000);
  t.equal(s.sent.length, 1, 'out at once');
  t.same(s.sent[0].buf, p.subarray(0, 50), 'as it is: no bundle header');
  t.notOk(isBundle(s.sent[0].buf));
  const q = pkt(10, 64);
  c.send(q, 64, '127.0.0.1', 4000);
  await Promise.resolve();
  t.equal(s.sent.length, 2, 'the second out at the end of the run (a microtask), not a later turn');
  t.notOk(isBundle(s.sent[1].buf), 'alone, so unwrapped');
  const got: Buffer[] = [];
  c.receive(p.subarray(0, 50), 'h', 1, (b) => got.push(b));
  t.equal(got[0].buffer, p.buffer, 'a plain datagram is delivered as it came, no copy');
});

t.test('no datagram exceeds the bound; destinations never share one; per-destination order kept', async (t) => {
  const s = socket();
  const max = 9000;
  const c = new DatagramCoalescer(s.send, max);
  const want = new Map<number, number[]>();
  for (let i = 0; i < 40; i++) {
    const port = 4000 + (i % 3);
    const len = 40 + ((i * 977) % 4000);
    c.send(pkt(i, len), len, '127.0.0.1', port);
    want.set(port, [...(want.get(port) ?? []), i]);
  }
  await endOfTurn();
  const got = new Map<number, number[]>();
  for (const d of s.sent) {
    t.ok(d.len <= max, `datagram of ${d.len} B within ${max}`);
    const ids = isBundle(d.buf) ? split(c, d.buf).map((b) => b.readUInt16BE(0)) : [d.buf.readUInt16BE(0)];
    got.set(d.port, [...(got.get(d.port) ?? []), ...ids]);
  }
  t.same(got, want, 'every packet once, to its own destination, in the order sent');
  t.ok(s.sent.length < 40, `fewer datagrams (${s.sent.length}) than packets`);
});

t.test("senders' buffers are handed back exactly once; one that sends again from its callback goes in the next datagram", async (t) => {
  const s = socket();
  const c = new DatagramCoalescer(s.send, 65000);
  const calls: number[] = [];
  c.send(pkt(0, 64), 64, 'h', 1);
  c.send(pkt(1, 64), 64, 'h', 1, () => {
    calls.push(1);
    c.send(pkt(3, 64), 64, 'h', 1);
  });
  c.send(pkt(2, 64), 64, 'h', 1, () => calls.push(2));
  await endOfTurn();
  t.same(calls, [1, 2], 'each onSent once, once the bundle holds a copy');
  t.equal(s.sent.length, 3, 'the first packet, the bundle, then the packet sent from a callback');
  t.same(split(c, s.sent[1].buf).map((x) => x.readUInt16BE(0)), [1, 2]);
  t.equal(s.sent[2].buf.readUInt16BE(0), 3);
  // A packet sent as it is: its onSent is the socket's to call, passed through, not called early.
  const s2 = socket();
  const c2 = new DatagramCoalescer(s2.send, 65000);
  let lone = 0;
  c2.send(pkt(4, 64), 64, 'h', 1, () => lone++);
  await endOfTurn();
  t.equal(lone, 0, 'not called by the coalescer');
  s2.sent[0].onSent?.();
  t.equal(lone, 1, 'called when the socket is done with the buffer');
});

t.test('bundle buffers are reused once the socket is done with them', async (t) => {
  const buffers = new Set<Buffer>();
  const real: Array<{ buf: Buffer; onSent: (() => void) | null }> = [];
  const c2 = new DatagramCoalescer((buf, _len, _h, _p, onSent) => {
    buffers.add(buf);
    real.push({ buf, onSent: onSent ?? null });
  }, 65000);
  for (let round = 0; round < 5; round++) {
    c2.send(pkt(0, 64), 64, 'h', 1);
    c2.send(pkt(1, 64), 64, 'h', 1);
    c2.send(pkt(2, 64), 64, 'h', 1);
    await endOfTurn();
    for (const r of real.splice(0)) r.onSent?.();
  }
  // The first round's first packet left as it was (a run of one came before: none); from then
  // on each round is one bundle, always in the same buffer.
  t.equal(buffers.size, 1 + 1, 'one bundle buffer for five rounds');
});

t.test('0 turns batching off: every packet in its own datagram, at once', async (t) => {
  const s = socket();
  const c = new DatagramCoalescer(s.send, 0);
  c.send(pkt(1, 64), 64, 'h', 1);
  c.send(pkt(2, 64), 64, 'h', 1);
  t.equal(s.sent.length, 2, 'sent inside send()');
  t.notOk(isBundle(s.sent[0].buf));
  t.match(c.stats, { tx_dgrams: 2, tx_bundles: 0, tx_coalesced_pkts: 2 });
});

t.test('after close, sends are dropped and their buffers handed back', async (t) => {
  const s = socket();
  const c = new DatagramCoalescer(s.send, 65000);
  c.send(pkt(1, 64), 64, 'h', 1);
  c.send(pkt(2, 64), 64, 'h', 1);
  c.close();
  t.equal(s.sent.length, 2, 'what waited went out on close');
  let back = 0;
  c.send(pkt(2, 64), 64, 'h', 1, () => back++);
  await endOfTurn();
  t.equal(s.sent.length, 2, 'nothing after close');
  t.equal(back, 1, 'its onSent still ran');
});

t.test('malformed bundles are dropped whole and counted; random bytes never throw', async (t) => {
  const c = new DatagramCoalescer(() => undefined, 65000);
  const header = (count: number): Buffer => Buffer.from([0xef, 0xa1, 2, BUNDLE_TYPE, count >> 8, count & 0xff, 0, 0]);
  const entry = (len: number, fill = 0xaa): Buffer => Buffer.concat([Buffer.from([len >> 8, len & 0xff]), Buffer.alloc(len, fill)]);
  const cases: Array<[string, Buffer]> = [
    ['zero packets', header(0)],
    ['a length past the end', Buffer.concat([header(1), Buffer.from([0x10, 0x00]), Buffer.alloc(10)])],
    ['fewer packets than counted', Buffer.concat([header(3), entry(50), entry(50)])],
    ['bytes after the last packet', Buffer.concat([header(1), entry(50), Buffer.alloc(3)])],
    ['a cut length field', Buffer.concat([header(2), entry(50), Buffer.from([0x00])])],
  ];
  for (const [what, buf] of cases) {
    let delivered = 0;
    const before = c.stats.rx_drop_bad_bundle;
    t.equal(c.receive(buf, 'h', 1, () => delivered++), false, `${what}: refused`);
    t.equal(delivered, 0, `${what}: nothing delivered, not even the packets before the fault`);
    t.equal(c.stats.rx_drop_bad_bundle, before + 1, `${what}: counted`);
  }
  const prng = new Prng(7);
  const rand = (): number => prng.next();
  let accepted = 0;
  const dropsBefore = c.stats.rx_drop_bad_bundle;
  for (let i = 0; i < 5000; i++) {
    const len = BUNDLE_HEADER_LEN + Math.floor(rand() * 200);
    const buf = Buffer.alloc(len);
    for (let j = 0; j < len; j++) buf[j] = Math.floor(rand() * 256);
    buf.set([0xef, 0xa1, 2, BUNDLE_TYPE]);
    buf[4] = 0;
    buf[5] = Math.floor(rand() * 4);
    let total = 0;
    if (c.receive(buf, 'h', 1, (p) => (total += p.length))) {
      accepted++;
      t.ok(total <= len, 'delivered views lie inside the datagram');
    }
  }
  t.equal(accepted + c.stats.rx_drop_bad_bundle - dropsBefore, 5000, `every random bundle either accepted (${accepted}, well-formed by chance) or counted as dropped`);
});
