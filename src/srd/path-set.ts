import { MAX_PATHS } from '../wire/header';
import type { SrdConfig } from './srd-config';

/** Least share of turns a slow path keeps, so that its RTT keeps being measured. */
const MIN_SHARE = 0.05;
/** Rounds of the cursor a pick may take: enough for a path at MIN_SHARE to reach a turn. */
const MAX_ROUNDS = 21;

/** Where a path stands with the sender. */
export const PathState = {
  /** In use: packets are sprayed over it. */
  UP: 0,
  /** Lost pathDownLosses packets in a row: avoided until its probe is due. */
  DOWN: 1,
  /** One new packet was sent on it to see whether it delivers again. */
  PROBING: 2,
} as const;
export type PathState = (typeof PathState)[keyof typeof PathState];

/**
 * Per-path figures of a device, all peers together, for queryStats (`path{p}_*`). Typed
 * arrays so the hot path only indexes.
 */
export class PathCounters {
  readonly tx = new Float64Array(MAX_PATHS);
  readonly retrans = new Float64Array(MAX_PATHS);
  readonly lost = new Float64Array(MAX_PATHS);
  readonly rx = new Float64Array(MAX_PATHS);
  /** Smoothed RTT (µs) of acks that came back on the path; 0 before the first. */
  readonly rttUs = new Float64Array(MAX_PATHS);
  readonly down = new Float64Array(MAX_PATHS);
  downEvents = 0;
  probes = 0;
  /** Multiplicative decreases the delay controller made (all peers). */
  ccDecreases = 0;

  constructor(readonly paths: number) {}

  sampleRtt(path: number, us: number): void {
    const v = this.rttUs[path];
    this.rttUs[path] = v === 0 ? us : v + (us - v) / 8;
  }

  /** The counters under their queryStats names. */
  snapshot(out: Record<string, number>): void {
    for (let p = 0; p < this.paths; p++) {
      out[`path${p}_tx_pkts`] = this.tx[p];
      out[`path${p}_retrans_pkts`] = this.retrans[p];
      out[`path${p}_lost_pkts`] = this.lost[p];
      out[`path${p}_rx_pkts`] = this.rx[p];
      out[`path${p}_rtt_us`] = Math.round(this.rttUs[p]);
      out[`path${p}_down_events`] = this.down[p];
    }
    out.path_down_events = this.downEvents;
    out.path_probes = this.probes;
    out.cc_decreases = this.ccDecreases;
  }
}

/**
 * The paths of one peer and what the sender learnt of each: SRD sprays a flow's packets over
 * many paths (as AWS describes it, varying the encapsulation's entropy so ECMP spreads them)
 * and routes around one that stops delivering long before the network's routing would.
 *
 * New packets go round-robin over the paths in use, each path's turn weighted by its round
 * trip: one within 1.25 x the best path's RTT + 0.1 ms gets every turn, a slower one the share
 * best/its own (never below 1 in 20, so it keeps being measured), so a path with a long queue
 * or a long detour carries less. A retransmission prefers another path in use than the one
 * its copy was lost on; when that is the only one, the copy goes there again unless a path
 * out of use is due for a probe. A path that loses `pathDownLosses` packets in a row, with no
 * delivery on it in between, goes out of use, unless it is the last one in use: a message
 * never fails while one path still works (when the last one loses that many, every other is
 * probed at once). Once `pathProbeMs` passed, the next packet probes it (a new one, or a copy
 * with nowhere else to go); delivered, the path is back, lost (or unanswered within the probe
 * wait), the wait doubles up to `pathProbeMaxMs`. Evidence of delivery on a path: an ack that
 * came back on it (acks travel on the path of the packet whose tx_time they echo), or a send
 * settled whose only copy took it.
 */
export class PathSet {
  readonly n: number;
  /** Paths in use (state UP); never 0. */
  up: number;
  private readonly state: Uint8Array;
  private readonly lossRun: Uint16Array;
  /** DOWN: when the probe is due; PROBING: when an unanswered probe counts as lost. */
  private readonly probeAt: Float64Array;
  private readonly probeWait: Float64Array;
  private down = 0;
  /** The earliest probeAt of the paths out of use: until then a new packet need not look. */
  private nextProbeAt = Infinity;
  private rr = 0;
  /** Smoothed RTT (ms) of acks that came back on each path; -1 before the first. */
  private readonly srtt: Float64Array;
  /** Weighted round-robin credit of each path (a path is taken once it reaches 1). */
  private readonly credit: Float64Array;
  /** The lowest smoothed RTT among paths in use (-1: none measured). */
  private bestSrtt = -1;
  private readonly downLosses: number;
  private readonly probeMs: number;
  private readonly probeMaxMs: number;

  constructor(
    cfg: SrdConfig,
    private readonly counters: PathCounters,
  ) {
    this.n = cfg.paths;
    this.up = this.n;
    this.state = new Uint8Array(this.n);
    this.lossRun = new Uint16Array(this.n);
    this.probeAt = new Float64Array(this.n);
    this.probeWait = new Float64Array(this.n);
    this.srtt = new Float64Array(this.n).fill(-1);
    this.credit = new Float64Array(this.n);
    this.downLosses = cfg.pathDownLosses;
    this.probeMs = cfg.pathProbeMs;
    this.probeMaxMs = cfg.pathProbeMaxMs;
    // Peers start on different paths, so that the first packets of many peers spread too.
    this.rr = this.n - 1;
  }

  /** The state of path `p` (for tests and status). */
  stateOf(p: number): PathState {
    return this.state[p] as PathState;
  }

  /**
   * The path for a transmission. `avoid` is the path a lost copy took (-1 for a new packet);
   * only a new packet may probe a path out of use.
   */
  pick(now: number, avoid: number): number {
    const n = this.n;
    if (n === 1) return 0;
    if (avoid < 0 && now >= this.nextProbeAt) {
      const p = this.dueProbe(now);
      if (p >= 0) return p;
    }
    const state = this.state;
    if (avoid >= 0) {
      // A retransmission: the path in use with the fewest losses in a row (the first after
      // the cursor among equals), so a path that has started to fail is not chosen again
      // before it is found out.
      let best = -1;
      let bestRun = 0x10000;
      for (let i = 1; i <= n; i++) {
        const p = (this.rr + i) % n;
        if (state[p] === PathState.UP && p !== avoid && this.lossRun[p] < bestRun) {
          best = p;
          bestRun = this.lossRun[p];
        }
      }
      if (best >= 0) {
        this.rr = best;
        return best;
      }
    } else {
      // At most MIN_SHARE's inverse rounds: by then every path in use has credit enough.
      for (let i = 0; i < n * MAX_ROUNDS; i++) {
        const p = this.rr + 1 === n ? 0 : this.rr + 1;
        this.rr = p;
        if (state[p] !== PathState.UP) continue;
        const c = this.credit[p] + this.weight(p);
        if (c >= 1) {
          this.credit[p] = c - 1;
          return p;
        }
        this.credit[p] = c;
      }
    }
    // The only path in use is the one the copy was just lost on. A path out of use lost
    // pathDownLosses in a row and has not delivered since, so it gets the copy only as its
    // due probe; otherwise the copy goes where it was lost. (Sending every such copy to a path
    // out of use made a peer with one dead path of two resend every other copy into it; seed
    // 929937 failed UNRESP while a path worked.)
    if (now >= this.nextProbeAt) {
      const p = this.dueProbe(now);
      if (p >= 0) return p;
    }
    if (avoid >= 0) return avoid;
    // Not reached (a new packet finds a path in use within MAX_ROUNDS), but never a path -1.
    for (let p = 0; p < n; p++) if (state[p] === PathState.UP) return p;
    return 0;
  }

  /** A path out of use whose probe is due (now PROBING), or -1; settles probes that went unanswered. */
  private dueProbe(now: number): number {
    const state = this.state;
    let found = -1;
    for (let p = 0; p < this.n; p++) {
      if (now < this.probeAt[p]) continue;
      if (state[p] === PathState.PROBING) {
        // Its probe was neither delivered nor found lost in time: as good as lost.
        this.backOff(now, p);
      } else if (state[p] === PathState.DOWN && found < 0) {
        found = p;
      }
    }
    if (found >= 0) {
      state[found] = PathState.PROBING;
      this.probeAt[found] = now + this.probeWait[found];
      this.counters.probes++;
    }
    this.refreshNextProbe();
    return found;
  }

  /** Recomputes nextProbeAt (on a change of state, not per packet). */
  private refreshNextProbe(): void {
    let next = Infinity;
    if (this.down > 0) for (let p = 0; p < this.n; p++) if (this.state[p] !== PathState.UP && this.probeAt[p] < next) next = this.probeAt[p];
    this.nextProbeAt = next;
  }

  private backOff(now: number, p: number): void {
    this.state[p] = PathState.DOWN;
    const w = this.probeWait[p] * 2;
    this.probeWait[p] = w < this.probeMaxMs ? w : this.probeMaxMs;
    this.probeAt[p] = now + this.probeWait[p];
  }

  /** A copy sent on `p` was found lost (a hole the acks showed, or its RTO). */
  lost(now: number, p: number): void {
    this.counters.lost[p]++;
    if (this.n === 1) return;
    const run = ++this.lossRun[p];
    const s = this.state[p];
    if (s === PathState.PROBING) {
      this.backOff(now, p);
      this.refreshNextProbe();
    } else if (s === PathState.UP && run >= this.downLosses && this.up === 1 && this.down > 0) {
      // The last path in use fails too. The others are probed at once, their back-off undone,
      // rather than all put back in use: a path black-holed for long would then take half the
      // copies again while a burst of losses on the last one passes (seeds 900765, 929395).
      // The last path stays in use until a probe delivers.
      this.probeAllNow(now);
    } else if (s === PathState.UP && run >= this.downLosses && this.up > 1) {
      this.state[p] = PathState.DOWN;
      this.up--;
      this.down++;
      this.probeWait[p] = this.probeMs;
      this.probeAt[p] = now + this.probeMs;
      this.counters.down[p]++;
      this.counters.downEvents++;
      this.refreshNextProbe();
    }
  }

  private probeAllNow(now: number): void {
    for (let q = 0; q < this.n; q++) {
      if (this.state[q] !== PathState.DOWN) continue;
      this.probeWait[q] = this.probeMs;
      this.probeAt[q] = now;
    }
    this.refreshNextProbe();
  }

  /** The share of its turns path `p` takes: 1, or less for a path slower than the best. */
  private weight(p: number): number {
    const s = this.srtt[p];
    const best = this.bestSrtt;
    if (s < 0 || best < 0) return 1;
    const w = (best * 1.25 + 0.1) / s;
    return w >= 1 ? 1 : w > MIN_SHARE ? w : MIN_SHARE;
  }

  /** A round trip measured on path `p` (an ack that came back on it). */
  sampleRtt(p: number, ms: number): void {
    const v = this.srtt[p];
    this.srtt[p] = v < 0 ? ms : v + (ms - v) / 8;
    let best = -1;
    for (let q = 0; q < this.n; q++) {
      const x = this.srtt[q];
      if (x >= 0 && this.state[q] === PathState.UP && (best < 0 || x < best)) best = x;
    }
    this.bestSrtt = best;
  }

  /** Something sent on `p` arrived: it delivers (again). */
  delivered(p: number): void {
    this.lossRun[p] = 0;
    if (this.state[p] === PathState.UP) return;
    this.state[p] = PathState.UP;
    this.up++;
    this.down--;
    this.probeAt[p] = 0;
    this.refreshNextProbe();
  }
}
