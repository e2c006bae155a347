import type { CompletionQueue } from './device/completion-queue';
import type { Device } from './device/device';
import { WorkCompletion } from './device/work-completion';

/** How a poller waits for completions. */
export type PollMode = 'event' | 'busy';

/**
 * Handles one batch of completions. `wcs` holds exactly the batch (`wcs.length === count`), so
 * `for (const wc of wcs)` reads only this batch's entries. The array and its objects are the
 * poller's and are refilled by the next batch: copy what must outlive the call.
 */
export type CompletionHandler = (wcs: readonly WorkCompletion[], count: number) => void;

/**
 * Drives a CQ for you in one of the two ways verbs programs do:
 *
 * - `event`: sleep in the event loop until the CQ's completion channel fires (reqNotifyCq),
 *   then poll until empty, re-arm, and poll once more so nothing slips between the last poll
 *   and the arming. Costs nothing while idle; each wake-up costs a few tens of microseconds.
 * - `busy`: spin on pollCq, yielding to the event loop with setImmediate between polls, as
 *   perftest and fabtests do by default. Burns a core; cuts a small-message round trip several
 *   times over.
 *
 * `event` needs a CQ created with a completion channel.
 */
export class CompletionPoller {
  /** Where pollCq writes (batch entries, reused). */
  private readonly wcs: WorkCompletion[] = [];
  /** What the handler sees: the same objects, exactly as many as the batch holds. */
  private readonly view: WorkCompletion[] = [];
  private running = false;
  private spinning = false;
  private readonly spinBound = (): void => this.spin();
  private readonly onEventBound = (): void => {
    if (this.running) this.drain(true);
  };

  constructor(
    private readonly device: Device,
    private readonly cq: CompletionQueue,
    readonly mode: PollMode,
    /** Called with each non-empty batch. Replaceable between runs. */
    public onCompletions: CompletionHandler,
    private readonly batch = 32,
  ) {
    if (mode === 'event') {
      if (cq.channel === null) throw new TypeError('CompletionPoller: event mode needs a CQ with a completion channel');
      cq.channel.on('cq', this.onEventBound);
    }
    for (let i = 0; i < batch; i++) this.wcs.push(new WorkCompletion());
  }

  /** Starts delivering completions (idempotent). */
  start(): void {
    this.running = true;
    if (this.mode === 'busy') {
      if (this.spinning) return;
      this.spinning = true;
      setImmediate(this.spinBound);
    } else {
      this.drain(true);
    }
  }

  /** Stops delivering; completions stay queued in the CQ until the next start. */
  stop(): void {
    this.running = false;
    this.spinning = false;
  }

  private spin(): void {
    if (!this.spinning) return;
    this.drain(false);
    setImmediate(this.spinBound);
  }

  private drain(rearm: boolean): void {
    for (;;) {
      const n = this.device.pollCq(this.cq, this.batch, this.wcs);
      if (n > 0) {
        const view = this.view;
        view.length = n;
        for (let i = 0; i < n; i++) view[i] = this.wcs[i];
        this.onCompletions(view, n);
        if (!this.running) return;
        continue;
      }
      if (!rearm) return;
      // Arm, then poll once more: a completion that landed in between raises no event.
      this.device.reqNotifyCq(this.cq);
      rearm = false;
    }
  }
}
