import { EventEmitter } from 'node:events';
import { ClosedError } from '../common/errors';
import type { CompletionQueue } from './completion-queue';

/**
 * A completion channel, as `ibv_comp_channel`: CQs created on it report "a completion
 * arrived" events after `reqNotifyCq` armed them. Listen for `'cq'` events or await
 * `getCqEvent()`.
 *
 * Events are delivered on a microtask after the completion is queued, never inside the
 * device's packet processing, so a handler may poll and post freely.
 */
export class CompletionChannel extends EventEmitter {
  /** Events delivered and not yet acknowledged with `ackCqEvents`. */
  unacked = 0;
  closed = false;
  private readonly pending: CompletionQueue[] = [];
  /** Events that found no listener: kept for the next `getCqEvent`, as a channel fd keeps them. */
  private readonly undelivered: CompletionQueue[] = [];
  private scheduled = false;
  private readonly flushBound = (): void => this.flush();

  /** Queues an event for `cq` (called by the CQ when armed). */
  notify(cq: CompletionQueue): void {
    if (this.closed) return;
    this.pending.push(cq);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.flushBound);
    }
  }

  private flush(): void {
    this.scheduled = false;
    // Index loop rather than shift(): the list is emptied in one go afterwards.
    const list = this.pending;
    for (let i = 0; i < list.length; i++) {
      if (this.listenerCount('cq') === 0) {
        this.undelivered.push(list[i]);
        continue;
      }
      this.unacked++;
      this.emit('cq', list[i]);
    }
    list.length = 0;
  }

  /** Resolves with the CQ of the next event, as `ibv_get_cq_event`. */
  getCqEvent(): Promise<CompletionQueue> {
    if (this.closed) return Promise.reject(new ClosedError('completion channel is destroyed'));
    if (this.undelivered.length > 0) {
      this.unacked++;
      return Promise.resolve(this.undelivered.shift() as CompletionQueue);
    }
    return new Promise((resolve) => this.once('cq', resolve));
  }

  /** Acknowledges `n` events, as `ibv_ack_cq_events`. */
  ackCqEvents(n = 1): void {
    this.unacked = Math.max(0, this.unacked - n);
  }
}
