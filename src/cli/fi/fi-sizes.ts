/*
 * Which sizes `efa-emu fi-pingpong` / `fi-bw` run and how many iterations each gets, after
 * fabtests (fabtests/common/shared.c: def_test_sizes, ft_parsecsopts -S, size_to_count).
 */
import { InvalidArgumentError as CommanderArgError } from 'commander';

/** Largest message the tools send: the last entry of `-S all`. */
export const FI_MAX_SIZE = 16 * 1024 * 1024;

/**
 * fabtests' size list: 1, then 2^n and 2^n + 2^(n-1) for n = 1.., up to 2^23 (8 MiB); the
 * flagged entries (64, 256, 1k, 4k, 64k, 1m) are the ones run without -S. fabtests' list ends
 * at 8 MiB; ours goes on with 12 MiB and 16 MiB, so `-S all` covers up to {@link FI_MAX_SIZE}.
 */
export const DEF_TEST_SIZES: readonly number[] = (() => {
  const out = [1];
  for (let n = 1; 2 ** n <= FI_MAX_SIZE; n++) {
    out.push(2 ** n);
    if (2 ** n + 2 ** (n - 1) <= FI_MAX_SIZE && 2 ** n < FI_MAX_SIZE) out.push(2 ** n + 2 ** (n - 1));
  }
  return out;
})();

/** The sizes run when no -S is given (fabtests' FT_DEFAULT_SIZE entries). */
export const DEFAULT_SIZES: readonly number[] = [64, 256, 1024, 4096, 65536, 1048576];

/** What -S asked for. */
export type SizeSpec = { kind: 'default' } | { kind: 'all' } | { kind: 'list'; sizes: number[] };

function sizeValue(text: string, spec: string): number {
  const t = text.trim();
  const v = Number(t);
  if (!/^[0-9]+$/.test(t) || !Number.isSafeInteger(v)) throw new CommanderArgError(`"${spec}": "${text}" is not a size in bytes (a non-negative integer)`);
  if (v > FI_MAX_SIZE) throw new CommanderArgError(`"${spec}": ${v} is larger than the tools' largest message (${FI_MAX_SIZE} bytes, 16 MiB)`);
  return v;
}

/**
 * Commander parser for -S, as fabtests reads it: `all`, `r:start,inc,end` (a range, end
 * included), `l:a,b,c` (a list) or one size. A bare comma list `a,b,c` is taken as `l:a,b,c`
 * (fabtests would read only its first number).
 */
export function parseSizeSpec(value: string): SizeSpec {
  const v = value.trim();
  if (v.toLowerCase() === 'all') return { kind: 'all' };
  if (/^r:/i.test(v)) {
    const parts = v.slice(2).split(',');
    if (parts.length !== 3) throw new CommanderArgError(`"${value}": a range is r:start,inc,end`);
    const [start, inc, end] = parts.map((p) => sizeValue(p, value));
    if (inc <= 0 || end < start) throw new CommanderArgError(`"${value}": a range needs inc > 0 and end >= start`);
    const sizes: number[] = [];
    for (let s = start; s <= end; s += inc) sizes.push(s);
    if (sizes.length > 10_000) throw new CommanderArgError(`"${value}": ${sizes.length} sizes; at most 10000`);
    return { kind: 'list', sizes };
  }
  const body = /^l:/i.test(v) ? v.slice(2) : v;
  if (body === '') throw new CommanderArgError(`"${value}": no size given`);
  return { kind: 'list', sizes: body.split(',').map((p) => sizeValue(p, value)) };
}

/** The sizes a spec stands for, in run order. */
export function sizesOf(spec: SizeSpec): number[] {
  if (spec.kind === 'default') return [...DEFAULT_SIZES];
  if (spec.kind === 'all') return [...DEF_TEST_SIZES];
  return [...spec.sizes];
}

/**
 * fabtests' size_to_count, its iterations for a size without -I: 100 from 1 MiB, 1000 from
 * 64 KiB, 10000 below; the bandwidth tests double them.
 */
export function sizeToCount(size: number, bw: boolean): number {
  const n = size >= 1 << 20 ? 100 : size >= 1 << 16 ? 1000 : 10000;
  return bw ? 2 * n : n;
}

/**
 * The cap on the default iterations, so `-S all` (48 sizes, up to 16 MiB) ends in well under a
 * minute on a 2-core machine: a user-space emulator moves a message in tens of microseconds and
 * at a few hundred MB/s, where EFA takes microseconds and tens of GB/s, and fabtests' own counts
 * made each tool's `-S all` take 3 to 4 minutes here (10 to 40 s capped, on a shared 2-core VM
 * whose load varied). At most {@link ITER_CAP_COUNT} iterations (×2 for bw) and about
 * {@link ITER_CAP_BYTES} of data per direction per size (×2 for bw), never fewer than
 * {@link ITER_CAP_MIN} (×2 for bw). -I is never capped.
 */
export const ITER_CAP_COUNT = 1000;
export const ITER_CAP_BYTES = 64 * 1024 * 1024;
export const ITER_CAP_MIN = 10;

/** Iterations of a size without -I: size_to_count, capped (see {@link ITER_CAP_COUNT}). */
export function defaultIterations(size: number, bw: boolean): number {
  const mult = bw ? 2 : 1;
  const byBytes = Math.max(ITER_CAP_MIN * mult, Math.floor((ITER_CAP_BYTES * mult) / Math.max(size, 1)));
  return Math.min(sizeToCount(size, bw), ITER_CAP_COUNT * mult, byBytes);
}

/** fabtests' default window of the bandwidth tests (-W). */
export const DEFAULT_WINDOW = 64;

/**
 * A bandwidth receiver posts a whole window of receives, each with its own buffer, so the
 * window shrinks for large messages to keep them within this much memory (16 at 16 MiB).
 */
export const BW_RX_BUDGET = 256 * 1024 * 1024;

/** The window a bandwidth test of `size` runs with when -W asked for `window`. */
export function effectiveWindow(size: number, window: number): number {
  return Math.max(1, Math.min(window, Math.floor(BW_RX_BUDGET / Math.max(size, 1))));
}
