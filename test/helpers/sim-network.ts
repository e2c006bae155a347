/*
 * A discrete-event network simulator for SRD tests.
 *
 * Time is virtual (ms, a float) and only moves when the simulator takes the next event from
 * its queue: a packet arriving at a device, a device timer firing, a fault injector
 * releasing held packets, or a callback a test scheduled. Events are ordered by time, then by
 * the order they were scheduled, so a run is a pure function of its seed.
 *
 * Faults are the real ones: every device sends through its own FaultPlan (the decision core
 * of src/io/fault-injector.ts) built from one fault spec, seeded per device as openDevice
 * seeds it, and held packets wait in a DelayQueue released by a timer event, as the real
 * injector's are. So a schedule the simulation finds can be replayed with real processes
 * from its `--fault` spec (`faultSpecText`), and the simulation exercises exactly the
 * semantics of loss, bursts, duplication, reordering, delay, jitter, corruption, rate limits
 * and partitions that users get.
 *
 * Nothing here sleeps, opens a socket or reads the real clock.
 */
import { DaemonError } from '../../src/common/errors';
import { Prng } from '../../src/common/prng';
import { formatGid, makeGid, parseGid } from '../../src/common/gid';
import type { AddressHandle } from '../../src/device/address-handle';
import type { DeviceAttributes } from '../../src/device/attributes';
import type { CompletionQueue } from '../../src/device/completion-queue';
import { AccessFlags, QpState, QpType, WrOpcode } from '../../src/device/constants';
import { Device, type DeviceOptions, type ResolvedGid } from '../../src/device/device';
import type { MemoryRegion } from '../../src/device/memory-region';
import type { ProtectionDomain } from '../../src/device/protection-domain';
import type { QueuePair } from '../../src/device/queue-pair';
import { WorkCompletion } from '../../src/device/work-completion';
import { DelayQueue } from '../../src/io/delay-queue';
import { IngressBottleneck } from '../../src/io/ingress-bottleneck';
import { FaultPlan, makeFaultDecision, type FaultDecision } from '../../src/io/fault-plan';
import { cloneFaultSpec, formatFaultSpec, linkRoundTripMs, NO_FAULTS, toFaultSpec, type FaultSpec } from '../../src/io/fault-spec';
import type { SrdConfig } from '../../src/srd/srd-config';
import { packetPath, BASE_HEADER_LEN, OFF_DST_QPN, OFF_HDR_LEN, OFF_IMM, OFF_PAYLOAD_LEN, OFF_SRC_GID, OFF_SRC_QPN, OFF_TYPE, PacketType, readU32 } from '../../src/wire/header';
import { decodeSrdAck, decodeSrdData, decodeSrdNak, sackBit, SACK_BITS, SrdFields } from '../../src/wire/srd-header';
import { gidDeviceIndex } from '../../src/common/gid';

export const SIM_HOST = '127.0.0.1';
export const SIM_BASE_PORT = 50000;
export const SIM_FABRIC_ID = 0x0efa51a0;

// ------------------------------------------------------------------ packets

/** The fields of an efa-emu datagram a test may want to look at (read without side effects). */
export interface PacketInfo {
  /** PacketType: 1 UD_SEND, 2 SRD_DATA, 3 SRD_ACK, 4 SRD_NAK (0 when too short to tell). */
  type: number;
  /** Device index of the sender (low 32 bits of its GID). */
  srcIndex: number;
  srcQpn: number;
  dstQpn: number;
  payloadLen: number;
  imm: number;
  /** SRD: the sender session the packet belongs to (data) or acknowledges (ack/nak). */
  session: number;
  /** SRD_DATA: its PSN; SRD_NAK: the PSN refused. */
  psn: number;
  windowStart: number;
  txTime: number;
  /** SRD_ACK */
  cumAck: number;
  sackBase: number;
  /** SRD_ACK, SRD_NAK: the tx_time of the data packet answered. */
  echoTime: number;
  /** SRD_NAK: the EfaStatus the sender is to report (10 = RNR). */
  status: number;
  /** SRD_DATA: the session of the ack it carries for the other direction (0: none). */
  pbSession: number;
  /** The path the packet takes (flags bits 2-7). */
  path: number;
}

const describeFields = new SrdFields();

/** Reads a datagram's header fields with the wire codecs; never throws, never modifies `buf`. */
export function describePacket(buf: Uint8Array): PacketInfo {
  const info: PacketInfo = {
    type: 0,
    srcIndex: 0,
    srcQpn: 0,
    dstQpn: 0,
    payloadLen: 0,
    imm: 0,
    session: 0,
    psn: 0,
    windowStart: 0,
    txTime: 0,
    cumAck: 0,
    sackBase: 0,
    echoTime: 0,
    status: 0,
    pbSession: 0,
    path: 0,
  };
  if (buf.length < BASE_HEADER_LEN) return info;
  info.path = packetPath(buf);
  info.type = buf[OFF_TYPE];
  info.srcQpn = (buf[OFF_SRC_QPN] << 8) | buf[OFF_SRC_QPN + 1];
  info.dstQpn = (buf[OFF_DST_QPN] << 8) | buf[OFF_DST_QPN + 1];
  info.payloadLen = (buf[OFF_PAYLOAD_LEN] << 8) | buf[OFF_PAYLOAD_LEN + 1];
  info.imm = readU32(buf, OFF_IMM);
  info.srcIndex = gidDeviceIndex(buf, OFF_SRC_GID);
  const hdrLen = Math.min(buf[OFF_HDR_LEN], buf.length);
  const f = describeFields;
  if (info.type === PacketType.SRD_DATA && decodeSrdData(buf, hdrLen, f)) {
    info.session = f.session;
    info.psn = f.psn;
    info.windowStart = f.windowStart;
    info.txTime = f.txTime;
    info.pbSession = f.pbSession;
  } else if (info.type === PacketType.SRD_ACK && decodeSrdAck(buf, hdrLen, f)) {
    info.session = f.session;
    info.cumAck = f.cumAck;
    info.sackBase = f.sackBase;
    info.echoTime = f.echoTime;
  } else if (info.type === PacketType.SRD_NAK && decodeSrdNak(buf, hdrLen, f)) {
    info.session = f.session;
    info.psn = f.psn;
    info.status = f.status;
    info.echoTime = f.echoTime;
  }
  return info;
}

/** The PSNs an SRD_ACK selectively acknowledges (sack_base + i for each set bit i). */
export function sackedPsns(buf: Uint8Array): number[] {
  const out: number[] = [];
  const f = describeFields;
  if (buf.length < BASE_HEADER_LEN || buf[OFF_TYPE] !== PacketType.SRD_ACK || !decodeSrdAck(buf, Math.min(buf[OFF_HDR_LEN], buf.length), f)) return out;
  for (let i = 0; i < SACK_BITS; i++) if (sackBit(buf, i)) out.push((f.sackBase + i) >>> 0);
  return out;
}

// ------------------------------------------------------------------ wire

/** A datagram on its way, as hooks see it. */
export interface SimPacket {
  /** Virtual time it was sent. */
  sentAt: number;
  from: number;
  to: number;
  /** A private copy; an `intercept` hook may modify it. */
  buf: Buffer;
  info: PacketInfo;
  /** True when the fault injector flipped a bit of this copy. */
  corrupted: boolean;
  /** The bytes as sent, kept when the fault injector corrupted `buf`. */
  original?: Buffer;
  /** True for the second copy of a duplicated packet, and for replays. */
  duplicate: boolean;
}

export interface SimTraceRecord {
  t: number;
  event: 'send' | 'deliver' | 'drop-fault' | 'drop-intercept' | 'drop-nowhere';
  from: number;
  to: number;
  info: PacketInfo;
  corrupted: boolean;
  duplicate: boolean;
}

// ------------------------------------------------------------------ events

const EV_PACKET = 0;
const EV_TIMER = 1;
const EV_CALL = 2;
const EV_RELEASE = 3;

class SimEvent {
  time = 0;
  seq = 0;
  kind = EV_PACKET;
  node: SimNode | null = null;
  gen = 0;
  pkt: SimPacket | null = null;
  toPort = 0;
  fromPort = 0;
  fn: (() => void) | null = null;
  /** A packet released by the receiver's bottleneck: it does not queue there again. */
  bottled = false;
}

/** A binary min-heap of events by (time, seq). */
class EventQueue {
  private readonly heap: SimEvent[] = [];

  get size(): number {
    return this.heap.length;
  }

  peek(): SimEvent | undefined {
    return this.heap[0];
  }

  push(ev: SimEvent): void {
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  pop(): SimEvent | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop() as SimEvent;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l], h[m])) m = l;
        if (r < h.length && before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}

// ------------------------------------------------------------------ simulator

/** One device of the simulation, its fake endpoint and its fault injector. */
export interface SimNode {
  /** Device index: the GID is makeGid(SIM_FABRIC_ID, index). */
  readonly index: number;
  readonly name: string;
  port: number;
  /** The current device at this GID (replaced by `restartDevice`). */
  device: Device;
  /** The faults on everything this device sends (as openDevice seeds them). */
  readonly plan: FaultPlan;
  /** Packets the injector holds back, released in time order. */
  readonly held: DelayQueue;
  /** Release event pending for `held` (Infinity when none). */
  releaseAt: number;
  /** Earliest timer event pending for the device (Infinity when none). */
  timerAt: number;
  timerGen: number;
  /** Times `onTimer` ran. */
  timerFirings: number;
  /** The receive-side bottleneck of the spec (`bottleneck=`), or null: what this device receives queues there. */
  readonly bottleneck: IngressBottleneck | null;
}

export interface SimOptions {
  seed: number;
  /** SRD tunables for every device (a device may override them in addDevice). */
  srd?: Partial<SrdConfig>;
  /**
   * The fault spec every device sends through, as `--fault` text or as (part of) a spec
   * object; its seed is mixed with each device's index as openDevice does. Default: no faults.
   */
  faults?: string | Partial<FaultSpec>;
  /** Virtual clock start (ms, default 0). */
  now?: number;
  /** Keep a trace of every packet (for debugging a seed). */
  trace?: boolean;
  /** runUntil gives up (throws) after this many events (default 5 million). */
  maxEvents?: number;
  /**
   * Share of sends (0..1) whose buffer the "socket" keeps for up to `socketHoldMs` before it
   * lets go (a send queued in a full socket buffer). Default 0: let go at once.
   */
  socketHold?: number;
  socketHoldMs?: number;
}

export type ExtraSimDeviceOptions = Partial<Omit<DeviceOptions, 'name' | 'gid' | 'transport' | 'resolver' | 'clock' | 'timer'>> & {
  attributes?: Partial<DeviceAttributes>;
};

/** Counters of the simulated wire. */
export interface SimStats {
  sent: number;
  delivered: number;
  intercepted: number;
  nowhere: number;
  events: number;
  /** Packets a receiver's bottleneck dropped (its buffer was full). */
  bottleneckDrops: number;
}

/** Makes a full FaultSpec from the simulator's option (text, or fields over NO_FAULTS). */
export function simFaultSpec(faults: string | Partial<FaultSpec> | undefined, seed: number): FaultSpec {
  if (typeof faults === 'string') return toFaultSpec(faults, 'sim faults');
  const base = cloneFaultSpec(NO_FAULTS);
  return toFaultSpec({ ...base, seed: seed >>> 0, ...(faults ?? {}), partitions: [...(faults?.partitions ?? [])] }, 'sim faults');
}

export class SimNetwork {
  /** Virtual time, ms. */
  now: number;
  readonly seed: number;
  readonly nodes: SimNode[] = [];
  readonly srd: Partial<SrdConfig>;
  /** The spec every device's injector started from (partitions added later go to the plans). */
  readonly faultSpec: FaultSpec;
  readonly stats: SimStats = { sent: 0, delivered: 0, intercepted: 0, nowhere: 0, events: 0, bottleneckDrops: 0 };
  /** Every packet event when `trace` was asked for. */
  readonly trace: SimTraceRecord[] | null;
  /**
   * Called for each datagram as it is sent, before any fault: return false to drop it, a
   * number to add that many ms of delay, anything else to let it through. May edit `p.buf`.
   */
  intercept: ((p: SimPacket) => boolean | number | void) | null = null;
  /** Called right before a datagram is handed to its destination device. */
  onDeliver: ((p: SimPacket) => void) | null = null;
  /** Called after each packet or timer event with the node that handled it, and after callbacks with null. */
  afterEvent: ((node: SimNode | null) => void) | null = null;

  private readonly queue = new EventQueue();
  private seq = 0;
  private readonly startedAt: number;
  private readonly byPort = new Map<number, SimNode>();
  private readonly byGid = new Map<string, SimNode>();
  private readonly maxEvents: number;
  private readonly decision: FaultDecision = makeFaultDecision();
  /** Packets held by injectors, by the buffer the DelayQueue holds (it only knows bytes). */
  private readonly heldPackets = new Map<Buffer, SimPacket>();
  private readonly socketHold: number;
  private readonly socketHoldMs: number;
  private readonly holdRng: Prng;

  constructor(opts: SimOptions) {
    this.seed = opts.seed >>> 0;
    this.now = opts.now ?? 0;
    this.startedAt = this.now;
    this.srd = opts.srd ?? {};
    this.faultSpec = simFaultSpec(opts.faults, this.seed);
    this.trace = opts.trace === true ? [] : null;
    this.maxEvents = opts.maxEvents ?? 5_000_000;
    this.socketHold = opts.socketHold ?? 0;
    this.socketHoldMs = opts.socketHoldMs ?? 0.1;
    this.holdRng = new Prng(this.seed ^ 0x50c4e7);
  }

  /** The fault spec as `--fault` text (with the partitions scheduled so far), for a replay line. */
  faultSpecText(): string {
    const spec = cloneFaultSpec(this.faultSpec);
    const seen = new Set<string>();
    for (const n of this.nodes) {
      for (const p of n.plan.spec.partitions) {
        const key = `${p.target}@${p.startMs}+${p.durationMs}`;
        if (seen.has(key) || this.faultSpec.partitions.some((q) => `${q.target}@${q.startMs}+${q.durationMs}` === key)) continue;
        seen.add(key);
        spec.partitions.push(p);
      }
    }
    return formatFaultSpec(spec);
  }

  // -------------------------------------------------------------- topology

  /** Adds a device; its index is 1, 2, ... in order of adding, its port SIM_BASE_PORT + index. */
  addDevice(name?: string, extra: ExtraSimDeviceOptions = {}): SimNode {
    const index = this.nodes.length + 1;
    const nodeName = name ?? `sim${index}`;
    // Seeded as openDevice seeds a device's injector, so a replay draws the same way.
    const plan = new FaultPlan({ ...this.faultSpec, seed: (Math.imul(this.faultSpec.seed, 0x9e3779b1) + index) >>> 0 }, { self: nodeName });
    plan.start(this.startedAt);
    const node: SimNode = {
      index,
      name: nodeName,
      port: SIM_BASE_PORT + index,
      device: null as unknown as Device,
      plan,
      held: new DelayQueue(),
      releaseAt: Infinity,
      timerAt: Infinity,
      timerGen: 0,
      timerFirings: 0,
      bottleneck: this.faultSpec.bottleneckBytesPerSec === null ? null : new IngressBottleneck(this.faultSpec.bottleneckBytesPerSec, this.faultSpec.bottleneckBufferBytes),
    };
    node.device = this.makeDevice(node, extra);
    this.nodes.push(node);
    this.byPort.set(node.port, node);
    this.byGid.set(node.device.gidText, node);
    return node;
  }

  /**
   * Replaces the device of `node` by a new one with the same GID (a restarted process): the
   * old one is destroyed, its pending timers are forgotten, packets still in flight to the
   * endpoint reach the new device. With `port`, the new device listens there instead.
   */
  restartDevice(node: SimNode, extra: ExtraSimDeviceOptions = {}, port?: number): Device {
    node.device.destroyAll();
    node.timerGen++;
    node.timerAt = Infinity;
    if (port !== undefined && port !== node.port) {
      this.byPort.delete(node.port);
      node.port = port;
      this.byPort.set(port, node);
    }
    node.device = this.makeDevice(node, extra);
    return node.device;
  }

  private makeDevice(node: SimNode, extra: ExtraSimDeviceOptions): Device {
    const { srd, ...rest } = extra;
    const device = new Device({
      name: node.name,
      gid: makeGid(SIM_FABRIC_ID, node.index),
      clock: () => this.now,
      // Deterministic and growing with every restart, as a real restart's wall clock is.
      incarnation: 1000 + node.timerGen,
      transport: { sendPacket: (buf, len, host, port, onSent) => this.send(node, buf, len, host, port, onSent) },
      resolver: (gid) => this.resolve(gid),
      timer: { arm: (deadline) => this.armTimer(node, deadline) },
      srd: { ...this.srd, ...srd },
      ...rest,
    });
    // As openDevice does: congestion control judges queueing above the delay the spec adds.
    device.srd.setLinkDelay(linkRoundTripMs(this.faultSpec));
    return device;
  }

  node(index: number): SimNode {
    const n = this.nodes[index - 1];
    if (n === undefined) throw new RangeError(`no device ${index} in the simulation`);
    return n;
  }

  private schedulePartition(node: SimNode, target: string, from: number, until: number): void {
    const start = Math.max(0, from - this.startedAt);
    const end = until - this.startedAt;
    node.plan.schedulePartition(target, start, Math.max(0, end - start));
  }

  /** Device `index` goes dark (nothing to or from it) in [from, until), through the fault plans. */
  partitionDevice(index: number, from: number, until: number): void {
    const name = this.node(index).name;
    for (const n of this.nodes) this.schedulePartition(n, name, from, until);
  }

  /** The link a -> b (and b -> a unless oneWay) goes dark in [from, until), through the fault plans. */
  partitionLink(a: number, b: number, from: number, until: number, oneWay = false): void {
    const na = this.node(a);
    const nb = this.node(b);
    this.schedulePartition(na, `${na.name}/${nb.name}`, from, until);
    if (!oneWay) this.schedulePartition(nb, `${nb.name}/${na.name}`, from, until);
  }

  /** Ends every partition, on every device (scheduled ones too). */
  healAll(): void {
    for (const n of this.nodes) n.plan.heal('*');
  }

  /** The control plane: every device of the simulation resolves, at once; others throw ENOENT. */
  resolve(gid: string): ResolvedGid {
    let text: string;
    try {
      text = formatGid(parseGid(gid));
    } catch {
      throw new DaemonError('EINVAL', `not a GID: ${gid}`);
    }
    const node = this.byGid.get(text);
    if (node === undefined) throw new DaemonError('ENOENT', `GID ${text} is not in the simulation`);
    return {
      name: node.name,
      gid: text,
      ahn: node.index,
      endpoint: { host: SIM_HOST, port: node.port },
      up: !node.device.closed,
      incarnation: node.device.incarnation,
    };
  }

  // -------------------------------------------------------------- events

  /** Runs the afterEvent hook now (e.g. to poll CQs after a call made outside any event). */
  poll(): void {
    this.afterEvent?.(null);
  }

  /** Runs `fn` at virtual time `time` (or now, if that is past). */
  at(time: number, fn: () => void): void {
    const ev = new SimEvent();
    ev.kind = EV_CALL;
    ev.fn = fn;
    this.schedule(ev, time);
  }

  /** Runs `fn` `delay` ms from now. */
  after(delay: number, fn: () => void): void {
    this.at(this.now + delay, fn);
  }

  get pendingEvents(): number {
    return this.queue.size;
  }

  /** Time of the next event, or Infinity. */
  nextEventTime(): number {
    const ev = this.queue.peek();
    return ev === undefined ? Infinity : ev.time;
  }

  private schedule(ev: SimEvent, time: number): void {
    ev.time = time > this.now ? time : this.now;
    ev.seq = this.seq++;
    this.queue.push(ev);
  }

  private armTimer(node: SimNode, deadline: number): void {
    const t = deadline > this.now ? deadline : this.now;
    if (t >= node.timerAt) return; // an earlier firing is pending; it re-arms what is left
    node.timerAt = t;
    const ev = new SimEvent();
    ev.kind = EV_TIMER;
    ev.node = node;
    ev.gen = ++node.timerGen;
    this.schedule(ev, t);
  }

  /** Processes the next event; false when there is none. */
  step(): boolean {
    const ev = this.queue.pop();
    if (ev === undefined) return false;
    this.now = ev.time;
    this.stats.events++;
    if (ev.kind === EV_CALL) {
      (ev.fn as () => void)();
      this.afterEvent?.(null);
    } else if (ev.kind === EV_TIMER) {
      const node = ev.node as SimNode;
      if (ev.gen !== node.timerGen) return true; // superseded by an earlier firing, or a restart
      node.timerAt = Infinity;
      node.timerFirings++;
      node.device.onTimer();
      this.afterEvent?.(node);
    } else if (ev.kind === EV_RELEASE) {
      const node = ev.node as SimNode;
      if (ev.time !== node.releaseAt) return true; // superseded by an earlier release
      node.releaseAt = Infinity;
      node.held.releaseDue(this.now, (buf) => this.release(node, buf));
      this.armRelease(node);
    } else {
      this.arrive(ev);
    }
    return true;
  }

  /**
   * Processes events until `pred()` holds (true), or the next event lies beyond `maxTime`
   * or none is left (the clock then moves to `maxTime` if it is finite; returns pred()).
   * Throws after `maxEvents` events in one call so that a livelock cannot hang a test.
   */
  runUntil(pred: () => boolean, maxTime: number): boolean {
    let n = 0;
    for (;;) {
      if (pred()) return true;
      const next = this.queue.peek();
      if (next === undefined || next.time > maxTime) {
        if (Number.isFinite(maxTime) && maxTime > this.now) this.now = maxTime;
        return pred();
      }
      if (++n > this.maxEvents) {
        throw new Error(`SimNetwork.runUntil: more than ${this.maxEvents} events by t=${this.now.toFixed(3)} ms (a livelock?)`);
      }
      this.step();
    }
  }

  /** Processes every event up to `time` and moves the clock there. */
  runFor(ms: number): void {
    this.runUntil(() => false, this.now + ms);
  }

  /** Processes events until none is left or the clock would pass `maxTime`. */
  drain(maxTime: number): void {
    this.runUntil(() => this.queue.size === 0, maxTime);
  }

  // -------------------------------------------------------------- the wire

  private send(node: SimNode, buf: Buffer, len: number, host: string, port: number, onSent?: (() => void) | null): void {
    const t = this.now;
    this.stats.sent++;
    // The wire gets a copy of the bytes now; the buffer is given back at once, or (a queued
    // socket send) a little later, which is when the sender may reuse it.
    const copy = Buffer.from(buf.subarray(0, len));
    if (onSent !== undefined && onSent !== null) {
      if (this.socketHold > 0 && this.holdRng.next() < this.socketHold) this.after(this.holdRng.next() * this.socketHoldMs, onSent);
      else onSent();
    }
    const dst = host === SIM_HOST ? this.byPort.get(port) : undefined;
    const pkt: SimPacket = { sentAt: t, from: node.index, to: dst?.index ?? 0, buf: copy, info: describePacket(copy), corrupted: false, duplicate: false };
    this.record('send', pkt);
    if (dst === undefined) {
      this.stats.nowhere++;
      this.record('drop-nowhere', pkt);
      return;
    }
    let extra = 0;
    if (this.intercept !== null) {
      const verdict = this.intercept(pkt);
      if (verdict === false) {
        this.stats.intercepted++;
        this.record('drop-intercept', pkt);
        return;
      }
      if (typeof verdict === 'number') extra = verdict;
    }
    // The injector's decision, as FaultInjector.send makes it (partitions match device names).
    const d = this.decision;
    node.plan.decide(t, len, dst.name, d, pkt.info.path);
    if (d.copies === 0) {
      this.record('drop-fault', pkt);
      return;
    }
    for (let i = 0; i < d.copies; i++) {
      const p: SimPacket = i === 0 ? pkt : { ...pkt, buf: Buffer.from(pkt.original ?? copy), original: undefined, corrupted: false, duplicate: true };
      const bit = d.corruptBit[i];
      if (bit >= 0) {
        p.original = Buffer.from(p.buf);
        p.buf[bit >> 3] ^= 1 << (bit & 7);
        p.corrupted = true;
      }
      const at = d.releaseAtMs[i] + extra;
      if (at <= t) {
        // As the injector does: whatever is already due leaves first.
        if (node.held.size > 0 && node.held.peekTime() <= t) node.held.releaseDue(t, (b) => this.release(node, b));
        this.toWire(p, dst.port, node.port);
      } else {
        this.heldPackets.set(p.buf, p);
        node.held.push(at, p.buf, p.buf.length, host, dst.port);
      }
    }
    this.armRelease(node);
  }

  /** Keeps one release event pending for the earliest packet the node's injector holds. */
  private armRelease(node: SimNode): void {
    const next = node.held.peekTime();
    if (next === Infinity || next >= node.releaseAt) return;
    node.releaseAt = next;
    const ev = new SimEvent();
    ev.kind = EV_RELEASE;
    ev.node = node;
    this.schedule(ev, next);
  }

  private release(node: SimNode, buf: Buffer): void {
    const p = this.heldPackets.get(buf);
    if (p === undefined) return;
    this.heldPackets.delete(buf);
    const dst = this.nodes[p.to - 1];
    this.toWire(p, dst.port, node.port);
  }

  /** The datagram leaves the sender's socket now; it arrives as the next event at this time. */
  private toWire(pkt: SimPacket, toPort: number, fromPort: number): void {
    const ev = new SimEvent();
    ev.kind = EV_PACKET;
    ev.pkt = pkt;
    ev.toPort = toPort;
    ev.fromPort = fromPort;
    this.schedule(ev, this.now);
  }

  /**
   * Delivers a copy of `pkt` (as it was sent, before any corruption) to its destination at
   * virtual time `at`, past every fault: a duplicate held back by the network.
   */
  replay(pkt: SimPacket, at: number): void {
    const from = this.node(pkt.from);
    const to = this.node(pkt.to);
    const copy: SimPacket = { ...pkt, buf: Buffer.from(pkt.original ?? pkt.buf), original: undefined, duplicate: true, corrupted: false };
    const ev = new SimEvent();
    ev.kind = EV_PACKET;
    ev.pkt = copy;
    ev.toPort = to.port;
    ev.fromPort = from.port;
    this.schedule(ev, at);
  }

  private arrive(ev: SimEvent): void {
    const pkt = ev.pkt as SimPacket;
    const dst = this.byPort.get(ev.toPort);
    if (dst === undefined || dst.device.closed) {
      this.stats.nowhere++;
      this.record('drop-nowhere', pkt);
      return;
    }
    if (dst.bottleneck !== null && !ev.bottled) {
      // The receiver's ingress link, shared by every sender, as the real injector's receive stage.
      const at = dst.bottleneck.admit(this.now, pkt.buf.length);
      if (at < 0) {
        this.stats.bottleneckDrops++;
        this.record('drop-fault', pkt);
        return;
      }
      if (at > this.now) {
        const later = new SimEvent();
        later.kind = EV_PACKET;
        later.pkt = pkt;
        later.toPort = ev.toPort;
        later.fromPort = ev.fromPort;
        later.bottled = true;
        this.schedule(later, at);
        return;
      }
    }
    this.stats.delivered++;
    this.record('deliver', pkt);
    this.onDeliver?.(pkt);
    // A copy: the device's decoder zeroes the CRC field in place, and hooks may keep `pkt`.
    dst.device.handleDatagram(Buffer.from(pkt.buf), SIM_HOST, ev.fromPort);
    this.afterEvent?.(dst);
  }

  private record(event: SimTraceRecord['event'], p: SimPacket): void {
    if (this.trace === null) return;
    this.trace.push({ t: this.now, event, from: p.from, to: p.to, info: p.info, corrupted: p.corrupted, duplicate: p.duplicate });
  }
}

// ------------------------------------------------------------------ SRD endpoints

export const SIM_QKEY = 0x22222222;

/** One SRD QP with its PD, a registered buffer and its CQs. */
export interface SrdEnd {
  dev: Device;
  pd: ProtectionDomain;
  buf: Buffer;
  mr: MemoryRegion;
  sendCq: CompletionQueue;
  recvCq: CompletionQueue;
  qp: QueuePair;
  qkey: number;
}

export interface SrdEndOptions {
  qkey?: number;
  /** Registered buffer size (default 64 KiB). */
  bufSize?: number;
  cqe?: number;
  maxSendWr?: number;
  maxRecvWr?: number;
  /** Given: set on RTR -> RTS. */
  rnrRetry?: number;
  /** Where to leave the QP (default RTS). */
  state?: 'RESET' | 'INIT' | 'RTR' | 'RTS';
  pd?: ProtectionDomain;
  /** Share CQs with another end. */
  sendCq?: CompletionQueue;
  recvCq?: CompletionQueue;
  /** Access flags of the end's MR (default LOCAL_WRITE). */
  access?: number;
  /** efadv QP flags (EfadvQpFlags). */
  qpFlags?: number;
  /** efadv CQ flags of the receive CQ (EfadvWcFlags). */
  recvCqFlags?: number;
}

/** Creates an SRD QP (and what it needs) on `dev`, moved RESET -> INIT -> RTR -> RTS. */
export async function createSrdEnd(dev: Device, opts: SrdEndOptions = {}): Promise<SrdEnd> {
  const qkey = opts.qkey ?? SIM_QKEY;
  const pd = opts.pd ?? (await dev.allocPd());
  const buf = Buffer.alloc(opts.bufSize ?? 65536);
  const mr = await dev.regMr(pd, buf, opts.access ?? AccessFlags.LOCAL_WRITE);
  const sendCq = opts.sendCq ?? (await dev.createCq({ cqe: opts.cqe ?? 1024 }));
  const recvCq = opts.recvCq ?? (await dev.createCq({ cqe: opts.cqe ?? 1024, efadv: { wcFlags: opts.recvCqFlags ?? 0 } }));
  const qp = await dev.createQp(pd, {
    qpType: QpType.SRD,
    sendCq,
    recvCq,
    efadv: { flags: opts.qpFlags ?? 0 },
    cap: { maxSendWr: opts.maxSendWr ?? 256, maxRecvWr: opts.maxRecvWr ?? 256, maxSendSge: 2, maxRecvSge: 2, maxInlineData: 32 },
  });
  const state = opts.state ?? 'RTS';
  const order = ['RESET', 'INIT', 'RTR', 'RTS'];
  const target = order.indexOf(state);
  if (target >= 1) await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey });
  if (target >= 2) await dev.modifyQp(qp, { qpState: QpState.RTR });
  if (target >= 3) {
    await dev.modifyQp(qp, opts.rnrRetry === undefined ? { qpState: QpState.RTS, sqPsn: 0 } : { qpState: QpState.RTS, sqPsn: 0, rnrRetry: opts.rnrRetry });
  }
  return { dev, pd, buf, mr, sendCq, recvCq, qp, qkey };
}

/** Posts a one-SGE receive of `length` bytes at `addr` of the end's buffer. */
export function postSrdRecv(end: SrdEnd, wrId: number, addr = 0, length = 8192): void {
  end.dev.postRecv(end.qp, { wrId, sgList: [{ addr, length, lkey: end.mr.lkey }] });
}

/**
 * Copies `payload` into the end's buffer at `addr` (default: the second half of it) and
 * posts it as a one-SGE send to `remote` through `ah`.
 */
export function postSrdSend(
  end: SrdEnd,
  ah: AddressHandle,
  remote: { qp: QueuePair; qkey: number } | { qpn: number; qkey: number },
  wrId: number,
  payload: Uint8Array,
  extra: { addr?: number; immData?: number } = {},
): void {
  const addr = extra.addr ?? end.buf.length >> 1;
  end.buf.set(payload, addr);
  end.dev.postSend(end.qp, {
    wrId,
    opcode: extra.immData === undefined ? WrOpcode.SEND : WrOpcode.SEND_WITH_IMM,
    immData: extra.immData,
    sgList: payload.length === 0 ? [] : [{ addr, length: payload.length, lkey: end.mr.lkey }],
    ah,
    remoteQpn: 'qp' in remote ? remote.qp.qpNum : remote.qpn,
    remoteQkey: remote.qkey,
  });
}

/** Polls every completion of `cq` as fresh objects. */
export function pollAll(dev: Device, cq: CompletionQueue): WorkCompletion[] {
  const out: WorkCompletion[] = [];
  for (;;) {
    const batch: WorkCompletion[] = [];
    const n = dev.pollCq(cq, 64, batch);
    for (let i = 0; i < n; i++) out.push(batch[i]);
    if (n < 64) return out;
  }
}

/** A deterministic payload of `len` bytes for message `id`. */
export function patternPayload(id: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  let x = (id * 2654435761 + 12345) >>> 0;
  for (let i = 0; i < len; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

// ------------------------------------------------------------------ scenario helpers

/** A completion as a scenario test records it: the fields, and when it was polled. */
export interface TimedCompletion {
  t: number;
  wrId: number;
  /** The EFA completion status (the completion's vendorErr). */
  status: number;
  opcode: number;
  byteLen: number;
  qpNum: number;
  srcQp: number;
  immData: number;
  wcFlags: number;
}

/** Send and receive completions of one end, polled after every simulator event. */
export interface EndLog {
  sends: TimedCompletion[];
  recvs: TimedCompletion[];
  /** Payload bytes of each successful receive, copied when polled (the slot is `wrId`). */
  payloads: Buffer[];
}

/**
 * Polls the CQs of `ends` after every event of `sim` (and once now), recording every
 * completion with the virtual time it was polled; returns one log per end. Receives are
 * read from `slot * slotSize` of the end's buffer, the slot being the receive's wrId.
 */
export function watchEnds(sim: SimNetwork, ends: SrdEnd[], slotSize = 8192): EndLog[] {
  const logs: EndLog[] = ends.map(() => ({ sends: [], recvs: [], payloads: [] }));
  const scratch: WorkCompletion[] = [];
  const take = (end: SrdEnd, cq: CompletionQueue, into: TimedCompletion[], recv: boolean, log: EndLog): void => {
    for (let n = end.dev.pollCq(cq, 64, scratch); n > 0; n = end.dev.pollCq(cq, 64, scratch)) {
      for (let i = 0; i < n; i++) {
        const wc = scratch[i];
        into.push({ t: sim.now, wrId: wc.wrId, status: wc.vendorErr, opcode: wc.opcode, byteLen: wc.byteLen, qpNum: wc.qpNum, srcQp: wc.srcQp, immData: wc.immData, wcFlags: wc.wcFlags });
        if (recv) {
          const off = wc.wrId * slotSize;
          log.payloads.push(wc.vendorErr === 0 ? Buffer.from(end.buf.subarray(off, off + wc.byteLen)) : Buffer.alloc(0));
        }
      }
    }
  };
  const pollAllEnds = (): void => {
    ends.forEach((end, i) => {
      if (end.dev.closed) return;
      take(end, end.recvCq, logs[i].recvs, true, logs[i]);
      take(end, end.sendCq, logs[i].sends, false, logs[i]);
    });
  };
  const previous = sim.afterEvent;
  sim.afterEvent = (node) => {
    previous?.(node);
    pollAllEnds();
  };
  pollAllEnds();
  return logs;
}

/** Transmissions (first sends and resends) of SRD data from device `from` to `to`, from the trace. */
export function dataSends(sim: SimNetwork, from: number, to: number, psn?: number): SimTraceRecord[] {
  if (sim.trace === null) throw new Error('dataSends: create the SimNetwork with trace: true');
  return sim.trace.filter(
    (r) => r.event === 'send' && r.from === from && r.to === to && r.info.type === PacketType.SRD_DATA && (psn === undefined || r.info.psn === psn),
  );
}

/** Packets of `type` sent from `from` to `to`, from the trace. */
export function sentOfType(sim: SimNetwork, from: number, to: number, type: number): SimTraceRecord[] {
  if (sim.trace === null) throw new Error('sentOfType: create the SimNetwork with trace: true');
  return sim.trace.filter((r) => r.event === 'send' && r.from === from && r.to === to && r.info.type === type);
}

export interface SrdPairOptions {
  seed?: number;
  srd?: Partial<SrdConfig>;
  faults?: string | Partial<FaultSpec>;
  a?: SrdEndOptions;
  b?: SrdEndOptions;
  /** Devices beyond a and b (each with an SRD end), for tests that need a third party. */
  more?: number;
  trace?: boolean;
  /** The EFA generation of every device (default: the newest). */
  generation?: string;
}

export interface SrdSim {
  sim: SimNetwork;
  nodes: SimNode[];
  ends: SrdEnd[];
  /** ahs[i][j]: device i's AH (in its end's PD) for device j (indices into `ends`). */
  ahs: AddressHandle[][];
}

/**
 * A simulation of 2 (+ `more`) devices, each with one SRD QP in RTS, and every AH between
 * them. Traces packets unless told otherwise.
 */
export async function srdSim(opts: SrdPairOptions = {}): Promise<SrdSim> {
  const sim = new SimNetwork({ seed: opts.seed ?? 1, srd: opts.srd, faults: opts.faults, trace: opts.trace ?? true });
  const count = 2 + (opts.more ?? 0);
  const nodes: SimNode[] = [];
  const ends: SrdEnd[] = [];
  for (let i = 0; i < count; i++) nodes.push(sim.addDevice(String.fromCharCode(97 + i), opts.generation === undefined ? {} : { generation: opts.generation }));
  for (let i = 0; i < count; i++) ends.push(await createSrdEnd(nodes[i].device, i === 0 ? opts.a : i === 1 ? opts.b : {}));
  const ahs: AddressHandle[][] = [];
  for (let i = 0; i < count; i++) {
    ahs[i] = [];
    for (let j = 0; j < count; j++) if (i !== j) ahs[i][j] = await nodes[i].device.createAh(ends[i].pd, { gid: nodes[j].device.gidText });
  }
  return { sim, nodes, ends, ahs };
}

/** Posts `count` receives on `end`, receive i (wrId first + i) at slot (first + i) * slotSize. */
export function postRecvs(end: SrdEnd, count: number, slotSize = 8192, first = 0): void {
  for (let i = first; i < first + count; i++) postSrdRecv(end, i, i * slotSize, slotSize);
}
