// The fault injector in front of a send function, with real timers: pass-through without
// copies, release-time order (ties in submission order), corrupted copies that leave the
// caller's buffer alone, partitions by destination key, rate spacing, close() cancelling.
// Timing is only asserted as lower bounds; the tests wait for packets, not for the clock.
import t from 'tap';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { InvalidArgumentError } from '../src/common/errors';
import { DelayQueue } from '../src/io/delay-queue';
import { defaultTargetKey, FaultInjector, type FaultInjectorOptions } from '../src/io/fault-injector';
import { FaultPlan, makeFaultDecision } from '../src/io/fault-plan';
import { FaultSpecError, parseFaultSpec } from '../src/io/fault-spec';

function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

interface Sent {
  buf: Buffer;
  len: number;
  host: string;
  port: number;
  at: number;
}

/** An injector whose sink records packets; `until(n)` resolves once n have arrived. */
function rig(spec: string, extra: Partial<FaultInjectorOptions> = {}) {
  const sent: Sent[] = [];
  let waiter: { n: number; resolve: () => void } | null = null;
  const inj = new FaultInjector({
    spec,
    send: (buf, len, host, port) => {
      sent.push({ buf, len, host, port, at: performance.now() });
      if (waiter !== null && sent.length >= waiter.n) {
        const w = waiter;
        waiter = null;
        w.resolve();
      }
    },
    ...extra,
  });
  t.teardown(() => inj.close());
  const until = (n: number): Promise<void> =>
    sent.length >= n ? Promise.resolve() : new Promise<void>((resolve) => (waiter = { n, resolve }));
  return { inj, sent, until };
}

const packet = (i: number, size = 8): Buffer => {
  const b = Buffer.alloc(size);
  b.writeUInt32BE(i, 0);
  return b;
};
const ids = (sent: Sent[]): number[] => sent.map((s) => s.buf.readUInt32BE(0));

t.test('no faults: the same buffer goes straight through, synchronously', async (t) => {
  const { inj, sent } = rig('');
  const buf = packet(1, 100);
  inj.send(buf, 60, '127.0.0.1', 4000);
  t.equal(sent.length, 1);
  t.equal(sent[0].buf, buf, 'same object, no copy');
  t.equal(sent[0].len, 60);
  t.equal(sent[0].host, '127.0.0.1');
  t.equal(sent[0].port, 4000);
  t.equal(inj.stats.passed, 0, 'the fast path does not even consult the plan');
});

t.test('seed or limit alone keep the fast path', async (t) => {
  const { inj, sent } = rig('seed=9,limit=5');
  const buf = packet(1);
  inj.send(buf, 8, 'h', 1);
  t.equal(sent[0].buf, buf);
});

t.test('an API partition leaves the fast path; healing returns to it', async (t) => {
  const { inj, sent } = rig('');
  inj.partition('127.0.0.1:4000');
  inj.send(packet(1), 8, '127.0.0.1', 4000);
  inj.send(packet(2), 8, '127.0.0.1', 4001);
  t.same(ids(sent), [2]);
  t.equal(inj.stats.partition_drops, 1);
  inj.heal('127.0.0.1:4000');
  const buf = packet(3);
  inj.send(buf, 8, '127.0.0.1', 4000);
  t.equal(sent[1].buf, buf);
  inj.partition('127.0.0.1:4000', 0);
  inj.send(packet(4), 8, '127.0.0.1', 4000);
  t.same(ids(sent), [2, 3, 4], 'a zero-length partition drops nothing');
  t.equal(thrown(() => inj.partition('x', -1)).code, 'EINVAL');
});

t.test('partitions match the destination key: host:port, [v6]:port or a custom key', async (t) => {
  t.equal(defaultTargetKey('10.0.0.1', 5), '10.0.0.1:5');
  t.equal(defaultTargetKey('::1', 5), '[::1]:5');
  const a = rig('partition=[::1]:4000@0s+inf');
  a.inj.send(packet(1), 8, '::1', 4000);
  a.inj.send(packet(2), 8, '::1', 4001);
  a.inj.send(packet(3), 8, '127.0.0.1', 4000);
  t.same(ids(a.sent), [2, 3]);

  const names = new Map([[4000, 'rank0'], [4001, 'rank1']]);
  const b = rig('partition=rank1@0s+inf', { targetKey: (_h, port) => names.get(port) ?? '?' });
  b.inj.send(packet(1), 8, '127.0.0.1', 4000);
  b.inj.send(packet(2), 8, '127.0.0.1', 4001);
  t.same(ids(b.sent), [1]);
  t.equal(b.inj.stats.partition_drops, 1);
});

t.test('a spec partition window counts from the injector start and heals itself', async (t) => {
  let now = 1000;
  const { inj, sent } = rig('partition=h:1@10ms+20ms', { clock: () => now });
  now = 1005;
  inj.send(packet(1), 8, 'h', 1);
  now = 1015;
  inj.send(packet(2), 8, 'h', 1);
  now = 1030;
  inj.send(packet(3), 8, 'h', 1);
  t.same(ids(sent), [1, 3]);
});

t.test('equal release times leave in submission order', async (t) => {
  let frozen: number | null = performance.now();
  const { inj, sent, until } = rig('delay=2ms', { clock: () => frozen ?? performance.now() });
  for (let i = 0; i < 20; i++) inj.send(packet(i), 8, 'h', 1);
  frozen = null;
  t.equal(inj.queued, 20);
  await until(20);
  t.same(ids(sent), [...Array(20).keys()]);
  t.equal(inj.queued, 0);
});

t.test('delayed packets leave in release-time order', async (t) => {
  const spec = 'delay=3ms,jitter=2.5ms,dup=20%,reorder=10%,reorder-delay=2ms,seed=11';
  let last = 0;
  const clock = (): number => (last = performance.now());
  const { inj, sent, until } = rig(spec, { clock });
  // A twin plan fed the same clock readings predicts every release time.
  const twin = new FaultPlan(parseFaultSpec(spec));
  const d = makeFaultDecision();
  const expected: Array<{ at: number; id: number; seq: number }> = [];
  let seq = 0;
  for (let i = 0; i < 200; i++) {
    inj.send(packet(i), 8, 'h', 1);
    twin.decide(last, 8, '', d);
    for (let c = 0; c < d.copies; c++) expected.push({ at: d.releaseAtMs[c], id: i, seq: seq++ });
    if (i % 50 === 49) await sleep(1); // let some go out while others are still queued
  }
  expected.sort((x, y) => x.at - y.at || x.seq - y.seq);
  await until(expected.length);
  t.ok(expected.length > 200, `${expected.length} copies with duplicates`);
  t.same(ids(sent), expected.map((e) => e.id));
  t.same(inj.stats.toJSON(), twin.stats.toJSON(), 'same counters as the twin');
  for (let i = 0; i < sent.length; i++) {
    if (sent[i].at < expected[i].at) t.fail(`packet ${expected[i].id} left ${expected[i].at - sent[i].at} ms early`);
  }
});

t.test('sub-millisecond delays are honoured (polling below 1 ms)', async (t) => {
  const { inj, sent, until } = rig('delay=200us');
  const t0 = performance.now();
  inj.send(packet(1), 8, 'h', 1);
  t.equal(sent.length, 0);
  await until(1);
  t.ok(sent[0].at - t0 >= 0.2, 'not before its release time');
});

t.test('spinBelowMs=0 uses setTimeout only', async (t) => {
  const { inj, sent, until } = rig('delay=300us', { spinBelowMs: 0 });
  inj.send(packet(1), 8, 'h', 1);
  inj.send(packet(2), 8, 'h', 1);
  await until(2);
  t.same(ids(sent), [1, 2]);
});

t.test('corrupted copies are new buffers with one bit flipped; the original is untouched', async (t) => {
  const { inj, sent } = rig('corrupt=100%,dup=100%');
  const original = Buffer.from('the quick brown fox, and then some trailing bytes not sent');
  const pristine = Buffer.from(original);
  const len = 19;
  for (let i = 0; i < 50; i++) inj.send(original, len, 'h', 1);
  t.equal(sent.length, 100);
  t.same(original, pristine, 'caller buffer never written');
  for (const s of sent) {
    t.not(s.buf, original);
    t.equal(s.len, len);
    let bits = 0;
    for (let i = 0; i < len; i++) {
      let x = s.buf[i] ^ original[i];
      while (x !== 0) {
        bits += x & 1;
        x >>= 1;
      }
    }
    if (bits !== 1) t.fail(`expected exactly one flipped bit, got ${bits}`);
  }
  t.equal(inj.stats.corrupted, 100);
});

t.test('loss and dup through the injector', async (t) => {
  const { inj, sent } = rig('loss=100%');
  inj.send(packet(1), 8, 'h', 1);
  t.equal(sent.length, 0);
  t.equal(inj.stats.injected_loss, 1);
  const b = rig('dup=100%');
  const buf = packet(2);
  b.inj.send(buf, 8, 'h', 1);
  t.equal(b.sent.length, 2);
  t.equal(b.sent[0].buf, buf, 'an uncorrupted duplicate shares the buffer');
  t.equal(b.sent[1].buf, buf);
});

t.test('a caller told when its buffer is free is told once, and never while a copy of it may be read', async (t) => {
  const sends: Array<{ buf: Buffer; onSent: (() => void) | null }> = [];
  const inj = new FaultInjector({ spec: 'dup=100%,seed=3', send: (buf, _len, _h, _p, onSent) => sends.push({ buf, onSent: onSent ?? null }) });
  const buf = packet(4);
  let told = 0;
  inj.send(buf, 8, 'h', 1, () => told++);
  t.equal(sends.length, 2, 'two copies left');
  t.equal(sends[0].buf, buf, 'the first is the caller\'s buffer');
  t.not(sends[1].buf, buf, 'the second is a copy');
  t.same(sends[1].buf.subarray(0, 8), buf.subarray(0, 8), 'with the same bytes');
  t.equal(told, 0, 'not told before the socket lets go');
  t.equal(sends.filter((s) => s.onSent !== null).length, 1, 'the socket is asked to tell once, for the caller\'s buffer');
  sends[0].onSent?.();
  t.equal(told, 1, 'told once the socket let go');

  const held = new FaultInjector({ spec: 'delay=5ms', send: () => undefined, spinBelowMs: 0 });
  let heldTold = 0;
  held.send(packet(5), 8, 'h', 1, () => heldTold++);
  t.equal(heldTold, 1, 'a delayed packet is a copy: the caller is told at once');
  held.close();
  const lost = new FaultInjector({ spec: 'loss=100%', send: () => undefined });
  let lostTold = 0;
  lost.send(packet(6), 8, 'h', 1, () => lostTold++);
  t.equal(lostTold, 1, 'a lost packet: told at once');
});

t.test('rate limit: packets are spaced by len / rate', async (t) => {
  // 1000 bytes at 1 mbit/s = 8 ms each; the fifth cannot leave before 40 ms.
  const { inj, sent, until } = rig('rate=1mbit');
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) inj.send(packet(i, 1000), 1000, 'h', 1);
  await until(5);
  t.same(ids(sent), [0, 1, 2, 3, 4]);
  t.ok(sent[4].at - t0 >= 40 - 0.01, `last left after ${sent[4].at - t0} ms`);
  t.ok(sent[1].at - sent[0].at >= 0, 'in order');
});

t.test('setSpec switches faults on and off while running', async (t) => {
  const { inj, sent, until } = rig('');
  inj.setSpec('delay=2ms');
  inj.send(packet(1), 8, 'h', 1);
  t.equal(sent.length, 0);
  await until(1);
  inj.setSpec('');
  const buf = packet(2);
  inj.send(buf, 8, 'h', 1);
  t.equal(sent[1].buf, buf, 'back on the fast path');
  const err = thrown(() => inj.setSpec('loss=300%'));
  t.type(err, FaultSpecError);
  t.match(err.message, /^fault spec: loss=300%: loss must be 0%\.\.100%/);
  inj.send(packet(3), 8, 'h', 1);
  t.equal(sent.length, 3, 'a rejected spec leaves the old one in force');
});

t.test('close() drops queued packets, cancels the timer and is idempotent', async (t) => {
  const { inj, sent } = rig('delay=20ms');
  for (let i = 0; i < 5; i++) inj.send(packet(i), 8, 'h', 1);
  t.equal(inj.queued, 5);
  inj.close();
  inj.close();
  t.equal(inj.queued, 0);
  inj.send(packet(9), 8, 'h', 1);
  await sleep(60);
  t.equal(sent.length, 0);

  const b = rig('');
  b.inj.close();
  b.inj.send(packet(1), 8, 'h', 1);
  t.equal(b.sent.length, 0, 'a closed injector sends nothing, even on the fast path');
});

t.test('options are validated, the spec error names its source', async (t) => {
  t.type(thrown(() => new FaultInjector({ spec: '' } as unknown as FaultInjectorOptions)), InvalidArgumentError);
  t.match(thrown(() => new FaultInjector({ spec: '', send: () => {}, spinBelowMs: -1 })).message, /spinBelowMs/);
  const err = thrown(() => new FaultInjector({ spec: 'lose=1%', send: () => {}, source: 'EFA_EMU_FAULTS' }));
  t.type(err, FaultSpecError);
  t.match(err.message, /^EFA_EMU_FAULTS: unknown field "lose"/);
  const inj = new FaultInjector({ spec: parseFaultSpec('loss=1%'), send: () => {} });
  t.equal(inj.plan.spec.loss, 0.01, 'a parsed spec object is accepted');
  inj.close();
});

t.test('delay queue: min-heap by release time, FIFO on ties, grows, clears', async (t) => {
  const q = new DelayQueue(2);
  const order: number[] = [];
  const sink = (buf: Buffer): void => {
    order.push(buf.readUInt32BE(0));
  };
  const times = [5, 3, 3, 9, 1, 3, 7, 5];
  times.forEach((at, i) => q.push(at, packet(i), 8, 'h', 1));
  t.equal(q.size, 8);
  t.equal(q.peekTime(), 1);
  t.equal(q.releaseDue(4, sink), 4);
  t.same(order, [4, 1, 2, 5]);
  q.push(2, packet(100), 8, 'h', 1);
  t.equal(q.releaseDue(Infinity, sink), 5);
  t.same(order, [4, 1, 2, 5, 100, 0, 7, 6, 3]);
  t.equal(q.peekTime(), Infinity);
  q.push(1, packet(1), 8, 'h', 1);
  t.equal(q.clear(), 1);
  t.equal(q.size, 0);
  t.equal(q.releaseDue(Infinity, sink), 0);

  // Random pushes and partial drains against a reference that sorts what is due.
  let pending: Array<{ at: number; seq: number }> = [];
  const expected: number[] = [];
  const out: number[] = [];
  let seq = 1000;
  let x = 12345;
  const drain = (now: number): void => {
    const due = pending.filter((p) => p.at <= now).sort((a, b) => a.at - b.at || a.seq - b.seq);
    pending = pending.filter((p) => p.at > now);
    for (const p of due) expected.push(p.seq);
    q.releaseDue(now, (b) => out.push(b.readUInt32BE(0)));
  };
  for (let round = 0; round < 300; round++) {
    for (let i = 0; i < 10; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const at = round + (x % 20) + (x % 7) / 8;
      pending.push({ at, seq });
      q.push(at, packet(seq++), 8, 'h', 1);
    }
    drain(round);
  }
  drain(Infinity);
  t.equal(out.length, 3000);
  t.same(out, expected);
});
