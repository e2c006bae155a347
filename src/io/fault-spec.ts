/**
 * The fault spec: one netem-like string that configures a device's fault injector, the
 * same everywhere (the CLI's `--fault`, the `EFA_EMU_FAULTS` environment variable, the
 * API's option), for example
 *
 * ```
 * loss=2%,dup=1%,reorder=10%,delay=200us,jitter=100us,corrupt=0.1%,seed=7
 * ```
 *
 * Grammar: comma-separated `key=value` items; whitespace around items, keys and values is
 * ignored; empty items are skipped, so the empty string means "no faults". Every key may
 * appear once, except `partition`, which may repeat.
 *
 * | key | value | meaning |
 * |---|---|---|
 * | `loss` | `P%` | drop each packet with probability P (0..100, decimals allowed) |
 * | `burst` | `N` | mean length of a loss burst in packets (>= 1, decimals allowed). Above 1, `loss` becomes a Gilbert-Elliott model with the same average loss rate |
 * | `dup` | `P%` | also send a second copy (delayed independently) |
 * | `reorder` | `P%` | hold the packet back by `reorder-delay` so later packets overtake it |
 * | `reorder-delay` | time | the hold-back; default max(1ms, 2 x delay) |
 * | `delay` | time | fixed one-way delay |
 * | `jitter` | time | uniform extra delay in [-jitter, +jitter]; the total never goes below 0 |
 * | `corrupt` | `P%` | flip one random bit of the copy sent (never of the caller's buffer) |
 * | `rate` | rate | token-bucket rate limit; packets queue behind it |
 * | `limit` | `N` | packets that may wait for the rate limiter (default 1000); more are dropped |
 * | `partition` | `TARGET@START+DURATION` | drop traffic to TARGET from START to START+DURATION after the injector starts; DURATION may be `inf`; TARGET `*` matches every destination; a device's own name cuts off all its traffic (it goes dark); `SRC/DST` limits the window to the device named SRC (one direction of one link); a `#N` suffix (`efa1#2`, `*#2`, `efa0/efa1#2`) limits it to packets on path N (0..63) |
 * | `path` | `N` | 0..63: every other fault of the spec (not `partition`, which has `#N`, nor the receive-side `bottleneck`) hits only packets on path N; the others pass untouched |
 * | `bottleneck` | rate | receive side: everything the device receives shares one FIFO drained at this rate (an ingress link all senders share) |
 * | `bottleneck-buffer` | size | bytes the bottleneck's FIFO holds (default 64KiB); a packet that would overflow it is dropped |
 * | `seed` | `N` | uint32 seed of the injector's PRNG (default 1) |
 *
 * Times need a unit: `us`, `ms` or `s` (`200us`, `1.5ms`, `2s`); a bare number is an error,
 * since "delay=200" is too easy to misread. Rates, as in tc, are decimal: `bit`, `kbit`,
 * `mbit`, `gbit` are bits per second and `bps`, `kbps`, `mbps`, `gbps` BYTES per second
 * (1mbit = 1e6 bits/s = 125000 bytes/s); the binary `kibit`...`gibps` are accepted too.
 * Sizes need a unit too (a bare number could as well be packets, as `limit` counts): `B`,
 * `KB`, `MB` (decimal) or `KiB`, `MiB` (binary), case-insensitive, whole bytes (`64KiB`,
 * `1.5KB`).
 *
 * The path of a packet is the one its header carries (flags bits 2-7, see wire/header.ts);
 * anything that does not start with the 0xEFA1 magic counts as path 0.
 */
import { EfaError } from '../common/errors';
import { MAX_PATHS } from '../wire/header';

/** One scheduled partition: traffic to `target` is dropped in [startMs, startMs + durationMs). */
export interface PartitionWindow {
  /**
   * Destination key, compared exactly with the key the caller gives; `*` matches all. May
   * be `SRC/DST` and may end in `#N` (path N only), see the grammar.
   */
  target: string;
  /** Start, in ms after the injector (or plan) starts. */
  startMs: number;
  /** Length in ms; `Infinity` for a partition that never heals by itself. */
  durationMs: number;
}

/** A parsed fault spec. Probabilities are fractions (0..1), times milliseconds. */
export interface FaultSpec {
  /** Average loss probability, 0..1. */
  loss: number;
  /** Mean loss-burst length in packets, >= 1; 1 means independent losses. */
  burst: number;
  /** Duplication probability, 0..1. */
  dup: number;
  /** Reorder (hold-back) probability, 0..1. */
  reorder: number;
  /** Hold-back of a reordered packet; null means max(1ms, 2 x delayMs). */
  reorderDelayMs: number | null;
  /** Fixed one-way delay. */
  delayMs: number;
  /** Half-width of the uniform jitter added to the delay. */
  jitterMs: number;
  /** Probability that a copy has one bit flipped, 0..1. */
  corrupt: number;
  /** Rate limit in bytes per second; null means unlimited. */
  rateBytesPerSec: number | null;
  /** Packets that may wait behind the rate limiter before new ones are dropped. */
  limit: number;
  /** Scheduled partitions, in the order given. */
  partitions: PartitionWindow[];
  /** The only path (0..63) the other faults hit (partitions and the bottleneck aside); null for every path. */
  path: number | null;
  /** Receive-side bottleneck rate in bytes per second; null means none. */
  bottleneckBytesPerSec: number | null;
  /** Bytes the bottleneck's FIFO may hold. */
  bottleneckBufferBytes: number;
  /** Seed of the PRNG (uint32). */
  seed: number;
}

/**
 * The round trip a spec adds by itself on a path whose both ends run it: its one-way delay
 * and jitter, both ways. A device's congestion control judges queueing above it.
 */
export function linkRoundTripMs(spec: Readonly<FaultSpec>): number {
  return 2 * (spec.delayMs + spec.jitterMs);
}

/** A malformed or out-of-range fault spec. The message names the source and the field. */
export class FaultSpecError extends EfaError {
  /** Where the spec came from (`--fault`, `EFA_EMU_FAULTS`, ...). */
  readonly source: string;
  /** The offending key (`loss`, `rate`...), or null when the spec as a whole is at fault. */
  readonly field: string | null;

  constructor(source: string, field: string | null, message: string) {
    super('EFAULTSPEC', `${source}: ${message}`);
    this.source = source;
    this.field = field;
  }
}

/** Default queue limit of the rate limiter, as netem's. */
export const DEFAULT_RATE_LIMIT = 1000;
/** Upper bound of `limit`: the rate limiter preallocates one slot per packet. */
export const MAX_RATE_LIMIT = 1_000_000;
/** Default seed, so that a spec without `seed` still replays the same way. */
export const DEFAULT_SEED = 1;
/** Default FIFO size of the receive-side bottleneck: a switch port's share of buffer. */
export const DEFAULT_BOTTLENECK_BUFFER = 64 * 1024;
/** Upper bound of `bottleneck-buffer`: the real device holds that much of received packets in memory. */
export const MAX_BOTTLENECK_BUFFER = 1024 * 1024 * 1024;

/** The keys of the grammar, in canonical order. */
export const FAULT_SPEC_KEYS = [
  'loss',
  'burst',
  'dup',
  'reorder',
  'reorder-delay',
  'delay',
  'jitter',
  'corrupt',
  'rate',
  'limit',
  'partition',
  'path',
  'bottleneck',
  'bottleneck-buffer',
  'seed',
] as const;

export type FaultSpecKey = (typeof FAULT_SPEC_KEYS)[number];

/** A spec that injects nothing. Frozen: copy it (`{ ...NO_FAULTS, loss: 0.01, partitions: [] }`) to change it. */
export const NO_FAULTS: Readonly<FaultSpec> = Object.freeze({
  loss: 0,
  burst: 1,
  dup: 0,
  reorder: 0,
  reorderDelayMs: null,
  delayMs: 0,
  jitterMs: 0,
  corrupt: 0,
  rateBytesPerSec: null,
  limit: DEFAULT_RATE_LIMIT,
  partitions: Object.freeze([]) as unknown as PartitionWindow[],
  path: null,
  bottleneckBytesPerSec: null,
  bottleneckBufferBytes: DEFAULT_BOTTLENECK_BUFFER,
  seed: DEFAULT_SEED,
});

/** A fresh, mutable copy of NO_FAULTS. */
function emptySpec(): FaultSpec {
  return { ...NO_FAULTS, partitions: [] };
}

/**
 * True when `spec` changes nothing about the traffic (seed, limit, burst, path,
 * bottleneck-buffer alone do not).
 */
export function isNoFaults(spec: Readonly<FaultSpec>): boolean {
  return isNoSendFaults(spec) && (spec.bottleneckBytesPerSec ?? null) === null;
}

/**
 * True when `spec` changes nothing about what a device sends: the receive-side bottleneck
 * aside, no faults. The send path's pass-through is decided by this.
 */
export function isNoSendFaults(spec: Readonly<FaultSpec>): boolean {
  return (
    spec.loss === 0 &&
    spec.dup === 0 &&
    spec.reorder === 0 &&
    spec.delayMs === 0 &&
    spec.jitterMs === 0 &&
    spec.corrupt === 0 &&
    spec.rateBytesPerSec === null &&
    spec.partitions.length === 0
  );
}

// ---------------------------------------------------------------------------------------
// Numbers and units

/** A plain non-negative decimal: no sign, no exponent, no hex, so "1e3" or "-1" are refused. */
const DECIMAL = /^(?:\d+(?:\.\d*)?|\.\d+)$/;
const NUMBER_WITH_SUFFIX = /^((?:\d+(?:\.\d*)?|\.\d+))([a-z%]*)$/i;

const TIME_UNITS: Readonly<Record<string, number>> = { us: 0.001, ms: 1, s: 1000 };

/** Multipliers to bytes, keys lower-cased (the units are matched case-insensitively). */
const SIZE_UNITS: Readonly<Record<string, number>> = { b: 1, kb: 1e3, mb: 1e6, kib: 1024, mib: 1048576 };

/** Multipliers to bytes per second. */
const RATE_UNITS: Readonly<Record<string, number>> = {
  bit: 1 / 8,
  kbit: 1e3 / 8,
  mbit: 1e6 / 8,
  gbit: 1e9 / 8,
  kibit: 1024 / 8,
  mibit: 1048576 / 8,
  gibit: 1073741824 / 8,
  bps: 1,
  kbps: 1e3,
  mbps: 1e6,
  gbps: 1e9,
  kibps: 1024,
  mibps: 1048576,
  gibps: 1073741824,
};

/**
 * Unit conversions, written so that parse and format use the very same arithmetic: the
 * canonical text must parse back to the identical double, not merely a close one.
 */
function scale(n: number, mult: number): number {
  // Dividing by the reciprocal is exact for 1000 and 8, where multiplying by 0.001 is not.
  return mult < 1 ? n / (1 / mult) : n * mult;
}

const percentToFraction = (n: number): number => n / 100;

type Reason = string;

function parsePercent(value: string): number | Reason {
  if (!value.endsWith('%')) return 'expected a percentage such as 2% or 0.5%';
  const body = value.slice(0, -1).trim();
  if (!DECIMAL.test(body)) return 'expected a percentage such as 2% or 0.5%';
  const n = Number(body);
  if (n > 100) return 'must be 0%..100%';
  return percentToFraction(n);
}

function parseTime(value: string): number | Reason {
  const m = NUMBER_WITH_SUFFIX.exec(value);
  if (m === null) return 'expected a time such as 200us, 1.5ms or 2s';
  if (m[2] === '') return 'missing unit (us, ms or s)';
  const mult = TIME_UNITS[m[2].toLowerCase()];
  if (mult === undefined) return `unknown time unit "${m[2]}" (us, ms or s)`;
  const ms = scale(Number(m[1]), mult);
  if (!Number.isFinite(ms)) return 'time out of range';
  return ms;
}

function parseRate(value: string): number | Reason {
  const m = NUMBER_WITH_SUFFIX.exec(value);
  const hint = 'expected a rate such as 100mbit or 10mbps (bps = bytes/s)';
  if (m === null) return hint;
  if (m[2] === '') return `missing unit; ${hint}`;
  const mult = RATE_UNITS[m[2].toLowerCase()];
  if (mult === undefined) return `unknown rate unit "${m[2]}" (bit, kbit, mbit, gbit, bps, kbps, mbps, gbps)`;
  const bytes = scale(Number(m[1]), mult);
  if (!(bytes > 0) || !Number.isFinite(bytes)) return 'must be greater than 0';
  return bytes;
}

/**
 * `n` units of `mult` bytes as a whole number of bytes, NaN when it is not one. The
 * relative slack forgives binary rounding (1.1 x 1000 is 1100.0000000000002), not fractions
 * of a byte; parse and format share it, so the canonical text reads back to the same count.
 */
function wholeBytes(n: number, mult: number): number {
  const v = n * mult;
  const r = Math.round(v);
  return Math.abs(v - r) <= 1e-12 * Math.max(1, v) ? r : NaN;
}

function parseSize(value: string): number | Reason {
  const m = NUMBER_WITH_SUFFIX.exec(value);
  const hint = 'expected a size such as 64KiB, 1500B or 1MB';
  if (m === null) return hint;
  if (m[2] === '') return `missing unit (B, KB, KiB, MB, MiB); ${hint}`;
  const mult = SIZE_UNITS[m[2].toLowerCase()];
  if (mult === undefined) return `unknown size unit "${m[2]}" (B, KB, KiB, MB, MiB)`;
  const bytes = wholeBytes(Number(m[1]), mult);
  if (Number.isNaN(bytes)) return 'must be a whole number of bytes';
  if (bytes < 1 || bytes > MAX_BOTTLENECK_BUFFER) return `must be 1B..${MAX_BOTTLENECK_BUFFER / 1048576}MiB`;
  return bytes;
}

/** Separates a partition target from the path it is limited to (`efa1#2`). */
export const PATH_SEPARATOR = '#';

/**
 * The path a partition target is limited to (`efa1#2` -> 2), -1 for a target without `#`
 * (every path), or a reason when the text after the last `#` is not a path 0..63.
 */
export function partitionTargetPath(target: string): number | Reason {
  const i = target.lastIndexOf(PATH_SEPARATOR);
  if (i < 0) return -1;
  const text = target.slice(i + 1);
  const n = Number(text);
  if (!/^\d+$/.test(text) || n >= MAX_PATHS) return `the path after "#" must be 0..${MAX_PATHS - 1} (got "${text}")`;
  if (i === 0) return 'a target is needed before "#" (use *#N for every target)';
  return n;
}

/** The loss/burst pair must be reachable by the Gilbert-Elliott model (p <= 1). */
function burstReason(loss: number, burst: number): Reason | null {
  if (burst <= 1 || loss === 0 || loss >= 1) return null;
  // Good->bad probability p = loss*r/(1-loss) with r = 1/burst; p > 1 would mean bursts
  // shorter than the loss rate forces, since good runs cannot be shorter than one packet.
  const min = loss / (1 - loss);
  // The relative slack absorbs rounding: 80% gives 4.000000000000001, and burst=4 is fine.
  if (burst < min * (1 - 1e-12)) {
    return `too short for loss=${formatPercent(loss)} (the mean burst must be at least ${formatPlain(Number(min.toPrecision(12)))})`;
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// Parsing

/**
 * Parses a fault spec string.
 *
 * @param text the spec, e.g. `loss=2%,delay=200us`; empty or blank means no faults.
 * @param source where the text came from, used as the message prefix (`--fault`,
 *   `EFA_EMU_FAULTS`, an option name).
 * @throws FaultSpecError naming the source and the offending field.
 */
export function parseFaultSpec(text: string, source = 'fault spec'): FaultSpec {
  if (typeof text !== 'string') {
    throw new FaultSpecError(source, null, `expected a string, got ${typeof text}`);
  }
  const spec = emptySpec();
  const seen = new Set<string>();
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    if (eq < 0) {
      const field = (FAULT_SPEC_KEYS as readonly string[]).includes(item) ? item : null;
      throw new FaultSpecError(source, field, `"${item}": expected key=value`);
    }
    const key = item.slice(0, eq).trim();
    const value = item.slice(eq + 1).trim();
    const shown = `${key}=${value}`;
    const fail = (reason: string): never => {
      // Range rules read as sentences: "loss=200%: loss must be 0%..100%".
      const text = reason.startsWith('must ') ? `${key} ${reason}` : reason;
      throw new FaultSpecError(source, key, `${shown}: ${text}`);
    };
    if (!(FAULT_SPEC_KEYS as readonly string[]).includes(key)) {
      throw new FaultSpecError(source, key, `unknown field "${key}" (known: ${FAULT_SPEC_KEYS.join(', ')})`);
    }
    if (key !== 'partition') {
      if (seen.has(key)) throw new FaultSpecError(source, key, `duplicate field "${key}"`);
      seen.add(key);
    }
    if (value === '') fail('missing value');
    const k = key as FaultSpecKey;
    const num = (r: number | Reason): number => (typeof r === 'string' ? fail(r) : r);
    switch (k) {
      case 'loss':
        spec.loss = num(parsePercent(value));
        break;
      case 'dup':
        spec.dup = num(parsePercent(value));
        break;
      case 'reorder':
        spec.reorder = num(parsePercent(value));
        break;
      case 'corrupt':
        spec.corrupt = num(parsePercent(value));
        break;
      case 'burst': {
        if (!DECIMAL.test(value)) fail('expected a number of packets such as 3');
        const n = Number(value);
        if (n < 1) fail('must be at least 1');
        spec.burst = n;
        break;
      }
      case 'reorder-delay':
        spec.reorderDelayMs = num(parseTime(value));
        break;
      case 'delay':
        spec.delayMs = num(parseTime(value));
        break;
      case 'jitter':
        spec.jitterMs = num(parseTime(value));
        break;
      case 'rate':
        spec.rateBytesPerSec = num(parseRate(value));
        break;
      case 'limit': {
        if (!/^\d+$/.test(value)) fail('expected a whole number of packets');
        const n = Number(value);
        if (n < 1 || n > MAX_RATE_LIMIT) fail(`must be 1..${MAX_RATE_LIMIT}`);
        spec.limit = n;
        break;
      }
      case 'seed': {
        if (!/^\d+$/.test(value)) fail('expected a whole number 0..4294967295');
        const n = Number(value);
        if (n > 0xffffffff) fail('must be 0..4294967295');
        spec.seed = n;
        break;
      }
      case 'partition':
        spec.partitions.push(parsePartition(value, fail));
        break;
      case 'path': {
        if (!/^\d+$/.test(value)) fail(`expected a path number 0..${MAX_PATHS - 1}`);
        const n = Number(value);
        if (n >= MAX_PATHS) fail(`must be 0..${MAX_PATHS - 1}`);
        spec.path = n;
        break;
      }
      case 'bottleneck':
        spec.bottleneckBytesPerSec = num(parseRate(value));
        break;
      case 'bottleneck-buffer':
        spec.bottleneckBufferBytes = num(parseSize(value));
        break;
    }
  }
  const burst = burstReason(spec.loss, spec.burst);
  if (burst !== null) throw new FaultSpecError(source, 'burst', `burst=${formatPlain(spec.burst)}: ${burst}`);
  return spec;
}

function parsePartition(value: string, fail: (reason: string) => never): PartitionWindow {
  const usage = 'expected TARGET@START+DURATION such as 127.0.0.1:4000@1s+500ms (DURATION may be inf)';
  // The window is after the LAST '@' and its first '+', so a target may itself hold '@' or '+'.
  const at = value.lastIndexOf('@');
  if (at < 0) fail(usage);
  const target = value.slice(0, at).trim();
  const window = value.slice(at + 1).trim();
  const plus = window.indexOf('+');
  if (target === '' || plus < 0) fail(usage);
  const path = partitionTargetPath(target);
  if (typeof path === 'string') fail(`target "${target}": ${path}`);
  const start = parseTime(window.slice(0, plus).trim());
  if (typeof start === 'string') fail(`start: ${start}`);
  const durText = window.slice(plus + 1).trim();
  let duration: number | Reason;
  if (durText.toLowerCase() === 'inf') duration = Infinity;
  else duration = parseTime(durText);
  if (typeof duration === 'string') fail(`duration: ${duration}`);
  return { target, startMs: start as number, durationMs: duration as number };
}

// ---------------------------------------------------------------------------------------
// Validation of specs built as objects (the API option)

/**
 * Checks a spec object field by field (an API user may build one by hand instead of
 * parsing text) and returns it. A spec from parseFaultSpec always passes.
 *
 * @throws FaultSpecError naming the source and the field.
 */
export function checkFaultSpec(spec: Readonly<FaultSpec>, source = 'fault spec'): Readonly<FaultSpec> {
  if (spec === null || typeof spec !== 'object') {
    throw new FaultSpecError(source, null, 'expected a fault spec object or string');
  }
  const bad = (field: string, key: string, rule: string, got: unknown): never => {
    throw new FaultSpecError(source, key, `${field}: ${rule} (got ${String(got)})`);
  };
  const fraction = (field: keyof FaultSpec, key: string): void => {
    const v = spec[field];
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) bad(field, key, 'must be a fraction 0..1', v);
  };
  const time = (field: keyof FaultSpec, key: string, nullable: boolean): void => {
    const v = spec[field];
    if (nullable && v === null) return;
    if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) bad(field, key, 'must be a finite number of ms >= 0', v);
  };
  fraction('loss', 'loss');
  fraction('dup', 'dup');
  fraction('reorder', 'reorder');
  fraction('corrupt', 'corrupt');
  if (typeof spec.burst !== 'number' || !(spec.burst >= 1) || !Number.isFinite(spec.burst)) {
    bad('burst', 'burst', 'must be a number >= 1', spec.burst);
  }
  time('reorderDelayMs', 'reorder-delay', true);
  time('delayMs', 'delay', false);
  time('jitterMs', 'jitter', false);
  const rate = spec.rateBytesPerSec;
  if (rate !== null && (typeof rate !== 'number' || !(rate > 0) || !Number.isFinite(rate))) {
    bad('rateBytesPerSec', 'rate', 'must be null or a finite number > 0', rate);
  }
  if (!Number.isInteger(spec.limit) || spec.limit < 1 || spec.limit > MAX_RATE_LIMIT) {
    bad('limit', 'limit', `must be an integer 1..${MAX_RATE_LIMIT}`, spec.limit);
  }
  if (!Number.isInteger(spec.seed) || spec.seed < 0 || spec.seed > 0xffffffff) {
    bad('seed', 'seed', 'must be an integer 0..4294967295', spec.seed);
  }
  if (!Array.isArray(spec.partitions)) bad('partitions', 'partition', 'must be an array', spec.partitions);
  spec.partitions.forEach((p, i) => {
    const f = `partitions[${i}]`;
    if (p === null || typeof p !== 'object') bad(f, 'partition', 'must be { target, startMs, durationMs }', p);
    // The target must survive a trip through the text form: no separators, no padding.
    if (typeof p.target !== 'string' || p.target === '' || p.target.includes(',') || p.target.trim() !== p.target) {
      bad(`${f}.target`, 'partition', 'must be a non-empty string without commas or surrounding spaces', p.target);
    }
    const path = partitionTargetPath(p.target);
    if (typeof path === 'string') bad(`${f}.target`, 'partition', path, p.target);
    if (typeof p.startMs !== 'number' || !(p.startMs >= 0) || !Number.isFinite(p.startMs)) {
      bad(`${f}.startMs`, 'partition', 'must be a finite number of ms >= 0', p.startMs);
    }
    if (typeof p.durationMs !== 'number' || !(p.durationMs >= 0)) {
      bad(`${f}.durationMs`, 'partition', 'must be a number of ms >= 0 or Infinity', p.durationMs);
    }
  });
  // The fields added with multipath may be missing from a spec built before them: defaults.
  const path = spec.path ?? null;
  if (path !== null && (!Number.isInteger(path) || path < 0 || path >= MAX_PATHS)) {
    bad('path', 'path', `must be null or an integer 0..${MAX_PATHS - 1}`, path);
  }
  const bn = spec.bottleneckBytesPerSec ?? null;
  if (bn !== null && (typeof bn !== 'number' || !(bn > 0) || !Number.isFinite(bn))) {
    bad('bottleneckBytesPerSec', 'bottleneck', 'must be null or a finite number > 0', bn);
  }
  const buf = spec.bottleneckBufferBytes ?? DEFAULT_BOTTLENECK_BUFFER;
  if (!Number.isInteger(buf) || buf < 1 || buf > MAX_BOTTLENECK_BUFFER) {
    bad('bottleneckBufferBytes', 'bottleneck-buffer', `must be an integer 1..${MAX_BOTTLENECK_BUFFER}`, buf);
  }
  const burst = burstReason(spec.loss, spec.burst);
  if (burst !== null) bad('burst', 'burst', burst, spec.burst);
  return spec;
}

/**
 * Accepts either form of the API option: spec text (parsed) or a spec object (checked and
 * copied, so later changes by the caller do not leak in).
 */
export function toFaultSpec(spec: string | Readonly<FaultSpec> | undefined | null, source = 'fault spec'): FaultSpec {
  if (spec === undefined || spec === null) return emptySpec();
  if (typeof spec === 'string') return parseFaultSpec(spec, source);
  checkFaultSpec(spec, source);
  return cloneFaultSpec(spec);
}

/** A deep copy (partition windows included); fields a spec built by hand lacks get their defaults. */
export function cloneFaultSpec(spec: Readonly<FaultSpec>): FaultSpec {
  return {
    ...spec,
    partitions: spec.partitions.map((p) => ({ ...p })),
    path: spec.path ?? null,
    bottleneckBytesPerSec: spec.bottleneckBytesPerSec ?? null,
    bottleneckBufferBytes: spec.bottleneckBufferBytes ?? DEFAULT_BOTTLENECK_BUFFER,
  };
}

// ---------------------------------------------------------------------------------------
// Formatting

/** A number in plain decimal notation (no exponent), as the grammar wants. */
function formatPlain(x: number): string {
  const s = String(x);
  const e = s.indexOf('e');
  if (e < 0) return s;
  const exp = Number(s.slice(e + 1));
  let mantissa = s.slice(0, e);
  const dot = mantissa.indexOf('.');
  let intDigits = dot < 0 ? mantissa.length : dot;
  mantissa = mantissa.replace('.', '');
  intDigits += exp;
  if (intDigits <= 0) return `0.${'0'.repeat(-intDigits)}${mantissa}`;
  if (intDigits >= mantissa.length) return mantissa + '0'.repeat(intDigits - mantissa.length);
  return `${mantissa.slice(0, intDigits)}.${mantissa.slice(intDigits)}`;
}

/**
 * The shortest decimal `d` (plain notation) with `toValue(Number(d)) === target`, or null.
 * Searching by precision finds "7" for 0.07 where 0.07 * 100 would print 7.000000000000001.
 */
function shortestDecimal(target: number, approx: number, toValue: (n: number) => number): string | null {
  for (let p = 1; p <= 17; p++) {
    const d = formatPlain(Number(approx.toPrecision(p)));
    if (toValue(Number(d)) === target) return d;
  }
  return null;
}

function formatPercent(fraction: number): string {
  return `${shortestDecimal(fraction, fraction * 100, percentToFraction) ?? formatPlain(fraction * 100)}%`;
}

/**
 * The shortest text among units, a decimal point counting one extra character so that
 * `200us` beats `0.2ms`; ties go to the earlier (larger) unit.
 */
function formatWithUnits(value: number, units: ReadonlyArray<[string, number]>, fallbackUnit: string): string {
  let best: string | null = null;
  let bestScore = Infinity;
  for (const [unit, mult] of units) {
    const d = shortestDecimal(value, mult < 1 ? value * (1 / mult) : value / mult, (n) => scale(n, mult));
    if (d === null) continue;
    const score = d.length + unit.length + (d.includes('.') ? 1 : 0);
    if (score < bestScore) {
      best = d + unit;
      bestScore = score;
    }
  }
  // Only a value no decimal text maps to exactly (hand-built, not parsed) gets here.
  return best ?? `${formatPlain(value / (units.find(([u]) => u === fallbackUnit)?.[1] ?? 1))}${fallbackUnit}`;
}

const TIME_FORMAT_UNITS: ReadonlyArray<[string, number]> = [
  ['s', 1000],
  ['ms', 1],
  ['us', 0.001],
];
const RATE_FORMAT_UNITS: ReadonlyArray<[string, number]> = [
  ['gbit', RATE_UNITS.gbit],
  ['mbit', RATE_UNITS.mbit],
  ['kbit', RATE_UNITS.kbit],
  ['bit', RATE_UNITS.bit],
  ['gbps', RATE_UNITS.gbps],
  ['mbps', RATE_UNITS.mbps],
  ['kbps', RATE_UNITS.kbps],
  ['bps', RATE_UNITS.bps],
];

const SIZE_FORMAT_UNITS: ReadonlyArray<[string, number]> = [
  ['MiB', SIZE_UNITS.mib],
  ['MB', SIZE_UNITS.mb],
  ['KiB', SIZE_UNITS.kib],
  ['KB', SIZE_UNITS.kb],
  ['B', SIZE_UNITS.b],
];

function formatTime(ms: number): string {
  return formatWithUnits(ms, TIME_FORMAT_UNITS, 'ms');
}

function formatRate(bytesPerSec: number): string {
  return formatWithUnits(bytesPerSec, RATE_FORMAT_UNITS, 'bps');
}

/** Sizes are whole bytes: the shortest exact text, `B` when nothing shorter is exact. */
function formatSize(bytes: number): string {
  let best = `${bytes}B`;
  for (const [unit, mult] of SIZE_FORMAT_UNITS) {
    const d = shortestDecimal(bytes, bytes / mult, (n) => wholeBytes(n, mult));
    if (d === null) continue;
    const text = d + unit;
    if (text.length + (d.includes('.') ? 1 : 0) < best.length) best = text;
  }
  return best;
}

/**
 * The canonical text of a spec: keys in grammar order, fields at their default left out
 * (so NO_FAULTS formats as ""), each value in its shortest exact form. For any spec from
 * parseFaultSpec, `parseFaultSpec(formatFaultSpec(s))` deep-equals `s`.
 */
export function formatFaultSpec(spec: Readonly<FaultSpec>): string {
  const items: string[] = [];
  if (spec.loss !== 0) items.push(`loss=${formatPercent(spec.loss)}`);
  if (spec.burst !== 1) items.push(`burst=${formatPlain(spec.burst)}`);
  if (spec.dup !== 0) items.push(`dup=${formatPercent(spec.dup)}`);
  if (spec.reorder !== 0) items.push(`reorder=${formatPercent(spec.reorder)}`);
  if (spec.reorderDelayMs !== null) items.push(`reorder-delay=${formatTime(spec.reorderDelayMs)}`);
  if (spec.delayMs !== 0) items.push(`delay=${formatTime(spec.delayMs)}`);
  if (spec.jitterMs !== 0) items.push(`jitter=${formatTime(spec.jitterMs)}`);
  if (spec.corrupt !== 0) items.push(`corrupt=${formatPercent(spec.corrupt)}`);
  if (spec.rateBytesPerSec !== null) items.push(`rate=${formatRate(spec.rateBytesPerSec)}`);
  if (spec.limit !== DEFAULT_RATE_LIMIT) items.push(`limit=${spec.limit}`);
  for (const p of spec.partitions) {
    const duration = p.durationMs === Infinity ? 'inf' : formatTime(p.durationMs);
    items.push(`partition=${p.target}@${formatTime(p.startMs)}+${duration}`);
  }
  if ((spec.path ?? null) !== null) items.push(`path=${spec.path}`);
  const bn = spec.bottleneckBytesPerSec ?? null;
  if (bn !== null) items.push(`bottleneck=${formatRate(bn)}`);
  const buf = spec.bottleneckBufferBytes ?? DEFAULT_BOTTLENECK_BUFFER;
  if (buf !== DEFAULT_BOTTLENECK_BUFFER) items.push(`bottleneck-buffer=${formatSize(buf)}`);
  if (spec.seed !== DEFAULT_SEED) items.push(`seed=${spec.seed}`);
  return items.join(',');
}
