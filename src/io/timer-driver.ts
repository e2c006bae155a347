/** The timer functions the driver uses: Node's globals, or a test's counting wrappers. */
export interface TimerFunctions {
  setTimeout(fn: () => void, ms: number): NodeJS.Timeout;
  clearTimeout(t: NodeJS.Timeout): void;
  setImmediate(fn: () => void): NodeJS.Immediate;
  clearImmediate(i: NodeJS.Immediate): void;
}

const NODE_TIMERS: TimerFunctions = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t),
  setImmediate: (fn) => setImmediate(fn),
  clearImmediate: (i) => clearImmediate(i),
};

/**
 * One real timer per device, re-armed to the earliest deadline the device asks for: no timer
 * per packet. A deadline already due runs on setImmediate, after the I/O callbacks of this
 * turn of the event loop, which is what coalesces a burst of received packets into one ack.
 *
 * The Timeout object is kept after it fires and refreshed when the next wait is as long (in
 * whole milliseconds) as the last one, which is the common case (the ack delay, a steady
 * RTO), and a deadline due now leaves a pending Timeout alone: a busy device re-arms
 * thousands of times a second, and ping-pong asks for an ack (due now) under a pending RTO
 * every message.
 */
export class TimerDriver {
  /** The deadline the pending Timeout stands for (Infinity: none pending). */
  private timeoutAt = Infinity;
  /** The Timeout pending now, or null. */
  private timeout: NodeJS.Timeout | null = null;
  /** The last Timeout made, fired or pending, and its duration: refreshed when that fits. */
  private spare: NodeJS.Timeout | null = null;
  private spareMs = -1;
  private immediate: NodeJS.Immediate | null = null;
  private closed = false;
  private readonly fireBound = (): void => this.fire();
  /**
   * A setTimeout runs in the event loop's timers phase, before the poll phase reads the
   * sockets: after a stall, the answers that arrived meanwhile would still be unread when the
   * engine looks for silent peers. So a timeout only queues the firing for after the poll.
   */
  private readonly afterPollBound = (): void => {
    this.timeout = null;
    this.timeoutAt = Infinity;
    if (this.immediate === null) this.immediate = this.timers.setImmediate(this.fireBound);
  };

  constructor(
    private readonly clock: () => number,
    private readonly onFire: () => void,
    private readonly timers: TimerFunctions = NODE_TIMERS,
  ) {}

  /** Makes sure `onFire` runs at `deadline` or earlier. */
  arm(deadline: number): void {
    // A firing queued for this turn covers every deadline: the device re-arms from it.
    if (this.closed || this.immediate !== null || deadline >= this.timeoutAt) return;
    const delay = deadline - this.clock();
    if (delay <= 0) {
      // Due now (an ack to send, say): a pending Timeout for a later deadline (an RTO) stays
      // as it is rather than being cleared and made again once this firing re-arms it.
      this.immediate = this.timers.setImmediate(this.fireBound);
      return;
    }
    if (this.timeout !== null) {
      // A cleared Timeout cannot be refreshed again: the next wait makes a new one.
      this.timers.clearTimeout(this.timeout);
      this.spare = null;
    }
    // Whole milliseconds, rounded up. Node counts them from the event loop's cached clock, so
    // a firing can still come up to 1 ms early; the device then finds nothing due and re-arms.
    const ms = Math.ceil(delay);
    if (this.spare !== null && this.spareMs === ms) {
      this.spare.refresh();
    } else {
      this.spare = this.timers.setTimeout(this.afterPollBound, ms);
      this.spareMs = ms;
    }
    this.timeout = this.spare;
    this.timeoutAt = deadline;
  }

  private fire(): void {
    this.immediate = null;
    this.onFire();
  }

  close(): void {
    this.closed = true;
    if (this.timeout !== null) this.timers.clearTimeout(this.timeout);
    if (this.immediate !== null) this.timers.clearImmediate(this.immediate);
    this.timeout = null;
    this.spare = null;
    this.immediate = null;
    this.timeoutAt = Infinity;
  }
}
