/**
 * The packets a fault injector holds back, ordered by release time: a binary min-heap over
 * preallocated parallel arrays (struct of arrays), so queueing a packet allocates nothing
 * once the arrays have grown to the working size. Entries with equal release times come
 * out in the order they were pushed.
 */

/**
 * Where released packets go; the signature of UdpPort.send. With `onSent`, the sink calls it
 * once it no longer reads `buf`.
 */
export type PacketSink = (buf: Buffer, len: number, host: string, port: number, onSent?: (() => void) | null) => void;

export class DelayQueue {
  private capacity: number;
  private count = 0;
  /** Push counter, the tie-breaker that keeps equal release times in submission order. */
  private seqCounter = 0;

  // Per slot. A slot is an index into these arrays; the heap orders slots.
  private releaseAt: Float64Array;
  private seq: Float64Array;
  private lens: Uint32Array;
  private ports: Uint32Array;
  private bufs: Array<Buffer | null>;
  private hosts: string[];

  /** heap[0..count) are slots in heap order. */
  private heap: Int32Array;
  /** free[0..freeTop) are unused slots. */
  private free: Int32Array;
  private freeTop: number;

  constructor(initialCapacity = 64) {
    const cap = Math.max(1, Math.floor(initialCapacity));
    this.capacity = cap;
    this.releaseAt = new Float64Array(cap);
    this.seq = new Float64Array(cap);
    this.lens = new Uint32Array(cap);
    this.ports = new Uint32Array(cap);
    this.bufs = new Array<Buffer | null>(cap).fill(null);
    this.hosts = new Array<string>(cap).fill('');
    this.heap = new Int32Array(cap);
    this.free = new Int32Array(cap);
    for (let i = 0; i < cap; i++) this.free[i] = cap - 1 - i;
    this.freeTop = cap;
  }

  /** Packets waiting. */
  get size(): number {
    return this.count;
  }

  /** Release time of the earliest packet, or Infinity when empty. */
  peekTime(): number {
    return this.count === 0 ? Infinity : this.releaseAt[this.heap[0]];
  }

  /** Queues `len` bytes of `buf` for `host:port`, to be released at `releaseAtMs`. */
  push(releaseAtMs: number, buf: Buffer, len: number, host: string, port: number): void {
    if (this.freeTop === 0) this.grow();
    const slot = this.free[--this.freeTop];
    this.releaseAt[slot] = releaseAtMs;
    this.seq[slot] = this.seqCounter++;
    this.lens[slot] = len;
    this.ports[slot] = port;
    this.bufs[slot] = buf;
    this.hosts[slot] = host;
    this.siftUp(this.count++, slot);
  }

  /**
   * Hands every packet due at `nowMs` (release time <= nowMs) to `sink`, earliest first.
   * Each entry is removed before `sink` sees it, so a sink that pushes again is safe.
   * Returns the number released.
   */
  releaseDue(nowMs: number, sink: PacketSink): number {
    let released = 0;
    while (this.count > 0 && this.releaseAt[this.heap[0]] <= nowMs) {
      const slot = this.heap[0];
      const buf = this.bufs[slot] as Buffer;
      const len = this.lens[slot];
      const host = this.hosts[slot];
      const port = this.ports[slot];
      this.removeRoot(slot);
      released++;
      sink(buf, len, host, port);
    }
    return released;
  }

  /** Drops every queued packet; returns how many there were. */
  clear(): number {
    const dropped = this.count;
    for (let i = 0; i < dropped; i++) {
      const slot = this.heap[i];
      this.bufs[slot] = null;
      this.hosts[slot] = '';
      this.free[this.freeTop++] = slot;
    }
    this.count = 0;
    return dropped;
  }

  private removeRoot(slot: number): void {
    // Let go of the buffer now: a queued packet must not pin memory after it left.
    this.bufs[slot] = null;
    this.hosts[slot] = '';
    this.free[this.freeTop++] = slot;
    const last = this.heap[--this.count];
    if (this.count > 0) this.siftDown(0, last);
  }

  private before(a: number, b: number): boolean {
    const ta = this.releaseAt[a];
    const tb = this.releaseAt[b];
    return ta < tb || (ta === tb && this.seq[a] < this.seq[b]);
  }

  private siftUp(pos: number, slot: number): void {
    const heap = this.heap;
    while (pos > 0) {
      const parent = (pos - 1) >> 1;
      const p = heap[parent];
      if (!this.before(slot, p)) break;
      heap[pos] = p;
      pos = parent;
    }
    heap[pos] = slot;
  }

  private siftDown(pos: number, slot: number): void {
    const heap = this.heap;
    const n = this.count;
    for (;;) {
      let child = 2 * pos + 1;
      if (child >= n) break;
      if (child + 1 < n && this.before(heap[child + 1], heap[child])) child++;
      if (!this.before(heap[child], slot)) break;
      heap[pos] = heap[child];
      pos = child;
    }
    heap[pos] = slot;
  }

  private grow(): void {
    const old = this.capacity;
    const cap = old * 2;
    const f64 = (a: Float64Array): Float64Array => {
      const n = new Float64Array(cap);
      n.set(a);
      return n;
    };
    const u32 = (a: Uint32Array): Uint32Array => {
      const n = new Uint32Array(cap);
      n.set(a);
      return n;
    };
    this.releaseAt = f64(this.releaseAt);
    this.seq = f64(this.seq);
    this.lens = u32(this.lens);
    this.ports = u32(this.ports);
    for (let i = old; i < cap; i++) {
      this.bufs.push(null);
      this.hosts.push('');
    }
    const heap = new Int32Array(cap);
    heap.set(this.heap);
    this.heap = heap;
    // Only called with no free slot, so the new free list is exactly the new slots.
    const free = new Int32Array(cap);
    for (let i = 0; i < cap - old; i++) free[i] = cap - 1 - i;
    this.free = free;
    this.freeTop = cap - old;
    this.capacity = cap;
  }
}
