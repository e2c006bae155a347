import { EventEmitter } from 'node:events';
import { ClosedError, InvalidArgumentError, ResourceBusyError, ResourceExhaustedError } from '../common/errors';
import { nextIncarnation } from '../common/incarnation';
import { copyBytes } from '../common/copy-bytes';
import { formatGid, gidDeviceIndex, gidFabricId, parseGid, type Gid } from '../common/gid';
import { silentLogger, type Logger } from '../common/logger';
import { finishUdPacket, UD_PAYLOAD_OFFSET, udQkeyMatches, writeGrh } from '../ud/ud-packet';
import { SrdEngine, SRD_PAYLOAD_OFFSET } from '../srd/srd-engine';
import type { SrdConfig } from '../srd/srd-config';
import type { SrdHost } from '../srd/srd-host';
import type { SendOp } from '../srd/send-op';
import { decodeHeader, DecodeError, FLAG_HAS_IMM, PacketHeader, PacketType } from '../wire/header';
import { AddressHandle } from './address-handle';
import { AdminFailure, AdminOpcode, AdminQueue, AdminStatus } from './admin';
import { resolveAttributes, type DeviceAttributes } from './attributes';
import { CompletionChannel } from './completion-channel';
import { CompletionQueue } from './completion-queue';
import {
  AccessFlags,
  ALL_ACCESS_FLAGS,
  AH_UNKNOWN,
  GRH_LENGTH,
  QP_STATE_NAMES,
  QpState,
  QpType,
  DEFAULT_RNR_RETRY,
  SendFlags,
  WcFlags,
  WcOpcode,
  WrOpcode,
} from './constants';
// Imported from its home, not through constants' re-export, which compiles to a getter call
// on every use in the hot path.
import { EfaStatus } from '../common/efa-status';
import { wcStatusFromEfa } from '../common/wc-status';
import { DeviceStats } from './device-stats';
import { MemoryRegion } from './memory-region';
import { Peer, type Endpoint } from './peer';
import { ProtectionDomain } from './protection-domain';
import { checkTransition, type QpAttr } from './qp-state-machine';
import { QpnAllocator } from './qpn-allocator';
import { QueuePair, type QpCap } from './queue-pair';
import type { RecvWr, SendWr, Sge } from './work-requests';
import type { WorkCompletion } from './work-completion';

/** Sends datagrams for the device; the io layer implements it over a UDP socket. */
export interface PacketTransport {
  /**
   * Sends the first `len` bytes of `buf`. Without `onSent` the transport owns `buf` from here
   * on. With it, the caller keeps `buf` and the transport calls `onSent` exactly once, when it
   * no longer reads it (at once, or when a queued socket send completed); until then the
   * caller neither changes nor reuses it.
   */
  sendPacket(buf: Buffer, len: number, host: string, port: number, onSent?: (() => void) | null): void;
  /** Counters of the transport (the fault injector's drops), merged into the device's. */
  stats?: () => Record<string, number>;
}

/** Schedules `Device.onTimer`; the io layer implements it with one real timer. */
export interface DeviceTimer {
  /** Asks for `onTimer` to run at `deadline` (ms on the device clock) or earlier. */
  arm(deadline: number): void;
}

/** What the control plane says about a GID. */
export interface ResolvedGid {
  name: string;
  gid: string;
  ahn: number;
  endpoint: Endpoint;
  up: boolean;
  /** The device's incarnation, when the control plane knows it (0 or absent: unknown). */
  incarnation?: number;
}

/**
 * Resolves a GID (IPv6 text) through the control plane; rejects (or throws) when it is
 * unknown. An in-memory control plane may answer synchronously.
 */
export type GidResolver = (gid: string) => Promise<ResolvedGid> | ResolvedGid;

export interface DeviceOptions {
  /** The device name (as `ibv_get_device_name`), e.g. `efa0`. */
  name: string;
  /** The GID the control plane leased to this device. */
  gid: Gid;
  rank?: number | null;
  attributes?: Partial<DeviceAttributes>;
  transport: PacketTransport;
  resolver: GidResolver;
  logger?: Logger;
  /** Milliseconds on a monotonic clock; injected so tests drive time by hand. */
  clock?: () => number;
  /** How long a destroyed QP's number stays unused (default 10 s). */
  qpnQuarantineMs?: number;
  /** Releases what the layers above attached (socket, daemon registration); run by `close()`. */
  onClose?: () => Promise<void>;
  /** Runs the device's timers (SRD retransmission, acks); without one, call `onTimer` yourself. */
  timer?: DeviceTimer;
  /** SRD tunables (window, RTO bounds, unresponsive timeout, ...). */
  srd?: Partial<SrdConfig>;
  /**
   * This device's incarnation (uint32, serial order): a restart of the same device (same GID)
   * must get a larger one, so its peers tell new packets from late ones of the old process.
   * Default: a millisecond wall-clock stamp, strictly increasing within this process.
   */
  incarnation?: number;
}

/** Options of `createCq`, as `ibv_create_cq`. */
export interface CqInit {
  /** Completions the CQ holds (1..maxCqe). */
  cqe: number;
  channel?: CompletionChannel | null;
}

/** Options of `createQp`, as `ibv_qp_init_attr` (EFA: `efadv_create_driver_qp` for SRD). */
export interface QpInit {
  qpType: QpType;
  sendCq: CompletionQueue;
  recvCq: CompletionQueue;
  cap: Partial<QpCap> & { maxSendWr: number; maxRecvWr: number };
  /** EFA completes every send; false is rejected. */
  sqSigAll?: boolean;
}

/** What `queryQp` reports, as `ibv_query_qp`. */
export interface QpInfo {
  qpNum: number;
  qpType: QpType;
  qpState: QpState;
  qkey: number;
  sqPsn: number;
  rnrRetry: number;
  cap: QpCap;
  pkeyIndex: number;
  portNum: number;
}

/** Asynchronous events of a device, as `ibv_get_async_event`. */
export interface AsyncEvent {
  eventType: 'CQ_ERR' | 'QP_FATAL' | 'PEER_DOWN' | 'PEER_UP';
  cq?: CompletionQueue;
  qp?: QueuePair;
  gid?: string;
}

/** How long a failed confirmation of a peer waits before it is tried again. */
const VERIFY_RETRY_MS = 1000;

/** Strangers (GIDs first seen in packets) waiting for confirmation; more are dropped. */
const MAX_UNVERIFIED_PEERS = 256;

/** UD datagrams held per stranger, and for all strangers together, until it is confirmed. */
const MAX_HELD_PER_PEER = 8;
const MAX_HELD_TOTAL = 256;

/** SRD packet buffers kept for reuse (a window's worth for a few peers). */
const TX_POOL_MAX = 1024;

/** MR indices fit in the 24 bits above an lkey's key byte. */
const MR_INDEX_LIMIT = 1 << 24;

const ACCEPTS_RECEIVES = [false, false, true, true, true, true, false]; // by QpState
const ACCEPTS_SENDS = [false, false, false, true, true, false, false];

/**
 * An emulated EFA device: the verbs context (`ibv_context`) with its objects, their rules,
 * its counters and the admin-command layer. It owns no socket and no clock: the io layer
 * gives it a PacketTransport and feeds it datagrams through `handleDatagram`, which keeps it
 * testable by hand.
 *
 * Control calls are async; `postSend`, `postRecv` and `pollCq` are synchronous as on
 * hardware. Work-request failures are completion statuses, never exceptions; exceptions from
 * post calls mean the request itself was malformed or did not fit (errno-style codes).
 */
export class Device extends EventEmitter {
  readonly name: string;
  readonly gid: Gid;
  readonly gidText: string;
  readonly rank: number | null;
  readonly attributes: DeviceAttributes;
  readonly stats = new DeviceStats();
  readonly admin = new AdminQueue();
  readonly logger: Logger;
  closed = false;

  private readonly transport: PacketTransport;
  private readonly resolver: GidResolver;
  private readonly clock: () => number;
  private readonly fabricId: number;
  /** This device's index (GID low 32 bits): a datagram claiming it comes from an impostor. */
  private readonly ownIndex: number;
  private readonly pds = new Set<ProtectionDomain>();
  private readonly cqs = new Set<CompletionQueue>();
  private readonly channels = new Set<CompletionChannel>();
  private readonly qps: Array<QueuePair | undefined> = [];
  private qpCount = 0;
  private readonly mrs = new Map<number, MemoryRegion>();
  private readonly peersByIndex = new Map<number, Peer>();
  /** Peers first seen through their own packets and not yet confirmed by the control plane. */
  private unverifiedPeers = 0;
  /** UD datagrams held for strangers, all of them together. */
  private heldDatagrams = 0;
  /** Strangers the control plane did not confirm, oldest first: the first to go when room is needed. */
  private readonly unconfirmed = new Set<Peer>();
  private ahCount = 0;
  private readonly qpnAllocator: QpnAllocator;
  private nextPdn = 1;
  private nextCqHandle = 1;
  private nextMrIndex = 1;
  private mrKeyByte = 0;
  private readonly freeMrIndices: number[] = [];
  private freeMrHead = 0;
  private readonly rxHeader = new PacketHeader();
  private readonly onClose: (() => Promise<void>) | null;
  private readonly timer: DeviceTimer | null;
  /** This device's incarnation (see DeviceOptions.incarnation). */
  readonly incarnation: number;
  /** The SRD transport shared by every SRD QP of the device. */
  readonly srd: SrdEngine;
  private closing: Promise<void> | null = null;
  private readonly grhScratch = Buffer.alloc(GRH_LENGTH);
  /**
   * SRD packet buffers of full MTU size, reused once their message completed and the socket
   * let go of them: an 8 KiB allocation per message is beyond Node's buffer pool and costs a
   * fresh ArrayBuffer and GC.
   */
  private readonly txPool: Buffer[] = [];
  private readonly txPoolBytes: number;

  constructor(opts: DeviceOptions) {
    super();
    if (typeof opts.name !== 'string' || opts.name.length === 0) throw new InvalidArgumentError('name: a device needs a name');
    this.name = opts.name;
    this.gid = parseGid(opts.gid, 'gid');
    this.gidText = formatGid(this.gid);
    this.fabricId = gidFabricId(this.gid);
    this.ownIndex = gidDeviceIndex(this.gid);
    this.rank = opts.rank ?? null;
    this.attributes = resolveAttributes(opts.attributes);
    this.transport = opts.transport;
    this.resolver = opts.resolver;
    this.clock = opts.clock ?? defaultClock;
    this.logger = (opts.logger ?? silentLogger()).child({ device: this.name, gid: this.gidText, rank: this.rank });
    this.qpnAllocator = new QpnAllocator(this.clock, opts.qpnQuarantineMs ?? 10_000);
    this.onClose = opts.onClose ?? null;
    this.timer = opts.timer ?? null;
    this.txPoolBytes = SRD_PAYLOAD_OFFSET + this.attributes.mtu;
    this.incarnation = (opts.incarnation ?? nextIncarnation()) >>> 0;
    const srdHost: SrdHost = {
      transmit: (buf, len, host, port, onSent) => this.transmitTo(buf, len, host, port, onSent),
      deliver: (buf, hdr, off, len) => this.deliverSrd(buf, hdr, off, len),
      completeSend: (op, status) => this.completeSrdSend(op, status),
      releaseBuffer: (buf) => {
        if (buf.length === this.txPoolBytes && this.txPool.length < TX_POOL_MAX) this.txPool.push(buf);
      },
    };
    this.srd = new SrdEngine({
      host: srdHost,
      counters: this.stats,
      localGid: this.gid,
      incarnation: this.incarnation,
      config: opts.srd,
    });
  }

  // ---------------------------------------------------------------- queries

  /** Device attributes, as `ibv_query_device` + `efadv_query_device` (GET_FEATURE). */
  queryDevice(): Promise<DeviceAttributes> {
    return this.admin.execute(AdminOpcode.GET_FEATURE, () => ({ ...this.attributes }));
  }

  /** A snapshot of the device's counters (GET_STATS). */
  queryStats(): Promise<Record<string, number>> {
    return this.admin.execute(AdminOpcode.GET_STATS, () => this.statsSnapshot());
  }

  /** The counters of the device and its transport, now (what GET_STATS and heartbeats report). */
  statsSnapshot(): Record<string, number> {
    const own = this.stats.toJSON();
    return this.transport.stats === undefined ? own : { ...own, ...this.transport.stats() };
  }

  /** The name of the known peer at an endpoint, if any (fault partitions may name devices). */
  peerNameAt(host: string, port: number): string | undefined {
    for (const peer of this.peersByIndex.values()) if (peer.port === port && peer.host === host) return peer.name;
    return undefined;
  }

  // ---------------------------------------------------------------- PD

  /** Allocates a protection domain, as `ibv_alloc_pd` (ALLOC_PD). */
  allocPd(): Promise<ProtectionDomain> {
    return this.admin.execute(AdminOpcode.ALLOC_PD, () => {
      this.checkOpen();
      if (this.pds.size >= this.attributes.maxPd) {
        throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, `the device has its maximum of ${this.attributes.maxPd} PDs`);
      }
      const pd = new ProtectionDomain(this.nextPdn++);
      this.pds.add(pd);
      return pd;
    });
  }

  /** Frees a PD, as `ibv_dealloc_pd` (DEALLOC_PD). Fails with EBUSY while objects use it. */
  deallocPd(pd: ProtectionDomain): Promise<void> {
    return this.admin.execute(AdminOpcode.DEALLOC_PD, () => {
      this.checkPd(pd, 'pd');
      if (pd.users > 0) throw new AdminFailure(AdminStatus.RESOURCE_BUSY, `PD ${pd.pdn} still has ${pd.users} MR/QP/AH objects`);
      pd.destroyed = true;
      this.pds.delete(pd);
    });
  }

  // ---------------------------------------------------------------- MR

  /**
   * Registers `buffer` (all of it, or `[offset, offset+length)`) for work requests of `pd`,
   * as `ibv_reg_mr` (REG_MR). SGE addresses are offsets from the region's start.
   */
  regMr(pd: ProtectionDomain, buffer: Uint8Array, access: number = AccessFlags.LOCAL_WRITE): Promise<MemoryRegion> {
    return this.admin.execute(AdminOpcode.REG_MR, () => {
      this.checkPd(pd, 'pd');
      if (!(buffer instanceof Uint8Array)) throw new AdminFailure(AdminStatus.MALFORMED_REQUEST, 'buffer must be a Buffer or Uint8Array');
      if (buffer.length === 0) throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, 'cannot register an empty buffer');
      if (buffer.length > this.attributes.maxMrSize) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `buffer of ${buffer.length} bytes exceeds maxMrSize ${this.attributes.maxMrSize}`);
      }
      if (!Number.isInteger(access) || (access & ~ALL_ACCESS_FLAGS) !== 0) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `access flags 0x${Number(access).toString(16)} name unknown bits`);
      }
      if ((access & AccessFlags.REMOTE_WRITE) !== 0 && (access & AccessFlags.LOCAL_WRITE) === 0) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, 'REMOTE_WRITE requires LOCAL_WRITE');
      }
      if (this.mrs.size >= this.attributes.maxMr) {
        throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, `the device has its maximum of ${this.attributes.maxMr} MRs`);
      }
      const lkey = this.nextLkey();
      const view = Buffer.isBuffer(buffer) ? buffer : Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength);
      const mr = new MemoryRegion(pd, lkey, lkey, view, access);
      this.mrs.set(lkey, mr);
      pd.users++;
      return mr;
    });
  }

  /**
   * lkey = index << 8 | key byte, index < 2^24. The key byte changes on every registration and
   * freed indices are reused oldest first, so a stale lkey of a deregistered MR does not
   * silently name a new one; a live lkey is never handed out twice.
   */
  private nextLkey(): number {
    let index: number;
    if (this.nextMrIndex < MR_INDEX_LIMIT) index = this.nextMrIndex++;
    else if (this.freeMrIndices.length > this.freeMrHead) index = this.freeMrIndices[this.freeMrHead++];
    else throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, 'every MR key is in use');
    if (this.freeMrHead > 4096 && this.freeMrHead * 2 > this.freeMrIndices.length) {
      this.freeMrIndices.splice(0, this.freeMrHead);
      this.freeMrHead = 0;
    }
    for (;;) {
      this.mrKeyByte = (this.mrKeyByte + 1) & 0xff;
      const lkey = ((index << 8) | this.mrKeyByte) >>> 0;
      if (!this.mrs.has(lkey)) return lkey;
    }
  }

  /** Deregisters an MR, as `ibv_dereg_mr` (DEREG_MR). */
  deregMr(mr: MemoryRegion): Promise<void> {
    return this.admin.execute(AdminOpcode.DEREG_MR, () => {
      if (!(mr instanceof MemoryRegion) || this.mrs.get(mr.lkey) !== mr) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, 'not a registered MR of this device');
      }
      mr.valid = false;
      this.mrs.delete(mr.lkey);
      this.freeMrIndices.push(mr.lkey >>> 8);
      mr.pd.users--;
    });
  }

  // ---------------------------------------------------------------- CQ

  /** Creates a completion channel, as `ibv_create_comp_channel`. */
  createCompChannel(): CompletionChannel {
    this.checkOpen();
    const ch = new CompletionChannel();
    this.channels.add(ch);
    return ch;
  }

  /** Destroys a completion channel; fails with EBUSY while a CQ uses it. */
  destroyCompChannel(channel: CompletionChannel): void {
    for (const cq of this.cqs) {
      if (cq.channel === channel) throw new ResourceBusyError('destroyCompChannel: a CQ still uses this channel');
    }
    channel.closed = true;
    this.channels.delete(channel);
  }

  /** Creates a CQ, as `ibv_create_cq` (CREATE_CQ). */
  createCq(init: CqInit): Promise<CompletionQueue> {
    return this.admin.execute(AdminOpcode.CREATE_CQ, () => {
      this.checkOpen();
      const cqe = init?.cqe;
      if (!Number.isInteger(cqe) || cqe < 1 || cqe > this.attributes.maxCqe) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `cqe must be 1..${this.attributes.maxCqe}, got ${String(cqe)}`);
      }
      const channel = init.channel ?? null;
      if (channel !== null && !this.channels.has(channel)) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, 'channel is not a completion channel of this device');
      }
      if (this.cqs.size >= this.attributes.maxCq) {
        throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, `the device has its maximum of ${this.attributes.maxCq} CQs`);
      }
      const cq = new CompletionQueue(this.nextCqHandle++, cqe, channel, this.onCqOverrun);
      this.cqs.add(cq);
      return cq;
    });
  }

  /** Destroys a CQ, as `ibv_destroy_cq` (DESTROY_CQ); EBUSY while a QP reports to it. */
  destroyCq(cq: CompletionQueue): Promise<void> {
    return this.admin.execute(AdminOpcode.DESTROY_CQ, () => {
      if (!this.cqs.has(cq)) throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, 'not a CQ of this device');
      if (cq.users > 0) throw new AdminFailure(AdminStatus.RESOURCE_BUSY, `CQ ${cq.handle} is still used by ${cq.users} QP(s)`);
      cq.destroyed = true;
      this.cqs.delete(cq);
    });
  }

  private readonly onCqOverrun = (cq: CompletionQueue): void => {
    this.stats.cq_overruns++;
    this.logger.error({ cq: cq.handle, cqe: cq.cqe }, 'CQ overrun: completions arrived faster than they were polled');
    this.emitAsync({ eventType: 'CQ_ERR', cq });
  };

  /**
   * Polls up to `numEntries` completions into `wc` (whose objects are reused), as
   * `ibv_poll_cq`; returns how many. Throws CqOverrunError (code ECQOVERRUN) once the CQ
   * overflowed.
   */
  pollCq(cq: CompletionQueue, numEntries: number, wc: WorkCompletion[]): number {
    return cq.poll(numEntries, wc);
  }

  /**
   * Arms `cq` so that its next completion raises one event on its channel, as
   * `ibv_req_notify_cq`. Poll after arming: completions already queued raise no event.
   */
  reqNotifyCq(cq: CompletionQueue, solicitedOnly = false): void {
    if (cq.channel === null) throw new InvalidArgumentError('reqNotifyCq: the CQ was created without a completion channel');
    if (solicitedOnly) {
      // Every EFA completion is reported; "solicited only" arms the same way.
    }
    cq.arm();
  }

  // ---------------------------------------------------------------- QP

  /** Creates a QP of type UD or SRD in `pd`, as `ibv_create_qp` / `efadv_create_driver_qp` (CREATE_QP). */
  createQp(pd: ProtectionDomain, init: QpInit): Promise<QueuePair> {
    return this.admin.execute(AdminOpcode.CREATE_QP, () => {
      this.checkPd(pd, 'pd');
      if (init === null || typeof init !== 'object') throw new AdminFailure(AdminStatus.MALFORMED_REQUEST, 'QP init attributes are missing');
      if (init.qpType !== QpType.UD && init.qpType !== QpType.SRD) {
        throw new AdminFailure(AdminStatus.UNSUPPORTED_OPCODE, `qpType ${String(init.qpType)} is not supported (UD or SRD)`);
      }
      for (const [key, cq] of [['sendCq', init.sendCq], ['recvCq', init.recvCq]] as const) {
        if (!(cq instanceof CompletionQueue) || !this.cqs.has(cq)) {
          throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `${key} is not a CQ of this device`);
        }
      }
      if (init.sqSigAll === false) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, 'sqSigAll=false: EFA completes every send, unsignaled sends are not supported');
      }
      const cap = this.checkCap(init.cap);
      if (this.qpCount >= this.attributes.maxQp) {
        throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, `the device has its maximum of ${this.attributes.maxQp} QPs`);
      }
      const qpn = this.qpnAllocator.allocate();
      if (qpn < 0) throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, 'every QP number is in use or quarantined');
      const qp = new QueuePair(qpn, init.qpType, pd, init.sendCq, init.recvCq, cap, true);
      this.qps[qpn] = qp;
      this.qpCount++;
      pd.users++;
      init.sendCq.users++;
      init.recvCq.users++;
      return qp;
    });
  }

  private checkCap(cap: QpInit['cap']): QpCap {
    const a = this.attributes;
    const out: QpCap = {
      maxSendWr: cap?.maxSendWr,
      maxRecvWr: cap?.maxRecvWr,
      maxSendSge: cap?.maxSendSge ?? 1,
      maxRecvSge: cap?.maxRecvSge ?? 1,
      maxInlineData: cap?.maxInlineData ?? 0,
    };
    const limits: Array<[keyof QpCap, number, number]> = [
      ['maxSendWr', 1, a.maxSqWr],
      ['maxRecvWr', 1, a.maxRqWr],
      ['maxSendSge', 1, a.maxSqSge],
      ['maxRecvSge', 1, a.maxRqSge],
      ['maxInlineData', 0, a.maxInlineData],
    ];
    for (const [key, min, max] of limits) {
      const v = out[key];
      if (!Number.isInteger(v) || v < min || v > max) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `cap.${key} must be ${min}..${max}, got ${String(v)}`);
      }
    }
    return out;
  }

  /**
   * Changes a QP's state and attributes, as `ibv_modify_qp` (MODIFY_QP). The attributes
   * present are the mask. Invalid transitions fail with EINVAL; a privileged Q_Key with EPERM.
   */
  modifyQp(qp: QueuePair, attr: QpAttr): Promise<void> {
    return this.admin.execute(AdminOpcode.MODIFY_QP, () => {
      this.checkQp(qp);
      if (attr === null || typeof attr !== 'object') throw new AdminFailure(AdminStatus.MALFORMED_REQUEST, 'QP attributes are missing');
      const problem = checkTransition(qp.qpType, qp.state, attr);
      if (problem !== null) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `QP ${qp.qpNum}: ${problem.detail}`, problem.kind === 'privileged' ? 'EPERM' : undefined);
      }
      if (attr.qkey !== undefined) qp.qkey = attr.qkey >>> 0;
      if (attr.sqPsn !== undefined) qp.sqPsn = attr.sqPsn;
      if (attr.rnrRetry !== undefined) qp.rnrRetry = attr.rnrRetry;
      const target = attr.qpState;
      if (target === undefined || target === qp.state) return;
      const from = qp.state;
      qp.state = target;
      if (target === QpState.ERR) this.flushQp(qp);
      else if (target === QpState.RESET) this.resetQp(qp);
      this.logger.debug({ qpn: qp.qpNum, from: QP_STATE_NAMES[from], to: QP_STATE_NAMES[target] }, 'QP state changed');
    });
  }

  /** A QP's attributes, as `ibv_query_qp` (QUERY_QP). */
  queryQp(qp: QueuePair): Promise<QpInfo> {
    return this.admin.execute(AdminOpcode.QUERY_QP, () => {
      this.checkQp(qp);
      return {
        qpNum: qp.qpNum,
        qpType: qp.qpType,
        qpState: qp.state,
        qkey: qp.qkey,
        sqPsn: qp.sqPsn,
        rnrRetry: qp.rnrRetry,
        cap: { ...qp.cap },
        pkeyIndex: 0,
        portNum: 1,
      };
    });
  }

  /** Destroys a QP, as `ibv_destroy_qp` (DESTROY_QP). Its number is quarantined. */
  destroyQp(qp: QueuePair): Promise<void> {
    return this.admin.execute(AdminOpcode.DESTROY_QP, () => {
      this.checkQp(qp);
      this.destroyQpNow(qp);
    });
  }

  private destroyQpNow(qp: QueuePair): void {
    qp.destroyed = true;
    // Its sends are abandoned without completions (the QP is gone); the receivers learn to
    // forget them through the window start.
    if (qp.qpType === QpType.SRD) this.srd.abandonOwner(this.clock(), qp, EfaStatus.FLUSHED);
    qp.state = QpState.RESET;
    qp.rq.clear();
    qp.sendCq.detachOwner(qp);
    qp.recvCq.detachOwner(qp);
    this.qps[qp.qpNum] = undefined;
    this.qpCount--;
    this.qpnAllocator.release(qp.qpNum);
    qp.pd.users--;
    qp.sendCq.users--;
    qp.recvCq.users--;
  }

  /** Moving to ERR completes every posted receive and outstanding send with FLUSHED. */
  private flushQp(qp: QueuePair): void {
    if (qp.qpType === QpType.SRD) {
      this.srd.abandonOwner(this.clock(), qp, EfaStatus.FLUSHED);
      this.kickTimer();
    }
    const rq = qp.rq;
    while (rq.count > 0) {
      const slot = rq.head;
      const wc = qp.recvCq.push(qp);
      if (wc !== null) {
        wc.wrId = rq.wrId[slot];
        wc.status = wcStatusFromEfa(EfaStatus.FLUSHED);
        wc.vendorErr = EfaStatus.FLUSHED;
        wc.opcode = WcOpcode.RECV;
        wc.qpNum = qp.qpNum;
      }
      rq.advance();
    }
  }

  /** Moving to RESET discards posted work requests without completions, as verbs do. */
  private resetQp(qp: QueuePair): void {
    qp.rq.clear();
    qp.qkey = 0;
    qp.sqPsn = 0;
    qp.rnrRetry = DEFAULT_RNR_RETRY;
  }

  // ---------------------------------------------------------------- AH

  /**
   * Creates an AH for a remote GID in `pd`, as `ibv_create_ah` (CREATE_AH). A GID this device
   * has not seen, or whose device went down, is resolved through the control plane. One AH
   * per (PD, GID): asking again returns the same AH, reference-counted.
   */
  createAh(pd: ProtectionDomain, attr: { gid: string | Uint8Array }): Promise<AddressHandle> {
    return this.admin.executeAsync(AdminOpcode.CREATE_AH, async () => {
      this.checkPd(pd, 'pd');
      let gid: Gid;
      try {
        gid = parseGid(attr?.gid, 'gid');
      } catch (err) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, (err as Error).message);
      }
      const gidText = formatGid(gid);
      const index = gidDeviceIndex(gid);
      if (gidFabricId(gid) !== this.fabricId) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `GID ${gidText} belongs to another fabric than this device (${this.gidText})`);
      }
      let peer = this.peersByIndex.get(index);
      if (peer === undefined || !peer.up || !peer.verified || peer.ahn === AH_UNKNOWN) peer = this.learnPeer(gid, gidText, await this.resolver(gidText));
      this.checkPd(pd, 'pd');
      const existing = pd.ahByDeviceIndex.get(index);
      if (existing !== undefined) {
        existing.refCount++;
        return existing;
      }
      if (this.ahCount >= this.attributes.maxAh) {
        throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, `the device has its maximum of ${this.attributes.maxAh} AHs`);
      }
      const ah = new AddressHandle(pd, peer.ahn, peer);
      pd.ahByDeviceIndex.set(index, ah);
      pd.users++;
      this.ahCount++;
      return ah;
    });
  }

  /** Releases one reference of an AH, as `ibv_destroy_ah` (DESTROY_AH); the last one frees it. */
  destroyAh(ah: AddressHandle): Promise<void> {
    return this.admin.execute(AdminOpcode.DESTROY_AH, () => {
      if (!(ah instanceof AddressHandle) || ah.destroyed || ah.pd.ahByDeviceIndex.get(ah.peer.deviceIndex) !== ah) {
        throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, 'not a live AH of this device');
      }
      if (--ah.refCount > 0) return;
      ah.destroyed = true;
      ah.pd.ahByDeviceIndex.delete(ah.peer.deviceIndex);
      ah.pd.users--;
      this.ahCount--;
    });
  }

  private learnPeer(gid: Gid, gidText: string, res: ResolvedGid): Peer {
    const index = gidDeviceIndex(gid);
    let peer = this.peersByIndex.get(index);
    if (peer === undefined) {
      peer = new Peer(gid, gidText, index, res.endpoint.host, res.endpoint.port, res.ahn, res.name);
      this.peersByIndex.set(index, peer);
    } else {
      this.confirmEndpoint(peer, res.endpoint);
      peer.ahn = res.ahn;
      peer.name = res.name;
    }
    peer.incarnation = res.incarnation ?? 0;
    peer.up = res.up;
    return peer;
  }

  /**
   * The control plane says where `peer` is. A stranger becomes a confirmed peer; the UD
   * datagrams held for it are delivered if they came from that endpoint, else dropped.
   */
  private confirmEndpoint(peer: Peer, endpoint: Endpoint): void {
    const same = peer.host === endpoint.host && peer.port === endpoint.port;
    peer.host = endpoint.host;
    peer.port = endpoint.port;
    if (peer.verified) return;
    peer.verified = true;
    this.unverifiedPeers--;
    this.releaseHeld(peer, same);
  }

  private releaseHeld(peer: Peer, deliver: boolean): void {
    const held = peer.held;
    if (held.length === 0) return;
    peer.held = [];
    this.heldDatagrams -= held.length;
    for (const h of held) {
      if (deliver && !this.closed) this.receiveUd(h.buf, h.hdr);
      else this.stats.drop('rx_drop_unverified');
    }
  }

  /**
   * The peer a datagram comes from, when it comes from the endpoint the fabric knows for the
   * GID it claims, so a stranger cannot inject messages or hijack a peer's SRD session. A GID
   * not seen before gets a record bound to its endpoint and is checked with the control plane
   * (a server hears from its clients before it has AHs for them); until the check succeeds,
   * the caller delivers nothing from it. Memory for such strangers is bounded.
   */
  private sourcePeer(buf: Buffer, gidOff: number, fromHost: string, fromPort: number): Peer | null {
    const index = gidDeviceIndex(buf, gidOff);
    const peer = this.peersByIndex.get(index);
    if (peer === undefined) {
      if (this.unverifiedPeers >= MAX_UNVERIFIED_PEERS) this.evictUnconfirmed();
      if (this.unverifiedPeers >= MAX_UNVERIFIED_PEERS || index === this.ownIndex) {
        this.stats.drop('rx_drop_unknown_endpoint');
        return null;
      }
      const gid = Uint8Array.prototype.slice.call(buf, gidOff, gidOff + 16) as Uint8Array;
      const stranger = new Peer(gid, formatGid(gid), index, fromHost, fromPort, AH_UNKNOWN, '');
      stranger.verified = false;
      this.unverifiedPeers++;
      this.peersByIndex.set(index, stranger);
      this.verifyPeer(stranger);
      return stranger;
    }
    if (peer.port === fromPort && peer.host === fromHost) {
      if (!peer.verified) this.verifyPeer(peer);
      return peer;
    }
    this.stats.drop('rx_drop_unknown_endpoint');
    // The peer may have restarted at a new endpoint: ask again (at most one lookup at a time).
    this.verifyPeer(peer);
    return null;
  }

  /**
   * Forgets the oldest stranger the control plane did not confirm, once its retry time came:
   * a flood of made-up GIDs cannot lock out a real newcomer, nor make us ask the daemon more
   * than once per VERIFY_RETRY_MS for each GID we keep.
   */
  private evictUnconfirmed(): void {
    const now = this.clock();
    for (const peer of this.unconfirmed) {
      if (peer.nextVerifyAt > now) return;
      this.unconfirmed.delete(peer);
      if (peer.verified || peer.verifying || this.peersByIndex.get(peer.deviceIndex) !== peer) continue;
      this.peersByIndex.delete(peer.deviceIndex);
      this.unverifiedPeers--;
      return;
    }
  }

  /**
   * A datagram from a stranger not confirmed yet: UD is held (a few) while the control plane
   * is being asked, SRD dropped (it is resent).
   */
  private holdOrDrop(peer: Peer, buf: Buffer, hdr: PacketHeader): void {
    if (hdr.type !== PacketType.UD_SEND || !peer.verifying || peer.held.length >= MAX_HELD_PER_PEER || this.heldDatagrams >= MAX_HELD_TOTAL) {
      this.stats.drop('rx_drop_unverified');
      return;
    }
    const copy = new PacketHeader();
    Object.assign(copy, hdr);
    peer.held.push({ buf, hdr: copy });
    this.heldDatagrams++;
    this.stats.rx_held_unverified++;
  }

  private verifyPeer(peer: Peer): void {
    if (peer.verifying || this.closed) return;
    const now = this.clock();
    if (now < peer.nextVerifyAt) return;
    peer.nextVerifyAt = now + VERIFY_RETRY_MS;
    peer.verifying = true;
    const confirmed = (res: ResolvedGid): void => {
      peer.verifying = false;
      this.unconfirmed.delete(peer);
      if (this.closed) return;
      this.learnPeer(peer.gid, peer.gidText, res);
    };
    const failed = (): void => {
      // Not confirmed (the daemon is down, or does not know the GID yet: it learns devices
      // as they re-register after a restart). The stranger stays bound to the endpoint it
      // first came from and is asked about again later; what it sent meanwhile is not
      // delivered. Its SRD receive state is kept: forgetting it could deliver a
      // retransmission twice.
      peer.verifying = false;
      if (!peer.verified) {
        this.unconfirmed.delete(peer);
        this.unconfirmed.add(peer);
      }
      this.releaseHeld(peer, false);
    };
    let answer: Promise<ResolvedGid> | ResolvedGid;
    try {
      answer = this.resolver(peer.gidText);
    } catch {
      failed();
      return;
    }
    if (answer instanceof Promise) answer.then(confirmed, failed);
    else confirmed(answer);
  }

  /** The control plane reports a device down: remembered until it comes back. */
  notifyPeerDown(gidText: string): void {
    const peer = this.peersByIndex.get(gidDeviceIndex(parseGid(gidText)));
    if (peer !== undefined) peer.up = false;
    this.emitAsync({ eventType: 'PEER_DOWN', gid: gidText });
  }

  /**
   * The control plane reports a device (back) up, possibly restarted at a new endpoint. The
   * control plane is the authority on endpoints, so a device of this fabric not known yet is
   * learnt now: its first packets are then accepted without a lookup.
   */
  notifyPeerUp(gidText: string, endpoint: Endpoint, incarnation = 0, name = ''): void {
    this.learnEndpoint(gidText, endpoint, incarnation, name);
    this.emitAsync({ eventType: 'PEER_UP', gid: gidText });
  }

  /**
   * Records where the control plane says a device of this fabric is (its registration, a
   * restart at a new endpoint, or the device list read at open), so that its first packets
   * are accepted without a lookup.
   */
  learnEndpoint(gidText: string, endpoint: Endpoint, incarnation = 0, name = ''): void {
    const gid = parseGid(gidText);
    const index = gidDeviceIndex(gid);
    let peer = this.peersByIndex.get(index);
    if (peer === undefined && gidFabricId(gid) === this.fabricId && index !== this.ownIndex) {
      peer = new Peer(gid, formatGid(gid), index, endpoint.host, endpoint.port, AH_UNKNOWN, name);
      this.peersByIndex.set(index, peer);
    }
    if (peer !== undefined) {
      this.confirmEndpoint(peer, endpoint);
      peer.up = true;
      if (name !== '') peer.name = name;
      if (incarnation !== 0) peer.incarnation = incarnation;
    }
  }

  // ---------------------------------------------------------------- data path

  /**
   * Posts a send, as `ibv_post_send`. Throws (EINVAL, ENOMEM) when the request is malformed
   * or the send queue is full; any other failure is an error completion on the send CQ.
   */
  postSend(qp: QueuePair, wr: SendWr): void {
    if (qp.destroyed || this.closed) throw new InvalidArgumentError('postSend: the QP is destroyed');
    if (!ACCEPTS_SENDS[qp.state]) throw new InvalidArgumentError(`postSend: QP ${qp.qpNum} is in ${QP_STATE_NAMES[qp.state]}, sends need RTS or SQD`);
    const opcode = wr.opcode ?? WrOpcode.SEND;
    if (opcode !== WrOpcode.SEND && opcode !== WrOpcode.SEND_WITH_IMM) {
      throw new InvalidArgumentError(`postSend: opcode ${opcode} is not supported on a ${qp.qpType} QP (SEND, SEND_WITH_IMM)`);
    }
    const sgl = wr.sgList;
    const numSge = sgl === undefined ? 0 : sgl.length;
    if (numSge > qp.cap.maxSendSge) throw new InvalidArgumentError(`postSend: ${numSge} SGEs, the QP takes at most ${qp.cap.maxSendSge}`);
    const flags = wr.sendFlags ?? 0;
    const inline = (flags & SendFlags.INLINE) !== 0;
    let total = 0;
    for (let i = 0; i < numSge; i++) {
      const len = (sgl as readonly Sge[])[i].length;
      if (!Number.isInteger(len) || len < 0) throw new InvalidArgumentError(`postSend: sgList[${i}].length must be a non-negative integer`);
      total += len;
    }
    if (inline && total > qp.cap.maxInlineData) {
      throw new InvalidArgumentError(`postSend: ${total} inline bytes, the QP takes at most ${qp.cap.maxInlineData}`);
    }
    if (qp.sqOutstanding >= qp.cap.maxSendWr) {
      throw new ResourceExhaustedError(`postSend: the send queue of QP ${qp.qpNum} is full (${qp.cap.maxSendWr} outstanding)`);
    }
    const imm = opcode === WrOpcode.SEND_WITH_IMM ? (wr.immData ?? 0) >>> 0 : undefined;
    qp.sqOutstanding++;
    this.stats.send_wrs++;

    const ah = wr.ah;
    if (!(ah instanceof AddressHandle) || ah.destroyed || ah.pd !== qp.pd) {
      this.completeSend(qp, wr.wrId, EfaStatus.LOCAL_ERROR_INVALID_AH, 0);
      return;
    }
    if (total > this.attributes.maxMsgSize) {
      this.completeSend(qp, wr.wrId, EfaStatus.LOCAL_ERROR_BAD_LENGTH, 0);
      return;
    }
    const remoteQpn = wr.remoteQpn;
    if (!Number.isInteger(remoteQpn) || remoteQpn < 0 || remoteQpn > 0xffff) {
      this.completeSend(qp, wr.wrId, EfaStatus.REMOTE_ERROR_BAD_DEST_QPN, 0);
      return;
    }
    const srd = qp.qpType === QpType.SRD;
    const off = srd ? SRD_PAYLOAD_OFFSET : UD_PAYLOAD_OFFSET;
    // UD buffers are not pooled: a UD send completes at once, while the socket may still hold it.
    const buf = srd ? (this.txPool.pop() ?? Buffer.allocUnsafeSlow(this.txPoolBytes)) : Buffer.allocUnsafe(off + total);
    if (!this.gather(qp, sgl, numSge, buf, off)) {
      if (srd) this.txPool.push(buf);
      this.completeSend(qp, wr.wrId, EfaStatus.LOCAL_ERROR_INVALID_LKEY, 0);
      return;
    }
    this.stats.send_bytes += total;
    if (srd) {
      // Completes when the receiver acknowledges the data in its buffer, or with an error.
      this.srd.postSend(this.clock(), ah.peer, qp, wr.wrId, buf, total, qp.qpNum, remoteQpn, wr.remoteQkey >>> 0, imm, qp.rnrRetry);
      this.kickTimer();
      return;
    }
    const len = finishUdPacket(buf, total, qp.qpNum, remoteQpn, wr.remoteQkey >>> 0, imm, this.gid);
    this.transmitTo(buf, len, ah.peer.host, ah.peer.port, null);
    this.completeSend(qp, wr.wrId, EfaStatus.SUCCESS, total);
  }

  /**
   * Copies the bytes an SGE list names into `out` at `off`. Returns false when an SGE names
   * an unknown or deregistered MR, an MR of another PD, or bytes outside its MR.
   */
  private gather(qp: QueuePair, sgl: readonly Sge[] | undefined, n: number, out: Buffer, off: number): boolean {
    for (let i = 0; i < n; i++) {
      const sge = (sgl as readonly Sge[])[i];
      const mr = this.mrs.get(sge.lkey);
      // SGE addresses are MR offsets here, so even inline data (copied at post time, as
      // verbs do) is read through an MR of the QP's PD.
      if (mr === undefined || mr.pd !== qp.pd) return false;
      const addr = sge.addr;
      const len = sge.length;
      if (!Number.isInteger(addr) || addr < 0 || addr + len > mr.buffer.length) return false;
      copyBytes(mr.buffer as Buffer, addr, out, off, len);
      off += len;
    }
    return true;
  }

  private transmitTo(buf: Buffer, len: number, host: string, port: number, onSent: (() => void) | null): void {
    this.stats.tx_pkts++;
    this.stats.tx_bytes += len;
    this.transport.sendPacket(buf, len, host, port, onSent);
  }

  private completeSrdSend(op: SendOp, status: number): void {
    const qp = op.owner as QueuePair;
    if (qp.destroyed) return;
    this.completeSend(qp, op.wrId, status as EfaStatus, status === EfaStatus.SUCCESS ? op.byteLen : 0);
  }

  /**
   * Places an SRD message in the destination QP's oldest posted receive. Returns the status
   * the sender will report: SUCCESS, REMOTE_ERROR_RNR (no receive posted: it retries), or a
   * final error.
   */
  private deliverSrd(buf: Buffer, hdr: PacketHeader, payloadOff: number, payloadLen: number): number {
    const qp = this.qps[hdr.dstQpn];
    if (qp === undefined || qp.qpType !== QpType.SRD) {
      this.stats.drop('rx_drop_unknown_qpn');
      return EfaStatus.REMOTE_ERROR_BAD_DEST_QPN;
    }
    if (qp.state === QpState.RESET || qp.state === QpState.INIT) {
      // Not ready yet: the sender retries, as it would for a missing receive.
      this.stats.drop('rx_drop_qp_state');
      return EfaStatus.REMOTE_ERROR_RNR;
    }
    if (!ACCEPTS_RECEIVES[qp.state]) {
      this.stats.drop('rx_drop_qp_state');
      return EfaStatus.REMOTE_ERROR_BAD_DEST_QPN;
    }
    if (hdr.qkey !== qp.qkey) {
      this.stats.drop('rx_drop_qkey_mismatch');
      return EfaStatus.REMOTE_ERROR_BAD_DEST_QPN;
    }
    if (qp.rq.count === 0) {
      this.stats.drop('rx_drop_no_recv_wr');
      return EfaStatus.REMOTE_ERROR_RNR;
    }
    const status = this.deliver(qp, buf, hdr, payloadOff, payloadLen, false);
    if (status === EfaStatus.SUCCESS) return EfaStatus.SUCCESS;
    if (status === EfaStatus.LOCAL_ERROR_BAD_LENGTH) return EfaStatus.REMOTE_ERROR_BAD_LENGTH;
    return EfaStatus.REMOTE_ERROR_BAD_ADDRESS;
  }

  /** Runs the device's due timers (SRD acks and retransmissions); the io layer's timer calls it. */
  onTimer(): void {
    if (this.closed) return;
    this.srd.onTimer(this.clock());
    this.kickTimer();
  }

  private kickTimer(): void {
    if (this.timer === null) return;
    const d = this.srd.nextDeadline();
    if (d !== Infinity) this.timer.arm(d);
  }

  private completeSend(qp: QueuePair, wrId: number, status: EfaStatus, byteLen: number): void {
    const wc = qp.sendCq.push(qp);
    if (wc === null) return;
    wc.wrId = wrId;
    wc.status = wcStatusFromEfa(status);
    wc.vendorErr = status;
    wc.opcode = WcOpcode.SEND;
    wc.byteLen = byteLen;
    wc.qpNum = qp.qpNum;
  }

  /**
   * Posts a receive, as `ibv_post_recv`. Throws when the QP is in RESET or ERR, the request
   * is malformed, or the receive queue is full (ENOMEM).
   */
  postRecv(qp: QueuePair, wr: RecvWr): void {
    if (qp.destroyed || this.closed) throw new InvalidArgumentError('postRecv: the QP is destroyed');
    if (qp.state === QpState.RESET || qp.state === QpState.ERR) {
      throw new InvalidArgumentError(`postRecv: QP ${qp.qpNum} is in ${QP_STATE_NAMES[qp.state]}`);
    }
    const sgl = wr.sgList;
    const n = sgl === undefined ? 0 : sgl.length;
    if (n > qp.cap.maxRecvSge) throw new InvalidArgumentError(`postRecv: ${n} SGEs, the QP takes at most ${qp.cap.maxRecvSge}`);
    const rq = qp.rq;
    if (rq.count >= rq.depth) throw new ResourceExhaustedError(`postRecv: the receive queue of QP ${qp.qpNum} is full (${rq.depth} posted)`);
    const slot = rq.tailSlot();
    const base = slot * rq.maxSge;
    for (let i = 0; i < n; i++) {
      const sge = sgl[i];
      if (!Number.isInteger(sge.length) || sge.length < 0) throw new InvalidArgumentError(`postRecv: sgList[${i}].length must be a non-negative integer`);
      rq.sgeMr[base + i] = this.mrs.get(sge.lkey) ?? null;
      rq.sgeLkey[base + i] = sge.lkey >>> 0;
      rq.sgeAddr[base + i] = sge.addr;
      rq.sgeLen[base + i] = sge.length;
    }
    rq.wrId[slot] = wr.wrId;
    rq.sgeCount[slot] = n;
    rq.count++;
    this.stats.recv_wrs++;
  }

  /**
   * Feeds one received datagram to the device. Never throws: a packet that is malformed,
   * corrupted, foreign or unwanted is dropped and counted by cause.
   */
  handleDatagram(buf: Buffer, fromHost: string, fromPort: number): void {
    if (this.closed) return;
    this.stats.rx_pkts++;
    this.stats.rx_bytes += buf.length;
    const hdr = this.rxHeader;
    const err = decodeHeader(buf, buf.length, hdr);
    if (err !== DecodeError.OK) {
      if (err === DecodeError.BAD_CHECKSUM) this.stats.drop('rx_drop_bad_checksum');
      else if (err === DecodeError.BAD_MAGIC || err === DecodeError.BAD_VERSION) this.stats.drop('rx_drop_bad_version');
      else this.stats.drop('rx_drop_bad_header');
      return;
    }
    if (gidFabricId(buf, hdr.srcGidOffset) !== this.fabricId) {
      this.stats.drop('rx_drop_foreign_fabric');
      return;
    }
    const peer = this.sourcePeer(buf, hdr.srcGidOffset, fromHost, fromPort);
    if (peer === null) return;
    if (!peer.verified) {
      this.holdOrDrop(peer, buf, hdr);
      return;
    }
    if (peer.port !== fromPort || peer.host !== fromHost) {
      // Just confirmed, at another endpoint than this datagram came from.
      this.stats.drop('rx_drop_unknown_endpoint');
      return;
    }
    if (hdr.type === PacketType.UD_SEND) {
      this.receiveUd(buf, hdr);
      return;
    }
    this.srd.onPacket(this.clock(), buf, hdr, peer);
    this.kickTimer();
  }

  private receiveUd(buf: Buffer, hdr: PacketHeader): void {
    const qp = this.qps[hdr.dstQpn];
    if (qp === undefined) {
      this.stats.drop('rx_drop_unknown_qpn');
      return;
    }
    if (qp.qpType !== QpType.UD || !ACCEPTS_RECEIVES[qp.state]) {
      this.stats.drop('rx_drop_qp_state');
      return;
    }
    if (!udQkeyMatches(hdr.qkey, qp.qkey)) {
      this.stats.drop('rx_drop_qkey_mismatch');
      return;
    }
    if (qp.rq.count === 0) {
      this.stats.drop('rx_drop_no_recv_wr');
      return;
    }
    writeGrh(this.grhScratch, hdr.payloadLen, buf, hdr.srcGidOffset, this.gid);
    this.deliver(qp, buf, hdr, hdr.hdrLen, hdr.payloadLen, true);
  }

  /**
   * Scatters a message into the QP's oldest posted receive and completes it. With `grh`, the
   * 40-byte GRH goes first (UD). Returns the completion status.
   */
  private deliver(qp: QueuePair, buf: Buffer, hdr: PacketHeader, payloadOff: number, payloadLen: number, grh: boolean): EfaStatus {
    const rq = qp.rq;
    const slot = rq.head;
    const base = slot * rq.maxSge;
    const n = rq.sgeCount[slot];
    const needed = payloadLen + (grh ? GRH_LENGTH : 0);
    let status: EfaStatus = EfaStatus.SUCCESS;
    let capacity = 0;
    for (let i = 0; i < n; i++) {
      const mr = rq.sgeMr[base + i];
      const addr = rq.sgeAddr[base + i];
      const len = rq.sgeLen[base + i];
      if (
        mr === null ||
        !mr.valid ||
        mr.pd !== qp.pd ||
        mr.lkey !== rq.sgeLkey[base + i] ||
        (mr.access & AccessFlags.LOCAL_WRITE) === 0 ||
        !Number.isInteger(addr) ||
        addr < 0 ||
        addr + len > mr.buffer.length
      ) {
        status = EfaStatus.LOCAL_ERROR_INVALID_LKEY;
        break;
      }
      capacity += len;
    }
    if (status === EfaStatus.SUCCESS && capacity < needed) status = EfaStatus.LOCAL_ERROR_BAD_LENGTH;
    if (status === EfaStatus.SUCCESS) {
      // Two sources, GRH then payload, scattered across up to maxRecvSge entries.
      let srcBuf: Buffer = grh ? this.grhScratch : buf;
      let srcOff = grh ? 0 : payloadOff;
      let srcLeft = grh ? GRH_LENGTH : payloadLen;
      let onPayload = !grh;
      for (let i = 0; i < n && (srcLeft > 0 || !onPayload); i++) {
        const mr = rq.sgeMr[base + i] as MemoryRegion;
        let dst = rq.sgeAddr[base + i];
        let room = rq.sgeLen[base + i];
        while (room > 0) {
          if (srcLeft === 0) {
            if (onPayload) break;
            onPayload = true;
            srcBuf = buf;
            srcOff = payloadOff;
            srcLeft = payloadLen;
            if (srcLeft === 0) break;
          }
          const k = srcLeft < room ? srcLeft : room;
          copyBytes(srcBuf, srcOff, mr.buffer as Buffer, dst, k);
          dst += k;
          room -= k;
          srcOff += k;
          srcLeft -= k;
        }
      }
      this.stats.recv_bytes += payloadLen;
    }
    const wc = qp.recvCq.push(qp);
    if (wc !== null) {
      wc.wrId = rq.wrId[slot];
      wc.status = wcStatusFromEfa(status);
      wc.vendorErr = status;
      wc.opcode = WcOpcode.RECV;
      wc.qpNum = qp.qpNum;
      wc.srcQp = hdr.srcQpn;
      wc.byteLen = status === EfaStatus.SUCCESS ? needed : 0;
      let flags = grh ? WcFlags.GRH : 0;
      if ((hdr.flags & FLAG_HAS_IMM) !== 0) {
        flags |= WcFlags.WITH_IMM;
        wc.immData = hdr.imm;
      }
      wc.wcFlags = flags;
      const ah = qp.pd.ahByDeviceIndex.get(gidDeviceIndex(buf, hdr.srcGidOffset));
      if (ah !== undefined) {
        wc.ah = ah.ahNum;
      } else {
        wc.ah = AH_UNKNOWN;
        wc.sgid = Uint8Array.prototype.slice.call(buf, hdr.srcGidOffset, hdr.srcGidOffset + 16);
      }
    }
    rq.advance();
    return status;
  }

  // ---------------------------------------------------------------- lifetime

  /**
   * Destroys every object of the device (QPs first, so their numbers are quarantined) and
   * stops accepting packets. Idempotent. The io and control layers close the socket and the
   * daemon registration around it.
   */
  destroyAll(): void {
    if (this.closed) return;
    this.closed = true;
    for (const qp of this.qps) if (qp !== undefined) this.destroyQpNow(qp);
    for (const mr of this.mrs.values()) mr.valid = false;
    this.mrs.clear();
    for (const cq of this.cqs) cq.destroyed = true;
    this.cqs.clear();
    for (const ch of this.channels) ch.closed = true;
    this.channels.clear();
    for (const pd of this.pds) pd.destroyed = true;
    this.pds.clear();
  }

  /**
   * Closes the device, as `ibv_close_device`: destroys every object, then releases the
   * socket and the daemon registration. Idempotent: every call returns the same promise.
   */
  close(): Promise<void> {
    if (this.closing === null) {
      try {
        this.destroyAll();
      } finally {
        this.closing = this.onClose === null ? Promise.resolve() : this.onClose();
      }
    }
    return this.closing;
  }

  private emitAsync(ev: AsyncEvent): void {
    queueMicrotask(() => this.emit('async_event', ev));
  }

  private checkOpen(): void {
    if (this.closed) throw new ClosedError(`device ${this.name} is closed`);
  }

  private checkPd(pd: ProtectionDomain, what: string): void {
    this.checkOpen();
    if (!(pd instanceof ProtectionDomain) || !this.pds.has(pd)) {
      throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `${what} is not a live PD of this device`);
    }
  }

  private checkQp(qp: QueuePair): void {
    this.checkOpen();
    if (!(qp instanceof QueuePair) || qp.destroyed || this.qps[qp.qpNum] !== qp) {
      throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, 'not a live QP of this device');
    }
  }
}

function defaultClock(): number {
  return performance.now();
}
