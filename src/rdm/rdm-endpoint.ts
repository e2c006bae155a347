import { Prng } from '../common/prng';
import { EfaStatus } from '../common/efa-status';
import { InvalidArgumentError, ClosedError } from '../common/errors';
import { formatGid, gidDeviceIndex } from '../common/gid';
import type { AsyncEvent, Device } from '../device/device';
import { AccessFlags, AH_UNKNOWN, EfadvWcFlags, QpState, QpType, WcOpcode } from '../device/constants';
import { EfadvDeviceCaps } from '../device/generations';
import type { CompletionQueue } from '../device/completion-queue';
import type { MemoryRegion } from '../device/memory-region';
import type { ProtectionDomain } from '../device/protection-domain';
import type { QueuePair } from '../device/queue-pair';
import { WorkCompletion } from '../device/work-completion';
import type { Sge } from '../device/work-requests';
import { AddressVector } from './address-vector';
import { writeRecvDone, writeRecvError, writeSendDone, writeSendError } from './completion-writer';
import { PacketSender, type TxSlot } from './packet-sender';
import { MAX_READS, ReadEngine, WR_READ_BASE } from './read-engine';
import { FI_EAGAIN, FI_ECANCELED, fiErrnoFromProv, provErrnoFromEfa } from './fi-errno';
import { decodeRawAddress, encodeRawAddress, type RawAddress } from './raw-address';
import { resolveRdmConfig, type RdmConfig } from './rdm-config';
import { RdmCq } from './rdm-cq';
import { CtrlNeed, RxOp, TxOp, Unexpected } from './rdm-ops';
import { FI_ADDR_NOTAVAIL, FI_ADDR_UNSPEC, RdmPeer } from './rdm-peer';
import { RdmStats } from './rdm-stats';
import {
  CTSDATA_HDR_LEN,
  CtrlFields,
  decodeCtrl,
  decodeReq,
  encodeCts,
  encodeCtsData,
  encodeEor,
  encodeHandshake,
  encodePeerError,
  encodeReq,
  PeerErrorRef,
  RdmFeature,
  RdmPktType,
  ReqFields,
  PKT_CONNID_HDR,
  ReqFlags,
  reqHeaderLen,
  rtmProtocol,
  rtmType,
  type RdmProtocol,
} from './rdm-wire';
import { TagMatcher } from './tag-matcher';

export { FI_MSG, FI_TAGGED, FI_RECV, FI_SEND, FI_REMOTE_CQ_DATA } from './completion-writer';

/** Schedules the endpoint's timed work (RNR back-off, liveness probes). */
export interface RdmTimer {
  /** Asks for `progress` to run at `deadline` (ms on the endpoint's clock) or earlier. */
  arm(deadline: number): void;
  /** No more timed work (the endpoint closed). */
  cancel(): void;
}

/** Options of {@link RdmEndpoint.open}: the tunables plus what tests inject. */
export interface RdmEndpointOptions extends Partial<RdmConfig> {
  /** Milliseconds on a monotonic clock (default performance.now; a simulation passes its own). */
  clock?: () => number;
  /** Runs timed work; default a real timer. With a custom clock, pass a timer that follows it. */
  timer?: (ep: RdmEndpoint) => RdmTimer;
  /** Seed of the back-off jitter (default: from the clock). */
  seed?: number;
  /** FI_EFA_* variables are read from here (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Ids of operations: wrap well below 2^32 so they fit the wire's u32 fields. */
const OP_ID_LIMIT = 0x7fff_ffff;

type Tag = bigint | number;

function tagHalves(tag: Tag, what: string): [number, number] {
  const t = typeof tag === 'bigint' ? tag : Number.isSafeInteger(tag) && tag >= 0 ? BigInt(tag) : -1n;
  if (t < 0n || t > 0xffff_ffff_ffff_ffffn) throw new InvalidArgumentError(`${what}: a tag is a 64-bit unsigned integer, got ${String(tag)}`);
  return [Number(t & 0xffff_ffffn), Number(t >> 32n)];
}

function dataHalves(data: number): [number, number] {
  if (!Number.isSafeInteger(data) || data < 0) throw new InvalidArgumentError(`remote CQ data: a non-negative safe integer, got ${String(data)}`);
  return [data >>> 0, Math.floor(data / 0x1_0000_0000) >>> 0];
}

function checkBuffer(buf: unknown, what: string): Uint8Array {
  if (!(buf instanceof Uint8Array)) throw new InvalidArgumentError(`${what}: the buffer must be a Buffer or Uint8Array`);
  return buf;
}

/**
 * A reliable-datagram endpoint (`fid_ep` of type FI_EP_RDM) over one SRD QP, as libfabric's efa
 * provider builds it: messages of any size over a transport that carries one MTU, unordered,
 * and may answer receiver-not-ready. It speaks the provider's protocol v4 (handshake, eager,
 * medium, long-CTS and long-read message protocols), matches tagged and untagged receives,
 * keeps unexpected messages, and reports failures as error completions whose `provErrno` is
 * the EFA status behind them.
 *
 * Progress is the endpoint's own: reading the CQ drives it, and in `event` (default) or
 * `busy` mode the device's completions drive it too, so an application may simply await
 * `cq.sread`.
 */
export class RdmEndpoint {
  readonly config: RdmConfig;
  readonly cq = new RdmCq();
  readonly av: AddressVector;
  readonly stats = new RdmStats();
  private readonly raw: Uint8Array;
  private readonly connid: number;
  private readonly mtu: number;
  private readonly eagerMax: number;
  private readonly canRead: boolean;
  private readonly features: number;
  private readonly deviceVersion: number;
  private readonly clock: () => number;
  private readonly timer: RdmTimer;
  private readonly prng: Prng;

  private readonly out: PacketSender;
  private readonly reads: ReadEngine;
  private readonly rxBuf: Buffer;
  private readonly wcs: WorkCompletion[] = [];
  private readonly req = new ReqFields();
  private readonly ctrl = new CtrlFields();
  private readonly matcher = new TagMatcher<RxOp, Unexpected>();
  private readonly txOps = new Map<number, TxOp>();
  private readonly rxOps = new Map<number, RxOp>();
  /** Peers some operation waits on (probed for liveness). */
  private readonly watchedPeers = new Set<RdmPeer>();
  private nextOpId = 1;
  private nextTimerAt = Infinity;
  private progressing = false;
  private closed = false;
  private spinning = false;

  private constructor(
    readonly device: Device,
    private readonly pd: ProtectionDomain,
    private readonly dcq: CompletionQueue,
    readonly qp: QueuePair,
    private readonly txMr: MemoryRegion,
    private readonly rxMr: MemoryRegion,
    txBuf: Buffer,
    rxBuf: Buffer,
    config: RdmConfig,
    connid: number,
    opts: RdmEndpointOptions,
  ) {
    this.config = config;
    this.connid = connid;
    this.mtu = device.attributes.mtu;
    this.raw = encodeRawAddress(device.gid, qp.qpNum, connid);
    this.canRead = (device.attributes.deviceCaps & EfadvDeviceCaps.RDMA_READ) !== 0;
    this.features = RdmFeature.CONNID_HEADER | RdmFeature.PEER_ERROR | (this.canRead ? RdmFeature.RDMA_READ : 0);
    this.deviceVersion = device.attributes.vendorPartId;
    // The largest eager payload: the MTU less the biggest eager header (tagged, raw address, CQ data).
    const eagerRoom = this.mtu - reqHeaderLen(RdmPktType.EAGER_TAGRTM, true, true);
    this.eagerMax = config.eagerMaxSize > 0 ? Math.min(config.eagerMaxSize, eagerRoom) : eagerRoom;
    this.clock = opts.clock ?? (() => performance.now());
    this.prng = new Prng(opts.seed ?? Math.floor(this.clock() * 1000) ^ qp.qpNum);
    this.rxBuf = rxBuf;
    this.out = new PacketSender(device, qp, txMr.lkey, txBuf, this.mtu, config, this.prng, this.clock, this.stats, {
      delivered: (slot) => this.slotDelivered(slot),
      failed: (slot, status) => this.slotFailed(slot, status),
      stale: (slot) => this.slotStale(slot),
      serve: (w) => this.serveWaiter(w as TxOp | RxOp | RdmPeer),
      armAt: (deadline) => this.armAt(deadline),
    });
    this.reads = new ReadEngine(device, qp, (r, status) => this.readDone(r, status));
    for (let i = 0; i < 64; i++) this.wcs.push(new WorkCompletion());
    this.av = new AddressVector((gid) => device.createAh(pd, { gid }));
    this.cq.progress = () => this.progress();
    this.timer = opts.timer?.(this) ?? realTimer(this, this.clock);
    device.on('async_event', this.onAsyncEvent);
    for (let i = 0; i < config.rxSize; i++) this.postRxSlot(i);
    if (config.progress === 'event' && dcq.channel !== null) {
      dcq.channel.on('cq', this.onCqEvent);
      device.reqNotifyCq(dcq);
    } else if (config.progress === 'busy') {
      this.spinning = true;
      setImmediate(this.spin);
    }
  }

  /**
   * Opens an endpoint on `device`: its own PD, CQ, SRD QP (its qkey a random connection id)
   * and registered packet buffers, as `fi_endpoint` + `fi_enable` do.
   */
  static async open(device: Device, opts: RdmEndpointOptions = {}): Promise<RdmEndpoint> {
    const { clock: _c, timer: _t, seed: _s, env, ...tunables } = opts;
    const config = resolveRdmConfig(tunables, env);
    const attrs = device.attributes;
    if (config.txSize + MAX_READS > attrs.maxQpWr) throw new InvalidArgumentError(`rdm txSize ${config.txSize}: the device's queues take ${attrs.maxQpWr - MAX_READS} at most`);
    if (config.rxSize > attrs.maxQpWr) throw new InvalidArgumentError(`rdm rxSize ${config.rxSize}: the device's queues take ${attrs.maxQpWr} at most`);
    const pd = await device.allocPd();
    const channel = config.progress === 'event' ? device.createCompChannel() : null;
    const sgid = (attrs.deviceCaps & EfadvDeviceCaps.CQ_WITH_SGID) !== 0 ? EfadvWcFlags.WITH_SGID : 0;
    const dcq = await device.createCq({ cqe: config.txSize + MAX_READS + config.rxSize, channel, efadv: { wcFlags: sgid } });
    const qp = await device.createQp(pd, {
      qpType: QpType.SRD,
      sendCq: dcq,
      recvCq: dcq,
      cap: { maxSendWr: config.txSize + MAX_READS, maxRecvWr: config.rxSize, maxSendSge: 1, maxRecvSge: 1 },
    });
    // The connection id is the QP's qkey, so it must leave the privileged bit (bit 31) clear;
    // drawn from the seed when a test gives one, so a simulated run replays exactly.
    const draw = opts.seed !== undefined ? new Prng(opts.seed ^ 0x636f6e6e).nextU32() : Math.floor(Math.random() * 0x1_0000_0000);
    const connid = ((draw % 0x7fff_ffff) + 1) >>> 0;
    await device.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: connid });
    await device.modifyQp(qp, { qpState: QpState.RTR });
    await device.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0, rnrRetry: config.rnrRetry });
    const mtu = attrs.mtu;
    const txBuf = Buffer.alloc(config.txSize * mtu);
    const rxBuf = Buffer.alloc(config.rxSize * mtu);
    const txMr = await device.regMr(pd, txBuf, 0);
    const rxMr = await device.regMr(pd, rxBuf, AccessFlags.LOCAL_WRITE);
    return new RdmEndpoint(device, pd, dcq, qp, txMr, rxMr, txBuf, rxBuf, config, connid, opts);
  }

  /** This endpoint's raw address (`fi_getname`): 32 bytes as EFA's efa_ep_addr. */
  getName(): Uint8Array {
    return Uint8Array.from(this.raw);
  }

  /** Largest message in one eager packet (the provider's eager limit for this MTU). */
  get eagerMaxSize(): number {
    return this.eagerMax;
  }

  /** The protocol a message of `len` bytes to a peer that can (or cannot) serve RDMA read takes. */
  protocolFor(len: number, peerCanRead: boolean): RdmProtocol {
    const c = this.config;
    if (len >= c.readMinSize && c.useDeviceRdma && this.canRead && peerCanRead && len > this.eagerMax) return 'longread';
    if (len <= this.eagerMax) return 'eager';
    if (len <= c.mediumMaxSize) return 'medium';
    return 'longcts';
  }

  // ---------------------------------------------------------------- posting

  /** `fi_send`: sends all of `buf` to `dest`. 0, or -FI_EAGAIN when the endpoint has `txSize` sends outstanding. */
  send(buf: Uint8Array, dest: number, context: unknown = null): number {
    return this.post(buf, dest, false, 0, 0, false, 0, context);
  }

  /** `fi_senddata`: a send whose completion at the receiver carries `data` (FI_REMOTE_CQ_DATA). */
  senddata(buf: Uint8Array, data: number, dest: number, context: unknown = null): number {
    const [lo, hi] = dataHalves(data);
    return this.post(buf, dest, false, 0, 0, true, lo, context, hi);
  }

  /** `fi_tsend`: a tagged send. */
  tsend(buf: Uint8Array, dest: number, tag: Tag, context: unknown = null): number {
    const [tl, th] = tagHalves(tag, 'tsend');
    return this.post(buf, dest, true, tl, th, false, 0, context);
  }

  /** `fi_tsenddata`: a tagged send with remote CQ data. */
  tsenddata(buf: Uint8Array, data: number, dest: number, tag: Tag, context: unknown = null): number {
    const [tl, th] = tagHalves(tag, 'tsenddata');
    const [lo, hi] = dataHalves(data);
    return this.post(buf, dest, true, tl, th, true, lo, context, hi);
  }

  /** `fi_recv`: a receive into `buf` from `src` (FI_ADDR_UNSPEC: anyone). */
  recv(buf: Uint8Array, src: number = FI_ADDR_UNSPEC, context: unknown = null): number {
    return this.postRecv(buf, src, false, 0, 0, 0, 0, context);
  }

  /** `fi_trecv`: a tagged receive matching `tag` except where `ignore` has bits set. */
  trecv(buf: Uint8Array, src: number, tag: Tag, ignore: Tag = 0n, context: unknown = null): number {
    const [tl, th] = tagHalves(tag, 'trecv');
    const [il, ih] = tagHalves(ignore, 'trecv ignore');
    return this.postRecv(buf, src, true, tl, th, il, ih, context);
  }

  /**
   * `fi_cancel`: a receive still waiting for a message completes with FI_ECANCELED. True when
   * one was cancelled; a receive already matched runs to completion.
   */
  cancel(context: unknown): boolean {
    for (const r of this.matcher.postedReceives()) {
      if (r.context !== context) continue;
      this.matcher.removePosted(r);
      r.done = true;
      this.rxOps.delete(r.id);
      writeRecvError(this.cq, r, FI_ECANCELED, 0);
      return true;
    }
    return false;
  }

  private post(buf: Uint8Array, dest: number, tagged: boolean, tagLo: number, tagHi: number, hasData: boolean, dataLo: number, context: unknown, dataHi = 0): number {
    this.checkOpen();
    checkBuffer(buf, 'send');
    const peer = this.av.get(dest);
    if (this.txOps.size >= this.config.txSize) return -FI_EAGAIN;
    const op = new TxOp(this.allocOpId(this.txOps), peer, buf, buf.length, tagged, tagLo, tagHi, hasData, dataLo, dataHi, context, peer.nextTxMsgId);
    peer.nextTxMsgId = (peer.nextTxMsgId + 1) >>> 0;
    this.txOps.set(op.id, op);
    const wantsRead = this.canRead && this.config.useDeviceRdma && op.len >= this.config.readMinSize && op.len > this.eagerMax;
    if (wantsRead && !peer.handshakeReceived) {
      // Whether the peer can serve RDMA read is in its handshake: ask for it, and wait.
      op.awaitingHandshake = true;
      peer.waitingOps.add(op);
      this.watch(peer);
      this.requestHandshake(peer);
    } else {
      this.startTx(op);
    }
    this.flush();
    return 0;
  }

  private postRecv(buf: Uint8Array, src: number, tagged: boolean, tagLo: number, tagHi: number, ignLo: number, ignHi: number, context: unknown): number {
    this.checkOpen();
    checkBuffer(buf, 'recv');
    if (src !== FI_ADDR_UNSPEC) this.av.get(src);
    const r = new RxOp(this.allocOpId(this.rxOps), buf, tagged, src, tagLo, tagHi, ignLo, ignHi, context);
    this.rxOps.set(r.id, r);
    const u = this.matcher.takeUnexpected(r);
    if (u === null) this.matcher.addPosted(r);
    else this.claimUnexpected(r, u);
    this.flush();
    return 0;
  }

  private allocOpId(map: Map<number, unknown>): number {
    for (;;) {
      const id = this.nextOpId;
      this.nextOpId = this.nextOpId >= OP_ID_LIMIT ? 1 : this.nextOpId + 1;
      if (!map.has(id)) return id;
    }
  }

  // ---------------------------------------------------------------- send side

  private startTx(op: TxOp): void {
    op.awaitingHandshake = false;
    const proto = this.protocolFor(op.len, (op.peer.features & RdmFeature.RDMA_READ) !== 0);
    op.proto = proto;
    this.stats.countTx(proto, op.len);
    if (proto === 'longread') {
      this.device.regMr(this.pd, op.buf, AccessFlags.REMOTE_READ).then(
        (mr) => {
          if (op.done || this.closed) {
            if (!this.closed) void this.device.deregMr(mr).catch(() => {});
            return;
          }
          op.mr = mr;
          op.peer.waitingOps.add(op);
          this.watch(op.peer);
          this.pumpTx(op);
          this.flush();
        },
        () => {
          // As the provider does when it cannot register: fall back to long-CTS.
          if (op.done || this.closed) return;
          this.stats.countTxFallback(op.len);
          op.proto = 'longcts';
          this.pumpTx(op);
          this.flush();
        },
      );
      return;
    }
    if (proto === 'longcts') {
      op.peer.waitingOps.add(op);
      this.watch(op.peer);
    }
    this.pumpTx(op);
  }

  /** Puts as many of the op's packets into slots as it may send now. */
  private pumpTx(op: TxOp): void {
    while (!op.done) {
      if (op.rtmSent && op.proto !== 'medium' && !(op.proto === 'longcts' && op.sentBytes < op.granted)) return;
      if (op.rtmSent && op.proto === 'medium' && op.sentBytes >= op.len) return;
      const slot = this.out.alloc();
      if (slot === null) {
        this.out.waitFor(op);
        return;
      }
      if (!op.rtmSent || op.proto === 'medium') this.fillReq(op, slot);
      else this.fillCtsData(op, slot);
      this.out.send(slot);
    }
  }

  private fillReq(op: TxOp, slot: TxSlot): void {
    const peer = op.peer;
    const f = this.req;
    const rawAddr = !peer.handshakeReceived;
    f.type = rtmType(op.proto, op.tagged);
    f.flags = (op.tagged ? ReqFlags.TAGGED : ReqFlags.MSG) | (rawAddr ? ReqFlags.RAW_ADDR_HDR : ReqFlags.CONNID_HDR) | (op.hasData ? ReqFlags.CQ_DATA_HDR : 0);
    f.msgId = op.msgId;
    f.tagLo = op.tagLo;
    f.tagHi = op.tagHi;
    f.msgLength = op.len;
    f.sendId = op.id;
    f.creditRequest = this.config.ctsCredits;
    f.cqDataLo = op.dataLo;
    f.cqDataHi = op.dataHi;
    f.connid = this.connid;
    f.segOffset = op.sentBytes;
    f.readAddr = 0;
    f.readLen = op.len;
    f.readKey = op.mr?.rkey ?? 0;
    const hdr = encodeReq(slot.buf, f, rawAddr ? this.raw : null);
    let payload = 0;
    if (op.proto === 'eager') payload = op.len;
    else if (op.proto === 'medium') payload = this.mediumSegment(op, this.mtu - hdr);
    else if (op.proto === 'longcts') payload = Math.min(op.len, this.mtu - hdr);
    if (payload > 0) slot.buf.set(op.buf.subarray(op.sentBytes, op.sentBytes + payload), hdr);
    this.bindSlot(slot, peer, op, hdr + payload, payload, f.type);
    op.sentBytes += payload;
    op.rtmSent = true;
    if (op.proto === 'longcts' && op.granted < op.sentBytes) op.granted = op.sentBytes;
  }

  /**
   * Medium: the provider's split, planned at the first segment: as many segments as `room`
   * needs, each the same size rounded down to 8 bytes (its memory alignment), the remainder
   * added to the last one when it fits there, else sent as one more.
   */
  private mediumSegment(op: TxOp, room: number): number {
    if (op.segSize === 0) {
      const count = Math.ceil(op.len / room);
      const even = Math.ceil(op.len / count);
      op.segSize = even >= 8 ? even & ~7 : even;
      const whole = Math.floor(op.len / op.segSize);
      const rem = op.len - whole * op.segSize;
      op.segLastExtra = rem > 0 && op.segSize + rem <= room ? rem : 0;
    }
    const left = op.len - op.sentBytes;
    // The last full segment takes the remainder when it fits (then nothing is left after it).
    if (left === op.segSize + op.segLastExtra) return left;
    return Math.min(op.segSize, left);
  }

  private fillCtsData(op: TxOp, slot: TxSlot): void {
    const room = this.mtu - CTSDATA_HDR_LEN;
    const payload = Math.min(room, op.granted - op.sentBytes);
    const hdr = encodeCtsData(slot.buf, this.connid, op.recvId, payload, op.sentBytes);
    slot.buf.set(op.buf.subarray(op.sentBytes, op.sentBytes + payload), hdr);
    this.bindSlot(slot, op.peer, op, hdr + payload, payload, RdmPktType.CTSDATA);
    op.sentBytes += payload;
  }

  private bindSlot(slot: TxSlot, peer: RdmPeer, owner: TxOp | RxOp | null, len: number, payload: number, type: number): void {
    slot.peer = peer;
    slot.owner = owner;
    slot.len = len;
    slot.payload = payload;
    slot.type = type;
    slot.firstRnrAt = 0;
    slot.rnrs = 0;
    slot.patient = false;
    if (owner !== null) owner.slots++;
    this.stats.countPacket(type);
  }

  /** A tx op's packet completed: is the op done? */
  private txPacketDone(op: TxOp, slot: TxSlot): void {
    op.slots--;
    op.doneBytes += slot.payload;
    if (slot.type >= 64) op.rtmDone = true;
    if (op.done) return;
    const finished = op.proto === 'longread' ? op.rtmDone && op.eorReceived : op.rtmSent && op.doneBytes === op.len && op.slots === 0;
    if (finished) this.finishTx(op);
  }

  private finishTx(op: TxOp): void {
    op.done = true;
    this.txOps.delete(op.id);
    this.unwatchOp(op.peer, op);
    this.releaseMr(op.mr);
    op.mr = null;
    writeSendDone(this.cq, op);
  }

  private failTx(op: TxOp, provErrno: number): void {
    if (op.done) return;
    op.done = true;
    this.txOps.delete(op.id);
    this.unwatchOp(op.peer, op);
    this.releaseMr(op.mr);
    op.mr = null;
    this.stats.inc('tx_errors');
    writeSendError(this.cq, op, provErrno);
  }

  // ---------------------------------------------------------------- receive side

  private claimUnexpected(r: RxOp, u: Unexpected): void {
    this.stats.inc('unexpected_matched');
    this.bindRx(r, u.peer, u.peer.fiAddr, u.proto, u.msgId, u.msgLen, u.tagLo, u.tagHi, u.hasData, u.dataLo, u.dataHi);
    r.sendId = u.sendId;
    r.readAddr = u.readAddr;
    r.readKey = u.readKey;
    const held = Math.min(u.received, u.data.length);
    if (u.proto === 'medium') {
      // Copy what arrived so far (up to the capacity); later segments go straight to the receive.
      for (const seg of u.segments) {
        const n = Math.min(seg.bytes.length, r.buf.length - seg.offset);
        if (n > 0) seg.bytes.copy(r.buf, seg.offset, 0, n);
      }
      u.segments.length = 0;
      r.received = u.received;
      if (r.received < r.msgLen) {
        r.peer?.partial.set(u.msgId, r);
        this.waitOn(r);
        return;
      }
      r.peer?.partial.delete(u.msgId);
      this.finishRx(r);
      return;
    }
    if (held > 0) u.data.copy(r.buf, 0, 0, Math.min(held, r.buf.length));
    r.received = held;
    this.continueRx(r);
  }

  private bindRx(r: RxOp, peer: RdmPeer, srcAddr: number, proto: RdmProtocol, msgId: number, msgLen: number, tagLo: number, tagHi: number, hasData: boolean, dataLo: number, dataHi: number): void {
    r.peer = peer;
    r.srcAddr = srcAddr;
    r.proto = proto;
    r.msgId = msgId;
    r.msgLen = msgLen;
    r.mtagLo = tagLo;
    r.mtagHi = tagHi;
    r.hasData = hasData;
    r.dataLo = dataLo;
    r.dataHi = dataHi;
    this.stats.countRx(proto, msgLen);
  }

  /** After the REQ's payload is in: eager done; long-CTS asks for data; long-read reads it. */
  private continueRx(r: RxOp): void {
    if (r.proto === 'eager' || r.received >= r.msgLen && r.proto !== 'longread') {
      this.finishRx(r);
      return;
    }
    if (r.proto === 'longcts') {
      r.granted = r.received;
      this.waitOn(r);
      this.sendCtrl(r, CtrlNeed.CTS);
      return;
    }
    if (r.proto === 'longread') {
      this.waitOn(r);
      const len = Math.min(r.msgLen, r.buf.length);
      if (len === 0) {
        this.sendCtrl(r, CtrlNeed.EOR);
        this.finishRx(r);
        return;
      }
      this.device.regMr(this.pd, r.buf.subarray(0, len), AccessFlags.LOCAL_WRITE).then(
        (mr) => {
          if (r.done || this.closed) {
            if (!this.closed) void this.device.deregMr(mr).catch(() => {});
            return;
          }
          r.mr = mr;
          this.stats.inc('rdma_reads');
          this.reads.enqueue(r);
          this.flush();
        },
        () => {
          this.failRx(r, EfaStatus.LOCAL_ERROR_INVALID_LKEY);
        },
      );
    }
  }

  private readDone(r: RxOp, status: number): void {
    if (r.done) return;
    if (status !== EfaStatus.SUCCESS) {
      this.failRx(r, provErrnoFromEfa(status, r.peer?.handshakeReceived ?? false));
      return;
    }
    r.received = r.msgLen;
    this.sendCtrl(r, CtrlNeed.EOR);
    this.finishRx(r);
  }

  private finishRx(r: RxOp): void {
    if (r.done) return;
    r.done = true;
    this.rxOps.delete(r.id);
    if (r.peer !== null) this.unwatchOp(r.peer, r);
    this.releaseMr(r.mr);
    r.mr = null;
    if (writeRecvDone(this.cq, r)) this.stats.inc('rx_truncated');
  }

  private failRx(r: RxOp, provErrno: number): void {
    if (r.done) return;
    r.done = true;
    r.ctrlNeeded = CtrlNeed.NONE;
    this.rxOps.delete(r.id);
    if (r.peer !== null) {
      this.unwatchOp(r.peer, r);
      r.peer.partial.delete(r.msgId);
    }
    this.releaseMr(r.mr);
    r.mr = null;
    this.stats.inc('rx_errors');
    writeRecvError(this.cq, r, fiErrnoFromProv(provErrno), provErrno);
  }

  /** Sends a CTS or EOR for a receive now, or when a slot frees. */
  private sendCtrl(r: RxOp, need: number): void {
    const peer = r.peer as RdmPeer;
    const slot = this.out.alloc();
    if (slot === null) {
      r.ctrlNeeded = need;
      this.out.waitFor(r);
      return;
    }
    r.ctrlNeeded = CtrlNeed.NONE;
    if (need === CtrlNeed.CTS) {
      const grant = Math.min(r.msgLen - r.granted, this.config.ctsCredits * (this.mtu - CTSDATA_HDR_LEN));
      r.granted += grant;
      this.bindSlot(slot, peer, null, encodeCts(slot.buf, this.connid, r.sendId, r.id, grant), 0, RdmPktType.CTS);
    } else {
      this.bindSlot(slot, peer, null, encodeEor(slot.buf, this.connid, r.sendId, r.id), 0, RdmPktType.EOR);
    }
    this.out.send(slot);
  }

  // ---------------------------------------------------------------- handshake and liveness

  /** Sends our handshake to a peer once (re-sent as a liveness probe while ops wait on it). */
  private requestHandshake(peer: RdmPeer): void {
    if (peer.handshakeSent) return;
    this.sendHandshake(peer, false);
  }

  private sendHandshake(peer: RdmPeer, probe: boolean): void {
    const slot = this.out.alloc();
    if (slot === null) {
      peer.handshakeNeeded = true;
      this.out.waitFor(peer);
      return;
    }
    peer.handshakeNeeded = false;
    peer.handshakeSent = true;
    if (probe) {
      peer.probing = true;
      this.stats.inc('probes_sent');
    }
    this.bindSlot(slot, peer, null, encodeHandshake(slot.buf, this.features, this.connid, this.deviceVersion), 0, RdmPktType.HANDSHAKE);
    this.out.send(slot);
  }

  private watch(peer: RdmPeer): void {
    if (this.watchedPeers.has(peer)) return;
    this.watchedPeers.add(peer);
    peer.probeAt = this.clock() + this.config.probeIntervalMs;
    this.armAt(peer.probeAt);
  }

  private waitOn(r: RxOp): void {
    const peer = r.peer as RdmPeer;
    peer.waitingOps.add(r);
    this.watch(peer);
  }

  private unwatchOp(peer: RdmPeer, op: object): void {
    peer.waitingOps.delete(op);
    if (peer.waitingOps.size === 0) this.watchedPeers.delete(peer);
  }

  /**
   * A peer failed for good (its SRD sends failed, or the control plane saw it go): every
   * operation bound to it fails with the status, its partial messages are dropped.
   */
  private failPeer(peer: RdmPeer, status: number): void {
    if (peer.failedStatus === 0) this.stats.inc('peers_failed');
    const prov = provErrnoFromEfa(status, peer.handshakeReceived);
    peer.failedStatus = status;
    for (const op of [...this.txOps.values()]) if (op.peer === peer) this.failTx(op, prov);
    for (const r of [...this.rxOps.values()]) if (r.peer === peer) this.failRx(r, prov);
    for (const p of peer.partial.values()) if (p instanceof Unexpected) this.matcher.removeUnexpected(p);
    peer.partial.clear();
    peer.reorder.clear();
    peer.waitingOps.clear();
    this.watchedPeers.delete(peer);
    // Packets still queued for it go nowhere.
    this.out.dropQueued(peer);
    // A later send tries afresh (the peer may be back), handshake included.
    peer.handshakeSent = false;
    peer.probing = false;
  }

  private readonly onAsyncEvent = (ev: AsyncEvent): void => {
    if (ev.eventType !== 'PEER_DOWN' || ev.gid === undefined || this.closed) return;
    for (const peer of this.av.peers()) {
      if (peer.addr.gidText === ev.gid && (peer.waitingOps.size > 0 || this.hasOpsOn(peer))) this.failPeer(peer, EfaStatus.LOCAL_ERROR_UNREACH_REMOTE);
    }
  };

  private hasOpsOn(peer: RdmPeer): boolean {
    for (const op of this.txOps.values()) if (op.peer === peer) return true;
    return false;
  }

  // ---------------------------------------------------------------- packets out

  /** A slot freed: the oldest waiter for one goes on. */
  private serveWaiter(w: TxOp | RxOp | RdmPeer): void {
    if (w instanceof TxOp) {
      if (!w.done) this.pumpTx(w);
    } else if (w instanceof RxOp) {
      // A long-read receive completes before its EOR goes out: it still owes the EOR (the
      // sender completes on it); failRx clears what a failed receive owed.
      if (w.ctrlNeeded !== CtrlNeed.NONE && (!w.done || w.ctrlNeeded === CtrlNeed.EOR)) this.sendCtrl(w, w.ctrlNeeded);
    } else {
      if (w.handshakeNeeded) this.sendHandshake(w, w.probing);
      if (w.peerErrors.length > 0 && !w.waitingForSlot) this.sendPeerErrors(w);
    }
  }

  /** A queued packet of an operation that failed meanwhile need not go. */
  private slotStale(slot: TxSlot): boolean {
    const owner = slot.owner;
    if (!(owner instanceof TxOp) || !owner.done) return false;
    owner.slots--;
    return true;
  }

  private slotDelivered(slot: TxSlot): void {
    const peer = slot.peer as RdmPeer;
    const owner = slot.owner;
    peer.failedStatus = 0;
    if (slot.type === RdmPktType.HANDSHAKE) peer.probing = false;
    if (owner instanceof TxOp) this.txPacketDone(owner, slot);
    else if (owner instanceof RxOp) owner.slots--;
  }

  // ---------------------------------------------------------------- progress

  /**
   * Runs the endpoint: takes the device's completions, handles every packet that arrived,
   * sends what may go now and does the timed work that is due. Cheap when there is nothing.
   */
  progress(): void {
    if (this.closed || this.progressing) return;
    this.progressing = true;
    try {
      for (;;) {
        const n = this.device.pollCq(this.dcq, this.wcs.length, this.wcs);
        for (let i = 0; i < n; i++) this.onCompletion(this.wcs[i]);
        if (n < this.wcs.length) break;
      }
      const now = this.clock();
      if (now >= this.nextTimerAt) this.runTimers(now);
      this.flush();
    } finally {
      this.progressing = false;
    }
  }

  private flush(): void {
    this.out.serveWaiters();
    this.out.flush(this.clock());
  }

  private readonly onCqEvent = (): void => {
    if (this.closed) return;
    this.progress();
    this.device.reqNotifyCq(this.dcq);
    // A completion that landed between the last poll and the arming raises no event.
    this.progress();
  };

  private readonly spin = (): void => {
    if (!this.spinning || this.closed) return;
    this.progress();
    setImmediate(this.spin);
  };

  private armAt(deadline: number): void {
    if (deadline < this.nextTimerAt) {
      this.nextTimerAt = deadline;
      this.timer.arm(deadline);
    }
  }

  private runTimers(now: number): void {
    this.nextTimerAt = Infinity;
    this.out.armQueued(now);
    for (const peer of this.watchedPeers) {
      if (peer.probeAt <= now) {
        peer.probeAt = now + this.config.probeIntervalMs;
        // Heard from lately, or a probe still at the device: no need for another.
        if (!peer.probing && now - peer.lastHeardAt >= this.config.probeIntervalMs) this.sendHandshake(peer, true);
      }
      this.armAt(peer.probeAt);
    }
  }

  private onCompletion(wc: WorkCompletion): void {
    if (wc.opcode === WcOpcode.RECV) {
      this.onRecv(wc);
      return;
    }
    if (wc.wrId >= WR_READ_BASE) this.reads.complete(wc.wrId, wc.status === 0 ? EfaStatus.SUCCESS : wc.vendorErr || EfaStatus.LOCAL_ERROR_QP_INTERNAL_ERROR);
    else this.out.complete(wc);
  }

  /** A packet failed for good: RNR past the timeout fails what waited on it, anything else the peer. */
  private slotFailed(slot: TxSlot, status: number): void {
    const peer = slot.peer as RdmPeer;
    const owner = slot.owner;
    const type = slot.type;
    if (owner !== null) owner.slots--;
    if (type === RdmPktType.HANDSHAKE) peer.probing = false;
    if (status === EfaStatus.REMOTE_ERROR_RNR) {
      // RNR beyond the endpoint's patience fails what waited on that packet: its operation, or,
      // for a control packet (handshake probe, CTS, EOR), which has none, every operation that
      // waits on the peer's answers: the peer takes no packets, so no answer will come.
      // The peer is alive, only not taking packets: it is told (PEER_ERROR) once it takes them
      // again, so its side of each operation ends too instead of waiting for what will not come.
      const prov = status;
      if (owner instanceof TxOp) this.abortTx(owner, prov);
      else if (owner instanceof RxOp) this.abortRx(owner, prov);
      else {
        for (const op of [...peer.waitingOps]) {
          if (op instanceof TxOp) this.abortTx(op, prov);
          else if (op instanceof RxOp) this.abortRx(op, prov);
        }
      }
      return;
    }
    this.failPeer(peer, status);
  }

  /** Fails a send and tells the receiver to drop what arrived of its message. */
  private abortTx(op: TxOp, prov: number): void {
    if (op.done) return;
    this.failTx(op, prov);
    this.owePeerError(op.peer, op.msgId, PeerErrorRef.MSG_ID, prov);
  }

  /** Fails a receive and, for a long message, tells its sender to stop waiting for our CTS or EOR. */
  private abortRx(r: RxOp, prov: number): void {
    if (r.done) return;
    this.failRx(r, prov);
    if (r.peer !== null && (r.proto === 'longcts' || r.proto === 'longread')) this.owePeerError(r.peer, r.sendId, PeerErrorRef.OPE_INDEX, prov);
  }

  private owePeerError(peer: RdmPeer, opId: number, refKind: number, prov: number): void {
    // Only a peer that announced the feature knows the packet (the provider's rule).
    if ((peer.features & RdmFeature.PEER_ERROR) === 0) return;
    peer.peerErrors.push(opId, refKind, prov);
    this.sendPeerErrors(peer);
  }

  private sendPeerErrors(peer: RdmPeer): void {
    while (peer.peerErrors.length > 0) {
      const slot = this.out.alloc();
      if (slot === null) {
        this.out.waitFor(peer);
        return;
      }
      const [opId, refKind, prov] = peer.peerErrors.splice(0, 3);
      this.stats.inc('peer_errors_sent');
      this.bindSlot(slot, peer, null, encodePeerError(slot.buf, this.connid, opId, refKind, prov), 0, RdmPktType.PEER_ERROR);
      // The one packet that outlives the RNR patience: it is what ends the stalled peer's side
      // of a failed operation once it takes packets again.
      slot.patient = true;
      this.out.send(slot);
    }
  }

  /** A PEER_ERROR: the operation or message it names failed at the peer. */
  private onPeerError(peer: RdmPeer): void {
    const f = this.ctrl;
    this.stats.inc('peer_errors_received');
    if (f.refKind === PeerErrorRef.OPE_INDEX) {
      const op = this.txOps.get(f.opId);
      if (op !== undefined && op.peer === peer) this.failTx(op, f.provErrno);
      return;
    }
    const msgId = f.opId;
    if (peer.aborted.size >= 4096) peer.aborted.delete(peer.aborted.values().next().value as number);
    peer.aborted.add(msgId);
    for (const r of [...this.rxOps.values()]) if (r.peer === peer && r.msgId === msgId) this.failRx(r, f.provErrno);
    const partial = peer.partial.get(msgId);
    if (partial instanceof Unexpected) this.matcher.removeUnexpected(partial);
    peer.partial.delete(msgId);
    this.matcher.removeUnexpectedWhere((u) => u.peer === peer && u.msgId === msgId);
    peer.reorder.delete(msgId);
    // Ordered receives wait for this message no more.
    if (this.config.ordered && peer.nextRxMsgId === msgId) this.advanceOrdered(peer);
  }

  private onRecv(wc: WorkCompletion): void {
    const index = wc.wrId;
    if (this.closed) return;
    if (wc.status !== 0) {
      this.stats.inc('rx_errors_device');
      this.postRxSlot(index);
      return;
    }
    const base = index * this.mtu;
    const pkt = this.rxBuf.subarray(base, base + wc.byteLen);
    try {
      if (pkt.length >= 1 && pkt[0] >= 64) this.onReqPacket(wc, pkt);
      else this.onCtrlPacket(wc, pkt);
    } finally {
      this.postRxSlot(index);
    }
  }

  private readonly rxSge: Sge = { addr: 0, length: 0, lkey: 0 };
  private readonly rxWr = { wrId: 0, sgList: [this.rxSge] };

  private postRxSlot(index: number): void {
    // The device copies the request, so one object serves every repost.
    this.rxSge.addr = index * this.mtu;
    this.rxSge.length = this.mtu;
    this.rxSge.lkey = this.rxMr.lkey;
    this.rxWr.wrId = index;
    this.device.postRecv(this.qp, this.rxWr);
  }

  /** The peer a completion came from: known by AH and QPN, or (REQs before the handshake) by raw address. */
  private peerOf(wc: WorkCompletion): RdmPeer | undefined {
    if (wc.ah !== AH_UNKNOWN) return this.av.byAh(wc.ah, wc.srcQp);
    if (wc.sgid !== null) return this.av.byAddress(formatGid(wc.sgid), wc.srcQp);
    return undefined;
  }

  private onReqPacket(wc: WorkCompletion, pkt: Buffer): void {
    const f = this.req;
    if (!decodeReq(pkt, pkt.length, f)) {
      this.stats.inc('rx_drop_malformed');
      return;
    }
    let peer = this.peerOf(wc);
    // An address the application inserted changes only by its own fi_av_insert: a packet whose
    // raw address names another connection id for it (a garbled one, or a stray endpoint at a
    // reused QPN) must not replace the entry, or every later packet of the real peer would be
    // dropped as stale and the application's fi_addr would point nowhere.
    if (peer !== undefined && f.rawAddr !== null && peer.addr.connid !== f.connid && peer.fiAddr !== FI_ADDR_NOTAVAIL) {
      this.stats.inc('rx_drop_stale_connid');
      return;
    }
    if (peer === undefined || (f.rawAddr !== null && peer.addr.connid !== f.connid)) {
      if (f.rawAddr === null) {
        this.stats.inc('rx_drop_unknown_peer');
        return;
      }
      // A sender not known yet (or a new endpoint at a known QPN): learn it from its raw
      // address, and handle the packet once its AH exists.
      const addr = decodeRawAddress(f.rawAddr, f.rawAddrOff);
      if (!this.cameFrom(wc, addr)) {
        this.stats.inc('rx_drop_spoofed_addr');
        return;
      }
      const copy = Buffer.from(pkt);
      this.stats.inc('implicit_peers');
      this.av.peerFor(addr, (old) => this.failPeer(old, EfaStatus.REMOTE_ERROR_UNKNOWN_PEER)).then(
        (p) => {
          if (this.closed) return;
          this.learnt(p);
          if (decodeReq(copy, copy.length, this.req)) this.acceptReq(p, copy);
          this.flush();
        },
        () => this.stats.inc('rx_drop_unknown_peer'),
      );
      return;
    }
    if (f.rawAddr === null && f.connid !== peer.addr.connid) {
      this.stats.inc('rx_drop_stale_connid');
      return;
    }
    this.learnt(peer);
    this.acceptReq(peer, pkt);
  }

  /**
   * Whether the raw address a REQ carries is the packet's own source. Else any sender could
   * claim to be a known peer with a new connection id, and so fail that peer's operations.
   * The device names the sender by the AH our PD has for its device (matched on the GID's
   * device index, as the device matches it), or, with none, by its GID.
   */
  private cameFrom(wc: WorkCompletion, addr: RawAddress): boolean {
    if (addr.qpn !== wc.srcQp) return false;
    if (wc.ah !== AH_UNKNOWN) return this.pd.ahByDeviceIndex.get(gidDeviceIndex(addr.gid))?.ahNum === wc.ah;
    // A CQ without WITH_SGID (a device lacking it) gives no GID to check against.
    return wc.sgid === null || formatGid(wc.sgid) === addr.gidText;
  }

  /** Every packet from a peer: note it alive, and answer its first with our handshake. */
  private learnt(peer: RdmPeer): void {
    peer.lastHeardAt = this.clock();
    if (!peer.handshakeSent) this.sendHandshake(peer, false);
  }

  /** A decoded REQ (in `this.req`) from a known peer: in order when receives are ordered. */
  private acceptReq(peer: RdmPeer, pkt: Buffer): void {
    const f = this.req;
    if (peer.aborted.has(f.msgId)) {
      this.stats.inc('rx_drop_aborted');
      return;
    }
    if (f.type === RdmPktType.MEDIUM_MSGRTM || f.type === RdmPktType.MEDIUM_TAGRTM) {
      const partial = peer.partial.get(f.msgId);
      if (partial !== undefined) {
        this.addSegment(partial as RxOp | Unexpected, pkt, f.payloadOff, f.payloadLen, f.segOffset);
        return;
      }
    }
    if (!this.config.ordered) {
      this.handleReq(peer, pkt);
      return;
    }
    const expected = peer.nextRxMsgId;
    const ahead = (f.msgId - expected) | 0;
    if (ahead < 0) {
      this.stats.inc('rx_drop_already_processed');
      return;
    }
    if (ahead > 0) {
      this.stats.inc('reorder_buffered');
      const list = peer.reorder.get(f.msgId);
      if (list === undefined) peer.reorder.set(f.msgId, [Buffer.from(pkt)]);
      else list.push(Buffer.from(pkt));
      return;
    }
    this.handleReq(peer, pkt);
    this.advanceOrdered(peer);
  }

  /** The message at `nextRxMsgId` is handled (or aborted): take the ones that waited for their turn. */
  private advanceOrdered(peer: RdmPeer): void {
    peer.nextRxMsgId = (peer.nextRxMsgId + 1) >>> 0;
    for (;;) {
      if (peer.aborted.has(peer.nextRxMsgId)) {
        peer.reorder.delete(peer.nextRxMsgId);
        peer.nextRxMsgId = (peer.nextRxMsgId + 1) >>> 0;
        continue;
      }
      const list = peer.reorder.get(peer.nextRxMsgId);
      if (list === undefined) break;
      peer.reorder.delete(peer.nextRxMsgId);
      for (const b of list) {
        if (!decodeReq(b, b.length, this.req)) continue;
        const partial = peer.partial.get(this.req.msgId);
        if (partial !== undefined) this.addSegment(partial as RxOp | Unexpected, b, this.req.payloadOff, this.req.payloadLen, this.req.segOffset);
        else this.handleReq(peer, b);
      }
      peer.nextRxMsgId = (peer.nextRxMsgId + 1) >>> 0;
    }
  }

  /** A message's first REQ: match it to a posted receive, or keep it as unexpected. */
  private handleReq(peer: RdmPeer, pkt: Buffer): void {
    const f = this.req;
    const proto = rtmProtocol(f.type) as RdmProtocol;
    const tagged = (f.type & 1) === 1;
    const probe = this.probeMsg;
    probe.tagged = tagged;
    probe.tagLo = f.tagLo;
    probe.tagHi = f.tagHi;
    probe.srcAddr = peer.fiAddr;
    const hasData = (f.flags & ReqFlags.CQ_DATA_HDR) !== 0;
    const r = this.matcher.takePosted(probe);
    if (r !== null) {
      this.bindRx(r, peer, peer.fiAddr, proto, f.msgId, f.msgLength, f.tagLo, f.tagHi, hasData, f.cqDataLo, f.cqDataHi);
      r.sendId = f.sendId;
      r.readAddr = f.readAddr;
      r.readKey = f.readKey;
      if (proto === 'medium') {
        peer.partial.set(f.msgId, r);
        this.waitOn(r);
        this.addSegment(r, pkt, f.payloadOff, f.payloadLen, f.segOffset);
        return;
      }
      const copy = Math.min(f.payloadLen, Math.max(0, r.buf.length));
      if (copy > 0) pkt.copy(r.buf, 0, f.payloadOff, f.payloadOff + copy);
      r.received = f.payloadLen;
      this.continueRx(r);
      return;
    }
    // Unexpected: keep the payload (a medium message keeps its segments as they come).
    this.stats.inc('unexpected_msgs');
    const held = proto === 'medium' ? 0 : f.payloadLen;
    const u = new Unexpected(peer, proto, tagged, f.tagLo, f.tagHi, f.msgId, f.msgLength, hasData, f.cqDataLo, f.cqDataHi, f.sendId, f.readAddr, f.readKey, held);
    this.matcher.addUnexpected(u);
    if (proto === 'medium') {
      peer.partial.set(f.msgId, u);
      this.addSegment(u, pkt, f.payloadOff, f.payloadLen, f.segOffset);
    } else {
      pkt.copy(u.data, 0, f.payloadOff, f.payloadOff + f.payloadLen);
      u.received = f.payloadLen;
    }
  }

  private readonly probeMsg = { tagged: false, tagLo: 0, tagHi: 0, srcAddr: FI_ADDR_NOTAVAIL };

  /** A medium segment for a receive or an unexpected message. */
  private addSegment(target: RxOp | Unexpected, pkt: Buffer, off: number, len: number, segOffset: number): void {
    if (target instanceof RxOp) {
      const end = Math.min(target.buf.length, segOffset + len);
      if (end > segOffset) pkt.copy(target.buf, segOffset, off, off + (end - segOffset));
    } else {
      target.segments.push({ offset: segOffset, bytes: Buffer.from(pkt.subarray(off, off + len)) });
    }
    target.received += len;
    if (target instanceof RxOp && target.received >= target.msgLen) {
      target.peer?.partial.delete(target.msgId);
      this.finishRx(target);
    } else if (target instanceof Unexpected && target.received >= target.msgLen) {
      target.peer.partial.delete(target.msgId);
    }
  }

  private onCtrlPacket(wc: WorkCompletion, pkt: Buffer): void {
    const f = this.ctrl;
    if (!decodeCtrl(pkt, pkt.length, f)) {
      this.stats.inc('rx_drop_malformed');
      return;
    }
    const peer = this.peerOf(wc);
    if (peer === undefined) {
      if (f.type === RdmPktType.HANDSHAKE && (f.flags & PKT_CONNID_HDR) !== 0) this.learnFromHandshake(wc, pkt);
      else this.stats.inc('rx_drop_unknown_peer');
      return;
    }
    if ((f.flags & PKT_CONNID_HDR) !== 0 && f.connid !== peer.addr.connid) {
      this.stats.inc('rx_drop_stale_connid');
      return;
    }
    this.learnt(peer);
    switch (f.type) {
      case RdmPktType.HANDSHAKE:
        this.onHandshake(peer);
        return;
      case RdmPktType.CTS: {
        const op = this.txOps.get(f.sendId);
        if (op === undefined || op.peer !== peer || op.proto !== 'longcts') {
          this.stats.inc('rx_drop_stale_cts');
          return;
        }
        op.recvId = f.recvId;
        op.granted = Math.min(op.len, op.granted + f.recvLength);
        this.pumpTx(op);
        return;
      }
      case RdmPktType.CTSDATA: {
        const r = this.rxOps.get(f.recvId);
        if (r === undefined || r.peer !== peer || r.proto !== 'longcts' || f.segOffset + f.segLength > r.msgLen) {
          this.stats.inc('rx_drop_stale_data');
          return;
        }
        const end = Math.min(r.buf.length, f.segOffset + f.segLength);
        if (end > f.segOffset) pkt.copy(r.buf, f.segOffset, f.payloadOff, f.payloadOff + (end - f.segOffset));
        r.received += f.segLength;
        if (r.received >= r.msgLen) this.finishRx(r);
        else if (r.received >= r.granted) this.sendCtrl(r, CtrlNeed.CTS);
        return;
      }
      case RdmPktType.PEER_ERROR:
        this.onPeerError(peer);
        return;
      case RdmPktType.EOR: {
        const op = this.txOps.get(f.sendId);
        if (op === undefined || op.peer !== peer || op.proto !== 'longread') {
          this.stats.inc('rx_drop_stale_eor');
          return;
        }
        op.eorReceived = true;
        if (op.rtmDone) this.finishTx(op);
        return;
      }
    }
  }

  /**
   * A handshake from an endpoint not known yet (it wants ours before its first message): its
   * GID and QPN come from the completion, its connection id from the handshake.
   */
  private learnFromHandshake(wc: WorkCompletion, pkt: Buffer): void {
    const gid = wc.ah !== AH_UNKNOWN ? this.av.gidOfAh(wc.ah) : wc.sgid;
    if (gid === null || gid === undefined) {
      this.stats.inc('rx_drop_unknown_peer');
      return;
    }
    const addr = { gid: Uint8Array.from(gid), gidText: formatGid(gid), qpn: wc.srcQp, connid: this.ctrl.connid };
    const copy = Buffer.from(pkt);
    this.stats.inc('implicit_peers');
    this.av.peerFor(addr, (old) => this.failPeer(old, EfaStatus.REMOTE_ERROR_UNKNOWN_PEER)).then(
      (peer) => {
        if (this.closed || !decodeCtrl(copy, copy.length, this.ctrl)) return;
        this.learnt(peer);
        this.onHandshake(peer);
        this.flush();
      },
      () => this.stats.inc('rx_drop_unknown_peer'),
    );
  }

  private onHandshake(peer: RdmPeer): void {
    const f = this.ctrl;
    this.stats.inc('handshakes_received');
    const first = !peer.handshakeReceived;
    peer.handshakeReceived = true;
    peer.features = f.features;
    if (!first) return;
    for (const op of [...peer.waitingOps]) {
      if (op instanceof TxOp && op.awaitingHandshake && !op.done) {
        peer.waitingOps.delete(op);
        this.startTx(op);
      }
    }
    if (peer.waitingOps.size === 0) this.watchedPeers.delete(peer);
  }

  private releaseMr(mr: MemoryRegion | null): void {
    if (mr !== null && !this.closed) void this.device.deregMr(mr).catch(() => {});
  }

  // ---------------------------------------------------------------- lifecycle

  /** Counters: per protocol, RNR, handshakes, probes, drops (see RdmStats). */
  statsSnapshot(): Record<string, number> {
    return this.stats.snapshot({ tx_ops_outstanding: this.txOps.size, rx_posted: this.matcher.postedCount, unexpected_queued: this.matcher.unexpectedCount });
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError('the RDM endpoint is closed');
  }

  /** Closes the endpoint (`fi_close`): outstanding operations are dropped without completions. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.spinning = false;
    this.timer.cancel();
    this.device.off('async_event', this.onAsyncEvent);
    this.dcq.channel?.off('cq', this.onCqEvent);
    const dev = this.device;
    const ignore = (): void => {};
    await dev.destroyQp(this.qp).catch(ignore);
    for (const op of this.txOps.values()) if (op.mr !== null) await dev.deregMr(op.mr).catch(ignore);
    for (const r of this.rxOps.values()) if (r.mr !== null) await dev.deregMr(r.mr).catch(ignore);
    await dev.deregMr(this.txMr).catch(ignore);
    await dev.deregMr(this.rxMr).catch(ignore);
    for (const peer of this.av.peers()) if (peer.ah !== null) await dev.destroyAh(peer.ah).catch(ignore);
    await dev.destroyCq(this.dcq).catch(ignore);
    if (this.dcq.channel !== null) dev.destroyCompChannel(this.dcq.channel);
    await dev.deallocPd(this.pd).catch(ignore);
  }
}

/** The default timer: one real timeout at the earliest deadline asked for. */
function realTimer(ep: RdmEndpoint, clock: () => number): RdmTimer {
  let handle: NodeJS.Timeout | null = null;
  let at = Infinity;
  return {
    arm(deadline: number): void {
      if (handle !== null && at <= deadline) return;
      if (handle !== null) clearTimeout(handle);
      at = deadline;
      handle = setTimeout(() => {
        handle = null;
        at = Infinity;
        ep.progress();
      }, Math.max(0, deadline - clock()));
    },
    cancel(): void {
      if (handle !== null) clearTimeout(handle);
      handle = null;
    },
  };
}
