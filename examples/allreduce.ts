/*
 * Ring allreduce over the RDM endpoint, measured and printed as nccl-tests' all_reduce_perf
 * prints it: float32 sum over every rank, run as NCCL's ring runs it, a reduce-scatter and then
 * an all-gather of N-1 steps each. At step g (0 .. 2N-3) every rank sends chunk (rank - g) mod N
 * to rank+1 and receives chunk (rank - g - 1) mod N from rank-1, adding it to its own input in
 * the reduce-scatter and keeping it as it is in the all-gather. A chunk moves in slices, and a
 * slice is passed on as soon as it is in (and reduced), so the steps overlap down the ring.
 * Every message is a tagged send whose tag names (run, phase, step, slice), received from the
 * left neighbour only: a message can only land in the receive meant for it, whatever the order
 * the network delivers in.
 *
 *   npx efa-emu launch -n 8 examples/allreduce.ts -- --size 16777216
 *   npx efa-emu launch -n 4 --fault loss=2%,reorder=10% examples/allreduce.ts -- -b 4096 -e 4194304 -f 4
 *
 * Options (nccl-tests' letters where it has one): --size BYTES (default 4 MiB), or a sweep with
 * -b/--minbytes, -e/--maxbytes, -f/--stepfactor; -n/--iters (5), -w/--warmup (1),
 * -c/--check 0|1 (1), --in-place 0|1 (1), --slice BYTES (the pipelining unit; 512 KiB, one
 * of the 8 steps of NCCL's 4 MiB buffer: smaller slices overlap more but cost more messages),
 * --ordered (FI_ORDER_SAS endpoints), --progress event|busy, --timeout-ms (fail when nothing
 * completes for this long), --stats (rank 0's endpoint and SRD counters, as '#' lines). Sizes
 * are multiples of 4 bytes; chunks need not be equal (count % N elements go one each to the
 * first chunks), and a chunk may even be empty (its slices are zero-length messages).
 *
 * As in nccl-tests, the timed runs are not checked (in place, the data grows by N each run);
 * with --check 1 one more run follows on fresh data (out of place: the output first set to NaN,
 * so an element no message wrote shows) and every rank counts the elements that differ from
 * the exact sum. "time" is the mean over ranks of each rank's time per run; #wrong is summed
 * over ranks. Exit 1 when a completion fails (its fi error and prov_errno printed), 2 when an
 * element is wrong.
 */
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import {
  EfaError,
  FI_EAGAIN,
  FI_EAVAIL,
  InvalidArgumentError,
  RdmCqEntry,
  RdmCqErrEntry,
  RdmEndpoint,
  TimeoutError,
  fiStrerror,
  insertRanks,
  openDevice,
  provErrnoStr,
} from '../src/index';

type Device = Awaited<ReturnType<typeof openDevice>>;

/** A completion that came back with an error: its fi errno and the provider's errno. */
class CompletionError extends EfaError {
  constructor(
    readonly err: number,
    readonly provErrno: number,
    message: string,
  ) {
    super('ECOMPLETION', message);
  }
}

interface Options {
  sizes: number[];
  iters: number;
  warmup: number;
  check: boolean;
  inPlace: boolean;
  sliceBytes: number;
  ordered: boolean;
  progress: 'event' | 'busy';
  timeoutMs: number;
  stepFactor: number;
  stats: boolean;
}

/** Tag fields: run (24 bits) | phase (1) | step in the phase (15) | slice (24). */
const SLICE_BITS = 24;
const STEP_BITS = 15;
const MAX_SLICES = 1 << SLICE_BITS;
const MAX_RANKS = (1 << STEP_BITS) + 1;

function tagOf(run: number, g: number, k: number, n: number): bigint {
  const phase = g < n - 1 ? 0 : 1;
  const step = phase === 0 ? g : g - (n - 1);
  return (BigInt(run) << 40n) | (BigInt(phase) << 39n) | (BigInt(step) << 24n) | BigInt(k);
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

/**
 * Rank r's input element i: a hash of i (0..63) plus r + 1, so the sum over N ranks,
 * N * h(i) + N(N+1)/2, is a small integer (exact in float32 whatever the order of the
 * additions, below 2^24 up to 5000 ranks) that differs from one element to the next, so a
 * contribution missed or added twice, or a slice put in the wrong place, shows.
 */
function inputValue(r: number, i: number): number {
  return (Math.imul(i, 0x9e3779b1) >>> 26) + r + 1;
}

function expectedValue(n: number, i: number): number {
  return n * (Math.imul(i, 0x9e3779b1) >>> 26) + (n * (n + 1)) / 2;
}

function fillInput(a: Float32Array, rank: number): void {
  for (let i = 0; i < a.length; i++) a[i] = inputValue(rank, i);
}

function countWrong(a: Float32Array, n: number): number {
  let wrong = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== expectedValue(n, i)) wrong++;
  return wrong;
}

/** The reduction, dst[start + j] = a[start + j] + b[from + j]: a function of its own, so V8 optimizes the loop alone. */
function addInto(dst: Float32Array, a: Float32Array, b: Float32Array, from: number, start: number, len: number): void {
  for (let j = 0; j < len; j++) dst[start + j] = a[start + j] + b[from + j];
}

function bytesOf(a: Float32Array, start: number, len: number): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + start * 4, len * 4);
}

/**
 * How `count` elements split: N chunks whose lengths differ by one at most, each cut into the
 * same number of slices (so slice k of a step follows slice k of the step before), no slice
 * longer than `sliceMax`.
 */
class Layout {
  readonly slices: number;
  readonly sliceMax: number;
  private readonly base: number;
  private readonly rem: number;

  constructor(
    readonly count: number,
    readonly world: number,
    sliceElems: number,
  ) {
    this.base = Math.floor(count / world);
    this.rem = count % world;
    const maxChunk = this.base + (this.rem > 0 ? 1 : 0);
    this.slices = Math.max(1, Math.ceil(maxChunk / sliceElems));
    if (this.slices > MAX_SLICES) throw new InvalidArgumentError(`--slice: ${this.slices} slices per chunk do not fit the tag's ${SLICE_BITS} bits; take a larger slice`);
    this.sliceMax = Math.ceil(maxChunk / this.slices);
  }

  /** Slice k of chunk c: [first element, length]. */
  slice(c: number, k: number): [number, number] {
    const start = c * this.base + Math.min(c, this.rem);
    const len = this.base + (c < this.rem ? 1 : 0);
    const a = Math.floor((k * len) / this.slices);
    const b = Math.floor(((k + 1) * len) / this.slices);
    return [start + a, b - a];
  }
}

/** One posted operation, its own context: what it is, for the completion and for errors. */
interface Op {
  send: boolean;
  g: number;
  k: number;
  run: number;
  tag: bigint;
  buf: Uint8Array;
  /** Where the slice is in the buffers, and its length (elements). */
  start: number;
  len: number;
}

/** The ring of one rank: its endpoint, its neighbours' fi_addrs and the receive staging. */
class Ring {
  private run = 0;
  private readonly entries = Array.from({ length: 64 }, () => new RdmCqEntry());
  private readonly errEntry = new RdmCqErrEntry();
  private staging: Float32Array[] = [];
  private lay: Layout | null = null;

  constructor(
    private readonly ep: RdmEndpoint,
    readonly rank: number,
    readonly world: number,
    private readonly left: number,
    private readonly right: number,
    private readonly opts: Options,
  ) {}

  /** Sizes the slices and staging for `count` elements. */
  layout(count: number): void {
    const lay = new Layout(count, this.world, Math.max(1, Math.floor(this.opts.sliceBytes / 4)));
    this.lay = lay;
    // Reduce-scatter slices land here, then are added to the input: step g uses buffer g % 2,
    // so step g+2's receive is posted once step g's slice has been added.
    this.staging = [new Float32Array(lay.slices * lay.sliceMax), new Float32Array(lay.slices * lay.sliceMax)];
  }

  /** One allreduce: `recv` = the sum over ranks of `send` (they may be the same array). */
  async allreduce(send: Float32Array, recv: Float32Array): Promise<void> {
    const lay = this.lay as Layout;
    const n = this.world;
    const r = this.rank;
    if (n === 1) {
      if (recv !== send) recv.set(send);
      return;
    }
    const run = this.run;
    this.run = (this.run + 1) % (1 << 24);
    const steps = 2 * (n - 1);
    const total = steps * lay.slices;
    let sendsDone = 0;
    let recvsDone = 0;
    // Sends refused with -FI_EAGAIN (txSize outstanding), retried in order as sends complete.
    const backlog: Op[] = [];
    let head = 0;
    const ep = this.ep;

    const postSend = (g: number, k: number): void => {
      const [start, len] = lay.slice(mod(r - g, n), k);
      const op: Op = { send: true, g, k, run, tag: tagOf(run, g, k, n), buf: bytesOf(g === 0 ? send : recv, start, len), start, len };
      if (head < backlog.length || ep.tsend(op.buf, this.right, op.tag, op) === -FI_EAGAIN) backlog.push(op);
    };
    const drain = (): void => {
      while (head < backlog.length) {
        const op = backlog[head];
        if (ep.tsend(op.buf, this.right, op.tag, op) === -FI_EAGAIN) return;
        head++;
      }
    };
    const postRecv = (g: number, k: number): void => {
      const [start, len] = lay.slice(mod(r - g - 1, n), k);
      const buf = g < n - 1 ? bytesOf(this.staging[g % 2], k * lay.sliceMax, len) : bytesOf(recv, start, len);
      const op: Op = { send: false, g, k, run, tag: tagOf(run, g, k, n), buf, start, len };
      ep.trecv(buf, this.left, op.tag, 0n, op);
    };
    // An all-gather slice lands in `recv` over the same slice this rank sent in the
    // reduce-scatter (at step g+1-N): a send buffer stays unchanged until its completion, so
    // that receive waits for that send to complete.
    const sent = new Uint8Array(total);
    const blocked = new Map<number, number>();
    const postRecvAfterSend = (g: number, k: number): void => {
      const s = g + 1 - n;
      const shared = s >= 1 || (s === 0 && send === recv);
      if (s >= 0 && shared && sent[s * lay.slices + k] === 0) blocked.set(s * lay.slices + k, g);
      else postRecv(g, k);
    };

    for (let k = 0; k < lay.slices; k++) postSend(0, k);
    for (let g = 0; g < Math.min(2, steps); g++) for (let k = 0; k < lay.slices; k++) postRecvAfterSend(g, k);

    while (sendsDone < total || recvsDone < total) {
      const m = await this.next(() => `run ${run}: ${total - recvsDone} receives from rank ${mod(r - 1, n)} and ${total - sendsDone} sends to rank ${mod(r + 1, n)} outstanding`);
      for (let i = 0; i < m; i++) {
        const e = this.entries[i];
        const op = e.opContext as Op;
        if (op.send) {
          sendsDone++;
          const idx = op.g * lay.slices + op.k;
          sent[idx] = 1;
          const g = blocked.get(idx);
          if (g !== undefined) {
            blocked.delete(idx);
            postRecv(g, op.k);
          }
          continue;
        }
        recvsDone++;
        if (e.len !== op.len * 4) throw new EfaError('EMSGSIZE', `${this.describe(op)}: got ${e.len} bytes, expected ${op.len * 4}`);
        if (op.g < n - 1) addInto(recv, send, this.staging[op.g % 2], op.k * lay.sliceMax, op.start, op.len);
        if (op.g + 2 < steps) postRecvAfterSend(op.g + 2, op.k);
        if (op.g + 1 < steps) postSend(op.g + 1, op.k);
      }
      drain();
    }
  }

  /** The next completions; throws on an error completion, or when nothing completes in time. */
  private async next(pending: () => string): Promise<number> {
    const cq = this.ep.cq;
    const deadline = performance.now() + this.opts.timeoutMs;
    for (;;) {
      let n = cq.read(this.entries);
      if (n === -FI_EAGAIN) {
        const left = deadline - performance.now();
        if (left <= 0) throw new TimeoutError(`nothing completed for ${this.opts.timeoutMs} ms; ${pending()}`);
        if (this.opts.progress === 'busy') {
          await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        n = await cq.sread(this.entries, this.entries.length, Math.ceil(left));
        if (n === -FI_EAGAIN) continue;
      }
      if (n === -FI_EAVAIL) {
        const e = this.errEntry;
        cq.readerr(e);
        const what = e.opContext !== null ? this.describe(e.opContext as Op) : 'an operation';
        throw new CompletionError(e.err, e.provErrno, `${what} failed: ${fiStrerror(e.err)} (err ${e.err}), prov_errno ${e.provErrno} ${provErrnoStr(e.provErrno)}`);
      }
      if (n > 0) return n;
      throw new EfaError('ECQREAD', `fi_cq_read returned ${n}: ${fiStrerror(n)}`);
    }
  }

  private describe(op: Op): string {
    const n = this.world;
    const phase = op.g < n - 1 ? 'reduce-scatter' : 'all-gather';
    const step = op.g < n - 1 ? op.g : op.g - (n - 1);
    const peer = op.send ? `send to rank ${mod(this.rank + 1, n)}` : `receive from rank ${mod(this.rank - 1, n)}`;
    return `${peer} (run ${op.run}, ${phase} step ${step}, slice ${op.k}, ${op.len * 4} B, tag 0x${op.tag.toString(16)})`;
  }
}

// ------------------------------------------------------------------ nccl-tests formatting

/** nccl-tests' getFloatStr: two decimals, then one, then none, then an exponent, to fit `width`. */
function floatStr(v: number, width: number): string {
  for (const d of [2, 1, 0]) {
    const s = v.toFixed(d);
    if (s.length <= width) return s.padStart(width);
  }
  return cExp(v.toExponential(6)).padStart(width);
}

/** JavaScript's exponent ("e+7") as C prints it ("e+07"). */
function cExp(s: string): string {
  return s.replace(/e([+-])(\d)$/, (_, sign: string, d: string) => `e${sign}0${d}`);
}

/** C's %g: six significant digits, trailing zeros dropped. */
function fmtG(v: number): string {
  if (v === 0) return '0';
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf';
  const exp = Number(v.toExponential(5).split('e')[1]);
  const strip = (s: string): string => (s.includes('.') ? s.replace(/\.?0+$/, '') : s);
  if (exp < -4 || exp >= 6) {
    const [m, e] = v.toExponential(5).split('e');
    return cExp(`${strip(m)}e${e}`);
  }
  return strip(v.toFixed(5 - exp));
}

function cols(widths: number[], values: string[]): string {
  return values.map((v, i) => v.padStart(widths[i])).join('  ');
}

const PRE = [10, 12, 8, 6, 6];
const PART = [7, 6, 6, 6];

/** The table header. Lines are printed without the trailing blanks nccl-tests leaves. */
function header(): string[] {
  const blank = ['', '', '', '', ''];
  return [
    `# ${cols(PRE, blank)}           out-of-place                       in-place`,
    `# ${cols([...PRE, ...PART, ...PART], ['size', 'count', 'type', 'redop', 'root', 'time', 'algbw', 'busbw', '#wrong', 'time', 'algbw', 'busbw', '#wrong'])}`,
    `# ${cols([...PRE, ...PART, ...PART], ['(B)', '(elements)', '', '', '', '(us)', '(GB/s)', '(GB/s)', '', '(us)', '(GB/s)', '(GB/s)', ''])}`.trimEnd(),
  ];
}

/** One measured half of a row: mean time per run (us) and elements wrong (-1: not checked). */
interface Part {
  us: number;
  wrong: number;
}

function busFactor(n: number): number {
  return n > 1 ? (2 * (n - 1)) / n : 0;
}

function rowText(bytes: number, n: number, parts: Array<Part | null>): { text: string; busbw: number[] } {
  let text = `${String(bytes).padStart(12)}  ${String(bytes / 4).padStart(12)}  ${'float'.padStart(8)}  ${'sum'.padStart(6)}  ${'-1'.padStart(6)}`;
  const busbw: number[] = [];
  for (const p of parts) {
    if (p === null) {
      text += `  ${cols(PART, ['N/A', 'N/A', 'N/A', 'N/A'])}`;
      continue;
    }
    const algbw = bytes / 1e9 / (p.us / 1e6);
    const bus = algbw * busFactor(n);
    busbw.push(bus);
    text += `  ${floatStr(p.us, 7)}  ${floatStr(algbw, 6)}  ${floatStr(bus, 6)}  ${(p.wrong < 0 ? 'N/A' : fmtG(p.wrong)).padStart(6)}`;
  }
  return { text, busbw };
}

// ------------------------------------------------------------------ the benchmark

function parseOptions(): Options {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      size: { type: 'string', default: String(4 << 20) },
      minbytes: { type: 'string', short: 'b' },
      maxbytes: { type: 'string', short: 'e' },
      stepfactor: { type: 'string', short: 'f', default: '2' },
      iters: { type: 'string', short: 'n', default: '5' },
      warmup: { type: 'string', short: 'w', default: '1' },
      check: { type: 'string', short: 'c', default: '1' },
      'in-place': { type: 'string', default: '1' },
      slice: { type: 'string', default: String(512 << 10) },
      ordered: { type: 'boolean', default: false },
      progress: { type: 'string', default: 'event' },
      'timeout-ms': { type: 'string', default: '30000' },
      stats: { type: 'boolean', default: false },
    },
  });
  const int = (name: string, text: string | undefined, min: number, max: number): number => {
    const v = Number(text);
    if (!Number.isInteger(v) || v < min || v > max) throw new InvalidArgumentError(`--${name}: an integer in ${min}..${max}, got ${text}`);
    return v;
  };
  const flag = (name: string, text: string | undefined): boolean => {
    if (text !== '0' && text !== '1') throw new InvalidArgumentError(`--${name}: 0 or 1, got ${text}`);
    return text === '1';
  };
  const maxSize = 1 << 30;
  const size = int('size', values.size, 4, maxSize);
  const minBytes = int('minbytes', values.minbytes ?? values.maxbytes ?? String(size), 4, maxSize);
  const maxBytes = int('maxbytes', values.maxbytes ?? String(minBytes), minBytes, maxSize);
  const stepFactor = int('stepfactor', values.stepfactor, 2, 1024);
  const sizes: number[] = [];
  for (let b = minBytes; b <= maxBytes; b *= stepFactor) {
    if (b % 4 !== 0) throw new InvalidArgumentError(`size ${b}: float32 elements need a multiple of 4 bytes`);
    sizes.push(b);
  }
  const progress = values.progress;
  if (progress !== 'event' && progress !== 'busy') throw new InvalidArgumentError(`--progress: event or busy, got ${progress}`);
  return {
    sizes,
    stepFactor,
    iters: int('iters', values.iters, 1, 1_000_000),
    warmup: int('warmup', values.warmup, 0, 1_000_000),
    check: flag('check', values.check),
    inPlace: flag('in-place', values['in-place']),
    sliceBytes: int('slice', values.slice, 4, maxSize),
    ordered: values.ordered === true,
    progress,
    timeoutMs: int('timeout-ms', values['timeout-ms'], 1, 3_600_000),
    stats: values.stats === true,
  };
}

/** Runs one size: out of place, then in place; this rank's time per run and wrong count for each. */
async function measure(ring: Ring, dev: Device, key: string, bytes: number, o: Options): Promise<Array<Part | null>> {
  const count = bytes / 4;
  ring.layout(count);
  const input = new Float32Array(count);
  fillInput(input, ring.rank);
  const output = new Float32Array(count);
  const parts: Array<Part | null> = [];
  for (const inPlace of [false, true]) {
    if (inPlace && !o.inPlace) {
      parts.push(null);
      continue;
    }
    const send = inPlace ? output : input;
    if (inPlace) output.set(input);
    for (let i = 0; i < o.warmup; i++) await ring.allreduce(send, output);
    await dev.daemon.barrier(`${key}/start/${bytes}/${inPlace ? 'ip' : 'oop'}`, ring.world, 600_000);
    const t0 = performance.now();
    for (let i = 0; i < o.iters; i++) await ring.allreduce(send, output);
    const us = ((performance.now() - t0) * 1000) / o.iters;
    let wrong = -1;
    if (o.check) {
      if (inPlace) output.set(input);
      else output.fill(NaN);
      await ring.allreduce(send, output);
      wrong = countWrong(output, ring.world);
    }
    parts.push({ us, wrong });
  }
  return parts;
}

async function main(): Promise<void> {
  const o = parseOptions();
  const dev = await openDevice();
  let ep: RdmEndpoint | null = null;
  try {
    const rank = dev.rank ?? 0;
    const world = dev.worldSize ?? 1;
    if (world > MAX_RANKS) throw new InvalidArgumentError(`at most ${MAX_RANKS} ranks (the tag's step field), got ${world}`);
    const key = `${process.env.EFA_EMU_JOB_ID ?? 'allreduce'}/allreduce`;
    ep = await RdmEndpoint.open(dev, { ordered: o.ordered, progress: o.progress });
    const addrs = await insertRanks(ep, dev.daemon, rank, world, `${key}/addr`);
    const ring = new Ring(ep, rank, world, addrs[mod(rank - 1, world)], addrs[mod(rank + 1, world)], o);
    await dev.daemon.put(`${key}/dev/${rank}`, JSON.stringify({ pid: process.pid, host: hostname(), name: dev.name, gid: dev.gidText, gen: dev.attributes.generation }));

    const out = (line: string): void => {
      if (rank === 0) process.stdout.write(`${line}\n`);
    };
    out(`# nThread 1 nGpus 1 minBytes ${o.sizes[0]} maxBytes ${o.sizes[o.sizes.length - 1]} step: ${o.stepFactor}(factor) warmup iters: ${o.warmup} iters: ${o.iters} agg iters: 1 validation: ${o.check ? 1 : 0} graph: 0`);
    out('#');
    out(`# Using devices (efa-emu RDM endpoints, ${world} ranks, slice ${o.sliceBytes} B, ${o.ordered ? 'ordered' : 'unordered'}, ${o.progress} progress)`);
    if (rank === 0) {
      for (let r = 0; r < world; r++) {
        const d = JSON.parse(await dev.daemon.get(`${key}/dev/${r}`, 600_000)) as { pid: number; host: string; name: string; gid: string; gen: string };
        out(`#  Rank ${String(r).padStart(2)} Group  0 Pid ${String(d.pid).padStart(6)} on ${d.host.padStart(10)} device ${d.name} [${d.gid}] ${d.gen}`);
      }
    }
    out('#');
    for (const line of header()) out(line);

    let wrongTotal = 0;
    const busbws: number[] = [];
    for (const bytes of o.sizes) {
      const parts = await measure(ring, dev, key, bytes, o);
      await dev.daemon.put(`${key}/result/${bytes}/${rank}`, JSON.stringify(parts));
      if (rank !== 0) continue;
      // Mean time over ranks, wrong elements summed over ranks, as nccl-tests reports them.
      const all: Array<Array<Part | null>> = [];
      for (let r = 0; r < world; r++) all.push(JSON.parse(await dev.daemon.get(`${key}/result/${bytes}/${r}`, 600_000)) as Array<Part | null>);
      const merged = parts.map((p, i): Part | null => {
        if (p === null) return null;
        const us = all.reduce((s, a) => s + (a[i] as Part).us, 0) / world;
        const wrong = o.check ? all.reduce((s, a) => s + (a[i] as Part).wrong, 0) : -1;
        return { us, wrong };
      });
      for (const p of merged) if (p !== null && p.wrong > 0) wrongTotal += p.wrong;
      const row = rowText(bytes, world, merged);
      busbws.push(...row.busbw);
      out(row.text);
    }
    out(`# ${'Out of bounds values'.padEnd(20)} : ${wrongTotal} ${wrongTotal === 0 ? 'OK' : 'FAILED'}`);
    out(`# ${'Avg bus bandwidth'.padEnd(20)} : ${fmtG(busbws.reduce((s, b) => s + b, 0) / Math.max(1, busbws.length))}`);
    if (o.stats) {
      // Rank 0's own counters: which protocols carried the slices, and what SRD had to resend.
      const c = Object.entries(ep.statsSnapshot()).filter(([, v]) => v !== 0);
      out(`# rank 0 rdm: ${c.map(([k, v]) => `${k}=${v}`).join(' ')}`);
      out(`# rank 0 srd: retrans_pkts=${dev.stats.retrans_pkts} rnr_received=${dev.stats.rnr_received}`);
    }
    out('#');
    out('# Collective test concluded: allreduce');
    // Nobody closes while a neighbour may still need its last packets (a CTS, an EOR, an ack).
    await dev.daemon.barrier(`${key}/done`, world, 600_000);
    if (wrongTotal > 0) process.exitCode = 2;
  } finally {
    await ep?.close();
    await dev.close();
  }
}

main().catch((err: Error & { code?: string }) => {
  process.stderr.write(`allreduce: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
  process.exitCode = 1;
});
