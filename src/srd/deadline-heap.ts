import type { SendOp } from './send-op';

/**
 * The sends the engine must look at by a given time (retransmission, failure, end of an
 * RNR back-off), in a binary min-heap on `deadline`. Each op knows its position, so moving
 * or removing one costs O(log n) and the timer never scans the whole window.
 */
export class DeadlineHeap {
  private readonly items: SendOp[] = [];

  get size(): number {
    return this.items.length;
  }

  /** The earliest deadline, or Infinity. */
  peekDeadline(): number {
    return this.items.length === 0 ? Infinity : this.items[0].deadline;
  }

  peek(): SendOp | null {
    return this.items.length === 0 ? null : this.items[0];
  }

  /** Inserts `op`, or moves it when its deadline changed. */
  set(op: SendOp, deadline: number): void {
    const old = op.deadline;
    op.deadline = deadline;
    if (op.heapIndex < 0) {
      op.heapIndex = this.items.length;
      this.items.push(op);
      this.up(op.heapIndex);
    } else if (deadline < old) {
      this.up(op.heapIndex);
    } else if (deadline > old) {
      this.down(op.heapIndex);
    }
  }

  remove(op: SendOp): void {
    const i = op.heapIndex;
    if (i < 0) return;
    const items = this.items;
    const last = items.pop() as SendOp;
    op.heapIndex = -1;
    if (i < items.length) {
      items[i] = last;
      last.heapIndex = i;
      this.down(i);
      this.up(last.heapIndex);
    }
  }

  /** A snapshot of the members (for rare whole-heap work such as flushing a QP). */
  toArray(): SendOp[] {
    return this.items.slice();
  }

  private up(i: number): void {
    const items = this.items;
    const op = items[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      const parent = items[p];
      if (parent.deadline <= op.deadline) break;
      items[i] = parent;
      parent.heapIndex = i;
      i = p;
    }
    items[i] = op;
    op.heapIndex = i;
  }

  private down(i: number): void {
    const items = this.items;
    const n = items.length;
    const op = items[i];
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && items[c + 1].deadline < items[c].deadline) c++;
      const child = items[c];
      if (child.deadline >= op.deadline) break;
      items[i] = child;
      child.heapIndex = i;
      i = c;
    }
    items[i] = op;
    op.heapIndex = i;
  }
}
