/**
 * The netem-like fault injector that sits between a device's engine and its UDP socket:
 * it applies a {@link FaultPlan} to each outgoing datagram, sends what survives now or
 * later, and holds delayed copies in one {@link DelayQueue} served by ONE timer (never a
 * closure or timer per packet).
 */
import { performance } from 'node:perf_hooks';
import { InvalidArgumentError } from '../common/errors';
import { DelayQueue, type PacketSink } from './delay-queue';
import { FaultPlan, makeFaultDecision, type FaultDecision, type FaultStats } from './fault-plan';
import { toFaultSpec, type FaultSpec } from './fault-spec';

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

// A module-level timer callback given its injector: no closure is made per arming.
// (Element access reaches the private method without making it part of the API.)
function onTimer(injector: FaultInjector): void {
  injector['fire']();
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
    this.updateFastPath();
  }

  /** The plan's counters. */
  get stats(): FaultStats {
    return this.plan.stats;
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
    this.plan.decide(now, len, this.plan.hasPartitions ? this.keyOf(host, port) : '', d);
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
   * Cuts off `target` (a key as produced by `targetKey`, or `*` for all) for `durationMs`
   * from now, or until healed when omitted. Replaces an earlier API partition of `target`.
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
    this.updateFastPath();
  }

  /** Drops queued packets and cancels the timer; later sends are dropped. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.passThrough = false;
    this.disarm();
    this.queue.clear();
    this.keyCache.clear();
  }

  private updateFastPath(): void {
    this.passThrough = !this.closed && this.plan.inert;
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
