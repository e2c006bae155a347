/**
 * One real timer per device, re-armed to the earliest deadline the device asks for: no timer
 * per packet. A deadline already due runs on setImmediate, after the I/O callbacks of this
 * turn of the event loop, which is what coalesces a burst of received packets into one ack.
 */
export class TimerDriver {
  private armedAt = Infinity;
  private timeout: NodeJS.Timeout | null = null;
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
    this.immediate = setImmediate(this.fireBound);
  };

  constructor(
    private readonly clock: () => number,
    private readonly onFire: () => void,
  ) {}

  /** Makes sure `onFire` runs at `deadline` or earlier. */
  arm(deadline: number): void {
    if (this.closed || deadline >= this.armedAt) return;
    this.cancel();
    this.armedAt = deadline;
    const delay = deadline - this.clock();
    if (delay <= 0) {
      this.immediate = setImmediate(this.fireBound);
    } else {
      // setTimeout rounds to whole milliseconds; never wait less than asked.
      this.timeout = setTimeout(this.afterPollBound, Math.ceil(delay));
    }
  }

  private fire(): void {
    this.timeout = null;
    this.immediate = null;
    this.armedAt = Infinity;
    this.onFire();
  }

  private cancel(): void {
    if (this.timeout !== null) clearTimeout(this.timeout);
    if (this.immediate !== null) clearImmediate(this.immediate);
    this.timeout = null;
    this.immediate = null;
    this.armedAt = Infinity;
  }

  close(): void {
    this.closed = true;
    this.cancel();
  }
}
