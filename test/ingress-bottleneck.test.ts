// The receive-side bottleneck: the sans-IO FIFO (release = max(now, last departure) +
// len / rate; a packet that would overflow the buffer is dropped; counters), driven by a
// hand-moved clock; the ring the real device holds packets in; and the injector's receive
// stage: synchronous without a bottleneck, held and released in arrival order with one, by
// its timer or by the next packet, changed at run time with setSpec, emptied by close().
import t from 'tap';
import { InvalidArgumentError } from '../src/common/errors';
import { Prng } from '../src/common/prng';
import { FaultInjector } from '../src/io/fault-injector';
import { HeldPackets, IngressBottleneck } from '../src/io/ingress-bottleneck';

function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

const packet = (id: number, size: number): Buffer => {
  const b = Buffer.alloc(size);
  b.writeUInt32BE(id, 0);
  return b;
};

t.test('admit: serialised at the rate, FIFO behind the last departure', async (t) => {
  // 1000 B/s is one byte per ms: the arithmetic reads directly.
  const b = new IngressBottleneck(1000, 3000);
  t.equal(b.admit(0, 1000), 1000, 'an idle link: now + len / rate');
  t.equal(b.admit(0, 1000), 2000, 'behind the first');
  t.equal(b.admit(500, 1000), 3000, 'arriving later still waits for the previous departure');
  t.equal(b.queuedBytes(500), 3000);
  t.equal(b.queuedPackets(500), 3);
  t.equal(b.admit(500, 1), -1, 'one byte more than the buffer: dropped');
  t.equal(b.queuedBytes(999), 3000, 'the first counts until its last byte has left');
  t.equal(b.queuedBytes(1000), 2000, 'and not after');
  t.equal(b.admit(1000, 1000), 4000, 'room again once one left');
  t.equal(b.admit(10_000, 500), 10_500, 'after an idle spell the link starts from now');
  t.equal(b.queuedBytes(10_000), 500);
  t.same(b.stats.toJSON(), { pkts: 5, drops: 1, bytes: 4500, maxQueueBytes: 3000 });
  t.equal(b.rateBytesPerSec, 1000);
  t.equal(b.buffer, 3000);
});

t.test('a packet larger than the buffer is always dropped; zero-length ones take no time', async (t) => {
  const b = new IngressBottleneck(1e6, 1500);
  t.equal(b.admit(0, 1501), -1);
  t.equal(b.admit(0, 1500), 1.5, 'exactly the buffer fits (1500 B at 1 MB/s is 1.5 ms)');
  t.equal(b.admit(0, 0), 1.5, 'nothing to serialise: it leaves with the one before');
  t.equal(b.stats.drops, 1);
  t.equal(b.stats.pkts, 2);
});

t.test('random arrivals: releases in order, spaced by the serialisation time, buffer never exceeded', async (t) => {
  const rng = new Prng(12);
  const rate = 125_000; // 1 mbit
  const buffer = 16 * 1024;
  const b = new IngressBottleneck(rate, buffer);
  // What is queued, kept independently of the bottleneck: [departure, len].
  const model: Array<[number, number]> = [];
  let now = 0;
  let last = -Infinity;
  let admitted = 0;
  let dropped = 0;
  let bad = 0;
  for (let i = 0; i < 20_000; i++) {
    now += rng.next() < 0.7 ? 0 : rng.next() * 20;
    const len = 64 + rng.int(1400);
    while (model.length > 0 && model[0][0] <= now) model.shift();
    const queued = model.reduce((s, [, l]) => s + l, 0);
    const at = b.admit(now, len);
    if (queued + len > buffer) {
      if (at !== -1) bad++;
      dropped++;
      continue;
    }
    const expected = Math.max(now, last) + (len * 1000) / rate;
    if (at < now || Math.abs(at - expected) > 1e-9 * expected || at < last) bad++;
    model.push([at, len]);
    last = at;
    admitted++;
  }
  t.equal(bad, 0, 'every decision matched the FIFO model');
  t.ok(admitted > 1000 && dropped > 1000, `both admitted (${admitted}) and dropped (${dropped})`);
  t.equal(b.stats.pkts, admitted);
  t.equal(b.stats.drops, dropped);
  t.ok(b.stats.maxQueueBytes <= buffer && b.stats.maxQueueBytes > buffer - 1500, `max queue ${b.stats.maxQueueBytes} B`);
});

t.test('configure: later packets see the new rate and buffer, queued ones keep their times', async (t) => {
  const b = new IngressBottleneck(1000, 10_000);
  t.equal(b.admit(0, 1000), 1000);
  t.equal(b.admit(0, 1000), 2000);
  b.configure(2000, 10_000);
  t.equal(b.admit(0, 1000), 2500, 'twice as fast, still behind the two queued');
  b.configure(2000, 2500);
  t.equal(b.admit(0, 100), -1, 'a buffer shrunk below what waits drops new packets');
  t.equal(b.admit(1000, 600), -1, 'until enough has left (one has: 2000 B wait, 600 more do not fit)');
  t.equal(b.admit(2000, 100), 2550);
  t.same(b.stats.toJSON(), { pkts: 4, drops: 2, bytes: 3100, maxQueueBytes: 3000 }, 'counters carry on');
  t.type(thrown(() => b.configure(0, 10)), InvalidArgumentError);
  t.equal(b.rateBytesPerSec, 2000, 'a refused configure changes nothing');
  b.clear();
  t.equal(b.queuedBytes(2000), 0);
  t.equal(b.admit(2000, 200), 2100, 'after clear the link is idle');
});

t.test('bad construction', async (t) => {
  for (const [rate, buf] of [
    [0, 1],
    [-1, 1],
    [Infinity, 1],
    [NaN, 1],
    [1, 0],
    [1, 1.5],
  ]) {
    const err = thrown(() => new IngressBottleneck(rate, buf));
    t.type(err, InvalidArgumentError, `${rate}, ${buf}`);
    t.equal(err.code, 'EINVAL');
  }
});

t.test('HeldPackets: FIFO ring that grows and lets go of buffers', async (t) => {
  const h = new HeldPackets(2);
  const out: Array<[number, string, number]> = [];
  const deliver = (buf: Buffer, host: string, port: number): void => {
    out.push([buf.readUInt32BE(0), host, port]);
  };
  for (let i = 0; i < 100; i++) h.push(i, packet(i, 10), `h${i % 3}`, 4000 + i, deliver);
  t.equal(h.size, 100);
  t.equal(h.bytes, 1000);
  t.equal(h.peekTime(), 0);
  t.equal(h.releaseDue(49.5), 50);
  t.same(out.slice(0, 3), [
    [0, 'h0', 4000],
    [1, 'h1', 4001],
    [2, 'h2', 4002],
  ]);
  t.equal(h.size, 50);
  t.equal(h.bytes, 500);
  for (let i = 100; i < 200; i++) h.push(i, packet(i, 10), 'x', 1, deliver);
  h.expedite(60);
  t.equal(h.releaseDue(60), 150, 'expedited: everything due, order kept');
  t.same(
    out.map(([id]) => id),
    Array.from({ length: 200 }, (_, i) => i),
  );
  t.equal(h.peekTime(), Infinity);
  h.push(1, packet(1, 4), 'x', 1, deliver);
  t.equal(h.clear(), 1);
  t.equal(h.size, 0);
  t.equal(h.bytes, 0);
});

/** An injector with a clock moved by hand and a receive sink that records ids. */
function rxRig(spec: string) {
  let now = 0;
  const got: number[] = [];
  const inj = new FaultInjector({ spec, send: () => {}, clock: () => now });
  t.teardown(() => inj.close());
  const deliver = (buf: Buffer): void => {
    got.push(buf.readUInt32BE(0));
  };
  return {
    inj,
    got,
    deliver,
    at: (ms: number) => {
      now = ms;
    },
  };
}

t.test('receive without a bottleneck: delivered synchronously, the same buffer', async (t) => {
  const inj = new FaultInjector({ spec: 'loss=100%,delay=1s', send: () => {} });
  t.teardown(() => inj.close());
  const b = packet(7, 100);
  let seen: [Buffer, string, number] | null = null;
  inj.receive(b, '10.0.0.1', 999, (buf, host, port) => {
    seen = [buf, host, port];
  });
  t.ok(seen !== null, 'before receive() returned');
  t.equal(seen![0], b, 'the same object');
  t.same(seen!.slice(1), ['10.0.0.1', 999]);
  t.equal(inj.heldPackets, 0);
  t.same(inj.ingressStats, { pkts: 0, drops: 0, bytes: 0, maxQueueBytes: 0 }, 'zero counters');
});

t.test('receive with a bottleneck: held, released in order, drops when full', async (t) => {
  // 1 MB/s: a 1000-byte packet takes 1 ms; the buffer holds three.
  const r = rxRig('bottleneck=1mbps,bottleneck-buffer=3000B');
  for (let i = 0; i < 5; i++) r.inj.receive(packet(i, 1000), 'h', 1, r.deliver);
  t.same(r.got, [], 'nothing delivered at once');
  t.equal(r.inj.heldPackets, 3);
  t.equal(r.inj.heldBytes, 3000);
  t.same(r.inj.ingressStats, { pkts: 3, drops: 2, bytes: 3000, maxQueueBytes: 3000 });
  r.at(2);
  r.inj.receive(packet(5, 1000), 'h', 1, r.deliver);
  t.same(r.got, [0, 1], 'the next packet releases what is due first');
  t.equal(r.inj.heldPackets, 2, 'and waits behind the third');
  r.at(3.5);
  r.inj.receive(packet(6, 500), 'h', 1, r.deliver);
  t.same(r.got, [0, 1, 2]);
  r.at(10);
  r.inj.receive(packet(7, 1000), 'h', 1, r.deliver);
  t.same(r.got, [0, 1, 2, 5, 6]);
  t.equal(r.inj.ingressStats.pkts, 6);
  t.equal(r.inj.ingressStats.drops, 2);
  // Sending is not slowed by the receive side.
  t.ok(r.inj.plan.inert, 'sends pass straight through');
});

t.test('the timer releases held packets by itself, no later than their time', async (t) => {
  const inj = new FaultInjector({ spec: 'bottleneck=8mbit,bottleneck-buffer=64KiB', send: () => {} });
  t.teardown(() => inj.close());
  const n = 20;
  const got: Array<[number, number]> = [];
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const deliver = (buf: Buffer): void => {
      got.push([buf.readUInt32BE(0), performance.now() - start]);
      if (got.length === n) resolve();
    };
    // 20 x 1000 B at 1 MB/s: the last one leaves 20 ms after the first arrived.
    for (let i = 0; i < n; i++) inj.receive(packet(i, 1000), 'h', 1, deliver);
  });
  t.same(
    got.map(([id]) => id),
    Array.from({ length: n }, (_, i) => i),
    'in arrival order',
  );
  t.ok(got[n - 1][1] >= 19, `the last after its serialisation time (${got[n - 1][1].toFixed(1)} ms)`);
  t.equal(inj.heldPackets, 0);
  t.equal(inj.ingressStats.maxQueueBytes, 20_000);
});

t.test('setSpec changes the bottleneck; removing it releases what it held, in order', async (t) => {
  const r = rxRig('bottleneck=1kbps');
  for (let i = 0; i < 3; i++) r.inj.receive(packet(i, 100), 'h', 1, r.deliver);
  t.equal(r.inj.heldPackets, 3, '100 B at 1 kB/s: 100 ms each');
  r.inj.setSpec('bottleneck=1mbps,bottleneck-buffer=1KB');
  r.inj.receive(packet(3, 100), 'h', 1, r.deliver);
  t.equal(r.inj.heldPackets, 4, 'a faster link still queues behind what waits');
  r.inj.receive(packet(4, 900), 'h', 1, r.deliver);
  t.equal(r.inj.ingressStats.drops, 1, 'the smaller buffer applies at once');
  await new Promise<void>((resolve) => {
    const wait = (): void => {
      if (r.got.length === 4) resolve();
      else setImmediate(wait);
    };
    r.inj.setSpec('loss=1%');
    wait();
  });
  t.same(r.got, [0, 1, 2, 3], 'released on the next turn, the clock untouched');
  r.inj.receive(packet(5, 100), 'h', 1, r.deliver);
  t.same(r.got, [0, 1, 2, 3, 5], 'then straight through again');
  t.equal(r.inj.heldPackets, 0);
  r.inj.setSpec('bottleneck=1mbps');
  r.inj.receive(packet(6, 100), 'h', 1, r.deliver);
  t.equal(r.inj.heldPackets, 1, 'and held again once a bottleneck is back');
  t.equal(r.inj.ingressStats.pkts, 5, 'counters carry on across changes');
});

t.test('close drops what is held and what arrives after', async (t) => {
  const r = rxRig('bottleneck=1kbps');
  r.inj.receive(packet(0, 100), 'h', 1, r.deliver);
  r.inj.close();
  t.equal(r.inj.heldPackets, 0);
  r.inj.receive(packet(1, 100), 'h', 1, r.deliver);
  r.at(1e9);
  r.inj.receive(packet(2, 100), 'h', 1, r.deliver);
  t.same(r.got, []);
  const plain = new FaultInjector({ spec: '', send: () => {} });
  plain.close();
  const got: number[] = [];
  plain.receive(packet(3, 10), 'h', 1, (b) => got.push(b.readUInt32BE(0)));
  t.same(got, [], 'a closed injector without a bottleneck drops too');
});
