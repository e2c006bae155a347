// The SRD engine's data structures on their own: the receiver's PSN ledger (any span above a
// stuck PSN, nothing delivered twice, wrap-around), the deadline heap and the send ring, and
// the text form of the SRD configuration (EFA_EMU_SRD).
import fc from 'fast-check';
import t from 'tap';
import { InvalidArgumentError } from '../src/common/errors';
import { DeadlineHeap } from '../src/srd/deadline-heap';
import { OpRing } from '../src/srd/op-ring';
import { MAX_PSN_SPAN, PSN_DELIVERED, PSN_UNKNOWN, PsnLedger } from '../src/srd/psn-ledger';
import { SendOp } from '../src/srd/send-op';
import { DEFAULT_SRD_CONFIG, formatSrdConfig, parseSrdConfigText, resolveSrdConfig } from '../src/srd/srd-config';

fc.configureGlobal({ seed: Number(process.env.FC_SEED ?? 0x5eed) });

t.test('the ledger keeps thousands of deliveries above a PSN still missing, and slides over them when it arrives', async (t) => {
  const l = new PsnLedger();
  l.reset(100);
  let accepted = 0;
  for (let psn = 101; psn < 101 + 10_000; psn++) if (l.set(psn, PSN_DELIVERED)) accepted++;
  t.equal(accepted, 10_000, 'every delivery above it is recorded');
  t.equal(l.base, 100, 'the cumulative point waits at the missing PSN');
  t.ok(l.capacity >= 10_001, `the ring grew to the span (${l.capacity})`);
  t.equal(l.get(5000), PSN_DELIVERED, 'a delivery far above it is remembered');
  t.equal(l.get(100), PSN_UNKNOWN, 'the missing one is unknown');
  l.set(100, PSN_DELIVERED);
  t.equal(l.base, 10_101, 'once it arrives, the cumulative point runs over everything delivered');
  t.equal(l.get(50), PSN_DELIVERED, 'below the base everything counts as settled: never delivered again');
});

t.test('a refusal holds the cumulative point until the sender moves its window start past it', async (t) => {
  const l = new PsnLedger();
  l.reset(0);
  l.set(0, 10); // refused RNR
  l.set(1, PSN_DELIVERED);
  t.equal(l.base, 0, 'a refused PSN is not delivered: the base stays');
  t.equal(l.get(0), 10, 'and later copies get the same answer');
  l.advanceTo(1);
  t.equal(l.base, 2, 'the sender retired it: the base moves over it and the delivered one');
  t.equal(l.get(0), PSN_DELIVERED, 'and its copies are settled, not delivered');
});

t.test('the ledger refuses PSNs beyond its largest span and wraps around 2^32', async (t) => {
  const l = new PsnLedger();
  l.reset(0xffffff00);
  t.equal(l.set((0xffffff00 + MAX_PSN_SPAN) >>> 0, PSN_DELIVERED), false, 'beyond MAX_PSN_SPAN: refused');
  for (let i = 0; i < 512; i++) l.set((0xffffff00 + i) >>> 0, PSN_DELIVERED);
  t.equal(l.base, (0xffffff00 + 512) >>> 0, 'the base wrapped past 2^32');
});

t.test('the ledger agrees with a plain set for any order of deliveries and window moves', async (t) => {
  t.doesNotThrow(() => fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.record({ kind: fc.constant('deliver' as const), off: fc.integer({ min: 0, max: 3000 }) }), fc.record({ kind: fc.constant('advance' as const), off: fc.integer({ min: 0, max: 3000 }) })), { maxLength: 300 }),
      (ops) => {
        const start = 0xfffff000;
        const l = new PsnLedger();
        l.reset(start);
        const delivered = new Set<number>();
        let windowStart = 0;
        for (const op of ops) {
          if (op.kind === 'deliver') {
            if (op.off < windowStart || delivered.has(op.off)) continue;
            l.set((start + op.off) >>> 0, PSN_DELIVERED);
            delivered.add(op.off);
          } else if (op.off > windowStart) {
            windowStart = op.off;
            l.advanceTo((start + op.off) >>> 0);
          }
        }
        for (let off = 0; off < 3100; off++) {
          const want = off < windowStart || delivered.has(off);
          if ((l.get((start + off) >>> 0) === PSN_DELIVERED) !== want) return false;
        }
        let base = windowStart;
        while (delivered.has(base)) base++;
        return l.base === ((start + base) >>> 0);
      },
    ),
    { numRuns: 300 },
  ), '300 random histories agree with a set');
});

t.test('the deadline heap gives sends back in deadline order, with moves and removals', async (t) => {
  t.doesNotThrow(() => fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 2 })), { minLength: 1, maxLength: 200 }), (steps) => {
      const h = new DeadlineHeap();
      const ops = steps.map(() => new SendOp());
      const model = new Map<SendOp, number>();
      steps.forEach(([d, action], i) => {
        const op = ops[action === 0 || i === 0 ? i : i - 1];
        if (action === 2 && model.has(op)) {
          h.remove(op);
          model.delete(op);
        } else {
          h.set(op, d);
          model.set(op, d);
        }
      });
      if (h.size !== model.size) return false;
      let last = -Infinity;
      while (h.size > 0) {
        const op = h.peek() as SendOp;
        if (op.deadline < last || model.get(op) !== op.deadline) return false;
        last = op.deadline;
        h.remove(op);
        model.delete(op);
      }
      return model.size === 0;
    }),
    { numRuns: 300 },
  ), '300 random sequences come out in deadline order');
});

t.test('the send ring is a FIFO that grows and removes by predicate in order', async (t) => {
  const r = new OpRing(2);
  const ops = Array.from({ length: 100 }, (_, i) => Object.assign(new SendOp(), { wrId: i }));
  for (const op of ops.slice(0, 10)) r.push(op);
  t.equal(r.shift()?.wrId, 0);
  for (const op of ops.slice(10)) r.push(op);
  t.equal(r.size, 99);
  const removed = r.removeWhere((op) => op.wrId % 2 === 0);
  t.same(removed.map((o) => o.wrId).slice(0, 3), [2, 4, 6], 'removed in order');
  const rest: number[] = [];
  for (let op = r.shift(); op !== null; op = r.shift()) rest.push(op.wrId);
  t.same(rest, ops.filter((o) => o.wrId % 2 === 1).map((o) => o.wrId), 'the others, in order');
  t.equal(r.peek(), null);
});

t.test('SRD settings as text (EFA_EMU_SRD): read, written back, bad input named', async (t) => {
  const cfg = parseSrdConfigText(' window=32, unresponsiveTimeoutMs=300 ,');
  t.same(cfg, { window: 32, unresponsiveTimeoutMs: 300 });
  t.equal(formatSrdConfig({ ...DEFAULT_SRD_CONFIG, ...cfg }), 'window=32,unresponsiveTimeoutMs=300', 'only what differs from the defaults');
  t.same(parseSrdConfigText(formatSrdConfig({ window: 8, ackDelayMs: 0.25 })), { window: 8, ackDelayMs: 0.25 }, 'a round trip');
  t.throws(() => parseSrdConfigText('windw=3', 'EFA_EMU_SRD'), InvalidArgumentError);
  t.throws(() => parseSrdConfigText('windw=3', 'EFA_EMU_SRD'), { code: 'EINVAL', message: /EFA_EMU_SRD: unknown SRD option "windw"/ });
  t.throws(() => parseSrdConfigText('window=lots'), { code: 'EINVAL', message: /window needs a number/ });
  t.throws(() => resolveSrdConfig({ window: 0 }), /srd\.window: must be an integer in 1\.\./);
  t.throws(() => resolveSrdConfig({ deviceWindow: 1.5 }), /srd\.deviceWindow/);
});
