import type { SendOp } from './send-op';

/**
 * A FIFO of sends on a power-of-two ring that grows by doubling: no shift() or splice() on
 * the hot path, and nothing allocated once it has reached its working size.
 */
export class OpRing {
  private slots: Array<SendOp | null>;
  private mask: number;
  private head = 0;
  size = 0;

  constructor(capacity = 16) {
    let cap = 1;
    while (cap < capacity) cap <<= 1;
    this.slots = new Array<SendOp | null>(cap).fill(null);
    this.mask = cap - 1;
  }

  push(op: SendOp): void {
    if (this.size > this.mask) this.grow();
    this.slots[(this.head + this.size) & this.mask] = op;
    this.size++;
  }

  /** The oldest entry, left in place, or null. */
  peek(): SendOp | null {
    return this.size === 0 ? null : this.slots[this.head];
  }

  shift(): SendOp | null {
    if (this.size === 0) return null;
    const op = this.slots[this.head];
    this.slots[this.head] = null;
    this.head = (this.head + 1) & this.mask;
    this.size--;
    return op;
  }

  /** Removes every entry `drop` says yes to, keeping the order of the rest; returns them. */
  removeWhere(drop: (op: SendOp) => boolean): SendOp[] {
    const removed: SendOp[] = [];
    const n = this.size;
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const op = this.slots[(this.head + i) & this.mask] as SendOp;
      if (drop(op)) removed.push(op);
      else this.slots[(this.head + kept++) & this.mask] = op;
    }
    for (let i = kept; i < n; i++) this.slots[(this.head + i) & this.mask] = null;
    this.size = kept;
    return removed;
  }

  private grow(): void {
    const old = this.slots;
    const cap = old.length * 2;
    const next = new Array<SendOp | null>(cap).fill(null);
    for (let i = 0; i < this.size; i++) next[i] = old[(this.head + i) & this.mask];
    this.slots = next;
    this.head = 0;
    this.mask = cap - 1;
  }
}
