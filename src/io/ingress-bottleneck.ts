/**
 * The receive side of a device as a shared bottleneck: one link of a fixed rate and one
 * buffer in front of it that every sender's packets go through, as the last switch port
 * before a host. Incast (many senders, one receiver) congests this one queue: packets wait
 * longer and longer, and once the buffer is full new ones are dropped.
 *
 * Sans-IO: {@link IngressBottleneck} only does the arithmetic (when does a packet come out,
 * does it fit), with the clock passed in, so the real device (fault-injector.ts) and the
 * deterministic simulation drive the same model. {@link HeldPackets} is the FIFO the real
 * device keeps the admitted packets in until their release time.
 */
import { InvalidArgumentError } from '../common/errors';

/** Counters of a bottleneck, kept across reconfigurations. */
export class IngressBottleneckStats {
  /** Packets admitted (they come out at their release time). */
  pkts = 0;
  /** Packets dropped because the buffer could not hold them. */
  drops = 0;
  /** Bytes admitted. */
  bytes = 0;
  /** Most bytes ever waiting at once, the admitted packet included. */
  maxQueueBytes = 0;

  toJSON(): Record<string, number> {
    return { pkts: this.pkts, drops: this.drops, bytes: this.bytes, maxQueueBytes: this.maxQueueBytes };
  }
}

function checkRate(rate: number, what: string): void {
  if (typeof rate !== 'number' || !(rate > 0) || !Number.isFinite(rate)) {
    throw new InvalidArgumentError(`${what}: rateBytesPerSec must be a finite number > 0 (got ${String(rate)})`);
  }
}

function checkBuffer(buffer: number, what: string): void {
  if (!Number.isInteger(buffer) || buffer < 1) {
    throw new InvalidArgumentError(`${what}: bufferBytes must be an integer >= 1 (got ${String(buffer)})`);
  }
}

/**
 * A FIFO served at `rateBytesPerSec` behind a buffer of `bufferBytes`.
 *
 * A packet admitted at `now` leaves at `max(now, previous departure) + len / rate` (its
 * last byte has then crossed the link). A packet counts against the buffer from its
 * admission until its departure, so it is admitted only when the bytes of the packets that
 * have not left by `now`, plus its own, fit the buffer; a packet larger than the buffer is
 * always dropped. Times are milliseconds on the caller's clock and must not go backwards.
 */
export class IngressBottleneck {
  /** Counters; the same object for the bottleneck's whole life. */
  readonly stats = new IngressBottleneckStats();

  private msPerByte: number;
  private bufferBytes: number;
  private lastDepartureMs = -Infinity;
  /** Bytes admitted that have not departed yet, as of the last admit(). */
  private waitingBytes = 0;

  // The packets that have not departed, oldest first, in a growable ring. Departures never
  // decrease, so the ones gone are always at the head.
  private departures: Float64Array;
  private lens: Float64Array;
  private head = 0;
  private count = 0;

  /** @throws InvalidArgumentError for a rate that is not finite and > 0, or a buffer below 1 byte. */
  constructor(rateBytesPerSec: number, bufferBytes: number) {
    checkRate(rateBytesPerSec, 'IngressBottleneck');
    checkBuffer(bufferBytes, 'IngressBottleneck');
    this.msPerByte = 1000 / rateBytesPerSec;
    this.bufferBytes = bufferBytes;
    this.departures = new Float64Array(64);
    this.lens = new Float64Array(64);
  }

  /** Link rate in bytes per second. */
  get rateBytesPerSec(): number {
    return 1000 / this.msPerByte;
  }

  /** Buffer size in bytes. */
  get buffer(): number {
    return this.bufferBytes;
  }

  /**
   * Changes rate and buffer from now on. Packets already admitted keep their release times
   * and their place in the buffer; later ones queue behind them. A buffer made smaller than
   * what is waiting drops new packets until enough has left.
   *
   * @throws InvalidArgumentError as the constructor does; nothing changes then.
   */
  configure(rateBytesPerSec: number, bufferBytes: number): void {
    checkRate(rateBytesPerSec, 'IngressBottleneck.configure');
    checkBuffer(bufferBytes, 'IngressBottleneck.configure');
    this.msPerByte = 1000 / rateBytesPerSec;
    this.bufferBytes = bufferBytes;
  }

  /** Bytes of the packets admitted that have not left by `nowMs`. */
  queuedBytes(nowMs: number): number {
    this.expire(nowMs);
    return this.waitingBytes;
  }

  /** Packets admitted that have not left by `nowMs`. */
  queuedPackets(nowMs: number): number {
    this.expire(nowMs);
    return this.count;
  }

  /**
   * Offers a packet of `len` bytes arriving at `nowMs`. Returns its release time (>= nowMs),
   * or -1 when the buffer cannot hold it and it is dropped.
   */
  admit(nowMs: number, len: number): number {
    this.expire(nowMs);
    const stats = this.stats;
    const queued = this.waitingBytes + len;
    if (queued > this.bufferBytes) {
      stats.drops++;
      return -1;
    }
    const departMs = (this.lastDepartureMs > nowMs ? this.lastDepartureMs : nowMs) + len * this.msPerByte;
    this.lastDepartureMs = departMs;
    if (this.count === this.departures.length) this.grow();
    const cap = this.departures.length;
    const tail = (this.head + this.count) % cap;
    this.departures[tail] = departMs;
    this.lens[tail] = len;
    this.count++;
    this.waitingBytes = queued;
    stats.pkts++;
    stats.bytes += len;
    if (queued > stats.maxQueueBytes) stats.maxQueueBytes = queued;
    return departMs;
  }

  /** Forgets every waiting packet (the link is reset); counters stay. */
  clear(): void {
    this.head = 0;
    this.count = 0;
    this.waitingBytes = 0;
    this.lastDepartureMs = -Infinity;
  }

  private expire(nowMs: number): void {
    const deps = this.departures;
    const cap = deps.length;
    while (this.count > 0 && deps[this.head] <= nowMs) {
      this.waitingBytes -= this.lens[this.head];
      this.head = this.head + 1 === cap ? 0 : this.head + 1;
      this.count--;
    }
    // Sums of whole byte counts are exact, but a caller may pass fractional lengths.
    if (this.count === 0) this.waitingBytes = 0;
  }

  private grow(): void {
    const cap = this.departures.length;
    const deps = new Float64Array(cap * 2);
    const lens = new Float64Array(cap * 2);
    for (let i = 0; i < this.count; i++) {
      const j = (this.head + i) % cap;
      deps[i] = this.departures[j];
      lens[i] = this.lens[j];
    }
    this.departures = deps;
    this.lens = lens;
    this.head = 0;
  }
}

/** Where a held packet goes once released: the device's datagram handler. */
export type DeliverFn = (buf: Buffer, host: string, port: number) => void;

/**
 * Received packets waiting for their release time, in arrival order (a bottleneck's
 * release times never decrease, so FIFO order is release order): a growable ring of
 * parallel arrays, so holding a packet allocates nothing once the ring has grown to the
 * working size.
 */
export class HeldPackets {
  private releaseAt: Float64Array;
  private bufs: Array<Buffer | null>;
  private hosts: string[];
  private ports: Uint32Array;
  private delivers: Array<DeliverFn | null>;
  private head = 0;
  private count = 0;
  private heldBytes = 0;

  constructor(initialCapacity = 64) {
    const cap = Math.max(1, Math.floor(initialCapacity));
    this.releaseAt = new Float64Array(cap);
    this.bufs = new Array<Buffer | null>(cap).fill(null);
    this.hosts = new Array<string>(cap).fill('');
    this.ports = new Uint32Array(cap);
    this.delivers = new Array<DeliverFn | null>(cap).fill(null);
  }

  /** Packets held. */
  get size(): number {
    return this.count;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Release time of the oldest packet, Infinity when empty. */
  peekTime(): number {
    return this.count === 0 ? Infinity : this.releaseAt[this.head];
  }

  /** Holds `buf` until `releaseAtMs`; times must not decrease from one push to the next. */
  push(releaseAtMs: number, buf: Buffer, host: string, port: number, deliver: DeliverFn): void {
    if (this.count === this.bufs.length) this.grow();
    const tail = (this.head + this.count) % this.bufs.length;
    this.releaseAt[tail] = releaseAtMs;
    this.bufs[tail] = buf;
    this.hosts[tail] = host;
    this.ports[tail] = port;
    this.delivers[tail] = deliver;
    this.count++;
    this.heldBytes += buf.length;
  }

  /**
   * Hands every packet due at `nowMs` to its deliver function, oldest first; each leaves the
   * ring before it is handed on, so a deliver function that receives again is safe. Returns
   * the number released.
   */
  releaseDue(nowMs: number): number {
    let released = 0;
    while (this.count > 0 && this.releaseAt[this.head] <= nowMs) {
      const i = this.head;
      const buf = this.bufs[i] as Buffer;
      const host = this.hosts[i];
      const port = this.ports[i];
      const deliver = this.delivers[i] as DeliverFn;
      this.bufs[i] = null;
      this.delivers[i] = null;
      this.hosts[i] = '';
      this.head = this.head + 1 === this.bufs.length ? 0 : this.head + 1;
      this.count--;
      this.heldBytes -= buf.length;
      released++;
      deliver(buf, host, port);
    }
    return released;
  }

  /** Makes every held packet due now (their order stays). */
  expedite(nowMs: number): void {
    const cap = this.bufs.length;
    for (let k = 0; k < this.count; k++) {
      const i = (this.head + k) % cap;
      if (this.releaseAt[i] > nowMs) this.releaseAt[i] = nowMs;
    }
  }

  /** Drops every held packet; returns how many there were. */
  clear(): number {
    const dropped = this.count;
    this.bufs.fill(null);
    this.delivers.fill(null);
    this.hosts.fill('');
    this.head = 0;
    this.count = 0;
    this.heldBytes = 0;
    return dropped;
  }

  private grow(): void {
    const cap = this.bufs.length;
    const next = cap * 2;
    const releaseAt = new Float64Array(next);
    const bufs = new Array<Buffer | null>(next).fill(null);
    const hosts = new Array<string>(next).fill('');
    const ports = new Uint32Array(next);
    const delivers = new Array<DeliverFn | null>(next).fill(null);
    for (let k = 0; k < this.count; k++) {
      const i = (this.head + k) % cap;
      releaseAt[k] = this.releaseAt[i];
      bufs[k] = this.bufs[i];
      hosts[k] = this.hosts[i];
      ports[k] = this.ports[i];
      delivers[k] = this.delivers[i];
    }
    this.releaseAt = releaseAt;
    this.bufs = bufs;
    this.hosts = hosts;
    this.ports = ports;
    this.delivers = delivers;
    this.head = 0;
  }
}
