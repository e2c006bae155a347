// The fault plan, the injector's pure decision core: determinism from the seed, measured
// rates over 100k decisions, the Gilbert-Elliott burst model, the rate limiter's virtual
// queue, partition windows and their healing, corruption within the packet.
import t from 'tap';
import { FaultPlan, FaultStats, makeFaultDecision, type FaultDecision } from '../src/io/fault-plan';
import { FaultSpecError, NO_FAULTS, parseFaultSpec, type FaultSpec } from '../src/io/fault-spec';

function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

const plan = (text: string): FaultPlan => new FaultPlan(parseFaultSpec(text));

/** Decisions of `n` packets sent 1 us apart, flattened for comparison. */
function trace(p: FaultPlan, n: number, len = 100): number[] {
  const d = makeFaultDecision();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    p.decide(i / 1000, len, 'peer', d);
    out.push(d.copies, d.releaseAtMs[0], d.releaseAtMs[1], d.corruptBit[0], d.corruptBit[1]);
  }
  return out;
}

const ALL = 'loss=3%,dup=2%,reorder=5%,delay=1ms,jitter=500us,corrupt=1%';

/** Index of the first difference, -1 when equal (tap's deep compare is slow on 50k items). */
function firstDiff(a: number[], b: number[]): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return i;
  return -1;
}

t.test('same seed, same decisions; another seed, other decisions', async (t) => {
  t.equal(firstDiff(trace(plan(`${ALL},seed=7`), 10000), trace(plan(`${ALL},seed=7`), 10000)), -1);
  t.not(firstDiff(trace(plan(`${ALL},seed=7`), 10000), trace(plan(`${ALL},seed=8`), 10000)), -1);
  t.equal(firstDiff(trace(plan(ALL), 1000), trace(plan(`${ALL},seed=1`), 1000)), -1, 'the default seed is 1');
});

t.test('no faults: every packet passes at once, untouched', async (t) => {
  const p = new FaultPlan(NO_FAULTS);
  t.ok(p.inert);
  const d = makeFaultDecision();
  p.decide(5, 100, 'x', d);
  t.same(d, { copies: 1, releaseAtMs: [5, 5], corruptBit: [-1, -1] });
  t.same(p.stats.toJSON(), { injected_loss: 0, partition_drops: 0, rate_drops: 0, duplicated: 0, reordered: 0, corrupted: 0, delayed: 0, passed: 1 });
});

t.test('measured rates over 100k decisions', async (t) => {
  const N = 100_000;
  for (const seed of [1, 2, 3]) {
    const p = plan(`loss=2%,dup=1%,reorder=10%,corrupt=0.5%,seed=${seed}`);
    const d = makeFaultDecision();
    for (let i = 0; i < N; i++) p.decide(i * 0.01, 64, 'peer', d);
    const s = p.stats;
    const passed = N - s.injected_loss;
    t.equal(s.passed, passed);
    t.ok(Math.abs(s.injected_loss / N - 0.02) <= 0.003, `seed ${seed}: loss ${s.injected_loss / N}`);
    t.ok(Math.abs(s.duplicated / passed - 0.01) <= 0.002, `seed ${seed}: dup ${s.duplicated / passed}`);
    const copies = passed + s.duplicated;
    t.ok(Math.abs(s.reordered / copies - 0.1) <= 0.006, `seed ${seed}: reorder ${s.reordered / copies}`);
    t.ok(Math.abs(s.corrupted / copies - 0.005) <= 0.001, `seed ${seed}: corrupt ${s.corrupted / copies}`);
    t.equal(s.delayed, s.reordered, 'only reordered copies are held (no delay configured)');
  }
});

/** Loss rate and mean length of runs of consecutive losses. */
function lossRuns(p: FaultPlan, n: number): { rate: number; meanBurst: number } {
  const d = makeFaultDecision();
  let lost = 0;
  let bursts = 0;
  let inBurst = false;
  for (let i = 0; i < n; i++) {
    p.decide(i, 64, 'peer', d);
    if (d.copies === 0) {
      lost++;
      if (!inBurst) bursts++;
      inBurst = true;
    } else {
      inBurst = false;
    }
  }
  return { rate: lost / n, meanBurst: lost / bursts };
}

t.test('burst: Gilbert-Elliott keeps the loss rate and makes bursts of the mean length', async (t) => {
  for (const [loss, burst] of [
    [0.05, 4],
    [0.02, 8],
    [0.1, 2.5],
  ]) {
    for (const seed of [1, 5]) {
      const r = lossRuns(plan(`loss=${loss * 100}%,burst=${burst},seed=${seed}`), 200_000);
      t.ok(Math.abs(r.rate - loss) <= loss * 0.15, `loss ${loss} burst ${burst} seed ${seed}: rate ${r.rate}`);
      t.ok(Math.abs(r.meanBurst - burst) <= burst * 0.1, `loss ${loss} burst ${burst} seed ${seed}: mean burst ${r.meanBurst}`);
    }
  }
  // Independent losses: runs are only as long as chance makes them, 1 / (1 - p).
  const indep = lossRuns(plan('loss=5%'), 200_000);
  t.ok(Math.abs(indep.meanBurst - 1 / 0.95) < 0.03, `independent mean burst ${indep.meanBurst}`);
  t.same(lossRuns(plan('loss=5%,burst=1'), 1000), lossRuns(plan('loss=5%'), 1000), 'burst=1 is independent loss');
  t.equal(lossRuns(plan('loss=100%,burst=3'), 1000).rate, 1, 'total loss');
});

t.test('rate limit: departures spaced by len / rate', async (t) => {
  // 1 mbit/s = 125000 B/s: 1000 bytes take 8 ms.
  const p = plan('rate=1mbit');
  const d = makeFaultDecision();
  const release: number[] = [];
  for (let i = 0; i < 5; i++) {
    p.decide(0, 1000, 'peer', d);
    release.push(d.releaseAtMs[0]);
  }
  t.same(release, [8, 16, 24, 32, 40]);
  p.decide(10, 500, 'peer', d);
  t.equal(d.releaseAtMs[0], 44, 'waits behind the queue: 40 + 4 ms');
  p.decide(100, 1000, 'peer', d);
  t.equal(d.releaseAtMs[0], 108, 'an idle link starts at once');
  t.equal(p.stats.delayed, 7);

  const q = plan('rate=8kbit,delay=5ms');
  q.decide(0, 10, 'peer', d);
  t.equal(d.releaseAtMs[0], 15, '10 bytes at 1000 B/s = 10 ms, then the delay');
});

t.test('rate limit: more than `limit` waiting packets are dropped', async (t) => {
  const p = plan('rate=1mbit,limit=3');
  const d = makeFaultDecision();
  const got: number[] = [];
  for (let i = 0; i < 5; i++) {
    p.decide(0, 1000, 'peer', d);
    got.push(d.copies);
  }
  t.same(got, [1, 1, 1, 0, 0]);
  t.equal(p.stats.rate_drops, 2);
  p.decide(7.9, 1000, 'peer', d);
  t.equal(d.copies, 0, 'still three waiting');
  p.decide(8, 1000, 'peer', d);
  t.equal(d.copies, 1, 'the first left at 8 ms, making room');
  t.equal(d.releaseAtMs[0], 32);
  t.equal(p.stats.rate_drops, 3);
});

t.test('partition windows from the spec count from the start', async (t) => {
  const p = plan('partition=A@10ms+20ms,partition=C@5ms+inf');
  p.start(1000);
  const d = makeFaultDecision();
  const fate = (now: number, target: string): number => {
    p.decide(now, 10, target, d);
    return d.copies;
  };
  t.equal(fate(1005, 'A'), 1);
  t.equal(fate(1010, 'A'), 0);
  t.equal(fate(1029.9, 'A'), 0);
  t.equal(fate(1020, 'B'), 1, 'another target is not affected');
  t.equal(fate(1030, 'A'), 1, 'healed at start + duration');
  t.equal(fate(1004, 'C'), 1);
  t.equal(fate(1_000_000, 'C'), 0, 'inf never heals by itself');
  t.equal(p.stats.partition_drops, 3);
  p.heal('C');
  t.equal(fate(1_000_001, 'C'), 1, 'heal ends a spec partition');
  t.ok(p.hasPartitions, 'the window of A is still there');
});

t.test('without start(), the first decision starts the clock', async (t) => {
  const p = plan('partition=A@10ms+10ms');
  const d = makeFaultDecision();
  p.decide(500, 1, 'A', d);
  t.equal(d.copies, 1);
  p.decide(512, 1, 'A', d);
  t.equal(d.copies, 0);
  p.decide(520, 1, 'A', d);
  t.equal(d.copies, 1);
});

t.test('partition and heal through the API', async (t) => {
  const p = new FaultPlan(NO_FAULTS);
  const d = makeFaultDecision();
  p.start(0);
  p.partition('A', 50);
  t.notOk(p.inert);
  t.ok(p.hasPartitions);
  p.decide(10, 1, 'A', d);
  t.equal(d.copies, 0);
  p.decide(10, 1, 'B', d);
  t.equal(d.copies, 1);
  p.decide(50, 1, 'A', d);
  t.equal(d.copies, 1, 'ends at untilMs');
  p.partition('A', Infinity);
  p.decide(60, 1, 'A', d);
  t.equal(d.copies, 0);
  p.heal('A');
  p.decide(61, 1, 'A', d);
  t.equal(d.copies, 1);
  t.ok(p.inert, 'healed back to no faults');
  p.partition('*', 100);
  p.decide(70, 1, 'anything', d);
  t.equal(d.copies, 0, '* matches every target');
  p.heal('*');
  p.decide(71, 1, 'anything', d);
  t.equal(d.copies, 1);
  t.equal(p.stats.partition_drops, 3);
  t.type(thrown(() => p.partition('', 1)), Error);
  t.equal(thrown(() => p.partition('x', NaN)).code, 'EINVAL');
});

t.test('corruption flips exactly one bit within len', async (t) => {
  const p = plan('corrupt=100%,dup=100%');
  const d = makeFaultDecision();
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    p.decide(i, 3, 'x', d);
    t.equal(d.copies, 2);
    for (const bit of d.corruptBit) {
      if (bit < 0 || bit >= 24 || !Number.isInteger(bit)) t.fail(`bit ${bit} outside 3 bytes`);
      seen.add(bit);
    }
  }
  t.equal(seen.size, 24, 'every bit of the packet gets hit');
  p.decide(3000, 0, 'x', d);
  t.same(d.corruptBit, [-1, -1], 'an empty packet has no bit to flip');
  t.equal(p.stats.corrupted, 4000);
  t.equal(p.stats.duplicated, 2001);
});

t.test('delay and jitter: within [delay - jitter, delay + jitter], never before now', async (t) => {
  const p = plan('delay=10ms,jitter=2ms');
  const d = makeFaultDecision();
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < 10000; i++) {
    p.decide(i, 1, 'x', d);
    const w = d.releaseAtMs[0] - i;
    min = Math.min(min, w);
    max = Math.max(max, w);
  }
  t.ok(min >= 8 && min < 8.1, `min wait ${min}`);
  t.ok(max <= 12 && max > 11.9, `max wait ${max}`);
  t.equal(p.stats.delayed, 10000);

  const q = plan('delay=1ms,jitter=5ms');
  let clamped = 0;
  for (let i = 0; i < 10000; i++) {
    q.decide(i, 1, 'x', d);
    if (d.releaseAtMs[0] < i) t.fail('released before it was sent');
    if (d.releaseAtMs[0] === i) clamped++;
  }
  t.ok(clamped > 3000, `jitter below zero is clamped to zero (${clamped})`);
});

t.test('reorder holds a copy back by reorder-delay, default max(1ms, 2 x delay)', async (t) => {
  const d = makeFaultDecision();
  const hold = (text: string): number => {
    const p = plan(text);
    p.decide(100, 1, 'x', d);
    return d.releaseAtMs[0] - 100;
  };
  t.equal(hold('reorder=100%,delay=3ms'), 3 + 6);
  t.equal(hold('reorder=100%'), 1);
  t.ok(Math.abs(hold('reorder=100%,delay=200us') - 1.2) < 1e-9);
  t.equal(hold('reorder=100%,delay=3ms,reorder-delay=500us'), 3.5);
});

t.test('duplicates are delayed independently', async (t) => {
  const p = plan('dup=100%,delay=5ms,jitter=5ms');
  const d = makeFaultDecision();
  let differ = 0;
  for (let i = 0; i < 100; i++) {
    p.decide(i, 1, 'x', d);
    t.equal(d.copies, 2);
    if (d.releaseAtMs[0] !== d.releaseAtMs[1]) differ++;
  }
  t.equal(differ, 100);
  t.equal(p.stats.duplicated, 100);
  t.equal(p.stats.delayed, 200);
});

t.test('setSpec changes the faults and keeps the PRNG running', async (t) => {
  const a = plan('loss=50%,seed=3');
  const b = plan('loss=50%,seed=3');
  const ta = trace(a, 500);
  t.equal(firstDiff(trace(b, 500), ta), -1);
  // A different seed in the new spec does not reseed: the stream carries on.
  b.setSpec(parseFaultSpec('loss=50%,seed=99'));
  t.equal(firstDiff(trace(b, 500), trace(a, 500)), -1);
  t.equal(b.spec.seed, 99);
  b.setSpec(NO_FAULTS);
  t.ok(b.inert);
  const d = makeFaultDecision();
  b.decide(1, 1, 'x', d);
  t.equal(d.copies, 1);
  const before = b.spec;
  t.type(thrown(() => b.setSpec({ ...NO_FAULTS, loss: 3 })), FaultSpecError);
  t.same(b.spec, before, 'a rejected spec changes nothing');
});

t.test('setSpec on a rate limit keeps the packets already waiting', async (t) => {
  const p = plan('rate=1mbit,limit=5');
  const d = makeFaultDecision();
  for (let i = 0; i < 5; i++) p.decide(0, 1000, 'x', d);
  p.setSpec(parseFaultSpec('rate=1mbit,limit=2'));
  p.decide(0, 1000, 'x', d);
  t.equal(d.copies, 0, 'five waiting, the new limit is two');
  p.decide(32, 1000, 'x', d);
  t.equal(d.copies, 1, 'at 32 ms one is left waiting');
  t.equal(d.releaseAtMs[0], 48);
});

t.test('stats have toJSON and a bad spec object is refused', async (t) => {
  t.same(Object.keys(new FaultStats().toJSON()), ['injected_loss', 'partition_drops', 'rate_drops', 'duplicated', 'reordered', 'corrupted', 'delayed', 'passed']);
  const err = thrown(() => new FaultPlan({ ...NO_FAULTS, dup: -1 } as FaultSpec));
  t.type(err, FaultSpecError);
  t.equal(err.field, 'dup');
  const decision: FaultDecision = makeFaultDecision();
  t.same(decision, { copies: 0, releaseAtMs: [0, 0], corruptBit: [-1, -1] });
});

t.test('one spec for every device: a device naming itself goes dark, SRC/DST cuts one direction of one link', async (t) => {
  const spec = parseFaultSpec('partition=efa1@0ms+10ms,partition=efa0/efa2@0ms+10ms');
  const d = makeFaultDecision();
  const passes = (self: string, target: string, at: number): boolean => {
    const p = new FaultPlan(spec, { self });
    p.start(0);
    p.decide(at, 64, target, d);
    return d.copies > 0;
  };
  t.notOk(passes('efa0', 'efa1', 1), 'efa0 -> efa1: cut (efa1 is dark)');
  t.notOk(passes('efa1', 'efa0', 1), 'efa1 -> efa0: cut too (efa1 names itself)');
  t.notOk(passes('efa1', 'efa2', 1), 'efa1 -> anyone: cut');
  t.notOk(passes('efa0', 'efa2', 1), 'efa0 -> efa2: cut by efa0/efa2');
  t.ok(passes('efa2', 'efa0', 1), 'efa2 -> efa0: open (one direction only)');
  t.ok(passes('efa3', 'efa2', 1), 'efa3 -> efa2: open (the window belongs to efa0)');
  t.ok(passes('efa0', 'efa1', 11), 'after the window: open again');
  t.ok(new FaultPlan(parseFaultSpec('partition=efa1@0ms+10ms')).hasPartitions, 'a plan without a name still has the window');
  const anon = new FaultPlan(parseFaultSpec('partition=efa1@0ms+10ms'));
  anon.start(0);
  anon.decide(1, 64, 'efa0', d);
  t.equal(d.copies, 1, 'and a plan without a name matches only its destination');
});

t.test('schedulePartition adds a window as the spec would, relative to the plan start', async (t) => {
  const p = new FaultPlan(parseFaultSpec(''), { self: 'efa0' });
  p.start(100);
  p.schedulePartition('efa0/efa1', 5, 10);
  const d = makeFaultDecision();
  const at = (now: number, target: string): number => {
    p.decide(now, 64, target, d);
    return d.copies;
  };
  t.equal(at(104, 'efa1'), 1, 'before the window');
  t.equal(at(106, 'efa1'), 0, 'in it');
  t.equal(at(107, 'efa2'), 1, 'another destination is not cut');
  t.equal(at(116, 'efa1'), 1, 'after it');
  t.same(p.spec.partitions, [{ target: 'efa0/efa1', startMs: 5, durationMs: 10 }], 'it is part of the spec');
});
