/**
 * One buffer of a {@link PacketPool} and the callback that gives it back: the `onSent` a
 * transport calls once it no longer reads the buffer. Made once per buffer, so a send costs
 * neither a Buffer nor a closure.
 */
export class PooledBuffer {
  readonly buf: Buffer;
  /** Returns the buffer to its pool; the transport calls it exactly once per send. */
  readonly release: () => void;

  constructor(pool: PacketPool, size: number) {
    this.buf = Buffer.allocUnsafeSlow(size);
    this.release = () => pool.give(this);
  }
}

/**
 * Send buffers of one size, reused once the transport lets go of them: the hot path (acks,
 * NAKs, UD sends) allocates only while the number in flight grows. Buffers the transport never
 * gives back (a socket closed under them) are simply collected.
 */
export class PacketPool {
  private readonly free: PooledBuffer[] = [];
  /** Buffers made so far (for tests: a steady stream stops making them). */
  created = 0;

  constructor(
    readonly size: number,
    /** Most buffers kept for reuse; a burst beyond it leaves the rest to the collector. */
    readonly max: number,
  ) {}

  /** A buffer of `size` bytes, its content undefined. */
  take(): PooledBuffer {
    const p = this.free.pop();
    if (p !== undefined) return p;
    this.created++;
    return new PooledBuffer(this, this.size);
  }

  /** Called through PooledBuffer.release. */
  give(p: PooledBuffer): void {
    if (this.free.length < this.max) this.free.push(p);
  }
}
