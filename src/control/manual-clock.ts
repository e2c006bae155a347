/**
 * A {@link Clock} that only moves when told to, for tests of deadlines: give it to the
 * daemon or the client, then {@link ManualClock.advance} to just before a deadline and to
 * it, and check both sides. Nothing here reads the real clock.
 */
import { InvalidArgumentError } from '../common/errors';
import type { Clock, ClockTimer } from './clock';

/** A timer of a {@link ManualClock}, as {@link ManualClock.timers} reports it. */
export interface ManualTimerInfo {
  /** When it fires, on the clock's time line. */
  readonly at: number;
  /** The delay it was armed with (after the same clamping Node applies). */
  readonly ms: number;
}

class ManualTimer implements ClockTimer, ManualTimerInfo {
  constructor(
    readonly seq: number,
    readonly at: number,
    readonly ms: number,
    readonly callback: () => void,
  ) {}

  unref(): this {
    return this;
  }
}

interface ArmWatch {
  readonly match: (t: ManualTimerInfo) => boolean;
  readonly resolve: (t: ManualTimerInfo) => void;
}

/** Largest delay Node's timers take; longer (or invalid) ones fire after 1 ms, there and here. */
const TIMEOUT_MAX = 0x7fffffff;

/**
 * Time that stands still until {@link advance} moves it. Timers fire in order of their due
 * time (ties: in the order they were armed), each seeing {@link now} equal to its due time;
 * a timer armed by a callback fires in the same advance if it falls due within it.
 */
export class ManualClock implements Clock {
  private time: number;
  private seq = 0;
  private readonly armed = new Set<ManualTimer>();
  private readonly watches: ArmWatch[] = [];
  private advancing = false;

  /** Starts at `startMs` (default 0). */
  constructor(startMs = 0) {
    if (!Number.isFinite(startMs)) throw new InvalidArgumentError(`ManualClock start must be a finite number, got ${startMs}`);
    this.time = startMs;
  }

  /** The clock's time, in milliseconds: where the last advance left it. */
  now(): number {
    return this.time;
  }

  /** Arms a timer `ms` from now; it fires during the {@link advance} that reaches its due time. */
  setTimeout(callback: () => void, ms: number): ClockTimer {
    // Node's own rule, so code behaves the same on this clock as on the real one.
    const delay = ms >= 1 && ms <= TIMEOUT_MAX ? ms : 1;
    const timer = new ManualTimer(this.seq++, this.time + delay, delay, callback);
    this.armed.add(timer);
    const info = { at: timer.at, ms: timer.ms };
    for (let i = 0; i < this.watches.length; i++) {
      const w = this.watches[i];
      if (!w.match(info)) continue;
      this.watches.splice(i--, 1);
      w.resolve(info);
    }
    return timer;
  }

  /** Disarms a timer of this clock; anything else is ignored. */
  clearTimeout(timer: ClockTimer): void {
    if (timer instanceof ManualTimer) this.armed.delete(timer);
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way. Returns how
   * many fired. A callback that throws stops the advance there, with time at its due time.
   *
   * Callbacks run back to back, synchronously: promise continuations they start run after
   * advance returns, whereas Node runs them between timers. Code that must react to one
   * timer before the next is due is best stepped through with {@link runNext} and an await.
   */
  advance(ms: number): number {
    if (!Number.isFinite(ms) || ms < 0) throw new InvalidArgumentError(`ManualClock.advance takes a non-negative number of milliseconds, got ${ms}`);
    return this.advanceTo(this.time + ms);
  }

  /** Moves time forward to `atMs` (not back), firing what falls due; returns how many fired. */
  advanceTo(atMs: number): number {
    if (!Number.isFinite(atMs) || atMs < this.time) {
      throw new InvalidArgumentError(`ManualClock.advanceTo needs a time at or after now (${this.time}), got ${atMs}`);
    }
    // A callback advancing the clock would fire timers out of order under the outer loop.
    if (this.advancing) throw new InvalidArgumentError('ManualClock cannot be advanced from inside one of its timers');
    this.advancing = true;
    let fired = 0;
    try {
      for (let next = this.earliest(); next !== null && next.at <= atMs; next = this.earliest()) {
        this.armed.delete(next);
        this.time = next.at;
        fired++;
        next.callback();
      }
      this.time = atMs;
    } finally {
      this.advancing = false;
    }
    return fired;
  }

  /** Moves time to the next timer's due time and fires what is due then; false when none is armed. */
  runNext(): boolean {
    const next = this.earliest();
    if (next === null) return false;
    this.advanceTo(next.at);
    return true;
  }

  /** Timers armed now, soonest first. */
  timers(): ManualTimerInfo[] {
    return [...this.armed].sort(order).map((t) => ({ at: t.at, ms: t.ms }));
  }

  /**
   * Resolves with the next timer armed (from now on) that `match` accepts. For code that
   * arms its timer only after some I/O: await this instead of polling.
   */
  whenArmed(match: (t: ManualTimerInfo) => boolean = () => true): Promise<ManualTimerInfo> {
    return new Promise((resolve) => this.watches.push({ match, resolve }));
  }

  private earliest(): ManualTimer | null {
    let best: ManualTimer | null = null;
    for (const t of this.armed) if (best === null || order(t, best) < 0) best = t;
    return best;
  }
}

function order(a: ManualTimer, b: ManualTimer): number {
  return a.at - b.at || a.seq - b.seq;
}
