/**
 * The decision core of the fault injector: given "a packet of `len` bytes to `target` at
 * time `now`", it says how many copies go out, when each is released and which bit of each
 * is flipped. Pure and deterministic: no timers, no I/O, the clock passed in, one seeded
 * PRNG. The real injector (fault-injector.ts) and simulation tests drive the same plan, so
 * a schedule seen in a simulation replays from its seed.
 */
import { Prng } from '../common/prng';
import { InvalidArgumentError } from '../common/errors';
import { checkFaultSpec, cloneFaultSpec, isNoSendFaults, partitionTargetPath, type FaultSpec } from './fault-spec';

/**
 * The outcome of one decision, filled in place by {@link FaultPlan.decide} so that the hot
 * path allocates nothing. Entries at index >= `copies` are meaningless.
 */
export interface FaultDecision {
  /** 0 = dropped, 1 = sent, 2 = sent and duplicated. */
  copies: 0 | 1 | 2;
  /** Release time of each copy, on the clock given to decide(); <= now means "send now". */
  releaseAtMs: [number, number];
  /** Bit to flip in each copy (bit i is `buf[i >> 3] ^= 1 << (i & 7)`), or -1 for none. */
  corruptBit: [number, number];
}

/** A FaultDecision to reuse across calls. */
export function makeFaultDecision(): FaultDecision {
  return { copies: 0, releaseAtMs: [0, 0], corruptBit: [-1, -1] };
}

/**
 * Counters of a plan. Drops are counted by cause; `passed` counts packets that left with at
 * least one copy, `delayed`, `reordered` and `corrupted` count copies.
 */
export class FaultStats {
  /** Dropped by the random (or Gilbert-Elliott) loss model. */
  injected_loss = 0;
  /** Dropped because their target was partitioned. */
  partition_drops = 0;
  /** Dropped because the rate limiter's queue was full (`limit`). */
  rate_drops = 0;
  /** Packets that went out twice. */
  duplicated = 0;
  /** Copies held back by `reorder-delay`. */
  reordered = 0;
  /** Copies with one bit flipped. */
  corrupted = 0;
  /** Copies released later than submitted (delay, jitter, rate queue or reorder). */
  delayed = 0;
  /** Packets that left with at least one copy. */
  passed = 0;

  toJSON(): Record<string, number> {
    return {
      injected_loss: this.injected_loss,
      partition_drops: this.partition_drops,
      rate_drops: this.rate_drops,
      duplicated: this.duplicated,
      reordered: this.reordered,
      corrupted: this.corrupted,
      delayed: this.delayed,
      passed: this.passed,
    };
  }
}

/** A partition set through the API: from now until `untilMs` (absolute, plan clock). */
interface ApiWindow {
  target: string;
  /** The sender the window is limited to (`SRC/DST`), or null for any. */
  source: string | null;
  dest: string;
  /** The only path it cuts (`#N`), or -1 for every path. */
  path: number;
  untilMs: number;
}

/** A partition from the spec, relative to the plan's start. */
interface SpecWindow {
  target: string;
  source: string | null;
  dest: string;
  path: number;
  startMs: number;
  endMs: number;
}

/** Matches every target in a partition. */
export const ANY_TARGET = '*';

/** Separates the sender from the destination in a partition target (`efa1/efa2`). */
export const SOURCE_SEPARATOR = '/';

/**
 * A partition target as `SRC/DST` (only the device named SRC drops traffic to DST) or `DST`
 * (every device does), either with an optional `#N` suffix: only packets on path N
 * (`path` -1 when there is none).
 *
 * @throws InvalidArgumentError when the text after the last `#` is not a path 0..63.
 */
export function splitPartitionTarget(target: string): { source: string | null; dest: string; path: number } {
  const path = partitionTargetPath(target);
  if (typeof path === 'string') throw new InvalidArgumentError(`partition target "${target}": ${path}`);
  const bare = path < 0 ? target : target.slice(0, target.lastIndexOf('#'));
  const i = bare.indexOf(SOURCE_SEPARATOR);
  return i < 0 ? { source: null, dest: bare, path } : { source: bare.slice(0, i), dest: bare.slice(i + 1), path };
}

/** Options of a {@link FaultPlan}. */
export interface FaultPlanOptions {
  /**
   * The name of the device whose traffic the plan decides. A partition naming it cuts off all
   * its traffic (the device goes dark, both ways when every device runs the same spec), and
   * `SRC/DST` partitions apply only where SRC is this name.
   */
  self?: string;
}

/**
 * Decides the fate of each packet from a {@link FaultSpec}.
 *
 * Stages, in order: partition -> loss (independent, or Gilbert-Elliott when `burst` > 1)
 * -> rate queue -> duplication -> per copy: delay + jitter (+ reorder hold-back) and
 * corruption. The PRNG is drawn only by stages whose probability is non-zero, so a plan
 * with the same spec and seed makes the same decisions for the same inputs.
 */
export class FaultPlan {
  /** Counters; the same object for the plan's whole life. */
  readonly stats = new FaultStats();

  private current: FaultSpec;
  private readonly prng: Prng;
  private started = false;
  private startMs = 0;

  // Everything the hot path reads is copied into fields, so a later change to the spec
  // object by its owner cannot leak in half-way.
  private loss = 0;
  /** Gilbert-Elliott: good -> bad and bad -> good transition probabilities. */
  private geP = 0;
  private geR = 1;
  private useGe = false;
  private geBad = false;
  private dup = 0;
  private reorder = 0;
  private reorderDelayMs = 1;
  private delayMs = 0;
  private jitterMs = 0;
  private corrupt = 0;
  /** The only path the faults after partitions hit (`path=`), or -1 for all. */
  private pathOnly = -1;

  /** 0 when no rate limit. */
  private msPerByte = 0;
  private limit = 0;
  /**
   * Departure times of the packets still waiting in the virtual rate queue, oldest first,
   * in a ring: departures never decrease, so the departed are always at the head.
   */
  private ring: Float64Array = new Float64Array(0);
  private ringHead = 0;
  private ringCount = 0;
  private lastDepartureMs = -Infinity;

  private specWindows: SpecWindow[] = [];
  private apiWindows: ApiWindow[] = [];
  private anyPartition = false;

  private readonly self: string | null;

  /** @throws FaultSpecError when a field of `spec` is out of range. */
  constructor(spec: Readonly<FaultSpec>, opts: FaultPlanOptions = {}) {
    checkFaultSpec(spec);
    this.self = opts.self ?? null;
    this.current = cloneFaultSpec(spec);
    this.prng = new Prng(spec.seed);
    this.apply(this.current);
  }

  /** A copy of the spec in force. */
  get spec(): FaultSpec {
    return cloneFaultSpec(this.current);
  }

  /** True when some partition (from the spec or the API) exists, active or not. */
  get hasPartitions(): boolean {
    return this.anyPartition;
  }

  /**
   * True when every packet passes untouched: no send-side faults in the spec and no API
   * partition. The receive-side bottleneck is not the plan's business (see IngressBottleneck).
   */
  get inert(): boolean {
    return isNoSendFaults(this.current) && !this.anyPartition;
  }

  /**
   * Fixes time zero of the spec's partition windows. Without it, the first decide() does.
   * Only the first call counts, so a later call cannot shift windows already in effect.
   */
  start(nowMs: number): void {
    if (this.started) return;
    this.started = true;
    this.startMs = nowMs;
  }

  /**
   * Cuts `target` off from now until `untilMs` (absolute time on the plan's clock;
   * `Infinity` until healed). Replaces an earlier API partition of the same target.
   * `*` cuts off every target; a `#N` suffix (`efa1#2`, `*#2`) only path N.
   */
  partition(target: string, untilMs: number): void {
    if (typeof target !== 'string' || target === '') {
      throw new InvalidArgumentError(`partition: target must be a non-empty string (got ${String(target)})`);
    }
    if (typeof untilMs !== 'number' || Number.isNaN(untilMs)) {
      throw new InvalidArgumentError(`partition: untilMs must be a number or Infinity (got ${String(untilMs)})`);
    }
    const parts = splitPartitionTarget(target);
    const existing = this.apiWindows.find((w) => w.target === target);
    if (existing !== undefined) existing.untilMs = untilMs;
    else this.apiWindows.push({ target, ...parts, untilMs });
    this.anyPartition = true;
  }

  /**
   * Adds a partition of `target` from `startMs` to `startMs + durationMs` after the plan's
   * start, as a `partition=` item of the spec would (it is part of the spec from now on).
   */
  schedulePartition(target: string, startMs: number, durationMs: number): void {
    const spec = cloneFaultSpec(this.current);
    spec.partitions.push({ target, startMs, durationMs });
    this.setSpec(spec);
  }

  /**
   * Restores `target`: cancels every partition of exactly that target, the API's and the
   * spec's, current and scheduled (`heal('efa1')` leaves `efa1#2` alone). `heal('*')`
   * cancels all partitions of every target and path.
   */
  heal(target: string): void {
    const keep = <T extends { target: string }>(w: T): boolean => target !== ANY_TARGET && w.target !== target;
    this.apiWindows = this.apiWindows.filter(keep);
    this.specWindows = this.specWindows.filter(keep);
    this.anyPartition = this.apiWindows.length > 0 || this.specWindows.length > 0;
  }

  /**
   * Changes the spec while running. The PRNG keeps its state (the new `seed` is ignored),
   * as do the loss model's state, the packets waiting in the rate queue and the partitions
   * set through the API; the spec's partition windows are replaced and stay relative to the
   * plan's original start.
   *
   * @throws FaultSpecError when a field of `spec` is out of range.
   */
  setSpec(spec: Readonly<FaultSpec>): void {
    checkFaultSpec(spec);
    this.current = cloneFaultSpec(spec);
    this.apply(this.current);
  }

  private apply(spec: FaultSpec): void {
    this.loss = spec.loss;
    this.useGe = spec.burst > 1 && spec.loss < 1;
    this.geR = 1 / spec.burst;
    // Chosen so the stationary share of the bad state, p / (p + r), equals `loss`.
    this.geP = this.useGe ? Math.min(1, (spec.loss * this.geR) / (1 - spec.loss)) : 0;
    if (!this.useGe) this.geBad = false;
    this.dup = spec.dup;
    this.reorder = spec.reorder;
    this.reorderDelayMs = spec.reorderDelayMs ?? Math.max(1, 2 * spec.delayMs);
    this.delayMs = spec.delayMs;
    this.jitterMs = spec.jitterMs;
    this.corrupt = spec.corrupt;
    this.pathOnly = spec.path ?? -1;

    if (spec.rateBytesPerSec === null) {
      this.msPerByte = 0;
      this.ringCount = 0;
      this.ringHead = 0;
      this.lastDepartureMs = -Infinity;
    } else {
      this.msPerByte = 1000 / spec.rateBytesPerSec;
    }
    this.limit = spec.limit;
    const capacity = this.msPerByte > 0 ? Math.max(this.limit, this.ringCount) : 0;
    if (capacity !== this.ring.length) this.resizeRing(capacity);

    this.specWindows = spec.partitions.map((p) => ({ target: p.target, ...splitPartitionTarget(p.target), startMs: p.startMs, endMs: p.startMs + p.durationMs }));
    this.anyPartition = this.apiWindows.length > 0 || this.specWindows.length > 0;
  }

  /** Keeps the packets already waiting when `limit` changes; they are in the queue already. */
  private resizeRing(capacity: number): void {
    const next = new Float64Array(capacity);
    for (let i = 0; i < this.ringCount; i++) next[i] = this.ring[(this.ringHead + i) % this.ring.length];
    this.ring = next;
    this.ringHead = 0;
  }

  /**
   * Decides the fate of one packet of `len` bytes sent at `nowMs` to `target` (the
   * destination key partitions are matched against) on `path` (what its header carries,
   * 0..63) and writes it into `out`. Times must not go backwards between calls.
   */
  decide(nowMs: number, len: number, target: string, out: FaultDecision, path = 0): void {
    if (!this.started) this.start(nowMs);
    out.copies = 0;
    out.releaseAtMs[0] = nowMs;
    out.releaseAtMs[1] = nowMs;
    out.corruptBit[0] = -1;
    out.corruptBit[1] = -1;
    const stats = this.stats;

    if (this.anyPartition && this.isPartitioned(target, nowMs, path)) {
      stats.partition_drops++;
      return;
    }
    // Other paths skip every later stage, the PRNG included, so `path=` keeps the draws of
    // the scoped path's packets what they would be on a link of its own.
    if (this.pathOnly >= 0 && path !== this.pathOnly) {
      out.copies = 1;
      stats.passed++;
      return;
    }
    if (this.loss > 0 && this.lose()) {
      stats.injected_loss++;
      return;
    }

    let departMs = nowMs;
    if (this.msPerByte > 0) {
      const ring = this.ring;
      const cap = ring.length;
      while (this.ringCount > 0 && ring[this.ringHead] <= nowMs) {
        this.ringHead = this.ringHead + 1 === cap ? 0 : this.ringHead + 1;
        this.ringCount--;
      }
      if (this.ringCount >= this.limit) {
        stats.rate_drops++;
        return;
      }
      departMs = Math.max(nowMs, this.lastDepartureMs) + len * this.msPerByte;
      this.lastDepartureMs = departMs;
      ring[(this.ringHead + this.ringCount) % cap] = departMs;
      this.ringCount++;
    }

    const copies = this.dup > 0 && this.prng.next() < this.dup ? 2 : 1;
    out.copies = copies;
    for (let i = 0; i < copies; i++) {
      let at = departMs + this.delayMs;
      if (this.jitterMs > 0) {
        at += (2 * this.prng.next() - 1) * this.jitterMs;
        if (at < departMs) at = departMs;
      }
      if (this.reorder > 0 && this.prng.next() < this.reorder) {
        at += this.reorderDelayMs;
        stats.reordered++;
      }
      out.releaseAtMs[i] = at;
      if (at > nowMs) stats.delayed++;
      if (this.corrupt > 0 && len > 0 && this.prng.next() < this.corrupt) {
        out.corruptBit[i] = this.prng.int(len * 8);
        stats.corrupted++;
      }
    }
    stats.passed++;
    if (copies === 2) stats.duplicated++;
  }

  /** One draw of the loss model; the Gilbert-Elliott state moves after deciding. */
  private lose(): boolean {
    if (this.loss >= 1) return true;
    const u = this.prng.next();
    if (!this.useGe) return u < this.loss;
    if (this.geBad) {
      if (u < this.geR) this.geBad = false;
      return true;
    }
    if (u < this.geP) this.geBad = true;
    return false;
  }

  private isPartitioned(target: string, nowMs: number, path: number): boolean {
    const api = this.apiWindows;
    for (let i = 0; i < api.length; i++) {
      const w = api[i];
      if (nowMs < w.untilMs && this.matches(w, target, path)) return true;
    }
    const sinceStart = nowMs - this.startMs;
    const spec = this.specWindows;
    for (let i = 0; i < spec.length; i++) {
      const w = spec[i];
      if (sinceStart >= w.startMs && sinceStart < w.endMs && this.matches(w, target, path)) return true;
    }
    return false;
  }

  /** A window cuts `target` off: on its path (or all), it names it (or all), or names this device itself. */
  private matches(w: { source: string | null; dest: string; path: number }, target: string, path: number): boolean {
    if (w.path >= 0 && w.path !== path) return false;
    if (w.source !== null) return w.source === this.self && (w.dest === target || w.dest === ANY_TARGET);
    return w.dest === target || w.dest === ANY_TARGET || (this.self !== null && w.dest === this.self);
  }
}
