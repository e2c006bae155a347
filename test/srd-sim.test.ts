// Deterministic simulation of SRD: for each seed, 2-4 devices exchange 10-40 messages each
// over links that lose, duplicate (sometimes seconds late), reorder, delay and corrupt
// packets, sometimes with a device or link partitioned for less or more than the
// unresponsive timeout and with receivers that post their buffers late (RNR). Everything
// runs on the simulator's virtual clock, so a seed replays exactly:
//
//   SRD_SIM_SEED=123 npx tap dist/test/srd-sim.test.js      one seed (add SRD_SIM_TRACE=1 for a packet trace)
//   SRD_SIM_SEEDS=20000 npx tap dist/test/srd-sim.test.js   more seeds (default 1000)
//   SRD_SIM_FIRST=5000                                       first seed of the range (default 1)
//
// What must hold for every seed:
//  - every posted send ends in exactly one completion, nothing hangs, and the engines have
//    nothing outstanding afterwards;
//  - a SUCCESS send was delivered exactly once, intact, to the QP it was addressed to, and
//    before its completion;
//  - no message is ever delivered twice, even when duplicates arrive long after;
//  - the only error completions are LOCAL_ERROR_UNRESP_REMOTE (13) and
//    LOCAL_ERROR_UNREACH_REMOTE (15), only between devices cut off from each other for longer
//    than the timeout and only around that time, UNREACH only when the sender never heard
//    from that peer (UNRESP only when it did); and REMOTE_ERROR_RNR (10), only on seeds whose
//    receivers are slow and whose QPs have an rnr_retry below 7, for a message never
//    delivered (a known bug breaks that last part: reported as a todo, with its seeds);
//  - rx_drops is the sum of the rx_drop_* causes on every device.
import t from 'tap';
import { Prng } from '../src/common/prng';
import { WcStatus, wcStatusStr } from '../src/common/wc-status';
import type { AddressHandle } from '../src/device/address-handle';
import { WcFlags, WcOpcode, WrOpcode } from '../src/device/constants';
import { WorkCompletion } from '../src/device/work-completion';
import { DEFAULT_SRD_CONFIG } from '../src/srd/srd-config';
import { crc32 } from '../src/wire/checksum';
import { PacketType } from '../src/wire/header';
import { createSrdEnd, SimNetwork, type SimNode, type SrdEnd } from './helpers/sim-network';

const MSG_SLOT = 8192;
const TIMEOUT_MS = 300;
/** Partitions shorter than this share of the timeout must cause no error; longer ones may. */
const SHORT_MAX = 0.3;
const LONG_MIN = 1.2;
/** How far outside [cut + timeout, heal] an error completion may come. */
const SILENCE_SLACK_MS = 150;

interface PartitionPlan {
  kind: 'device' | 'link' | 'link-one-way';
  a: number;
  b: number;
  from: number;
  until: number;
}

interface SeedParams {
  seed: number;
  devices: number;
  qpsPerDevice: number;
  msgsPerDevice: number;
  window: number;
  ackEvery: number;
  ackDelayMs: number;
  dupThresh: number;
  rtoBurst: number;
  minRtoMs: number;
  maxRtoMs: number;
  initialRtoMs: number;
  rnrBackoffMaxMs: number;
  lossMax: number;
  dup: number;
  dupDelayMs: number;
  reorder: number;
  reorderDelayMs: number;
  delayMs: number;
  jitterMs: number;
  corrupt: number;
  postWindowMs: number;
  rnr: { firstPostMs: number; repostDelayMaxMs: number } | null;
  /** rnr_retry of the QPs: 7 (forever) but on some slow-receiver seeds 0..6. */
  rnrRetry: number;
  recvDepth: number;
  partition: PartitionPlan | null;
}

function drawParams(seed: number): SeedParams {
  const r = new Prng(seed);
  const pick = <T>(xs: T[]): T => xs[r.int(xs.length)];
  const maxRtoMs = 4 + r.int(5);
  const minRtoMs = pick([0.2, 0.5, 1]);
  const p: SeedParams = {
    seed,
    devices: 2 + r.int(3),
    qpsPerDevice: 1 + r.int(2),
    msgsPerDevice: 10 + r.int(31),
    window: pick([2, 4, 8, 32, 128]),
    ackEvery: pick([1, 2, 8, 32]),
    ackDelayMs: r.next() < 0.5 ? 0 : r.next() * 0.5,
    dupThresh: 1 + r.int(4),
    rtoBurst: pick([1, 2, 8, 128]),
    minRtoMs,
    maxRtoMs,
    initialRtoMs: minRtoMs + r.next() * (maxRtoMs - minRtoMs),
    rnrBackoffMaxMs: pick([1, 4, 8]),
    lossMax: r.next() < 0.8 ? r.next() * 0.3 : 0,
    dup: r.next() < 0.6 ? r.next() * 0.2 : 0,
    dupDelayMs: 0,
    reorder: r.next() < 0.7 ? r.next() * 0.4 : 0,
    reorderDelayMs: 0.1 + r.next() * 10,
    delayMs: 0.05 + r.next() * 1.95,
    jitterMs: 0,
    corrupt: r.next() < 0.5 ? r.next() * 0.02 : 0,
    postWindowMs: r.next() < 0.3 ? 0 : r.next() * 100,
    rnr: null,
    rnrRetry: 7,
    recvDepth: 8 + r.int(25),
    partition: null,
  };
  p.jitterMs = r.next() * p.delayMs;
  // Some seeds hold duplicates back for seconds: they arrive long after everything settled.
  p.dupDelayMs = r.next() < 0.15 ? 500 + r.next() * 2500 : r.next() * 5;
  if (p.dup === 0 && p.dupDelayMs > 100) p.dup = 0.05 + r.next() * 0.15;
  if (r.next() < 0.25) {
    // Some receivers post nothing for longer than the unresponsive timeout: RNR NAKs are
    // answers, so the senders (rnr_retry 7) must keep trying rather than give up.
    p.rnr = { firstPostMs: r.next() < 0.25 ? TIMEOUT_MS * (1 + r.next()) : r.next() * 80, repostDelayMaxMs: r.next() * 10 };
    p.recvDepth = 1 + r.int(4);
    if (r.next() < 0.3) p.rnrRetry = r.int(7);
  }
  if (r.next() < 0.1) {
    // A long stream between two devices: PSNs run past the receiver's 256-entry window.
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
  return p;
}

function describeParams(p: SeedParams): string {
  const f = (x: number) => (Number.isFinite(x) ? Number(x.toFixed(3)) : 'inf');
  const part = p.partition === null ? 'none' : `${p.partition.kind} ${p.partition.a}${p.partition.kind === 'device' ? '' : `->${p.partition.b}`} [${f(p.partition.from)}, ${f(p.partition.until)})`;
  return (
    `devices=${p.devices} qps=${p.qpsPerDevice} msgs/dev=${p.msgsPerDevice} window=${p.window} ackEvery=${p.ackEvery} ackDelay=${f(p.ackDelayMs)} ` +
    `dupThresh=${p.dupThresh} rtoBurst=${p.rtoBurst} rto=[${p.minRtoMs},${f(p.initialRtoMs)},${p.maxRtoMs}] loss<=${f(p.lossMax)} dup=${f(p.dup)}@${f(p.dupDelayMs)}ms ` +
    `reorder=${f(p.reorder)}@${f(p.reorderDelayMs)}ms delay=${f(p.delayMs)}+${f(p.jitterMs)} corrupt=${f(p.corrupt)} postWindow=${f(p.postWindowMs)} ` +
    `rnr=${p.rnr === null ? 'no' : `first ${f(p.rnr.firstPostMs)} repost<=${f(p.rnr.repostDelayMaxMs)} depth ${p.recvDepth} rnrRetry ${p.rnrRetry}`} partition=${part}`
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

interface SeedResult {
  problems: string[];
  msgs: number;
  ok: number;
  unresp: number;
  unreach: number;
  rnr: number;
  /** Known bug (reported): REMOTE_ERROR_RNR for a message that reached the receiver's buffer. */
  rnrThenDelivered: string[];
  counters: Record<string, number>;
  lateDupDeliveries: number;
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

async function runSeed(p: SeedParams, wantTrace = false): Promise<SeedResult> {
  const r = new Prng(p.seed ^ 0x51a51a);
  const sim = new SimNetwork({
    seed: p.seed,
    trace: wantTrace,
    srd: {
      window: p.window,
      minRtoMs: p.minRtoMs,
      maxRtoMs: p.maxRtoMs,
      initialRtoMs: p.initialRtoMs,
      unresponsiveTimeoutMs: TIMEOUT_MS,
      ackEvery: p.ackEvery,
      ackDelayMs: p.ackDelayMs,
      dupThresh: p.dupThresh,
      rnrBackoffMs: 0.25,
      rnrBackoffMaxMs: p.rnrBackoffMaxMs,
      // Resends per timeout and peer, where the engine has that knob.
      ...('rtoBurst' in DEFAULT_SRD_CONFIG ? { rtoBurst: p.rtoBurst } : {}),
    },
  });
  const problems: string[] = [];
  const problem = (s: string): void => {
    if (problems.length < 20) problems.push(`t=${sim.now.toFixed(3)}: ${s}`);
  };

  // Devices, QPs (sharing one PD and one send and one receive CQ per device), AHs.
  const nodes: SimNode[] = [];
  const ends: SrdEnd[][] = [];
  const ahs: AddressHandle[][] = [];
  const totalMsgs = p.devices * p.msgsPerDevice;
  for (let i = 0; i < p.devices; i++) nodes.push(sim.addDevice(`d${i + 1}`));
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

  // Links and the partition.
  for (const a of nodes) {
    for (const b of nodes) {
      if (a === b) continue;
      sim.setLink(a.index, b.index, {
        loss: r.next() * p.lossMax,
        dup: p.dup,
        dupDelayMs: p.dupDelayMs,
        reorder: p.reorder,
        reorderDelayMs: p.reorderDelayMs,
        delayMs: p.delayMs,
        jitterMs: p.jitterMs,
        corrupt: p.corrupt,
      });
    }
  }
  const part = p.partition;
  if (part !== null) {
    if (part.kind === 'device') sim.partitionDevice(part.a, part.from, part.until);
    else sim.partitionLink(part.a, part.b, part.from, part.until, part.kind === 'link-one-way');
  }
  /**
   * Errors are allowed only between devices cut off from each other for longer than the
   * short limit, and only while that lasts: an error means the peer was silent for a whole
   * timeout, so it cannot come much earlier than a timeout after the cut began (the silence
   * may start a little before it, with a lost packet) nor much after the cut healed (the
   * first retransmission after it gets an answer, unless very unlucky).
   */
  const errorsAllowed = (from: number, to: number, at: number): boolean => {
    if (part === null || part.until - part.from <= TIMEOUT_MS * SHORT_MAX + 1e-9) return false;
    const pair = part.kind === 'device' ? part.a === from || part.a === to : (part.a === from && part.b === to) || (part.a === to && part.b === from);
    return pair && at >= part.from + TIMEOUT_MS - SILENCE_SLACK_MS && at <= part.until + SILENCE_SLACK_MS;
  };

  // Who heard an ack or NAK from whom, by event number (before a completion or not).
  const heard = new Map<number, number>();
  const pairKey = (a: number, b: number) => a * 256 + b;
  sim.onDeliver = (pkt) => {
    if (pkt.corrupted) return;
    if (pkt.info.type !== PacketType.SRD_ACK && pkt.info.type !== PacketType.SRD_NAK) return;
    const k = pairKey(pkt.to, pkt.from);
    if (!heard.has(k)) heard.set(k, sim.stats.events);
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
  let lateDupDeliveries = 0;
  const rnrThenDelivered: string[] = [];

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
  // (or after a random delay when the seed plays a slow receiver).
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
    if (wc.status !== WcStatus.SUCCESS) return problem(`device ${node.index}: receive completion status ${wcStatusStr(wc.status)}`);
    if (wc.opcode !== WcOpcode.RECV) problem(`device ${node.index}: receive completion opcode ${wc.opcode}`);
    const slot = wc.wrId;
    const msg = (wc.wcFlags & WcFlags.WITH_IMM) !== 0 ? msgs[wc.immData] : undefined;
    if (msg === undefined) {
      problem(`device ${node.index}: a receive without a known message id (flags ${wc.wcFlags}, imm ${wc.immData})`);
    } else {
      msg.deliveries++;
      if (msg.deliveries > 1) problem(`message ${msg.id} (${msg.from}->${msg.to}) delivered ${msg.deliveries} times`);
      if (msg.completions > 0) lateDupDeliveries++;
      if (msg.status === WcStatus.REMOTE_ERROR_RNR) rnrThenDelivered.push(`message ${msg.id} (${msg.from}->${msg.to}) was delivered at t=${sim.now.toFixed(3)}, after its send completed REMOTE_ERROR_RNR at t=${msg.completedAt.toFixed(3)}`);
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
    if (msg.completions > 1) return problem(`message ${msg.id} completed ${msg.completions} times (now ${wcStatusStr(wc.status)}, first ${wcStatusStr(msg.status)})`);
    completed++;
    msg.status = wc.status;
    msg.completedAt = sim.now;
    if (wc.qpNum !== msg.fromEnd.qp.qpNum) problem(`message ${msg.id}: send completion on QP ${wc.qpNum}, posted on ${msg.fromEnd.qp.qpNum}`);
    if (wc.opcode !== WcOpcode.SEND) problem(`message ${msg.id}: send completion opcode ${wc.opcode}`);
    if (wc.status === WcStatus.SUCCESS) {
      if (msg.deliveries !== 1) problem(`message ${msg.id} (${msg.from}->${msg.to}) completed SUCCESS but was delivered ${msg.deliveries} times`);
      if (wc.byteLen !== msg.len) problem(`message ${msg.id}: send byteLen ${wc.byteLen}, sent ${msg.len}`);
      return;
    }
    const name = wcStatusStr(wc.status);
    if (wc.status === WcStatus.REMOTE_ERROR_RNR) {
      // The receiver said "not ready" more often than rnr_retry allows: only on seeds whose
      // receivers are slow and whose QPs do not retry forever, and the message never lands.
      if (p.rnr === null || p.rnrRetry === 7) problem(`message ${msg.id} (${msg.from}->${msg.to}) completed REMOTE_ERROR_RNR with rnr_retry ${p.rnrRetry}`);
      if (msg.deliveries > 0) rnrThenDelivered.push(`message ${msg.id} (${msg.from}->${msg.to}) completed REMOTE_ERROR_RNR at t=${sim.now.toFixed(3)} but was delivered at t=${msg.deliveredAt.toFixed(3)}`);
      return;
    }
    if (wc.status !== WcStatus.LOCAL_ERROR_UNRESP_REMOTE && wc.status !== WcStatus.LOCAL_ERROR_UNREACH_REMOTE) {
      return problem(`message ${msg.id} (${msg.from}->${msg.to}) completed ${name}`);
    }
    if (!errorsAllowed(msg.from, msg.to, sim.now)) problem(`message ${msg.id} (${msg.from}->${msg.to}) completed ${name}, posted at ${msg.postAt.toFixed(3)}, but the devices were not cut off for long around then`);
    const heardAt = heard.get(pairKey(msg.from, msg.to));
    const everHeard = heardAt !== undefined && heardAt <= sim.stats.events;
    if (wc.status === WcStatus.LOCAL_ERROR_UNREACH_REMOTE && everHeard) problem(`message ${msg.id} (${msg.from}->${msg.to}): UNREACH_REMOTE, but device ${msg.from} had heard from ${msg.to}`);
    if (wc.status === WcStatus.LOCAL_ERROR_UNRESP_REMOTE && !everHeard) problem(`message ${msg.id} (${msg.from}->${msg.to}): UNRESP_REMOTE, but device ${msg.from} never heard from ${msg.to}`);
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

  // Run until every send completed. The bound is generous: a queue of messages behind a small
  // window to a dead peer fails one window's worth per timeout.
  const perPair = Math.ceil(p.msgsPerDevice / p.window) + 2;
  const partEnd = part === null || !Number.isFinite(part.until) ? 0 : part.until;
  const rnrSlack = p.rnr === null ? 0 : p.rnr.firstPostMs + totalMsgs * (p.rnr.repostDelayMaxMs + p.rnrBackoffMaxMs + p.maxRtoMs);
  const hangLimit = Math.max(p.postWindowMs, partEnd) + perPair * (TIMEOUT_MS + p.maxRtoMs + 1) + rnrSlack + 1000;
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
    sim.drain(sim.now + 60_000); // duplicates of acks of late duplicates can chain for a while
  } catch (err) {
    problem(String(err));
  }
  if (sim.pendingEvents > 0) problem(`events still pending ${sim.pendingEvents} after the drain (next at ${sim.nextEventTime().toFixed(3)})`);
  for (const node of nodes) {
    const o = node.device.srd.outstanding;
    if (o !== 0) problem(`device ${node.index}: engine.outstanding = ${o} after every send completed`);
  }
  for (const msg of msgs) {
    if (msg.status === WcStatus.SUCCESS && msg.deliveries !== 1) problem(`message ${msg.id}: SUCCESS but delivered ${msg.deliveries} times`);
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
  }
  const trace =
    sim.trace === null
      ? []
      : sim.trace.map(
          (x) =>
            `${x.t.toFixed(4)} ${x.event} ${x.from}->${x.to} type=${x.info.type} session=${x.info.session.toString(16)} psn=${x.info.psn} ws=${x.info.windowStart} cum=${x.info.cumAck} status=${x.info.status}${x.corrupted ? ' corrupted' : ''}${x.duplicate ? ' dup' : ''}`,
        );
  return {
    problems,
    msgs: msgs.length,
    ok: msgs.filter((m) => m.status === WcStatus.SUCCESS).length,
    unresp: msgs.filter((m) => m.status === WcStatus.LOCAL_ERROR_UNRESP_REMOTE).length,
    unreach: msgs.filter((m) => m.status === WcStatus.LOCAL_ERROR_UNREACH_REMOTE).length,
    rnr: msgs.filter((m) => m.status === WcStatus.REMOTE_ERROR_RNR).length,
    rnrThenDelivered,
    counters,
    lateDupDeliveries,
    finishedAt,
    events: sim.stats.events,
    trace,
  };
}

const one = process.env.SRD_SIM_SEED;
const first = Number(process.env.SRD_SIM_FIRST ?? 1);
const count = Number(process.env.SRD_SIM_SEEDS ?? 1000);
const seeds = one !== undefined && one !== '' ? [Number(one)] : Array.from({ length: count }, (_, i) => first + i);

t.test(`SRD simulation, ${seeds.length} seed(s) from ${seeds[0]}`, async (t) => {
  const started = performance.now();
  const totals = { msgs: 0, ok: 0, unresp: 0, unreach: 0, rnr: 0, events: 0, lateDupDeliveries: 0 };
  const sums: Record<string, number> = {};
  const seedsWith: Record<string, number> = {};
  const failed: number[] = [];
  const rnrBug: number[] = [];
  for (const seed of seeds) {
    const params = drawParams(seed);
    let res: SeedResult;
    try {
      res = await runSeed(params, seeds.length === 1 && process.env.SRD_SIM_TRACE !== undefined);
    } catch (err) {
      failed.push(seed);
      t.fail(`seed ${seed}: threw ${(err as Error).stack ?? String(err)}\n  params: ${describeParams(params)}`);
      continue;
    }
    if (res.rnrThenDelivered.length > 0) {
      rnrBug.push(seed);
      if (rnrBug.length <= 3 || seeds.length === 1) t.comment(`seed ${seed} (known bug, todo): ${res.rnrThenDelivered[0]}`);
    }
    if (res.problems.length > 0) {
      failed.push(seed);
      t.fail(`seed ${seed}: ${res.problems.length} problem(s)\n  ${res.problems.join('\n  ')}\n  params: ${describeParams(params)}\n  replay: SRD_SIM_SEED=${seed}`);
    }
    if (seeds.length === 1) {
      t.comment(`seed ${seed}: ${describeParams(params)}`);
      t.comment(`seed ${seed}: ${res.msgs} messages, ${res.ok} ok, ${res.unresp} UNRESP, ${res.unreach} UNREACH, finished at ${res.finishedAt.toFixed(3)} ms, ${res.events} events`);
      for (const line of res.trace) t.comment(line);
    }
    totals.msgs += res.msgs;
    totals.ok += res.ok;
    totals.unresp += res.unresp;
    totals.unreach += res.unreach;
    totals.rnr += res.rnr;
    totals.events += res.events;
    totals.lateDupDeliveries += res.lateDupDeliveries;
    for (const [k, v] of Object.entries(res.counters)) {
      sums[k] = (sums[k] ?? 0) + v;
      if (v > 0) seedsWith[k] = (seedsWith[k] ?? 0) + 1;
    }
    if (res.unresp > 0) seedsWith.UNRESP = (seedsWith.UNRESP ?? 0) + 1;
    if (res.unreach > 0) seedsWith.UNREACH = (seedsWith.UNREACH ?? 0) + 1;
    if (res.rnr > 0) seedsWith.RNR = (seedsWith.RNR ?? 0) + 1;
  }
  const ms = performance.now() - started;
  t.equal(rnrBug.length, 0, `no send completes REMOTE_ERROR_RNR for a message that reached the receiver's buffer${rnrBug.length > 0 ? ` (seeds: ${rnrBug.slice(0, 30).join(', ')})` : ''}`, {
    todo:
      rnrBug.length > 0
        ? 'bug: a copy of an RNR-refused packet still in flight (a duplicate, an earlier transmission) is delivered when the sender has already failed it with REMOTE_ERROR_RNR'
        : false,
  });
  t.equal(failed.length, 0, `every seed holds the invariants${failed.length > 0 ? ` (failing seeds: ${failed.slice(0, 50).join(', ')})` : ''}`);
  t.comment(
    `${seeds.length} seeds in ${(ms / 1000).toFixed(1)} s: ${totals.msgs} messages, ${totals.ok} ok, ${totals.unresp} UNRESP_REMOTE, ` +
      `${totals.unreach} UNREACH_REMOTE, ${totals.rnr} REMOTE_ERROR_RNR, ${totals.lateDupDeliveries} deliveries after the send completed (with an error), ${totals.events} events`,
  );
  const show = ['retrans_pkts', 'retrans_timeout_events', 'rnr_sent', 'rnr_retries', 'rx_drop_duplicate', 'rx_drop_bad_checksum', 'acks_sent', 'unresponsive_remote_events', 'unreachable_remote_events'];
  t.comment(show.map((k) => `${k}=${sums[k] ?? 0} (${seedsWith[k] ?? 0} seeds)`).join(', '));
  if (seeds.length >= 500) {
    // The run means something only if the faults it is about did happen.
    for (const k of ['UNRESP', 'UNREACH', 'RNR', 'rnr_sent', 'rx_drop_duplicate', 'rx_drop_bad_checksum', 'retrans_timeout_events']) {
      t.ok((seedsWith[k] ?? 0) > 0, `the simulation exercised ${k} (${seedsWith[k] ?? 0} seeds)`);
    }
    t.ok(totals.ok > totals.msgs * 0.8, 'most messages succeed');
  }
});
