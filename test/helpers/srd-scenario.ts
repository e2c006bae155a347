/*
 * One SRD simulation scenario and its oracle, shared by the seeded run of `npm test`, the
 * property-based search (fast-check) and the soak command.
 *
 * A scenario: 2-4 devices (named efa0.. as `efa-emu launch` names ranks), 1-2 SRD QPs each,
 * 10-40 messages per device (sometimes a long stream of hundreds), over the fault spec every
 * device's injector runs (loss, bursts, duplication, reordering with short or seconds-long
 * hold-backs, delay, jitter, corruption, rate limits, partitions of a device or of one or
 * both directions of a link, shorter or longer than the unresponsive timeout, or for ever),
 * sometimes with receivers that post their buffers late or one at a time (RNR) and QPs whose
 * rnr_retry is below 7.
 *
 * What must hold:
 *  - every posted send ends in exactly one completion, nothing hangs, and the engines have
 *    nothing outstanding afterwards;
 *  - a SUCCESS send was delivered exactly once, intact, to the QP it was addressed to, and
 *    before its completion;
 *  - no message is ever delivered twice, even when copies arrive long after;
 *  - the only error completions are LOCAL_ERROR_UNRESP_REMOTE (13) and
 *    LOCAL_ERROR_UNREACH_REMOTE (15), only between devices cut off from each other for longer
 *    than the timeout and only around that time, or when no answer of the peer reached the
 *    sender for a whole timeout before the error (a run of losses as long as a cut; bursty
 *    loss makes them, rarely), UNREACH only when the sender never heard
 *    from that peer (UNRESP only when it did); and REMOTE_ERROR_RNR (10), only on scenarios
 *    whose receivers are slow and whose QPs have an rnr_retry below 7, for a message that was
 *    never delivered;
 *  - rx_drops is the sum of the rx_drop_* causes on every device.
 */
import { Prng } from '../../src/common/prng';
import { EfaStatus, efaStatusStr } from '../../src/common/efa-status';
import type { AddressHandle } from '../../src/device/address-handle';
import { WcFlags, WcOpcode, WrOpcode } from '../../src/device/constants';
import { WorkCompletion } from '../../src/device/work-completion';
import { cloneFaultSpec, formatFaultSpec, NO_FAULTS, type FaultSpec } from '../../src/io/fault-spec';
import { formatSrdConfig, type SrdConfig } from '../../src/srd/srd-config';
import { crc32 } from '../../src/wire/checksum';
import { PacketType } from '../../src/wire/header';
import { createSrdEnd, SimNetwork, type SimNode, type SrdEnd } from './sim-network';

export const MSG_SLOT = 8192;
export const TIMEOUT_MS = 300;
/** Partitions shorter than this share of the timeout must cause no error; longer ones may. */
const SHORT_MAX = 0.3;
const LONG_MIN = 1.2;
/** How far outside [cut + timeout, heal] an error completion may come. */
const SILENCE_SLACK_MS = 150;

export interface PartitionPlan {
  kind: 'device' | 'link' | 'link-one-way';
  /** Device indices (1-based) of the simulation. */
  a: number;
  b: number;
  from: number;
  until: number;
}

/** Everything a scenario is made of. A seed draws one; fast-check builds and shrinks them. */
export interface ScenarioParams {
  seed: number;
  devices: number;
  qpsPerDevice: number;
  msgsPerDevice: number;
  window: number;
  deviceWindow: number;
  ackEvery: number;
  ackDelayMs: number;
  dupThresh: number;
  rtoBurst: number;
  minRtoMs: number;
  maxRtoMs: number;
  initialRtoMs: number;
  rnrBackoffMaxMs: number;
  loss: number;
  burst: number;
  dup: number;
  reorder: number;
  reorderDelayMs: number;
  delayMs: number;
  jitterMs: number;
  corrupt: number;
  /** Bytes per second of a rate limit on every device's output, or 0 for none. */
  rateBytesPerSec: number;
  rateLimit: number;
  postWindowMs: number;
  rnr: { firstPostMs: number; repostDelayMaxMs: number } | null;
  /** rnr_retry of the QPs: 7 (forever) but on some slow-receiver scenarios 0..6. */
  rnrRetry: number;
  recvDepth: number;
  partition: PartitionPlan | null;
  /** Share of sends whose buffer the simulated socket holds for up to 0.1 ms (0: none). */
  socketHold?: number;
  /** SRD paths per peer (default: the engine's). */
  paths?: number;
  cc?: 'delay' | 'off';
  /** One path to every peer black-holed for a window (never the only path: no error may result). */
  pathFault?: { path: number; from: number; until: number };
  /** A receive-side bottleneck on every device (bytes/s and buffer bytes): incast congestion. */
  bottleneck?: { rate: number; buffer: number };
}

/** The parameters of a seed. Draws are only ever appended, so old seeds keep their scenario. */
export function drawParams(seed: number): ScenarioParams {
  const r = new Prng(seed);
  const pick = <T>(xs: T[]): T => xs[r.int(xs.length)];
  const maxRtoMs = 4 + r.int(5);
  const minRtoMs = pick([0.2, 0.5, 1]);
  const p: ScenarioParams = {
    seed,
    devices: 2 + r.int(3),
    qpsPerDevice: 1 + r.int(2),
    msgsPerDevice: 10 + r.int(31),
    window: pick([2, 4, 8, 32, 128]),
    deviceWindow: 256,
    ackEvery: pick([1, 2, 8, 32]),
    ackDelayMs: r.next() < 0.5 ? 0 : r.next() * 0.5,
    dupThresh: 1 + r.int(4),
    rtoBurst: pick([1, 2, 8, 128]),
    minRtoMs,
    maxRtoMs,
    initialRtoMs: minRtoMs + r.next() * (maxRtoMs - minRtoMs),
    rnrBackoffMaxMs: pick([1, 4, 8]),
    // The loss of the scenario is half its drawn maximum (the mean of what links used to draw).
    loss: r.next() < 0.8 ? (r.next() * 0.3) / 2 : 0,
    burst: 1,
    dup: r.next() < 0.6 ? r.next() * 0.2 : 0,
    reorder: r.next() < 0.7 ? r.next() * 0.4 : 0,
    reorderDelayMs: 0.1 + r.next() * 10,
    delayMs: 0.05 + r.next() * 1.95,
    jitterMs: 0,
    corrupt: r.next() < 0.5 ? r.next() * 0.02 : 0,
    rateBytesPerSec: 0,
    rateLimit: 1000,
    postWindowMs: r.next() < 0.3 ? 0 : r.next() * 100,
    rnr: null,
    rnrRetry: 7,
    recvDepth: 8 + r.int(25),
    partition: null,
  };
  // Jitter is +-jitterMs around delay + jitterMs, so the mean delay stays where it was drawn.
  p.jitterMs = (r.next() * p.delayMs) / 2;
  p.delayMs += p.jitterMs;
  // Some scenarios hold copies back for seconds: they arrive long after everything settled.
  const lateRoll = r.next();
  const lateDraw = r.next();
  const lateMs = lateRoll < 0.15 ? 500 + lateDraw * 2500 : 0;
  if (lateMs > 0) {
    p.reorderDelayMs = lateMs;
    p.reorder = Math.max(p.reorder, 0.02) / 4;
    if (p.dup === 0) p.dup = 0.05 + r.next() * 0.15;
  }
  if (r.next() < 0.25) {
    // Some receivers post nothing for longer than the unresponsive timeout: RNR NAKs are
    // answers, so the senders (rnr_retry 7) must keep trying rather than give up.
    p.rnr = { firstPostMs: r.next() < 0.25 ? TIMEOUT_MS * (1 + r.next()) : r.next() * 80, repostDelayMaxMs: r.next() * 10 };
    p.recvDepth = 1 + r.int(4);
    if (r.next() < 0.3) p.rnrRetry = r.int(7);
  }
  if (r.next() < 0.1) {
    // A long stream between two devices: PSNs run far past the receiver's first ledger span.
    p.devices = 2;
    p.msgsPerDevice = 300 + r.int(400);
    // Posting goes on for a while, so that traffic continues after any partition heals.
    p.postWindowMs = 600 + r.next() * 1400;
    p.window = pick([16, 64, 128]);
  }
  const devices = p.devices;
  if (r.next() < 0.35) {
    const kind = pick<PartitionPlan['kind']>(['device', 'device', 'link', 'link-one-way']);
    const a = 1 + r.int(devices);
    let b = 1 + r.int(devices - 1);
    if (b >= a) b++;
    const from = r.next() < 0.2 ? 0 : p.msgsPerDevice > 100 ? r.next() * p.postWindowMs * 0.5 : r.next() * (p.postWindowMs + 20);
    const roll = r.next();
    const dur =
      roll < 0.1
        ? Infinity // a device or link that never comes back
        : roll < 0.55
          ? TIMEOUT_MS * (0.05 + r.next() * (SHORT_MAX - 0.05))
          : TIMEOUT_MS * (LONG_MIN + r.next() * 1.8);
    p.partition = { kind, a, b, from, until: from + dur };
  }
  // Appended draws (they change no earlier field of any seed).
  if (r.next() < 0.15 && p.loss > 0) {
    // Short Gilbert-Elliott bursts (see the property test for why not long ones).
    p.burst = 2 + r.next() * 2;
    p.loss = Math.min(p.loss, 0.1);
  }
  if (r.next() < 0.1) {
    // A slow output port with a short queue: losses that come with load, as at a bottleneck.
    p.rateBytesPerSec = 2e6 + r.next() * 50e6;
    p.rateLimit = boundedQueue(p.rateBytesPerSec, 8 + r.int(200));
  }
  if (r.next() < 0.2) p.deviceWindow = pick([4, 16, 64]);
  // Sockets that keep a sent buffer a while (a full send queue): SRD must not rewrite or reuse it.
  if (r.next() < 0.3) p.socketHold = 0.1 + r.next() * 0.8;
  if (r.next() < 0.5) p.paths = pick([1, 2, 4, 8]);
  if (r.next() < 0.3) p.cc = 'off';
  const paths = p.paths ?? 4;
  if (paths > 1 && r.next() < 0.3) {
    const from = r.next() * p.postWindowMs;
    p.pathFault = { path: r.int(paths), from, until: r.next() < 0.3 ? Infinity : from + r.next() * 2 * TIMEOUT_MS };
  }
  if (r.next() < 0.15) {
    // A shared ingress link; its buffer holds at most ~50 ms of it, as the rate queue's does.
    const rate = 5e6 + r.next() * 60e6;
    p.bottleneck = { rate, buffer: Math.max(2 * (MSG_SLOT + 128), Math.floor(Math.min(rate * 0.05, (16 + r.int(240)) * (MSG_SLOT + 128)))) };
  }
  return p;
}

/**
 * A rate queue that holds at most ~50 ms of full packets. A longer one makes the round trip
 * alone exceed the scenario's unresponsive timeout, where failing is the right answer and the
 * oracle (no errors without a partition) would be wrong.
 */
export function boundedQueue(rateBytesPerSec: number, limit: number): number {
  return Math.max(2, Math.min(limit, Math.floor((rateBytesPerSec * 0.05) / (MSG_SLOT + 128))));
}

/** The device name of simulation index `i` (1-based), as `efa-emu launch` names rank i - 1. */
export function deviceName(i: number): string {
  return `efa${i - 1}`;
}

/** The fault spec of a scenario, as every device's injector runs it. */
export function scenarioFaultSpec(p: ScenarioParams): FaultSpec {
  const spec = cloneFaultSpec(NO_FAULTS);
  spec.seed = p.seed >>> 0;
  spec.loss = p.loss;
  spec.burst = p.loss > 0 ? p.burst : 1;
  spec.dup = p.dup;
  spec.reorder = p.reorder;
  spec.reorderDelayMs = p.reorder > 0 ? p.reorderDelayMs : null;
  spec.delayMs = p.delayMs;
  spec.jitterMs = p.jitterMs;
  spec.corrupt = p.corrupt;
  if (p.rateBytesPerSec > 0) {
    spec.rateBytesPerSec = p.rateBytesPerSec;
    spec.limit = p.rateLimit;
  }
  if (p.bottleneck !== undefined) {
    spec.bottleneckBytesPerSec = p.bottleneck.rate;
    spec.bottleneckBufferBytes = p.bottleneck.buffer;
  }
  const pf = p.pathFault;
  if (pf !== undefined) spec.partitions.push({ target: `*#${pf.path}`, startMs: pf.from, durationMs: pf.until - pf.from });
  const part = p.partition;
  if (part !== null) {
    const start = part.from;
    const duration = part.until - part.from;
    const a = deviceName(part.a);
    const b = deviceName(part.b);
    if (part.kind === 'device') spec.partitions.push({ target: a, startMs: start, durationMs: duration });
    else {
      spec.partitions.push({ target: `${a}/${b}`, startMs: start, durationMs: duration });
      if (part.kind === 'link') spec.partitions.push({ target: `${b}/${a}`, startMs: start, durationMs: duration });
    }
  }
  return spec;
}

/** The SRD configuration of a scenario. */
export function scenarioSrdConfig(p: ScenarioParams): Partial<SrdConfig> {
  return {
    window: p.window,
    deviceWindow: p.deviceWindow,
    minRtoMs: p.minRtoMs,
    maxRtoMs: p.maxRtoMs,
    initialRtoMs: p.initialRtoMs,
    unresponsiveTimeoutMs: TIMEOUT_MS,
    ackEvery: p.ackEvery,
    ackDelayMs: p.ackDelayMs,
    dupThresh: p.dupThresh,
    rnrBackoffMs: 0.25,
    rnrBackoffMaxMs: p.rnrBackoffMaxMs,
    rtoBurst: p.rtoBurst,
    ...(p.paths === undefined ? {} : { paths: p.paths }),
    ...(p.cc === undefined ? {} : { cc: p.cc }),
  };
}

/** How to run the scenario's faults and SRD settings with real processes. */
export function replayLine(p: ScenarioParams): string {
  const msgs = p.msgsPerDevice;
  return (
    `EFA_EMU_SRD='${formatSrdConfig(scenarioSrdConfig(p))}' npx efa-emu launch -n ${p.devices} ` +
    `--fault '${formatFaultSpec(scenarioFaultSpec(p))}' dist/examples/srd-stress.js -- --messages ${Math.max(1, Math.round(msgs / Math.max(1, p.devices - 1)))}`
  );
}

/** A one-line summary of the parameters (for a failure report). */
export function describeParams(p: ScenarioParams): string {
  const f = (x: number) => (Number.isFinite(x) ? Number(x.toFixed(3)) : 'inf');
  const part =
    p.partition === null
      ? 'none'
      : `${p.partition.kind} ${deviceName(p.partition.a)}${p.partition.kind === 'device' ? '' : `->${deviceName(p.partition.b)}`} [${f(p.partition.from)}, ${f(p.partition.until)})`;
  return (
    `devices=${p.devices} qps=${p.qpsPerDevice} msgs/dev=${p.msgsPerDevice} postWindow=${f(p.postWindowMs)} ` +
    `rnr=${p.rnr === null ? 'no' : `first ${f(p.rnr.firstPostMs)} repost<=${f(p.rnr.repostDelayMaxMs)} depth ${p.recvDepth} rnrRetry ${p.rnrRetry}`} partition=${part}` +
    (p.socketHold ? ` socketHold=${f(p.socketHold)}` : '') +
    (p.paths !== undefined ? ` paths=${p.paths}` : '') +
    (p.cc !== undefined ? ` cc=${p.cc}` : '') +
    (p.pathFault !== undefined ? ` pathFault=#${p.pathFault.path}@${f(p.pathFault.from)}..${f(p.pathFault.until)}` : '') +
    (p.bottleneck !== undefined ? ` bottleneck=${f(p.bottleneck.rate)}B/s/${p.bottleneck.buffer}B` : '')
  );
}

interface Msg {
  id: number;
  from: number;
  fromEnd: SrdEnd;
  to: number;
  toEnd: SrdEnd;
  len: number;
  data: Buffer;
  postAt: number;
  deliveries: number;
  deliveredAt: number;
  completions: number;
  status: number;
  completedAt: number;
}

export interface ScenarioResult {
  problems: string[];
  msgs: number;
  ok: number;
  unresp: number;
  unreach: number;
  rnr: number;
  counters: Record<string, number>;
  /** Deliveries of a message after its send completed with an error (allowed, counted). */
  lateDeliveries: number;
  finishedAt: number;
  events: number;
  trace: string[];
}

/** The message bytes: [id u32][from u32][len u32][crc32 of the rest u32] + pattern, cut to len. */
function makeMessage(r: Prng, id: number, from: number, len: number, pool: Buffer): Buffer {
  const full = Buffer.allocUnsafe(Math.max(len, 16));
  const off = r.int(pool.length - MSG_SLOT);
  pool.copy(full, 16, off, off + full.length - 16);
  full.writeUInt32BE(id, 0);
  full.writeUInt32BE(from, 4);
  full.writeUInt32BE(len, 8);
  full.writeUInt32BE(len > 16 ? crc32(full.subarray(16, len)) : 0, 12);
  return full.subarray(0, len);
}

const POOL = (() => {
  const r = new Prng(0xb0b);
  const b = Buffer.allocUnsafe(64 * 1024);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE(r.nextU32(), i);
  return b;
})();

/** Runs one scenario to the end and checks every invariant. */
export async function runScenario(p: ScenarioParams, wantTrace = false): Promise<ScenarioResult> {
  const r = new Prng(p.seed ^ 0x51a51a);
  const sim = new SimNetwork({ seed: p.seed, trace: wantTrace, srd: scenarioSrdConfig(p), faults: scenarioFaultSpec(p), socketHold: p.socketHold ?? 0 });
  const problems: string[] = [];
  const problem = (s: string): void => {
    if (problems.length < 20) problems.push(`t=${sim.now.toFixed(3)}: ${s}`);
  };

  // Devices, QPs (sharing one PD and one send and one receive CQ per device), AHs.
  const nodes: SimNode[] = [];
  const ends: SrdEnd[][] = [];
  const ahs: AddressHandle[][] = [];
  const totalMsgs = p.devices * p.msgsPerDevice;
  for (let i = 0; i < p.devices; i++) nodes.push(sim.addDevice(deviceName(i + 1)));
  for (const node of nodes) {
    const dev = node.device;
    const pd = await dev.allocPd();
    const sendCq = await dev.createCq({ cqe: 4096 });
    const recvCq = await dev.createCq({ cqe: 4096 });
    const list: SrdEnd[] = [];
    for (let q = 0; q < p.qpsPerDevice; q++) {
      list.push(
        await createSrdEnd(dev, {
          pd,
          sendCq,
          recvCq,
          bufSize: (p.recvDepth + 1) * MSG_SLOT,
          maxSendWr: totalMsgs + 1,
          maxRecvWr: p.recvDepth,
          rnrRetry: p.rnrRetry,
        }),
      );
    }
    ends[node.index] = list;
  }
  for (const node of nodes) {
    ahs[node.index] = [];
    for (const other of nodes) {
      if (other !== node) ahs[node.index][other.index] = await node.device.createAh(ends[node.index][0].pd, { gid: other.device.gidText });
    }
  }

  const part = p.partition;
  /**
   * Errors are allowed only between devices cut off from each other for longer than the
   * short limit, and only while that lasts: an error means the peer made no progress for a
   * whole timeout, so it cannot come much earlier than a timeout after the cut began (the
   * silence may start a little before it, with a lost packet) nor much after the cut healed
   * (the first retransmission after it gets an answer, unless very unlucky).
   */
  const errorsAllowed = (from: number, to: number, at: number): boolean => {
    // The engine's promise is about answers that arrive: with none for a whole timeout, the
    // peer is as good as cut off, whatever the cause.
    if (at - (lastAnswer.get(pairKey(from, to)) ?? 0) >= TIMEOUT_MS - 1e-6) return true;
    if (part === null || part.until - part.from <= TIMEOUT_MS * SHORT_MAX + 1e-9) return false;
    const pair = part.kind === 'device' ? part.a === from || part.a === to : (part.a === from && part.b === to) || (part.a === to && part.b === from);
    return pair && at >= part.from + TIMEOUT_MS - SILENCE_SLACK_MS && at <= part.until + SILENCE_SLACK_MS;
  };

  // Who heard an answer (ack, NAK, or an ack carried by data) from whom.
  const heard = new Set<number>();
  /** When the latest answer from b reached a (pairKey(a, b)). */
  const lastAnswer = new Map<number, number>();
  const pairKey = (a: number, b: number) => a * 256 + b;
  sim.onDeliver = (pkt) => {
    if (pkt.corrupted) return;
    const answers = pkt.info.type === PacketType.SRD_ACK || pkt.info.type === PacketType.SRD_NAK || (pkt.info.type === PacketType.SRD_DATA && pkt.info.pbSession !== 0);
    if (answers) {
      heard.add(pairKey(pkt.to, pkt.from));
      // An answer held back by reordering says the peer was alive when it would have arrived
      // in order, not when it turned up: a NAK of a PSN retired meanwhile, arriving late, is
      // no progress for the engine either (seed 903690: 0.12 ms apart at the timeout's end).
      const inOrderBy = pkt.sentAt + p.delayMs + p.jitterMs;
      const at = inOrderBy < sim.now ? inOrderBy : sim.now;
      const key = pairKey(pkt.to, pkt.from);
      if (at > (lastAnswer.get(key) ?? 0)) lastAnswer.set(key, at);
    }
  };

  // Messages.
  const msgs: Msg[] = [];
  for (const node of nodes) {
    for (let m = 0; m < p.msgsPerDevice; m++) {
      let to = 1 + r.int(p.devices - 1);
      if (to >= node.index) to++;
      const roll = r.next();
      const len = roll < 0.05 ? 1 : roll < 0.1 ? MSG_SLOT : roll < 0.5 ? 1 + r.int(64) : roll < 0.8 ? 1 + r.int(2048) : 1 + r.int(MSG_SLOT);
      const id = msgs.length;
      msgs.push({
        id,
        from: node.index,
        fromEnd: ends[node.index][r.int(p.qpsPerDevice)],
        to,
        toEnd: ends[to][r.int(p.qpsPerDevice)],
        len,
        data: makeMessage(r, id, node.index, len, POOL),
        postAt: r.next() * p.postWindowMs,
        deliveries: 0,
        deliveredAt: -1,
        completions: 0,
        status: -1,
        completedAt: -1,
      });
    }
  }
  let completed = 0;
  let lateDeliveries = 0;

  for (const msg of msgs) {
    sim.at(msg.postAt, () => {
      const end = msg.fromEnd;
      const addr = p.recvDepth * MSG_SLOT;
      msg.data.copy(end.buf, addr);
      try {
        end.dev.postSend(end.qp, {
          wrId: msg.id,
          opcode: WrOpcode.SEND_WITH_IMM,
          immData: msg.id,
          sgList: [{ addr, length: msg.len, lkey: end.mr.lkey }],
          ah: ahs[msg.from][msg.to],
          remoteQpn: msg.toEnd.qp.qpNum,
          remoteQkey: msg.toEnd.qkey,
        });
      } catch (err) {
        problem(`postSend of message ${msg.id} threw ${String(err)}`);
        msg.completions = 1;
        completed++;
      }
    });
  }

  // Receives: a ring of recvDepth slots per QP, reposted as soon as a message is checked
  // (or after a random delay when the scenario plays a slow receiver).
  const post = (end: SrdEnd, slot: number) => {
    end.dev.postRecv(end.qp, { wrId: slot, sgList: [{ addr: slot * MSG_SLOT, length: MSG_SLOT, lkey: end.mr.lkey }] });
  };
  for (const node of nodes) {
    for (const end of ends[node.index]) {
      for (let s = 0; s < p.recvDepth; s++) {
        if (p.rnr === null) post(end, s);
        else sim.at(p.rnr.firstPostMs * r.next(), () => post(end, s));
      }
    }
  }
  const endByQpn: SrdEnd[][] = [];
  for (const node of nodes) {
    endByQpn[node.index] = [];
    for (const end of ends[node.index]) endByQpn[node.index][end.qp.qpNum] = end;
  }

  const wcs: WorkCompletion[] = [];
  const checkRecv = (node: SimNode, wc: WorkCompletion) => {
    const end = endByQpn[node.index][wc.qpNum];
    if (end === undefined) return problem(`device ${node.index}: receive completion for unknown QP ${wc.qpNum}`);
    if (wc.vendorErr !== EfaStatus.SUCCESS) return problem(`device ${node.index}: receive completion status ${efaStatusStr(wc.vendorErr)}`);
    if (wc.opcode !== WcOpcode.RECV) problem(`device ${node.index}: receive completion opcode ${wc.opcode}`);
    const slot = wc.wrId;
    const msg = (wc.wcFlags & WcFlags.WITH_IMM) !== 0 ? msgs[wc.immData] : undefined;
    if (msg === undefined) {
      problem(`device ${node.index}: a receive without a known message id (flags ${wc.wcFlags}, imm ${wc.immData})`);
    } else {
      msg.deliveries++;
      if (msg.deliveries > 1) problem(`message ${msg.id} (${msg.from}->${msg.to}) delivered ${msg.deliveries} times`);
      if (msg.completions > 0) {
        lateDeliveries++;
        if (msg.status === EfaStatus.REMOTE_ERROR_RNR) problem(`message ${msg.id} (${msg.from}->${msg.to}) was delivered after its send completed REMOTE_ERROR_RNR at t=${msg.completedAt.toFixed(3)}`);
      }
      msg.deliveredAt = sim.now;
      if (msg.to !== node.index || msg.toEnd !== end) problem(`message ${msg.id} for ${msg.to}/QP ${msg.toEnd.qp.qpNum} delivered to ${node.index}/QP ${wc.qpNum}`);
      if (wc.srcQp !== msg.fromEnd.qp.qpNum) problem(`message ${msg.id}: srcQp ${wc.srcQp}, sent from QP ${msg.fromEnd.qp.qpNum}`);
      if (wc.ah !== msg.from) problem(`message ${msg.id}: ah ${wc.ah}, the receiver's AH for device ${msg.from} is ${msg.from}`);
      if (wc.byteLen !== msg.len) problem(`message ${msg.id}: byteLen ${wc.byteLen}, sent ${msg.len}`);
      else {
        const got = end.buf.subarray(slot * MSG_SLOT, slot * MSG_SLOT + msg.len);
        if (!got.equals(msg.data)) problem(`message ${msg.id}: payload differs from what was sent`);
        else if (msg.len > 16 && (got.readUInt32BE(0) !== msg.id || got.readUInt32BE(12) !== crc32(got.subarray(16)))) problem(`message ${msg.id}: header or checksum bad`);
      }
    }
    if (p.rnr === null) post(end, slot);
    else sim.after(r.next() * p.rnr.repostDelayMaxMs, () => post(end, slot));
  };
  const checkSend = (node: SimNode, wc: WorkCompletion) => {
    const msg = msgs[wc.wrId];
    if (msg === undefined || msg.from !== node.index) return problem(`device ${node.index}: send completion for unknown wr ${wc.wrId}`);
    msg.completions++;
    if (msg.completions > 1) return problem(`message ${msg.id} completed ${msg.completions} times (now ${efaStatusStr(wc.vendorErr)}, first ${efaStatusStr(msg.status)})`);
    completed++;
    msg.status = wc.vendorErr;
    msg.completedAt = sim.now;
    if (wc.qpNum !== msg.fromEnd.qp.qpNum) problem(`message ${msg.id}: send completion on QP ${wc.qpNum}, posted on ${msg.fromEnd.qp.qpNum}`);
    if (wc.opcode !== WcOpcode.SEND) problem(`message ${msg.id}: send completion opcode ${wc.opcode}`);
    if (wc.vendorErr === EfaStatus.SUCCESS) {
      if (msg.deliveries !== 1) problem(`message ${msg.id} (${msg.from}->${msg.to}) completed SUCCESS but was delivered ${msg.deliveries} times`);
      if (wc.byteLen !== msg.len) problem(`message ${msg.id}: send byteLen ${wc.byteLen}, sent ${msg.len}`);
      return;
    }
    const name = efaStatusStr(wc.vendorErr);
    if (wc.vendorErr === EfaStatus.REMOTE_ERROR_RNR) {
      // The receiver said "not ready" more often than rnr_retry allows: only on scenarios whose
      // receivers are slow and whose QPs do not retry for ever, and the message never lands.
      if (p.rnr === null || p.rnrRetry === 7) problem(`message ${msg.id} (${msg.from}->${msg.to}) completed REMOTE_ERROR_RNR with rnr_retry ${p.rnrRetry}`);
      if (msg.deliveries > 0) problem(`message ${msg.id} (${msg.from}->${msg.to}) completed REMOTE_ERROR_RNR but was delivered at t=${msg.deliveredAt.toFixed(3)}`);
      return;
    }
    if (wc.vendorErr !== EfaStatus.LOCAL_ERROR_UNRESP_REMOTE && wc.vendorErr !== EfaStatus.LOCAL_ERROR_UNREACH_REMOTE) {
      return problem(`message ${msg.id} (${msg.from}->${msg.to}) completed ${name}`);
    }
    if (!errorsAllowed(msg.from, msg.to, sim.now)) problem(`message ${msg.id} (${msg.from}->${msg.to}) completed ${name}, posted at ${msg.postAt.toFixed(3)}, but the devices were not cut off for long around then`);
    const everHeard = heard.has(pairKey(msg.from, msg.to));
    if (wc.vendorErr === EfaStatus.LOCAL_ERROR_UNREACH_REMOTE && everHeard) problem(`message ${msg.id} (${msg.from}->${msg.to}): UNREACH_REMOTE, but device ${msg.from} had heard from ${msg.to}`);
    if (wc.vendorErr === EfaStatus.LOCAL_ERROR_UNRESP_REMOTE && !everHeard) problem(`message ${msg.id} (${msg.from}->${msg.to}): UNRESP_REMOTE, but device ${msg.from} never heard from ${msg.to}`);
  };
  const pollNode = (node: SimNode) => {
    const dev = node.device;
    const e = ends[node.index][0];
    try {
      for (let n = dev.pollCq(e.recvCq, 64, wcs); n > 0; n = dev.pollCq(e.recvCq, 64, wcs)) for (let i = 0; i < n; i++) checkRecv(node, wcs[i]);
      for (let n = dev.pollCq(e.sendCq, 64, wcs); n > 0; n = dev.pollCq(e.sendCq, 64, wcs)) for (let i = 0; i < n; i++) checkSend(node, wcs[i]);
    } catch (err) {
      problem(`device ${node.index}: pollCq threw ${String(err)}`);
    }
  };
  sim.afterEvent = (node) => {
    if (node !== null) pollNode(node);
    else for (const n of nodes) pollNode(n);
  };

  // Run until every send completed. The bound is what the engine promises (a send fails at
  // most a timeout after its peer's last progress, and a stuck packet after two), plus the
  // time the scenario's own pace needs: slow receivers, and a stream through a small window
  // over a slow, reordering link (each message may take an RTO or two and a round trip).
  const partEnd = part === null || !Number.isFinite(part.until) ? 0 : part.until;
  const rnrSlack = p.rnr === null ? 0 : p.rnr.firstPostMs + totalMsgs * (p.rnr.repostDelayMaxMs + p.rnrBackoffMaxMs + p.maxRtoMs);
  const lateSlack = p.reorder > 0 ? p.reorderDelayMs : 0;
  const perMessage =
    2 * p.maxRtoMs +
    2 * (p.delayMs + p.jitterMs) +
    (p.rateBytesPerSec > 0 ? (2 * MSG_SLOT * 1000) / p.rateBytesPerSec : 0) +
    (p.bottleneck !== undefined ? (2 * MSG_SLOT * 1000 * p.devices) / p.bottleneck.rate : 0);
  const paceSlack = (p.msgsPerDevice * perMessage) / Math.min(p.window, p.deviceWindow);
  const hangLimit = Math.max(p.postWindowMs, partEnd) + 3 * TIMEOUT_MS + rnrSlack + lateSlack + paceSlack + 1000;
  try {
    sim.runUntil(() => completed === msgs.length, hangLimit);
  } catch (err) {
    problem(String(err));
  }
  const finishedAt = sim.now;
  if (completed !== msgs.length) {
    const missing = msgs.filter((m) => m.completions === 0);
    problem(
      `hang: ${missing.length} sends without a completion at t=${hangLimit.toFixed(0)} (e.g. ${missing
        .slice(0, 5)
        .map((m) => `#${m.id} ${m.from}->${m.to} posted ${m.postAt.toFixed(3)}`)
        .join(', ')}); outstanding ${nodes.map((n) => n.device.srd.outstanding).join('/')}`,
    );
  }
  // Let every late duplicate and ack arrive.
  try {
    sim.drain(sim.now + 60_000);
  } catch (err) {
    problem(String(err));
  }
  if (sim.pendingEvents > 0) problem(`events still pending ${sim.pendingEvents} after the drain (next at ${sim.nextEventTime().toFixed(3)})`);
  for (const node of nodes) {
    const o = node.device.srd.outstanding;
    if (o !== 0) problem(`device ${node.index}: engine.outstanding = ${o} after every send completed`);
  }
  for (const msg of msgs) {
    if (msg.status === EfaStatus.SUCCESS && msg.deliveries !== 1) problem(`message ${msg.id}: SUCCESS but delivered ${msg.deliveries} times`);
  }

  for (const node of nodes) {
    // rx_drops is the sum of the rx_drop_* causes.
    const st = node.device.stats.toJSON();
    let causes = 0;
    for (const [k, v] of Object.entries(st)) if (k.startsWith('rx_drop_')) causes += v;
    if (causes !== st.rx_drops) problem(`device ${node.index}: rx_drops ${st.rx_drops} but the rx_drop_* causes add up to ${causes}`);
  }
  const counters: Record<string, number> = {};
  for (const node of nodes) {
    for (const [k, v] of Object.entries(node.device.stats.toJSON())) counters[k] = (counters[k] ?? 0) + v;
    for (const [k, v] of Object.entries(node.plan.stats.toJSON())) counters[`fault_${k}`] = (counters[`fault_${k}`] ?? 0) + v;
  }
  const trace =
    sim.trace === null
      ? []
      : sim.trace.map(
          (x) =>
            `${x.t.toFixed(4)} ${x.event} ${x.from}->${x.to} type=${x.info.type} session=${x.info.session.toString(16)} psn=${x.info.psn} ws=${x.info.windowStart} cum=${x.info.cumAck} sackBase=${x.info.sackBase} status=${x.info.status} path=${x.info.path}${x.corrupted ? ' corrupted' : ''}${x.duplicate ? ' dup' : ''}`,
        );
  return {
    problems,
    msgs: msgs.length,
    ok: msgs.filter((m) => m.status === EfaStatus.SUCCESS).length,
    unresp: msgs.filter((m) => m.status === EfaStatus.LOCAL_ERROR_UNRESP_REMOTE).length,
    unreach: msgs.filter((m) => m.status === EfaStatus.LOCAL_ERROR_UNREACH_REMOTE).length,
    rnr: msgs.filter((m) => m.status === EfaStatus.REMOTE_ERROR_RNR).length,
    counters,
    lateDeliveries,
    finishedAt,
    events: sim.stats.events,
    trace,
  };
}

/** The report of a failed scenario: problems, parameters, and how to replay it. */
export function failureReport(p: ScenarioParams, res: ScenarioResult, replayVar: string): string {
  return (
    `${res.problems.length} problem(s)\n  ${res.problems.join('\n  ')}\n  params: ${describeParams(p)}\n` +
    `  fault spec: ${formatFaultSpec(scenarioFaultSpec(p))}\n  srd: ${formatSrdConfig(scenarioSrdConfig(p))}\n` +
    `  replay in the simulation: ${replayVar}\n  with real processes: ${replayLine(p)}`
  );
}
