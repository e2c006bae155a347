// The test clock itself, and the `every` helper the daemon and client build intervals from:
// the daemon-clock tests are only as good as the clock they move.
import t from 'tap';
import { every, realClock } from '../src/control/clock';
import { ManualClock } from '../src/control/manual-clock';

t.test('timers fire in due order, ties in arming order, each seeing its own due time', async (t) => {
  const clock = new ManualClock(100);
  const log: string[] = [];
  const at = (name: string) => () => log.push(`${name}@${clock.now()}`);
  clock.setTimeout(at('c'), 30);
  clock.setTimeout(at('a'), 10);
  clock.setTimeout(at('b1'), 20);
  clock.setTimeout(at('b2'), 20);
  t.equal(clock.advance(19), 1);
  t.same(log, ['a@110']);
  t.equal(clock.now(), 119, 'time lands on the target');
  t.equal(clock.advance(1), 2);
  t.same(log, ['a@110', 'b1@120', 'b2@120']);
  t.equal(clock.advanceTo(1000), 1);
  t.same(log, ['a@110', 'b1@120', 'b2@120', 'c@130']);
  t.equal(clock.now(), 1000);
});

t.test('a timer armed by a callback fires in the same advance when due within it', async (t) => {
  const clock = new ManualClock();
  const log: number[] = [];
  clock.setTimeout(() => {
    log.push(clock.now());
    clock.setTimeout(() => log.push(clock.now()), 5);
    clock.setTimeout(() => log.push(clock.now()), 50);
  }, 10);
  clock.advance(20);
  t.same(log, [10, 15]);
  t.same(clock.timers(), [{ at: 60, ms: 50 }]);
  t.ok(clock.runNext());
  t.same(log, [10, 15, 60]);
  t.notOk(clock.runNext(), 'nothing left');
});

t.test('clearTimeout disarms; delays are clamped as Node clamps them', async (t) => {
  const clock = new ManualClock();
  let fired = 0;
  const timer = clock.setTimeout(() => fired++, 10);
  clock.clearTimeout(timer);
  clock.clearTimeout(timer);
  clock.advance(100);
  t.equal(fired, 0);
  clock.setTimeout(() => fired++, 0);
  clock.setTimeout(() => fired++, -5);
  clock.setTimeout(() => fired++, NaN);
  clock.setTimeout(() => fired++, 2 ** 31);
  t.same(clock.timers().map((x) => x.ms), [1, 1, 1, 1]);
  clock.advance(0);
  t.equal(fired, 0, 'a 0 ms timer is not due at once');
  clock.advance(1);
  t.equal(fired, 4);
});

t.test('whenArmed resolves with the next matching timer', async (t) => {
  const clock = new ManualClock();
  const p = clock.whenArmed((x) => x.ms === 7);
  clock.setTimeout(() => undefined, 3);
  clock.setTimeout(() => undefined, 7);
  t.same(await p, { at: 7, ms: 7 });
});

t.test('time never goes back, and cannot be advanced from a timer', async (t) => {
  const clock = new ManualClock(50);
  t.throws(() => clock.advance(-1), { code: 'EINVAL' });
  t.throws(() => clock.advanceTo(49), { code: 'EINVAL' });
  t.throws(() => new ManualClock(Infinity), { code: 'EINVAL' });
  let inner: unknown;
  clock.setTimeout(() => {
    try {
      clock.advance(1);
    } catch (err) {
      inner = err;
    }
  }, 1);
  clock.advance(1);
  t.match(inner, { code: 'EINVAL', message: /inside one of its timers/ });
  t.equal(clock.now(), 51);
});

t.test('every: one call per period, armed before the callback, cancellable from inside it', async (t) => {
  const clock = new ManualClock();
  const calls: number[] = [];
  const r = every(clock, 100, () => {
    calls.push(clock.now());
    if (calls.length === 3) r.cancel();
  });
  clock.advance(99);
  t.same(calls, []);
  clock.advance(1);
  t.same(calls, [100]);
  clock.advance(1000);
  t.same(calls, [100, 200, 300], 'stopped by its own cancel');
  t.same(clock.timers(), [], 'no timer left armed');
});

t.test('the real clock is monotonic milliseconds and its timers unref', async (t) => {
  const a = realClock.now();
  t.ok(realClock.now() >= a);
  const timer = realClock.setTimeout(() => t.fail('cleared timer fired'), 1);
  timer.unref();
  realClock.clearTimeout(timer);
});
