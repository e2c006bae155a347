/**
 * The time source of the control plane. The daemon and the client read the time and arm
 * every timer through a {@link Clock}, so tests can substitute a clock they move by hand
 * (see `manual-clock.ts`) and check deadlines at their exact boundaries without sleeping.
 */
import { InvalidArgumentError } from '../common/errors';

/** A timer armed by a {@link Clock}. */
export interface ClockTimer {
  /**
   * Lets the process exit while this timer is the only thing left to do, as Node's
   * `Timeout.unref()` does. A clock that is not the real one may ignore it.
   */
  unref(): unknown;
}

/** Time and one-shot timers, in milliseconds. */
export interface Clock {
  /** Milliseconds on a monotonic clock. Only differences mean anything; it is not wall time. */
  now(): number;
  /** Calls `callback` once, `ms` milliseconds from now. */
  setTimeout(callback: () => void, ms: number): ClockTimer;
  /** Disarms a timer this clock armed. Harmless on a timer that fired or was disarmed already. */
  clearTimeout(timer: ClockTimer): void;
}

/** The process's own clock: `performance.now()` and Node's timers. */
export const realClock: Clock = Object.freeze({
  now: (): number => performance.now(),
  setTimeout: (callback: () => void, ms: number): ClockTimer => setTimeout(callback, ms),
  clearTimeout: (timer: ClockTimer): void => clearTimeout(timer as NodeJS.Timeout),
});

/** A running {@link every} timer. */
export interface Repeating {
  /** Stops it; no call starts after this returns. */
  cancel(): void;
}

/**
 * Calls `callback` every `periodMs` until cancelled, like `setInterval`. Built on one-shot
 * timers so a {@link Clock} needs no interval of its own. The next period is armed before
 * the callback runs, so a callback that cancels its own schedule stays cancelled. `unref`
 * makes every timer of it unref'd.
 */
export function every(clock: Clock, periodMs: number, callback: () => void, opts: { unref?: boolean } = {}): Repeating {
  let timer: ClockTimer | null = null;
  let cancelled = false;
  const arm = (): void => {
    timer = clock.setTimeout(fire, periodMs);
    if (opts.unref) timer.unref();
  };
  const fire = (): void => {
    if (cancelled) return;
    arm();
    callback();
  };
  arm();
  return {
    cancel(): void {
      cancelled = true;
      if (timer) clock.clearTimeout(timer);
      timer = null;
    },
  };
}

/** The clock an options object names, or {@link realClock}; throws InvalidArgumentError naming `where` for anything else. */
export function checkClock(clock: unknown, where: string): Clock {
  if (clock === undefined) return realClock;
  const c = clock as Partial<Clock> | null;
  if (typeof c !== 'object' || c === null || typeof c.now !== 'function' || typeof c.setTimeout !== 'function' || typeof c.clearTimeout !== 'function') {
    throw new InvalidArgumentError(`${where} must be a Clock: an object with now(), setTimeout() and clearTimeout()`);
  }
  return c as Clock;
}
