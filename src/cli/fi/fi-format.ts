/*
 * The output of `efa-emu fi-pingpong` / `fi-bw`, character for character as fabtests prints it
 * (fabtests/common/shared.c show_perf and show_perf_mr), so scripts that parse fabtests' tables
 * parse ours. The C code's arithmetic is reproduced too: elapsed time in whole microseconds,
 * usec/xfer computed in single precision, and printf's round-half-to-even on exact ties.
 */
import { FI_PROTOCOLS, type FiProtocol } from '../../job/fi/fi-plan';

export { FI_PROTOCOLS, type FiProtocol } from '../../job/fi/fi-plan';

const KIB = 1 << 10;
const MIB = 1 << 20;
const GIB = 1 << 30;

/**
 * fabtests' size_str: 2^10, 2^20, 2^30 as k, m, g; below ten units one decimal digit is kept
 * (truncated) when it is not zero. 1536 → "1.5k", 12288 → "12k", 64 → "64".
 */
export function sizeStr(size: number): string {
  const [base, mag] = size >= GIB ? [GIB, 'g'] : size >= MIB ? [MIB, 'm'] : size >= KIB ? [KIB, 'k'] : [1, ''];
  const whole = Math.trunc(size / base);
  const fraction = whole < 10 ? Math.trunc(((size % base) * 10) / base) : 0;
  return fraction !== 0 ? `${whole}.${fraction}${mag}` : `${whole}${mag}`;
}

/** fabtests' cnt_str: decimal thousands, truncated (10000 → "10k", 1500000 → "1m"). */
export function cntStr(cnt: number): string {
  if (cnt >= 1e9) return `${Math.trunc(cnt / 1e9)}b`;
  if (cnt >= 1e6) return `${Math.trunc(cnt / 1e6)}m`;
  if (cnt >= 1e3) return `${Math.trunc(cnt / 1e3)}k`;
  return String(cnt);
}

/**
 * printf's `%.<digits>f`: JavaScript's toFixed rounds an exact tie up, C rounds it to even
 * (12.125 → "12.12"), so ties are found on the double's exact binary value and redone.
 * Infinity and NaN print as C prints them.
 */
export function cFixed(x: number, digits: number): string {
  if (Number.isNaN(x)) return '-nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (Math.abs(x) >= 1e21) return x.toFixed(digits); // never reached by our figures
  const text = x.toFixed(digits);
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(x));
  const bits = view.getBigUint64(0);
  const exp = Number((bits >> 52n) & 0x7ffn);
  const mantissa = exp === 0 ? bits & 0xf_ffff_ffff_ffffn : (bits & 0xf_ffff_ffff_ffffn) | (1n << 52n);
  const shift = (exp === 0 ? 1 : exp) - 1075; // value = mantissa × 2^shift
  if (shift >= 0 || mantissa === 0n) return text;
  const scaled = mantissa * 10n ** BigInt(digits);
  const denom = 1n << BigInt(-shift);
  const quotient = scaled / denom;
  // Only an exact half whose lower neighbour is even rounds differently from toFixed.
  if ((scaled % denom) * 2n !== denom || quotient % 2n !== 0n) return text;
  const s = quotient.toString().padStart(digits + 1, '0');
  const body = digits === 0 ? s : `${s.slice(0, s.length - digits)}.${s.slice(s.length - digits)}`;
  return x < 0 ? `-${body}` : body;
}

/** `%-<w>s`: left-justified, never truncated. */
function left(s: string, w: number): string {
  return s.padEnd(w);
}

/** `%<w>s` / `%<w>.<d>f`: right-justified, never truncated. */
function right(s: string, w: number): string {
  return s.padStart(w);
}

/** The header show_perf prints once per process, before the first row. */
export function perfHeader(): string {
  return `${left('bytes', 8)}${left('iters', 8)}${left('total', 8)}${right('time', 8)} ${right('MB/sec', 10)}${right('usec/xfer', 13)}${right('Mxfers/sec', 13)}`;
}

/** One size's measurement, the figures show_perf derives from it. */
export interface PerfFigures {
  /** Message size. */
  tsize: number;
  iters: number;
  /** iters × tsize × xfersPerIter. */
  totalBytes: number;
  /** Whole microseconds, as fabtests' get_elapsed truncates them. */
  elapsedUs: number;
  timeS: number;
  mbPerSec: number;
  usecPerXfer: number;
  mxfersPerSec: number;
}

/**
 * show_perf's arithmetic: MB/sec is bytes per microsecond, usec/xfer is a C float
 * (`(float)elapsed / iters / xfers_per_iter`), Mxfers/sec its inverse in double.
 */
export function perfFigures(tsize: number, iters: number, elapsedUs: number, xfersPerIter: number): PerfFigures {
  const totalBytes = iters * tsize * xfersPerIter;
  const usecPerXfer = Math.fround(Math.fround(Math.fround(elapsedUs) / Math.fround(iters)) / Math.fround(xfersPerIter));
  return { tsize, iters, totalBytes, elapsedUs, timeS: elapsedUs / 1e6, mbPerSec: totalBytes / elapsedUs, usecPerXfer, mxfersPerSec: 1 / usecPerXfer };
}

/** One row of the table: `%-8s%-8s%-8s` then `%8.2fs%10.2f%11.2f%11.2f`. */
export function perfRow(f: PerfFigures): string {
  return (
    `${left(sizeStr(f.tsize), 8)}${left(cntStr(f.iters), 8)}${left(sizeStr(f.totalBytes), 8)}` +
    `${right(cFixed(f.timeS, 2), 8)}s${right(cFixed(f.mbPerSec, 2), 10)}${right(cFixed(f.usecPerXfer, 2), 11)}${right(cFixed(f.mxfersPerSec, 2), 11)}`
  );
}

/** -m: the YAML document start and the command line (each word followed by a space), then ":". */
export function machineHeader(argv: readonly string[]): string[] {
  return ['---', `${argv.map((a) => `${a} `).join('')}:`];
}

/** -m: one size as show_perf_mr prints it (%f is six decimals). */
export function machineRow(f: PerfFigures): string {
  return (
    `- { xfer_size: ${f.tsize}, iterations: ${f.iters}, total: ${f.totalBytes}, time: ${cFixed(f.timeS, 6)}, ` +
    `MB/sec: ${cFixed(f.mbPerSec, 6)}, usec/xfer: ${cFixed(f.usecPerXfer, 6)}, Mxfers/sec: ${cFixed(f.mxfersPerSec, 6)} }`
  );
}


/**
 * Compresses the sizes at which a protocol was used into runs of neighbours among the sizes
 * the run had (in increasing order): run sizes [1, 2, 4, 8k, 16k], used {1, 2, 4, 16k} → "1..4,16k".
 */
export function sizeRuns(runSizes: readonly number[], used: ReadonlySet<number>): string {
  const sizes = [...new Set(runSizes)].sort((a, b) => a - b);
  const runs: string[] = [];
  let start = -1;
  for (let i = 0; i <= sizes.length; i++) {
    const on = i < sizes.length && used.has(sizes[i]);
    if (on && start < 0) start = i;
    if (!on && start >= 0) {
      runs.push(start === i - 1 ? sizeStr(sizes[start]) : `${sizeStr(sizes[start])}..${sizeStr(sizes[i - 1])}`);
      start = -1;
    }
  }
  return runs.join(',');
}

/**
 * Our addition after the table (fabtests has no such line): how many messages the client sent
 * by each protocol (its endpoint's `<proto>_tx_msgs` counters, warm-up included) and at which
 * sizes, e.g. `# rdm protocols, messages the client sent: eager 20020 (1..4k), medium 0, ...`.
 * A '#' line, so it is a comment to a YAML reader of -m output.
 */
export function protocolLine(counts: Readonly<Record<FiProtocol, number>>, runSizes: readonly number[], sizesBy: Readonly<Record<FiProtocol, ReadonlySet<number>>>): string {
  const parts = FI_PROTOCOLS.map((p) => {
    const runs = sizeRuns(runSizes, sizesBy[p]);
    return runs === '' ? `${p} ${counts[p]}` : `${p} ${counts[p]} (${runs})`;
  });
  return `# rdm protocols, messages the client sent: ${parts.join(', ')}`;
}

/** Our addition: what the data check covered (or that it was turned off). */
export function verifyLine(verify: boolean, checked: { client: number; server: number }, expected: number): string {
  if (!verify) return '# data check: off (--no-verify)';
  const total = checked.client + checked.server;
  return `# data check: ${total} of ${expected} data messages verified byte for byte (client ${checked.client}, server ${checked.server})`;
}
