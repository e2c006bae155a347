/**
 * The netem-like fault injector that sits between a device's engine and its UDP socket:
 * it applies a {@link FaultPlan} to each outgoing datagram, sends what survives now or
 * later, and holds delayed copies in one {@link DelayQueue} served by ONE timer (never a
 * closure or timer per packet). On the receive side it is the device's ingress bottleneck
 * (`bottleneck=`): received packets wait in one FIFO served by one more timer.
 */
import { performance } from 'node:perf_hooks';
import { InvalidArgumentError } from '../common/errors';
import { OFF_FLAGS, packetPath, WIRE_MAGIC } from '../wire/header';
import { DelayQueue, type PacketSink } from './delay-queue';
import { FaultPlan, makeFaultDecision, type FaultDecision, type FaultStats } from './fault-plan';
import { toFaultSpec, type FaultSpec } from './fault-spec';
import { HeldPackets, IngressBottleneck, IngressBottleneckStats, type DeliverFn } from './ingress-bottleneck';

export interface FaultInjectorOptions {
  /** The faults: a spec string (`loss=2%,delay=200us`) or a parsed/hand-built spec. */
  spec: string | Readonly<FaultSpec>;
  /** Where packets go, typically `udpPort.send.bind(udpPort)`. Must not throw. */
  send: PacketSink;
  /**
   * Monotonic clock in ms; default `performance.now()`. It must advance with real time:
   * delayed packets are released by real timers that re-read it.
   */
  clock?: () => number;
  /**
   * The key partitions are matched against; default {@link defaultTargetKey}
   * (`127.0.0.1:4000`, `[::1]:4000`). A caller that partitions by device name maps the
   * endpoint to the name here. Only called while some partition exists.
   */
  targetKey?: (host: string, port: number) => string;
  /**
   * Waits shorter than this (ms) are served by polling with setImmediate instead of
   * setTimeout, whose 1 ms granularity would turn `delay=200us` into more than 1 ms.
   * Polling costs CPU while such packets wait; 0 turns it off. Default 1.
   */
  spinBelowMs?: number;
  /**
   * Called with the spec in force, at construction and after every setSpec (a device moves
   * its congestion control's target by the delay the spec adds).
   */
  onSpec?: (spec: Readonly<FaultSpec>) => void;
  /** Prefix of error messages about the spec (`--fault`, `EFA_EMU_FAULTS`). Default `fault spec`. */
  source?: string;
  /**
   * The name of the device the injector sits in: a partition naming it cuts off all its
   * traffic, and `SRC/DST` partitions apply only where SRC is this name (see FaultPlan).
   */
  self?: string;
}

/** `host:port`, with an IPv6 host in brackets so the port stays unambiguous. */
export function defaultTargetKey(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Default-key cache bound: endpoints are few, but a long run must not grow without end. */
const KEY_CACHE_MAX = 4096;

/**
 * The path of the first `len` bytes of `buf` as its header says, or 0 for anything that is
 * not one of our packets (no 0xEFA1 magic, or too short to hold the flags).
 */
export function packetPathOf(buf: Buffer, len: number): number {
  if (len <= OFF_FLAGS || buf[0] !== WIRE_MAGIC >> 8 || buf[1] !== (WIRE_MAGIC & 0xff)) return 0;
  return packetPath(buf);
}

/** Counters of a device without a bottleneck: all zero, never written. */
const NO_INGRESS_STATS = Object.freeze(new IngressBottleneckStats());

// Module-level timer callbacks given their injector: no closure is made per arming.
// (Element access reaches the private methods without making them part of the API.)
function onTimer(injector: FaultInjector): void {
  injector['fire']();
}

function onRxTimer(injector: FaultInjector): void {
  injector['fireRx']();
}

/**
 * Applies faults in front of a send function.
 *
 * With a spec that injects nothing and no partition, `send` forwards the caller's buffer
 * untouched (same object, no copy, no clock read). Otherwise each packet is decided by the
 * plan; corrupted copies are new Buffers (the caller's buffer is never written), delayed
 * copies keep a reference to the caller's buffer until released, which the UdpPort
 * contract (the caller does not reuse a sent buffer) allows. Delayed packets leave in
 * release-time order, ties in submission order. The timer stays referenced while packets
 * wait, so they go out before a finished program exits; close() drops them.
 *
 * Received packets pass through {@link FaultInjector.receive}: straight on without a
 * `bottleneck` in the spec, else through the spec's {@link IngressBottleneck}.
 */
export class FaultInjector {
  /** The decision core; exposed for its counters and for tests. */
  readonly plan: FaultPlan;

  private readonly sink: PacketSink;
  private readonly clock: () => number;
  private readonly customKey: ((host: string, port: number) => string) | null;
  private readonly spinBelowMs: number;
  private readonly source: string;
  private readonly queue = new DelayQueue();
  private readonly decision: FaultDecision = makeFaultDecision();

  /** Checked once per packet; recomputed whenever the spec or the partitions change. */
  private passThrough = false;
  private closed = false;

  /** The receive-side bottleneck; made by the first spec that has one, kept for its counters. */
  private ingress: IngressBottleneck | null = null;
  /** True while the spec has a bottleneck. */
  private rxLimited = false;
  /** Received packets go straight to `deliver`: no bottleneck and nothing still held. */
  private rxDirect = true;
  private readonly held = new HeldPackets();
  private rxTimeout: NodeJS.Timeout | null = null;
  private rxImmediate: NodeJS.Immediate | null = null;
  private rxArmedForMs = Infinity;

  private timeout: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  /** Release time the armed timer was set for; Infinity when none is armed. */
  private armedForMs = Infinity;

  private keyCache = new Map<string, Map<number, string>>();
  private keyCacheSize = 0;
  private lastHost = '';
  private lastPort = -1;
  private lastKey = '';

  /** @throws FaultSpecError for a bad spec; InvalidArgumentError for a bad option. */
  constructor(opts: FaultInjectorOptions) {
    if (opts === null || typeof opts !== 'object') throw new InvalidArgumentError('FaultInjector: options are required');
    if (typeof opts.send !== 'function') throw new InvalidArgumentError('FaultInjector: option "send" must be a function');
    if (opts.clock !== undefined && typeof opts.clock !== 'function') {
      throw new InvalidArgumentError('FaultInjector: option "clock" must be a function');
    }
    if (opts.targetKey !== undefined && typeof opts.targetKey !== 'function') {
      throw new InvalidArgumentError('FaultInjector: option "targetKey" must be a function');
    }
    const spin = opts.spinBelowMs ?? 1;
    if (typeof spin !== 'number' || !(spin >= 0) || !Number.isFinite(spin)) {
      throw new InvalidArgumentError(`FaultInjector: option "spinBelowMs" must be a finite number >= 0 (got ${String(spin)})`);
    }
    this.source = opts.source ?? 'fault spec';
    this.sink = opts.send;
    this.clock = opts.clock ?? (() => performance.now());
    this.customKey = opts.targetKey ?? null;
    this.spinBelowMs = spin;
    this.plan = new FaultPlan(toFaultSpec(opts.spec, this.source), { self: opts.self });
    // Partition windows in the spec count from here, not from the first packet.
    this.plan.start(this.clock());
    this.applyBottleneck();
    this.updateFastPath();
    this.onSpec = opts.onSpec ?? null;
    this.onSpec?.(this.plan.spec);
  }

  /** Told of the spec in force (see FaultInjectorOptions.onSpec); settable after construction. */
  onSpec: ((spec: Readonly<FaultSpec>) => void) | null;

  /** The plan's counters. */
  get stats(): FaultStats {
    return this.plan.stats;
  }

  /** Counters of the receive-side bottleneck (zeros while no spec had one). */
  get ingressStats(): Readonly<IngressBottleneckStats> {
    return this.ingress?.stats ?? NO_INGRESS_STATS;
  }

  /** Received packets the bottleneck holds, waiting for their release time. */
  get heldPackets(): number {
    return this.held.size;
  }

  /** Bytes of the received packets the bottleneck holds. */
  get heldBytes(): number {
    return this.held.bytes;
  }

  /** Packets waiting for their release time. */
  get queued(): number {
    return this.queue.size;
  }

  /**
   * Sends `len` bytes of `buf` to `host:port` through the faults. Never throws for a fault.
   * With `onSent`, it is called exactly once, when neither the injector nor the socket reads
   * `buf` any more (copies the injector holds or corrupts are its own).
   */
  send(buf: Buffer, len: number, host: string, port: number, onSent?: (() => void) | null): void {
    if (this.passThrough) {
      this.sink(buf, len, host, port, onSent);
      return;
    }
    let release = onSent ?? null;
    const tracked = release !== null;
    if (this.closed) {
      release?.();
      return;
    }
    const now = this.clock();
    const d = this.decision;
    this.plan.decide(now, len, this.plan.hasPartitions ? this.keyOf(host, port) : '', d, packetPathOf(buf, len));
    let queuedAny = false;
    let sentOriginal = false;
    for (let i = 0; i < d.copies; i++) {
      let out = buf;
      const bit = d.corruptBit[i];
      // A caller that reuses its buffer once told may not be told while a second send of it
      // is still queued: that one gets a copy.
      if (bit >= 0 || (sentOriginal && tracked)) {
        out = Buffer.allocUnsafe(len);
        buf.copy(out, 0, 0, len);
        if (bit >= 0) out[bit >> 3] ^= 1 << (bit & 7);
      }
      const at = d.releaseAtMs[i];
      if (at <= now) {
        // Whatever is already due goes first, or a late timer would let this packet overtake.
        if (this.queue.size > 0 && this.queue.peekTime() <= now) this.queue.releaseDue(now, this.sink);
        if (out === buf && !sentOriginal) {
          sentOriginal = true;
          this.sink(out, len, host, port, release);
          release = null;
        } else {
          this.sink(out, len, host, port);
        }
      } else {
        // A held copy must not change under us: SRD rewrites a buffer when it retransmits,
        // and the device reuses it once the message is acknowledged.
        if (out === buf) {
          out = Buffer.allocUnsafe(len);
          buf.copy(out, 0, 0, len);
        }
        this.queue.push(at, out, len, host, port);
        queuedAny = true;
      }
    }
    if (queuedAny) this.arm(now);
    release?.();
  }

  /**
   * Passes one received packet through the receive-side bottleneck: without one (the spec
   * has no `bottleneck`), `deliver` is called at once with the same arguments; with one,
   * the packet is held and handed to `deliver` at its release time, or dropped when the
   * bottleneck's buffer is full. `buf` is kept until then, which is safe for the buffers a
   * UDP socket hands out (they are never reused). Never throws for a fault.
   */
  receive(buf: Buffer, host: string, port: number, deliver: DeliverFn): void {
    if (this.rxDirect) {
      deliver(buf, host, port);
      return;
    }
    if (this.closed) return;
    const now = this.clock();
    // Whatever is due goes first: a late timer must not let this packet overtake.
    if (this.held.size > 0 && this.held.peekTime() <= now) this.held.releaseDue(now);
    let at = now;
    if (this.rxLimited) {
      at = (this.ingress as IngressBottleneck).admit(now, buf.length);
      if (at < 0) return;
    } else if (this.held.size === 0) {
      // The bottleneck was removed and what it held has left meanwhile.
      this.updateRxPath();
      deliver(buf, host, port);
      return;
    }
    this.held.push(at, buf, host, port, deliver);
    this.armRx(now);
  }

  /**
   * Cuts off `target` (a key as produced by `targetKey`, or `*` for all; `#N` limits it
   * to path N) for `durationMs` from now, or until healed when omitted. Replaces an
   * earlier API partition of `target`.
   */
  partition(target: string, durationMs: number = Infinity): void {
    if (typeof durationMs !== 'number' || !(durationMs >= 0)) {
      throw new InvalidArgumentError(`partition: durationMs must be a number >= 0 or Infinity (got ${String(durationMs)})`);
    }
    this.plan.partition(target, this.clock() + durationMs);
    this.updateFastPath();
  }

  /** Ends every partition of `target`, from the API or the spec, current and scheduled. */
  heal(target: string): void {
    this.plan.heal(target);
    this.updateFastPath();
  }

  /**
   * Changes the faults while running (the PRNG and already queued packets carry on).
   * @throws FaultSpecError for a bad spec; the old spec then stays in force.
   */
  setSpec(spec: string | Readonly<FaultSpec>): void {
    this.plan.setSpec(toFaultSpec(spec, this.source));
    this.applyBottleneck();
    this.updateFastPath();
    this.onSpec?.(this.plan.spec);
  }

  /**
   * Drops queued and held packets and cancels the timers; later sends and received packets
   * are dropped. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.passThrough = false;
    this.rxDirect = false;
    this.disarm();
    this.disarmRx();
    this.queue.clear();
    this.held.clear();
    this.ingress?.clear();
    this.keyCache.clear();
  }

  private updateFastPath(): void {
    this.passThrough = !this.closed && this.plan.inert;
  }

  private updateRxPath(): void {
    this.rxDirect = !this.closed && !this.rxLimited && this.held.size === 0;
  }

  /** Makes the bottleneck what the spec in force says. */
  private applyBottleneck(): void {
    const spec = this.plan.spec;
    const rate = spec.bottleneckBytesPerSec;
    if (rate !== null) {
      if (this.ingress === null) this.ingress = new IngressBottleneck(rate, spec.bottleneckBufferBytes);
      else this.ingress.configure(rate, spec.bottleneckBufferBytes);
      this.rxLimited = true;
    } else if (this.rxLimited) {
      // A link without a bottleneck holds nothing: what waited is released at once, in order.
      this.rxLimited = false;
      this.ingress?.clear();
      if (this.held.size > 0 && !this.closed) {
        const now = this.clock();
        this.held.expedite(now);
        this.armRx(now);
      }
    }
    this.updateRxPath();
  }

  private keyOf(host: string, port: number): string {
    if (this.customKey !== null) return this.customKey(host, port);
    if (host === this.lastHost && port === this.lastPort) return this.lastKey;
    let byPort = this.keyCache.get(host);
    let key = byPort?.get(port);
    if (key === undefined) {
      if (this.keyCacheSize >= KEY_CACHE_MAX) {
        this.keyCache.clear();
        this.keyCacheSize = 0;
        byPort = undefined;
      }
      if (byPort === undefined) {
        byPort = new Map();
        this.keyCache.set(host, byPort);
      }
      key = defaultTargetKey(host, port);
      byPort.set(port, key);
      this.keyCacheSize++;
    }
    this.lastHost = host;
    this.lastPort = port;
    this.lastKey = key;
    return key;
  }

  /** Makes sure a timer will fire by the earliest release time. */
  private arm(now: number): void {
    const next = this.queue.peekTime();
    if (next === Infinity) {
      this.disarm();
      return;
    }
    if (this.armedForMs <= next) return;
    this.disarm();
    this.armedForMs = next;
    const wait = next - now;
    if (wait < this.spinBelowMs || wait <= 0) {
      this.immediate = setImmediate(onTimer, this);
    } else {
      this.timeout = setTimeout(onTimer, Math.max(1, wait), this);
    }
  }

  private disarm(): void {
    if (this.timeout !== null) clearTimeout(this.timeout);
    if (this.immediate !== null) clearImmediate(this.immediate);
    this.timeout = null;
    this.immediate = null;
    this.armedForMs = Infinity;
  }

  /**
   * Makes sure the receive timer fires by the oldest held packet's release time. Node's
   * timers have a granularity of about 1 ms, so packets come out in bursts of what fell
   * due in between; that is fine for a bottleneck whose queueing delays are what matters,
   * and spares the CPU the polling the send side does for sub-millisecond delays.
   */
  private armRx(now: number): void {
    const next = this.held.peekTime();
    if (next === Infinity) {
      this.disarmRx();
      return;
    }
    if (this.rxArmedForMs <= next) return;
    this.disarmRx();
    this.rxArmedForMs = next;
    const wait = next - now;
    if (wait <= 0) this.rxImmediate = setImmediate(onRxTimer, this);
    else this.rxTimeout = setTimeout(onRxTimer, Math.max(1, wait), this);
  }

  private disarmRx(): void {
    if (this.rxTimeout !== null) clearTimeout(this.rxTimeout);
    if (this.rxImmediate !== null) clearImmediate(this.rxImmediate);
    this.rxTimeout = null;
    this.rxImmediate = null;
    this.rxArmedForMs = Infinity;
  }

  /** Receive timer callback (see onRxTimer): delivers what is due, re-arms for the rest. */
  private fireRx(): void {
    this.rxTimeout = null;
    this.rxImmediate = null;
    this.rxArmedForMs = Infinity;
    if (this.closed) return;
    try {
      this.held.releaseDue(this.clock());
    } finally {
      if (!this.closed) {
        this.armRx(this.clock());
        this.updateRxPath();
      }
    }
  }

  /** Timer callback (see onTimer): releases what is due, re-arms for the rest. */
  private fire(): void {
    this.timeout = null;
    this.immediate = null;
    this.armedForMs = Infinity;
    if (this.closed) return;
    try {
      this.queue.releaseDue(this.clock(), this.sink);
    } finally {
      // Re-armed even if the sink threw, so the remaining packets are not stranded.
      if (!this.closed) this.arm(this.clock());
    }
  }
}
