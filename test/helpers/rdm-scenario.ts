/*
 * RDM endpoint tests' shared pieces: deterministic payloads, a CQ log that copies every
 * completion (the CQ reuses its entries), an extra endpoint outside rdmSim's full mesh (a
 * sender the others have not inserted), and the seeded scenario: 2..4 endpoints exchanging
 * messages of every protocol, tagged and untagged, under drawn faults, checked by an oracle
 * (every message received exactly once, intact, from the right sender, nothing failed, nothing
 * left over). test/rdm-sim.test.ts runs a couple of hundred seeds, the soak
 * (`node dist/test/soak/srd-soak.js --scenario rdm`) many more; RDM_SIM_SEED=n replays one.
 */
import { Prng } from '../../src/common/prng';
import { FI_EAGAIN, FI_EAVAIL, fiStrerror, provErrnoStr } from '../../src/rdm/fi-errno';
import { RdmCqEntry, RdmCqErrEntry, type RdmCq } from '../../src/rdm/rdm-cq';
import { FI_MSG, FI_RECV, FI_REMOTE_CQ_DATA, FI_SEND, FI_TAGGED, RdmEndpoint, type RdmEndpointOptions } from '../../src/rdm/rdm-endpoint';
import { FI_ADDR_UNSPEC } from '../../src/rdm/rdm-peer';
import type { RdmProtocol } from '../../src/rdm/rdm-wire';
import { rdmSim, type RdmSim } from './rdm-sim';

/** A deterministic payload of `len` bytes for message `id`. */
export function pattern(id: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  let x = (Math.imul(id, 2654435761) + 0x3c6ef372) >>> 0;
  for (let i = 0; i < len; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

function copyOk(e: RdmCqEntry): RdmCqEntry {
  return Object.assign(new RdmCqEntry(), e);
}

/** Every completion of one CQ, copied as read; `poll` reads all there is (and so progresses). */
export class CqLog {
  readonly ok: RdmCqEntry[] = [];
  readonly errs: RdmCqErrEntry[] = [];
  private readonly out = [new RdmCqEntry(), new RdmCqEntry(), new RdmCqEntry(), new RdmCqEntry()];
  private readonly err = new RdmCqErrEntry();

  constructor(readonly cq: RdmCq) {}

  poll(): void {
    for (;;) {
      const n = this.cq.read(this.out, this.out.length);
      if (n > 0) {
        for (let i = 0; i < n; i++) this.ok.push(copyOk(this.out[i]));
        continue;
      }
      if (n === -FI_EAVAIL) {
        this.cq.readerr(this.err);
        this.errs.push(Object.assign(new RdmCqErrEntry(), this.err));
        continue;
      }
      if (n !== -FI_EAGAIN) throw new Error(`cq.read returned ${n}`);
      return;
    }
  }

  /** Completions (successful or not) whose context is `ctx`. */
  count(ctx: unknown): number {
    return this.ok.filter((e) => e.opContext === ctx).length + this.errs.filter((e) => e.opContext === ctx).length;
  }

  has(ctx: unknown): boolean {
    return this.count(ctx) > 0;
  }

  okOf(ctx: unknown): RdmCqEntry | undefined {
    return this.ok.find((e) => e.opContext === ctx);
  }

  errOf(ctx: unknown): RdmCqErrEntry | undefined {
    return this.errs.find((e) => e.opContext === ctx);
  }
}

/** One log per endpoint of `s`. */
export function cqLogs(s: RdmSim): CqLog[] {
  return s.eps.map((ep) => new CqLog(ep.cq));
}

/** Polls every log; for `run` predicates. */
export function pollLogs(logs: CqLog[]): void {
  for (const l of logs) l.poll();
}

/** An error entry as one line, for assertion messages. */
export function describeErr(e: RdmCqErrEntry): string {
  return `${String(e.opContext)}: ${fiStrerror(e.err)} (${e.err}), prov ${provErrnoStr(e.provErrno)} (${e.provErrno}), len ${e.len}, olen ${e.olen}`;
}

/**
 * Stops endpoint `ep`'s progress (its process is descheduled) until virtual time `until`:
 * nothing reposts its receive buffers, so its device answers receiver-not-ready. Its device
 * and SRD keep running. rdmSim's own `freeze` is for good; this one ends.
 */
export function pauseEndpoint(s: RdmSim, ep: RdmEndpoint, until: number): void {
  const own = Object.getOwnPropertyDescriptor(ep, 'progress');
  if (own !== undefined) throw new Error('pauseEndpoint: the endpoint is paused already');
  Object.defineProperty(ep, 'progress', { value: () => {}, configurable: true, writable: true });
  s.sim.at(until, () => {
    delete (ep as { progress?: unknown }).progress;
    ep.progress();
  });
}

/**
 * Opens one more endpoint on a new device of `s.sim`, driven like rdmSim's (manual progress on
 * the simulator's clock, after every event), but in nobody's AV: the others learn it from its
 * packets. Its own AV is empty too; the test inserts what it needs.
 */
export async function addEndpoint(s: RdmSim, opts: RdmEndpointOptions = {}, generation?: string): Promise<RdmEndpoint> {
  const sim = s.sim;
  const node = sim.addDevice(`efa${sim.nodes.length}`, generation !== undefined ? { generation } : {});
  let ep: RdmEndpoint | null = null;
  ep = await RdmEndpoint.open(node.device, {
    progress: 'manual',
    probeIntervalMs: 50,
    rnrTimeoutMs: 2000,
    ...opts,
    clock: () => sim.now,
    seed: 7919 + node.index,
    env: {},
    timer: (e) => {
      let live = true;
      return {
        arm: (deadline: number) => {
          if (live) sim.at(Math.max(deadline, sim.now), () => e.progress());
        },
        cancel: () => {
          live = false;
        },
      };
    },
  });
  const previous = sim.afterEvent;
  const extra = ep;
  sim.afterEvent = (n) => {
    previous?.(n);
    extra.progress();
  };
  return ep;
}

// ------------------------------------------------------------------ the seeded scenario

export interface RdmScenarioParams {
  seed: number;
  endpoints: number;
  messages: number;
  /** Fault spec for every device. */
  faults: string;
  ordered: boolean;
  /** Endpoints (by index) on an efa0 device: no RDMA read, so long messages go long-CTS. */
  efa0: number[];
  rxSize: number;
  txSize: number;
  ctsCredits: number;
  /** Sends are posted over [0, sendWindowMs), receives over [recvFrom, recvFrom + window). */
  sendWindowMs: number;
  recvFromMs: number;
  recvWindowMs: number;
  /** Untagged receives name their sender (else FI_ADDR_UNSPEC, capacity for any). */
  directed: boolean;
  /** An endpoint whose progress stops for a while (its device answers RNR meanwhile), or null. */
  pause: { ep: number; from: number; until: number } | null;
  /** Every device's MTU, and the endpoints' protocol thresholds. */
  mtu: number;
  mediumMaxSize: number;
  readMinSize: number;
}

const MIB = 1 << 20;

export function drawRdmParams(seed: number): RdmScenarioParams {
  const r = new Prng(seed);
  const pct = (max: number, chance: number): number => (r.next() < chance ? r.next() * max : 0);
  const loss = pct(5, 0.7);
  const dup = pct(5, 0.4);
  const reorder = pct(30, 0.6);
  const corrupt = pct(1, 0.3);
  const endpoints = 2 + r.int(3);
  const efa0: number[] = [];
  for (let i = 0; i < endpoints; i++) if (r.next() < 0.2) efa0.push(i);
  const p: RdmScenarioParams = {
    seed,
    endpoints,
    messages: 6 + r.int(30),
    faults: `loss=${loss.toFixed(2)}%,dup=${dup.toFixed(2)}%,reorder=${reorder.toFixed(2)}%,corrupt=${corrupt.toFixed(2)}%,delay=${(0.02 + r.next() * 0.3).toFixed(3)}ms,seed=${seed}`,
    ordered: r.next() < 0.4,
    efa0,
    rxSize: [512, 64, 16][r.int(3)],
    txSize: [256, 32, 8][r.int(3)],
    ctsCredits: [32, 4, 1][r.int(3)],
    sendWindowMs: r.next() * 20,
    recvFromMs: [0, 0, 5, 40][r.int(4)],
    recvWindowMs: r.next() * 20,
    directed: r.next() < 0.5,
    pause: null,
    mtu: 8192,
    mediumMaxSize: 65536,
    readMinSize: MIB,
  };
  if (r.next() < 0.3) {
    const from = r.next() * 20;
    // Well below the endpoints' RNR patience (rdmSim's rnrTimeoutMs, 2 s): costs nothing but time.
    p.pause = { ep: r.int(endpoints), from, until: from + 1 + r.next() * 300 };
  }
  // Sometimes another MTU (more, smaller packets) and other protocol thresholds.
  if (r.next() < 0.3) {
    p.mtu = [4096, 2048, 9000][r.int(3)];
    p.mediumMaxSize = [16384, 65536, 200_000][r.int(3)];
    p.readMinSize = [256 * 1024, MIB, 1536 * 1024][r.int(3)];
  }
  return p;
}

interface Msg {
  id: number;
  from: number;
  to: number;
  len: number;
  proto: RdmProtocol;
  tagged: boolean;
  tag: bigint;
  /** Remote CQ data, or null for a plain send. */
  data: number | null;
  /** Tagged: the receive ignores the tag's low 16 bits (and names a wrong value there). */
  wildcard: boolean;
  /** Order among the untagged messages of this sender to this receiver, as posted. */
  seq: number;
  sendPostedAt: number;
  sends: number;
  sendErr: string | null;
  recvs: number;
}

interface Recv {
  /** The message it is for: tagged receives match one message; untagged ones any (see directed). */
  msg: Msg | null;
  owner: number;
  src: number;
  cap: number;
  buf: Buffer;
  /** Posting order among this endpoint's untagged receives. */
  index: number;
  done: boolean;
  /** The message it received. */
  got: Msg | null;
}

export interface RdmScenarioResult {
  problems: string[];
  msgs: number;
  bytes: number;
  virtualMs: number;
  /** The endpoints' counters, summed (what the run exercised). */
  counters: Record<string, number>;
}

/** Sizes from every protocol, and at its thresholds: eager, medium, long-CTS, long-read, up to 2 MiB. */
function drawLen(r: Prng, eagerMax: number, mediumMax: number, readMin: number): number {
  const upTo = (lo: number, hi: number): number => (hi <= lo ? lo : lo + r.int(hi - lo + 1));
  switch (r.int(8)) {
    case 0:
      return r.int(8);
    case 1:
    case 2:
      return r.int(eagerMax + 1);
    case 3:
      return upTo(eagerMax + 1, mediumMax);
    case 4:
      return [eagerMax, eagerMax + 1, mediumMax, mediumMax + 1][r.int(4)];
    case 5:
      return upTo(mediumMax + 1, readMin - 1);
    case 6:
      return [readMin - 1, readMin, readMin + 1][r.int(3)];
    default:
      return upTo(readMin, 2 * MIB);
  }
}

/** Untagged messages carry their id: in remote CQ data, or (no data) in their first 4 bytes. */
function payloadOf(m: Msg): Buffer {
  const b = pattern(m.id + 1, m.len);
  if (!m.tagged && m.data === null) b.writeUInt32LE(m.id, 0);
  return b;
}

export async function runRdmScenario(p: RdmScenarioParams): Promise<RdmScenarioResult> {
  const problems: string[] = [];
  const problem = (s: string): void => {
    if (problems.length < 20) problems.push(s);
  };
  const s = await rdmSim({
    n: p.endpoints,
    seed: p.seed,
    faults: p.faults,
    rdm: { ordered: p.ordered, rxSize: p.rxSize, txSize: p.txSize, ctsCredits: p.ctsCredits, mediumMaxSize: p.mediumMaxSize, readMinSize: p.readMinSize },
    generation: (i) => (p.efa0.includes(i) ? 'efa0' : undefined),
    attributes: () => (p.mtu === 8192 ? undefined : { mtu: p.mtu }),
  });
  const eps = s.eps;
  const logs = cqLogs(s);
  const r = new Prng(p.seed ^ 0x7d3a_91c5);
  const eagerMax = eps[0].eagerMaxSize;
  // At most two messages above medium size per scenario: keeps memory and time bounded.
  let big = 0;
  const msgs: Msg[] = [];
  for (let id = 0; id < p.messages; id++) {
    const from = r.int(p.endpoints);
    let to = r.int(p.endpoints - 1);
    if (to >= from) to++;
    let len = drawLen(r, eagerMax, Math.max(eagerMax, p.mediumMaxSize), p.readMinSize);
    if (len > 65536 && ++big > 2) len = r.int(65537);
    const tagged = r.next() < 0.5;
    const withData = r.next() < 0.4;
    // An untagged message too short to carry its id carries it as remote CQ data.
    const data = withData || (!tagged && len < 4) ? r.int(0x1_0000_0000) * 0x8000 + id : null;
    // The sender's own device decides too: protocolFor knows whether it can read.
    const proto = eps[from].protocolFor(len, !p.efa0.includes(to));
    msgs.push({
      id,
      from,
      to,
      len,
      proto,
      tagged,
      tag: (BigInt(id) << 16n) | BigInt(r.int(0x10000)) | (BigInt(r.int(0x10000)) << 48n),
      data,
      wildcard: tagged && r.next() < 0.3,
      seq: -1,
      sendPostedAt: r.next() * p.sendWindowMs,
      sends: 0,
      sendErr: null,
      recvs: 0,
    });
  }

  // Receives: one per tagged message; untagged ones directed per sender, or any-source.
  const recvs: Recv[] = [];
  const untaggedIndex = eps.map(() => 0);
  for (let to = 0; to < p.endpoints; to++) {
    for (const m of msgs) {
      if (m.to === to && m.tagged) recvs.push({ msg: m, owner: to, src: s.addr[to][m.from], cap: m.len, buf: Buffer.alloc(m.len), index: -1, done: false, got: null });
    }
    if (p.directed) {
      for (let from = 0; from < p.endpoints; from++) {
        const mine = msgs.filter((m) => !m.tagged && m.to === to && m.from === from);
        const cap = Math.max(0, ...mine.map((m) => m.len));
        for (let k = 0; k < mine.length; k++) recvs.push({ msg: null, owner: to, src: s.addr[to][from], cap, buf: Buffer.alloc(cap), index: untaggedIndex[to]++, done: false, got: null });
      }
    } else {
      const mine = msgs.filter((m) => !m.tagged && m.to === to);
      const cap = Math.max(0, ...mine.map((m) => m.len));
      for (let k = 0; k < mine.length; k++) recvs.push({ msg: null, owner: to, src: FI_ADDR_UNSPEC, cap, buf: Buffer.alloc(cap), index: untaggedIndex[to]++, done: false, got: null });
    }
  }
  // Tagged receives are posted in random order, untagged in order (their index is the order).
  const recvAt = recvs.map(() => p.recvFromMs + r.next() * p.recvWindowMs);
  let untaggedAt = p.recvFromMs;
  recvs.forEach((rv, i) => {
    if (rv.msg === null) recvAt[i] = untaggedAt += r.next() * 0.5;
  });
  const anySrc = r.next() < 0.5;

  if (p.pause !== null) {
    const { ep, from, until } = p.pause;
    s.sim.at(from, () => pauseEndpoint(s, eps[ep], until));
  }
  // Posting: -FI_EAGAIN (txSize sends outstanding) retries at the next event.
  const backlog: Msg[][] = eps.map(() => []);
  const payloads = new Map<Msg, Buffer>();
  const seqs = new Map<string, number>();
  const trySend = (m: Msg): boolean => {
    const ep = eps[m.from];
    const buf = payloads.get(m) as Buffer;
    const dest = s.addr[m.from][m.to];
    const rc = m.tagged
      ? m.data === null
        ? ep.tsend(buf, dest, m.tag, m)
        : ep.tsenddata(buf, m.data, dest, m.tag, m)
      : m.data === null
        ? ep.send(buf, dest, m)
        : ep.senddata(buf, m.data, dest, m);
    if (rc === -FI_EAGAIN) return false;
    if (rc !== 0) problem(`message ${m.id}: send returned ${rc}`);
    if (!m.tagged) {
      // Send order is posting order (the message id is taken then).
      const key = `${m.from}>${m.to}`;
      m.seq = seqs.get(key) ?? 0;
      seqs.set(key, m.seq + 1);
    }
    return true;
  };
  const pump = (): void => {
    for (const q of backlog) while (q.length > 0 && trySend(q[0])) q.shift();
  };
  for (const m of msgs) {
    payloads.set(m, payloadOf(m));
    s.sim.at(m.sendPostedAt, () => {
      const q = backlog[m.from];
      if (q.length > 0 || !trySend(m)) q.push(m);
    });
  }
  recvs.forEach((rv, i) => {
    s.sim.at(recvAt[i], () => {
      const ep = eps[rv.owner];
      const m = rv.msg;
      if (m !== null) {
        // A wildcard receive ignores the tag's low 16 bits and names other values there.
        const tag = m.wildcard ? m.tag ^ 0x5a5an : m.tag;
        const src = anySrc ? FI_ADDR_UNSPEC : rv.src;
        ep.trecv(rv.buf, src, tag, m.wildcard ? 0xffffn : 0n, rv);
      } else ep.recv(rv.buf, rv.src, rv);
    });
  });

  // The oracle, per completion.
  const seen = eps.map(() => 0);
  const byId = new Map(msgs.map((m) => [m.id, m]));
  const check = (): void => {
    for (let i = 0; i < p.endpoints; i++) {
      const log = logs[i];
      log.poll();
      for (; seen[i] < log.ok.length; seen[i]++) {
        const e = log.ok[seen[i]];
        if ((e.flags & FI_SEND) !== 0) {
          const m = e.opContext as Msg;
          m.sends++;
          if (m.sends > 1) problem(`message ${m.id}: ${m.sends} send completions`);
          if (e.flags !== (FI_SEND | (m.tagged ? FI_TAGGED : FI_MSG))) problem(`message ${m.id}: send flags 0x${e.flags.toString(16)}`);
          continue;
        }
        const rv = e.opContext as Recv;
        if ((e.flags & FI_RECV) === 0 || rv.owner !== i) {
          problem(`endpoint ${i}: a completion with flags 0x${e.flags.toString(16)} for ${String(e.opContext)}`);
          continue;
        }
        if (rv.done) problem(`endpoint ${i}: receive completed twice`);
        rv.done = true;
        let m = rv.msg;
        if (m === null) {
          const id = (e.flags & FI_REMOTE_CQ_DATA) !== 0 ? e.data % 0x8000 : e.len >= 4 ? rv.buf.readUInt32LE(0) : -1;
          m = byId.get(id) ?? null;
          if (m === null || m.tagged) {
            problem(`endpoint ${i}: untagged receive got ${e.len} B naming message ${id}, which is not an untagged message`);
            continue;
          }
        }
        const what = `message ${m.id} (${m.len} B ${m.proto} ${m.tagged ? 'tagged' : 'untagged'} ${m.from}->${m.to}${m.data !== null ? ' with data' : ''})`;
        m.recvs++;
        if (m.recvs > 1) problem(`${what}: received ${m.recvs} times`);
        if (m.to !== i) problem(`${what}: received at endpoint ${i}`);
        if (e.srcAddr !== s.addr[i][m.from]) problem(`${what}: srcAddr ${e.srcAddr}, expected ${s.addr[i][m.from]}`);
        if (e.len !== m.len) problem(`${what}: len ${e.len}`);
        const wantFlags = FI_RECV | (m.tagged ? FI_TAGGED : FI_MSG) | (m.data !== null ? FI_REMOTE_CQ_DATA : 0);
        if (e.flags !== wantFlags) problem(`${what}: flags 0x${e.flags.toString(16)}, expected 0x${wantFlags.toString(16)}`);
        if (m.data !== null && e.data !== m.data) problem(`${what}: data ${e.data}, expected ${m.data}`);
        if (m.tagged && e.tag !== m.tag) problem(`${what}: tag 0x${e.tag.toString(16)}, expected 0x${m.tag.toString(16)}`);
        if (!rv.buf.subarray(0, m.len).equals(payloads.get(m) as Buffer)) problem(`${what}: payload differs`);
        rv.got = m;
      }
      for (const e of log.errs.splice(0)) {
        const ctx = e.opContext as Msg | Recv;
        problem(`endpoint ${i}: error completion ${describeErr(e)} for ${'id' in ctx ? `message ${ctx.id} (${ctx.len} B ${ctx.proto})` : `a receive of ${ctx.cap} B`}`);
        if ('id' in ctx) ctx.sendErr = fiStrerror(e.err);
      }
    }
    pump();
  };
  const allDone = (): boolean => msgs.every((m) => (m.sends > 0 || m.sendErr !== null) && m.recvs > 0) || problems.length > 0;
  const bound = Math.max(p.sendWindowMs, p.recvFromMs + p.recvWindowMs + recvs.length, p.pause?.until ?? 0) + 20_000;
  const finished = await s.run(() => {
    check();
    return allDone();
  }, bound);
  check();
  if (!finished) {
    for (const m of msgs) {
      if (m.sends === 0 || m.recvs === 0) problem(`message ${m.id} (${m.len} B ${m.proto} ${m.tagged ? 'tagged' : 'untagged'} ${m.from}->${m.to}): ${m.sends} send and ${m.recvs} receive completions by t=${s.sim.now.toFixed(0)} ms`);
    }
  }
  if (p.ordered) {
    // Send-after-send: untagged receives complete in any order, but each took the oldest
    // message that matched, so by posting order one sender's messages come in send order.
    for (let i = 0; i < p.endpoints; i++) {
      const last = new Map<number, number>();
      for (const rv of recvs.filter((x) => x.owner === i && x.msg === null && x.got !== null).sort((a, b) => a.index - b.index)) {
        const m = rv.got as Msg;
        const prev = last.get(m.from) ?? -1;
        if (m.seq < prev) problem(`endpoint ${i}: untagged message #${m.seq} from ${m.from} (id ${m.id}) matched receive ${rv.index}, after message #${prev} (ordered)`);
        last.set(m.from, Math.max(prev, m.seq));
      }
    }
  }
  if (problems.length === 0) {
    for (let i = 0; i < p.endpoints; i++) {
      const st = eps[i].statsSnapshot();
      if (st.tx_ops_outstanding !== 0 || st.rx_posted !== 0 || st.unexpected_queued !== 0) {
        problem(`endpoint ${i}: left over at the end: ${st.tx_ops_outstanding} sends, ${st.rx_posted} receives, ${st.unexpected_queued} unexpected`);
      }
    }
    // Each message went by the protocol its size and the devices call for.
    for (const proto of ['eager', 'medium', 'longcts', 'longread'] as const) {
      const want = msgs.filter((m) => m.proto === proto).length;
      const sent = eps.reduce((n, ep) => n + ep.stats.txMessages(proto), 0);
      const got = eps.reduce((n, ep) => n + ep.stats.rxMessages(proto), 0);
      if (sent !== want || got !== want) problem(`${proto}: ${want} messages expected, ${sent} sent and ${got} received as such`);
    }
  }
  const virtualMs = s.sim.now;
  const counters: Record<string, number> = {};
  for (const ep of eps) for (const [k, v] of Object.entries(ep.statsSnapshot())) counters[k] = (counters[k] ?? 0) + v;
  counters.wildcard_recvs = msgs.filter((m) => m.wildcard).length;
  counters.data_msgs = msgs.filter((m) => m.data !== null).length;
  for (const ep of eps) await ep.close();
  return { problems, msgs: msgs.length, bytes: msgs.reduce((n, m) => n + m.len, 0), virtualMs, counters };
}

export function describeRdmParams(p: RdmScenarioParams): string {
  return JSON.stringify(p);
}

/** The lines a failing seed prints: its parameters, what went wrong, and how to replay it. */
export function rdmFailureReport(p: RdmScenarioParams, res: RdmScenarioResult): string {
  return `${describeRdmParams(p)}\n  ${res.problems.join('\n  ')}\n  replay: RDM_SIM_SEED=${p.seed} npx tap dist/test/rdm-sim.test.js`;
}
