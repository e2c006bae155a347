import t from 'tap';
import { TimerDriver, type TimerFunctions } from '../src/io/timer-driver';

/** Node's timers, counting what the driver creates. */
function countingTimers(): TimerFunctions & { made: number; immediates: number; cleared: number } {
  const c = {
    made: 0,
    immediates: 0,
    cleared: 0,
    setTimeout: (fn: () => void, ms: number) => {
      c.made++;
      return setTimeout(fn, ms);
    },
    clearTimeout: (x: NodeJS.Timeout) => {
      c.cleared++;
      clearTimeout(x);
    },
    setImmediate: (fn: () => void) => {
      c.immediates++;
      return setImmediate(fn);
    },
    clearImmediate: (i: NodeJS.Immediate) => clearImmediate(i),
  };
  return c;
}

/** A driver whose firings resolve, in order, the promises `next()` hands out. */
function driver(timers: TimerFunctions): { d: TimerDriver; next(): Promise<number>; fired(): number } {
  let count = 0;
  let waiting: ((at: number) => void) | null = null;
  const d = new TimerDriver(
    () => performance.now(),
    () => {
      count++;
      const w = waiting;
      waiting = null;
      w?.(performance.now());
    },
    timers,
  );
  return {
    d,
    next: () => new Promise<number>((resolve) => (waiting = resolve)),
    fired: () => count,
  };
}

t.test('waits of one length reuse one Timeout, refreshed', async (t) => {
  const timers = countingTimers();
  const { d, next, fired } = driver(timers);
  for (let i = 0; i < 50; i++) {
    const armedAt = performance.now();
    const done = next();
    d.arm(armedAt + 2);
    const at = await done;
    // Node counts timeouts from the loop's cached millisecond clock: up to 1 ms early, no more.
    t.ok(at - armedAt > 1, `firing ${i} after ${(at - armedAt).toFixed(2)} ms`);
  }
  t.equal(fired(), 50);
  t.equal(timers.made, 1, '50 waits of 2 ms, one Timeout');
  t.equal(timers.cleared, 0);
  d.close();
});

t.test('a wait of another length makes a new Timeout; an earlier deadline replaces a pending one', async (t) => {
  const timers = countingTimers();
  const { d, next, fired } = driver(timers);
  let done = next();
  d.arm(performance.now() + 1);
  await done;
  done = next();
  d.arm(performance.now() + 3);
  await done;
  t.equal(timers.made, 2, 'a 3 ms wait after 1 ms ones is a new Timeout');

  // Pending at 50 ms, then asked for 2 ms: the 2 ms one fires, and only once.
  const started = performance.now();
  done = next();
  d.arm(started + 50);
  d.arm(started + 2);
  d.arm(started + 40); // later than what is armed: no change
  const at = await done;
  t.ok(at - started < 40, `fired at the earlier deadline (${(at - started).toFixed(1)} ms)`);
  t.equal(timers.cleared, 1, 'the 50 ms Timeout was cleared');
  t.equal(timers.made, 4);
  // Nothing is pending now: a 60 ms wait for a firing that must not come.
  await new Promise((r) => setTimeout(r, 60));
  t.equal(fired(), 3, 'the replaced deadline never fired');
  d.close();
});

t.test('a deadline already due runs on setImmediate; close stops everything', async (t) => {
  const timers = countingTimers();
  const { d, next, fired } = driver(timers);
  const done = next();
  d.arm(performance.now() - 1);
  await done;
  t.equal(timers.immediates, 1);
  t.equal(timers.made, 0, 'no Timeout for a due deadline');

  d.arm(performance.now() + 5);
  d.close();
  d.arm(performance.now() + 1);
  await new Promise((r) => setTimeout(r, 30));
  t.equal(fired(), 1, 'nothing fires after close');
});

t.test('a deadline due now leaves a pending Timeout for a later one alone', async (t) => {
  const timers = countingTimers();
  const { d, next, fired } = driver(timers);
  const started = performance.now();
  d.arm(started + 50); // an RTO, say
  let done = next();
  d.arm(started - 1); // an ack due now
  await done;
  t.equal(fired(), 1, 'the due deadline fired at once');
  t.equal(timers.cleared, 0, 'the pending Timeout was not cleared');
  // What the device does after that firing: ask again for its later deadline.
  done = next();
  d.arm(started + 50);
  const at = await done;
  t.equal(timers.made, 1, 'one Timeout for both');
  t.ok(at - started > 49, `the later deadline fired on time (${(at - started).toFixed(1)} ms)`);
  d.close();
});
