import { PacketPool } from '../common/packet-pool';
import { InvalidArgumentError } from '../common/errors';
import { BASE_HEADER_LEN, OFF_MAGIC, OFF_TYPE, OFF_VERSION, WIRE_MAGIC, WIRE_VERSION } from '../wire/header';

/*
 * Doorbell batching for one device's socket. Packets sent in one synchronous run (a loop of
 * postSend, a list post, an ack burst) are held until the run ends (a microtask) and those for
 * one destination go out packed into as few datagrams as fit: one sendmsg and one receive
 * callback for many packets, which is where a packet's cost on loopback lies. Where the runs
 * to a destination carry one packet each (a ping-pong), the first packet of a run leaves at
 * once, as it is, so a lone message's latency does not grow; a single packet left waiting at
 * the end of the run also leaves unwrapped.
 *
 * A bundle datagram (all big-endian):
 *
 *  byte  size  field
 *   0     2    magic    0xEFA1, as every efa-emu datagram
 *   2     1    version  WIRE_VERSION
 *   3     1    type     BUNDLE_TYPE (never a packet type)
 *   4     2    count    packets that follow
 *   6     2    reserved zero
 *   8..        count x (2-byte length, then that many bytes: one whole packet with its own CRC)
 *
 * The bundle has no CRC of its own: each packet inside keeps its own, checked as ever.
 */

/** The `type` byte of a bundle datagram. Outside PacketType's range on purpose. */
export const BUNDLE_TYPE = 0x40;
/** Bytes before the first packet of a bundle. */
export const BUNDLE_HEADER_LEN = 8;
/** Bytes before each packet of a bundle (its length). */
export const BUNDLE_ENTRY_LEN = 2;
/** The smallest useful bundle: two packets of a base header each. */
export const MIN_BUNDLE_DATAGRAM = BUNDLE_HEADER_LEN + 2 * (BUNDLE_ENTRY_LEN + BASE_HEADER_LEN);
/** Largest datagram a bundle may be by default: loopback carries 64 KiB, IPv4 UDP payload 65507. */
export const DEFAULT_MAX_DATAGRAM = 65000;

/** The largest a bundle datagram may be: IPv4 UDP's payload limit. */
const MAX_COALESCE = 65507;

/**
 * Checks a bundle bound: 0 (off), or room for two packets up to IPv4 UDP's limit.
 * @throws InvalidArgumentError naming `what` otherwise.
 */
export function checkCoalesceBytes(v: number, what: string): number {
  if (!Number.isInteger(v) || (v !== 0 && (v < MIN_BUNDLE_DATAGRAM || v > MAX_COALESCE))) {
    throw new InvalidArgumentError(`${what} must be 0 (off) or an integer in ${MIN_BUNDLE_DATAGRAM}..${MAX_COALESCE} (bytes a datagram may hold), got ${String(v)}`);
  }
  return v;
}

/** A bundle bound as text (`off`, `0`, or bytes), checked as {@link checkCoalesceBytes} does. */
export function parseCoalesceBytes(text: string, what: string): number {
  const t = text.trim().toLowerCase();
  return t === 'off' ? 0 : checkCoalesceBytes(Number(t), what);
}

type SendFn = (buf: Buffer, len: number, host: string, port: number, onSent?: (() => void) | null) => void;

/** Packets waiting for one destination in the current run, held as their senders gave them. */
class Pending {
  host = '';
  port = 0;
  // Parallel arrays, reused run after run: no allocation per packet once they have grown.
  readonly bufs: Buffer[] = [];
  readonly lens: number[] = [];
  readonly onSents: Array<(() => void) | null> = [];
  count = 0;
  /** Bytes a bundle of what waits would take, header included. */
  bytes = BUNDLE_HEADER_LEN;
  queued = false;
  /** The run's first packet to this destination left at once, unbatched. */
  sentFirst = false;
  /** Packets sent to this destination in this run and in the one before. */
  runCount = 0;
  lastRunCount = 0;
}

/** Stands in for a released packet buffer, so the arrays hold no caller's memory between runs. */
/** Bytes of idle bundle buffers one size class keeps for reuse. */
const POOL_BYTES = 2 << 20;
const EMPTY = Buffer.alloc(0);

/** Smallest bundle buffer: size classes are powers of two from here up to the datagram bound. */
const MIN_CLASS_BITS = 11;

/** Counters of the coalescer, merged into the device's. */
export interface CoalescerStats {
  /** Datagrams handed to the socket (bundles and lone packets). */
  tx_dgrams: number;
  /** Packets handed to the coalescer. */
  tx_coalesced_pkts: number;
  /** Bundle datagrams sent. */
  tx_bundles: number;
  /** Datagrams received (a bundle counts once). */
  rx_dgrams: number;
  /** Bundles received. */
  rx_bundles: number;
  /** Bundles dropped as malformed (a length past the end, zero packets). */
  rx_drop_bad_bundle: number;
}

/**
 * Sits between the fault injector (which decides per packet) and the socket. `send` is the
 * transport's sendPacket contract: without `onSent` the coalescer owns `buf`; with it, the
 * caller keeps `buf` until `onSent` runs.
 */
export class DatagramCoalescer {
  readonly stats: CoalescerStats = { tx_dgrams: 0, tx_coalesced_pkts: 0, tx_bundles: 0, rx_dgrams: 0, rx_bundles: 0, rx_drop_bad_bundle: 0 };
  private readonly byDest = new Map<string, Pending>();
  /** Destinations with packets this run, in the order they were first sent to. */
  private dirty: Pending[] = [];
  private spare: Pending[] = [];
  private flushQueued = false;
  private readonly flushBound = (): void => this.flush();
  /**
   * Bundle buffers by size class (log2 of their length), reused once the socket is done with
   * them; each class keeps at most POOL_BYTES of them, so a burst to many peers at once does
   * not stay resident after it.
   */
  private readonly pools: PacketPool[] = [];
  private lastPending: Pending | null = null;
  private closed = false;

  constructor(
    private readonly toSocket: SendFn,
    /** Largest bundle datagram, in bytes; a packet larger than this goes alone; 0: no batching. */
    private readonly maxDatagram = DEFAULT_MAX_DATAGRAM,
  ) {}

  /** Queues one packet for `host:port`; it leaves when the current run ends (or at once, see above). */
  send(buf: Buffer, len: number, host: string, port: number, onSent?: (() => void) | null): void {
    if (this.closed) {
      onSent?.();
      return;
    }
    this.stats.tx_coalesced_pkts++;
    if (this.maxDatagram === 0) {
      this.stats.tx_dgrams++;
      this.toSocket(buf, len, host, port, onSent);
      return;
    }
    const p = this.pendingFor(host, port);
    p.runCount++;
    if (!p.sentFirst && p.lastRunCount <= 1) {
      // Where runs carry one packet (a ping-pong), the run's first packet leaves at once: the
      // reply must not wait for whatever else this run does. Where they carry more (a stream),
      // every packet waits for the end of the run, so a run costs one datagram, not two.
      p.sentFirst = true;
      this.markDirty(p);
      this.stats.tx_dgrams++;
      this.toSocket(buf, len, host, port, onSent);
      return;
    }
    // Does not fit with what waits: what waits goes now, this one starts the next datagram.
    if (p.count > 0 && p.bytes + BUNDLE_ENTRY_LEN + len > this.maxDatagram) this.sendPending(p);
    const i = p.count++;
    p.bufs[i] = buf;
    p.lens[i] = len;
    p.onSents[i] = onSent ?? null;
    p.bytes += BUNDLE_ENTRY_LEN + len;
    this.markDirty(p);
  }

  /** Makes sure the end of this run visits `p` (to send what waits, and to end its run). */
  private markDirty(p: Pending): void {
    if (!p.queued) {
      p.queued = true;
      this.dirty.push(p);
    }
    if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushBound);
    }
  }

  /** Sends everything queued now (the end of a run does it by itself). */
  flush(): void {
    this.flushQueued = false;
    // A sender's onSent may send again at once: that lands in the other list, for the next flush.
    const list = this.dirty;
    this.dirty = this.spare;
    for (let i = 0; i < list.length; i++) {
      const p = list[i];
      p.queued = false;
      p.sentFirst = false;
      p.lastRunCount = p.runCount;
      p.runCount = 0;
      this.sendPending(p);
    }
    list.length = 0;
    this.spare = list;
  }

  /**
   * Splits a received datagram: a bundle's packets go to `deliver` one by one, as views into
   * it (no copy); any other datagram goes as it is. Returns false for a malformed bundle
   * (dropped whole and counted: its lengths cannot be trusted to find any packet).
   */
  receive(buf: Buffer, host: string, port: number, deliver: (pkt: Buffer, host: string, port: number) => void): boolean {
    this.stats.rx_dgrams++;
    if (!isBundle(buf)) {
      deliver(buf, host, port);
      return true;
    }
    const count = (buf[4] << 8) | buf[5];
    // Walk the lengths first: a bundle is delivered whole or not at all.
    let o = BUNDLE_HEADER_LEN;
    for (let i = 0; i < count; i++) {
      if (o + BUNDLE_ENTRY_LEN > buf.length) return this.badBundle();
      o += BUNDLE_ENTRY_LEN + ((buf[o] << 8) | buf[o + 1]);
      if (o > buf.length) return this.badBundle();
    }
    if (count === 0 || o !== buf.length) return this.badBundle();
    this.stats.rx_bundles++;
    o = BUNDLE_HEADER_LEN;
    for (let i = 0; i < count; i++) {
      const len = (buf[o] << 8) | buf[o + 1];
      o += BUNDLE_ENTRY_LEN;
      deliver(buf.subarray(o, o + len), host, port);
      o += len;
    }
    return true;
  }

  /** Sends what waits and stops; later sends are dropped (their onSent still runs). */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
  }

  private pendingFor(host: string, port: number): Pending {
    // Streams repeat their destination: checking the last one first spares the key string
    // (the only allocation here) and the map lookup for most packets.
    const last = this.lastPending;
    if (last !== null && last.port === port && last.host === host) return last;
    const key = `${host}|${port}`;
    let p = this.byDest.get(key);
    if (p === undefined) {
      p = new Pending();
      p.host = host;
      p.port = port;
      this.byDest.set(key, p);
    }
    this.lastPending = p;
    return p;
  }

  private sendPending(p: Pending): void {
    const n = p.count;
    if (n === 0) return;
    this.stats.tx_dgrams++;
    p.count = 0;
    const bytes = p.bytes;
    p.bytes = BUNDLE_HEADER_LEN;
    if (n === 1) {
      const buf = p.bufs[0];
      const onSent = p.onSents[0];
      p.bufs[0] = EMPTY;
      p.onSents[0] = null;
      this.toSocket(buf, p.lens[0], p.host, p.port, onSent);
      return;
    }
    // Copied into a buffer of the bundle's size class, so memory follows what is in flight,
    // not destinations x the datagram bound.
    let cls = MIN_CLASS_BITS;
    while (1 << cls < bytes) cls++;
    const pool = (this.pools[cls] ??= new PacketPool(1 << cls, Math.max(4, POOL_BYTES >> cls)));
    const pooled = pool.take();
    const b = pooled.buf;
    b[OFF_MAGIC] = WIRE_MAGIC >> 8;
    b[OFF_MAGIC + 1] = WIRE_MAGIC & 0xff;
    b[OFF_VERSION] = WIRE_VERSION;
    b[OFF_TYPE] = BUNDLE_TYPE;
    b[4] = n >> 8;
    b[5] = n & 0xff;
    b[6] = 0;
    b[7] = 0;
    let o = BUNDLE_HEADER_LEN;
    for (let i = 0; i < n; i++) {
      const len = p.lens[i];
      b[o] = len >> 8;
      b[o + 1] = len & 0xff;
      p.bufs[i].copy(b, o + BUNDLE_ENTRY_LEN, 0, len);
      o += BUNDLE_ENTRY_LEN + len;
      p.bufs[i] = EMPTY;
    }
    this.stats.tx_bundles++;
    this.toSocket(b, bytes, p.host, p.port, pooled.release);
    // The packets were copied: their senders may reuse their buffers now. Called after the
    // send, so one that sends again from its callback starts a fresh datagram.
    for (let i = 0; i < n; i++) {
      const cb = p.onSents[i];
      if (cb !== null) {
        p.onSents[i] = null;
        cb();
      }
    }
  }

  private badBundle(): false {
    this.stats.rx_drop_bad_bundle++;
    return false;
  }
}

/** True when `buf` is a bundle datagram (its header, not its contents, checked). */
export function isBundle(buf: Uint8Array): boolean {
  return buf.length >= BUNDLE_HEADER_LEN && buf[OFF_TYPE] === BUNDLE_TYPE && buf[OFF_VERSION] === WIRE_VERSION && ((buf[OFF_MAGIC] << 8) | buf[OFF_MAGIC + 1]) === WIRE_MAGIC;
}
