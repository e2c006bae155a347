import { EventEmitter } from 'node:events';
import { ClosedError, InvalidArgumentError, NotSupportedError, ResourceBusyError, ResourceExhaustedError } from '../common/errors';
import { nextIncarnation } from '../common/incarnation';
import { copyBytes } from '../common/copy-bytes';
import { PacketPool, type PooledBuffer } from '../common/packet-pool';
import { formatGid, gidDeviceIndex, gidFabricId, parseGid, type Gid } from '../common/gid';
import { silentLogger, type Logger } from '../common/logger';
import { finishUdPacket, UD_PAYLOAD_OFFSET, udQkeyMatches, writeGrh } from '../ud/ud-packet';
import { SrdEngine, SRD_PAYLOAD_OFFSET, RDMA_PAYLOAD_OFFSET } from '../srd/srd-engine';
import type { SrdConfig } from '../srd/srd-config';
import type { SrdHost } from '../srd/srd-host';
import type { SendOp } from '../srd/send-op';
import type { SrdPeer } from '../srd/srd-channel';
import { decodeHeader, DecodeError, FLAG_HAS_IMM, PacketHeader, PacketType } from '../wire/header';
import { AddressHandle } from './address-handle';
import { AdminFailure, AdminOpcode, AdminQueue, AdminStatus } from './admin';
import { resolveAttributes, type DeviceAttributes } from './attributes';
import { DEFAULT_GENERATION, EfadvDeviceCaps } from './generations';
import { RDMA_READ_WC_OPCODE, RdmaUnit, type LocalSgl } from './rdma';
import { WrSession } from './wr-session';
import { deviceAttributesEx, efadvAttributes, portAttributes, type DeviceAttributesEx, type EfadvDeviceAttributes, type PortAttributes } from './queries';
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
  EfadvQpFlags,
  EfadvWcFlags,
  EFADV_QP_DRIVER_TYPE_SRD,
  QpSendOps,
  PORT_NUM,
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
  /** The EFA generation to emulate (`efa0` .. `efa3`, or `0xefa0` ..); default the newest. */
  generation?: string;
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
  /** Completions the CQ holds (1..maxCqe), rounded up to a power of two as EFA's provider does. */
  cqe: number;
  channel?: CompletionChannel | null;
  /** `efadv_cq_init_attr`: EfadvWcFlags (WITH_SGID, WITH_IS_UNSOLICITED), as `efadv_create_cq`. */
  efadv?: { wcFlags?: number };
}

/** Options of `createQp`, as `ibv_qp_init_attr` (EFA: `efadv_create_driver_qp` for SRD). */
export interface QpInit {
  qpType: QpType;
  sendCq: CompletionQueue;
  recvCq: CompletionQueue;
  cap: Partial<QpCap> & { maxSendWr: number; maxRecvWr: number };
  /**
   * Every send completes (default true). With false, each send must carry SendFlags.SIGNALED:
   * EFA has no unsignaled sends, and refuses one with EINVAL at post time.
   */
  sqSigAll?: boolean;
  /**
   * The operations the `wr*` API may post (`ibv_qp_init_attr_ex.send_ops_flags`, QpSendOps
   * bits). Default: all the QP type and the device support; naming one they do not is EOPNOTSUPP.
   */
  sendOpsFlags?: number;
  /** `efadv_qp_init_attr`: the driver QP type (SRD) and EfadvQpFlags. */
  efadv?: { driverQpType?: number; flags?: number };
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

/** Local SGEs of an RDMA work request (EFA's `max_sge_rd`: one buffer per RDMA descriptor). */
const MAX_RDMA_SGE = 1;


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
  /** RDMA read and write over SRD. */
  readonly rdma: RdmaUnit;
  private closing: Promise<void> | null = null;
  private readonly grhScratch = Buffer.alloc(GRH_LENGTH);
  /**
   * SRD packet buffers of full MTU size, reused once their message completed and the socket
   * let go of them: an 8 KiB allocation per message is beyond Node's buffer pool and costs a
   * fresh ArrayBuffer and GC.
   */
  private readonly txPool: Buffer[] = [];
  /** UD send buffers: a UD send completes at once, so each goes back when the socket lets go of it. */
  private readonly udPool: PacketPool;
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
    this.attributes = resolveAttributes(opts.attributes, opts.generation ?? DEFAULT_GENERATION);
    this.transport = opts.transport;
    this.resolver = opts.resolver;
    this.clock = opts.clock ?? defaultClock;
    this.logger = (opts.logger ?? silentLogger()).child({ device: this.name, gid: this.gidText, rank: this.rank });
    this.qpnAllocator = new QpnAllocator(this.clock, opts.qpnQuarantineMs ?? 10_000);
    this.onClose = opts.onClose ?? null;
    this.timer = opts.timer ?? null;
    // Room for the RDMA extension too, so one pool serves sends and RDMA segments.
    this.txPoolBytes = RDMA_PAYLOAD_OFFSET + this.attributes.mtu;
    this.udPool = new PacketPool(UD_PAYLOAD_OFFSET + this.attributes.mtu, TX_POOL_MAX);
    this.incarnation = (opts.incarnation ?? nextIncarnation()) >>> 0;
    const srdHost: SrdHost = {
      transmit: (buf, len, host, port, onSent) => this.transmitTo(buf, len, host, port, onSent),
      deliver: (buf, hdr, off, len, peer) => this.deliverSrd(buf, hdr, off, len, peer),
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
    const cfg = this.srd.config;
    this.rdma = new RdmaUnit({
      srd: this.srd,
      stats: this.stats,
      mtu: this.attributes.mtu,
      // Longer than the target takes to give up sending (its own unresponsive timeout).
      readTimeoutMs: 2 * cfg.unresponsiveTimeoutMs + 4 * cfg.maxRtoMs,
      clock: this.clock,
      takeTxBuffer: () => this.txPool.pop() ?? Buffer.allocUnsafeSlow(this.txPoolBytes),
      completeSend: (qp, wrId, status, byteLen, opcode) => this.completeSend(qp, wrId, status as EfaStatus, byteLen, opcode),
      mrByKey: (key) => this.mrs.get(key),
    });
  }

  // ---------------------------------------------------------------- queries

  /** Device attributes, as `ibv_query_device` + `efadv_query_device` (GET_FEATURE). */
  queryDevice(): Promise<DeviceAttributes> {
    return this.admin.execute(AdminOpcode.GET_FEATURE, () => ({ ...this.attributes }));
  }

  /** `ibv_query_device_ex`: the attributes and the extended fields EFA reports. */
  queryDeviceEx(): Promise<DeviceAttributesEx> {
    return this.admin.execute(AdminOpcode.GET_FEATURE, () => deviceAttributesEx(this.attributes));
  }

  /** `efadv_query_device`: queue limits, inline size, capability bits and the largest RDMA. */
  efadvQueryDevice(): Promise<EfadvDeviceAttributes> {
    return this.admin.execute(AdminOpcode.GET_FEATURE, () => efadvAttributes(this.attributes));
  }

  /** `ibv_query_port`: the device's one port (1); any other is EINVAL. */
  queryPort(portNum: number): Promise<PortAttributes> {
    return this.admin.execute(AdminOpcode.GET_FEATURE, () => {
      if (portNum !== PORT_NUM) throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `port ${String(portNum)}: the device has port ${PORT_NUM} only`);
      return portAttributes(this.attributes);
    });
  }

  /** `ibv_query_gid`: index 0 of port 1 is the device's GID (16 bytes); anything else EINVAL. */
  queryGid(portNum: number, index: number): Uint8Array {
    if (portNum !== PORT_NUM || index !== 0) throw new InvalidArgumentError(`queryGid: port ${String(portNum)} index ${String(index)}: the device has one GID, at port ${PORT_NUM} index 0`);
    return Uint8Array.prototype.slice.call(this.gid) as Uint8Array;
  }

  /** `ibv_query_pkey`: index 0 is the default P_Key 0xffff; anything else EINVAL. */
  queryPkey(portNum: number, index: number): number {
    if (portNum !== PORT_NUM || index !== 0) throw new InvalidArgumentError(`queryPkey: port ${String(portNum)} index ${String(index)}: the device has one P_Key, at port ${PORT_NUM} index 0`);
    return 0xffff;
  }

  /** A snapshot of the device's counters (GET_STATS). */
  queryStats(): Promise<Record<string, number>> {
    return this.admin.execute(AdminOpcode.GET_STATS, () => this.statsSnapshot());
  }

  /** The counters of the device and its transport, now (what GET_STATS and heartbeats report). */
  statsSnapshot(): Record<string, number> {
    const own = this.stats.toJSON();
    this.srd.pathStats(own);
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
      // As the kernel driver: remote access the device cannot serve is refused, not ignored.
      const caps = this.attributes.deviceCaps;
      const supported = AccessFlags.LOCAL_WRITE | ((caps & EfadvDeviceCaps.RDMA_READ) !== 0 ? AccessFlags.REMOTE_READ : 0) | ((caps & EfadvDeviceCaps.RDMA_WRITE) !== 0 ? AccessFlags.REMOTE_WRITE : 0);
      if ((access & ~supported) !== 0) {
        throw new AdminFailure(
          AdminStatus.UNSUPPORTED_OPCODE,
          `access flags 0x${access.toString(16)} include remote access this device (${this.attributes.generation}) does not support (supported 0x${supported.toString(16)})`,
          'EOPNOTSUPP',
        );
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
      const dvFlags = init.efadv?.wcFlags ?? 0;
      if (!Number.isInteger(dvFlags) || (dvFlags & ~(EfadvWcFlags.WITH_SGID | EfadvWcFlags.WITH_IS_UNSOLICITED)) !== 0) {
        throw new AdminFailure(AdminStatus.UNSUPPORTED_OPCODE, `efadv.wcFlags 0x${Number(dvFlags).toString(16)} name unknown bits`, 'EOPNOTSUPP');
      }
      const caps = this.attributes.deviceCaps;
      if ((dvFlags & EfadvWcFlags.WITH_SGID) !== 0 && (caps & EfadvDeviceCaps.CQ_WITH_SGID) === 0) {
        throw new AdminFailure(AdminStatus.UNSUPPORTED_OPCODE, `efadv.wcFlags WITH_SGID: the device (${this.attributes.generation}) lacks CQ_WITH_SGID`, 'EOPNOTSUPP');
      }
      if ((dvFlags & EfadvWcFlags.WITH_IS_UNSOLICITED) !== 0 && (caps & EfadvDeviceCaps.UNSOLICITED_WRITE_RECV) === 0) {
        throw new AdminFailure(AdminStatus.UNSUPPORTED_OPCODE, `efadv.wcFlags WITH_IS_UNSOLICITED: the device (${this.attributes.generation}) lacks UNSOLICITED_WRITE_RECV`, 'EOPNOTSUPP');
      }
      // The provider rounds the depth up to a power of two and reports what it got.
      const cq = new CompletionQueue(this.nextCqHandle++, roundUpPow2(cqe), channel, this.onCqOverrun, dvFlags);
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
      const srd = init.qpType === QpType.SRD;
      const caps = this.attributes.deviceCaps;
      const dv = init.efadv ?? {};
      if (dv.driverQpType !== undefined && (!srd || dv.driverQpType !== EFADV_QP_DRIVER_TYPE_SRD)) {
        throw new AdminFailure(AdminStatus.UNSUPPORTED_OPCODE, `efadv.driverQpType ${String(dv.driverQpType)}: only SRD (${EFADV_QP_DRIVER_TYPE_SRD}) driver QPs exist`, 'EOPNOTSUPP');
      }
      const qpFlags = dv.flags ?? 0;
      if (!Number.isInteger(qpFlags) || (qpFlags & ~EfadvQpFlags.UNSOLICITED_WRITE_RECV) !== 0) {
        throw new AdminFailure(AdminStatus.UNSUPPORTED_OPCODE, `efadv.flags 0x${Number(qpFlags).toString(16)} name unknown bits`, 'EOPNOTSUPP');
      }
      if ((qpFlags & EfadvQpFlags.UNSOLICITED_WRITE_RECV) !== 0 && (!srd || (caps & EfadvDeviceCaps.UNSOLICITED_WRITE_RECV) === 0)) {
        throw new AdminFailure(AdminStatus.UNSUPPORTED_OPCODE, `efadv.flags UNSOLICITED_WRITE_RECV: not supported by this ${init.qpType} QP on ${this.attributes.generation}`, 'EOPNOTSUPP');
      }
      const sendOps = init.sendOpsFlags ?? this.defaultSendOps(srd);
      const allowedOps = this.defaultSendOps(srd);
      if (!Number.isInteger(sendOps) || (sendOps & ~allowedOps) !== 0) {
        throw new AdminFailure(
          AdminStatus.UNSUPPORTED_OPCODE,
          `sendOpsFlags 0x${Number(sendOps).toString(16)}: a ${init.qpType} QP on ${this.attributes.generation} supports 0x${allowedOps.toString(16)}`,
          'EOPNOTSUPP',
        );
      }
      const cap = this.checkCap(init.cap);
      if (this.qpCount >= this.attributes.maxQp) {
        throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, `the device has its maximum of ${this.attributes.maxQp} QPs`);
      }
      const qpn = this.qpnAllocator.allocate();
      if (qpn < 0) throw new AdminFailure(AdminStatus.RESOURCE_ALLOCATION_FAILURE, 'every QP number is in use or quarantined');
      const qp = new QueuePair(qpn, init.qpType, pd, init.sendCq, init.recvCq, cap, init.sqSigAll ?? true);
      qp.unsolicitedWriteRecv = (qpFlags & EfadvQpFlags.UNSOLICITED_WRITE_RECV) !== 0;
      qp.sendOps = sendOps;
      this.qps[qpn] = qp;
      this.qpCount++;
      pd.users++;
      init.sendCq.users++;
      init.recvCq.users++;
      return qp;
    });
  }

  /** The send operations (QpSendOps) a QP of this type can do on this device. */
  private defaultSendOps(srd: boolean): number {
    let ops = QpSendOps.SEND | QpSendOps.SEND_WITH_IMM;
    if (!srd) return ops;
    const caps = this.attributes.deviceCaps;
    if ((caps & EfadvDeviceCaps.RDMA_READ) !== 0) ops |= QpSendOps.RDMA_READ;
    if ((caps & EfadvDeviceCaps.RDMA_WRITE) !== 0) ops |= QpSendOps.RDMA_WRITE | QpSendOps.RDMA_WRITE_WITH_IMM;
    return ops;
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
    if (out.maxRecvWr > Math.floor(a.maxRqWr / out.maxRecvSge)) {
      // The receive ring holds descriptors, one per SGE.
      throw new AdminFailure(AdminStatus.ILLEGAL_PARAMETER, `cap.maxRecvWr ${out.maxRecvWr} x maxRecvSge ${out.maxRecvSge} exceeds the ${a.maxRqWr} receive descriptors`);
    }
    // As EFA's provider: the send ring is a power of two; the receive ring is a power of two of
    // descriptors, shared out by SGE count. What was set up is reported back.
    out.maxSendWr = roundUpPow2(out.maxSendWr);
    out.maxRecvWr = Math.floor(roundUpPow2(out.maxRecvWr * out.maxRecvSge) / out.maxRecvSge);
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
      const problem = checkTransition(qp.qpType, qp.state, attr, (this.attributes.deviceCaps & EfadvDeviceCaps.RNR_RETRY) !== 0);
      if (problem !== null) {
        if (problem.kind === 'unsupported') throw new AdminFailure(AdminStatus.UNSUPPORTED_OPCODE, `QP ${qp.qpNum}: ${problem.detail}`, 'EOPNOTSUPP');
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
    if (qp.qpType === QpType.SRD) {
      this.srd.abandonOwner(this.clock(), qp, EfaStatus.FLUSHED);
      this.rdma.flushQp(qp, EfaStatus.FLUSHED);
    }
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
      this.rdma.flushQp(qp, EfaStatus.FLUSHED);
      this.rdma.drain();
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

  /**
   * Moving to RESET discards posted work requests without completions, as verbs do (EFA's
   * provider re-initialises both rings): receives, sends and RDMA still in flight, whose
   * slots are free again at once.
   */
  private resetQp(qp: QueuePair): void {
    if (qp.qpType === QpType.SRD) {
      qp.discarding = true;
      try {
        this.srd.abandonOwner(this.clock(), qp, EfaStatus.FLUSHED);
        this.rdma.flushQp(qp, EfaStatus.FLUSHED);
      } finally {
        qp.discarding = false;
      }
      this.rdma.drain();
      this.kickTimer();
    }
    // Completions already queued stay, but polling them no longer frees a slot of the new ring.
    qp.sendCq.detachOwner(qp);
    qp.sqOutstanding = 0;
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
      if (deliver && !this.closed) this.receiveUd(h.buf, h.hdr, peer);
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
   * Posts a send, as `ibv_post_send`. As EFA's provider, this classic call takes SEND and
   * SEND_WITH_IMM only (RDMA goes through `wrStart` .. `wrComplete`). Throws (EINVAL, ENOMEM)
   * when the request is malformed or the send queue is full; any other failure is an error
   * completion on the send CQ.
   */
  postSend(qp: QueuePair, wr: SendWr): void {
    const opcode = wr.opcode ?? WrOpcode.SEND;
    if (opcode !== WrOpcode.SEND && opcode !== WrOpcode.SEND_WITH_IMM) {
      throw new InvalidArgumentError(`postSend: opcode ${opcode} is not supported by ibv_post_send on EFA (SEND, SEND_WITH_IMM; RDMA goes through wrStart..wrComplete)`);
    }
    const flags = wr.sendFlags ?? 0;
    this.checkSendable(qp, flags, 0, 'postSend');
    const sgl = wr.sgList;
    const numSge = sgl === undefined ? 0 : sgl.length;
    const inline = flags & SendFlags.INLINE;
    const total = this.checkSendSgl(qp, sgl, inline, 'postSend');
    // Inline data is read now (as verbs do), whatever the SGE count.
    if (inline === 0 && numSge > qp.cap.maxSendSge) {
      throw new InvalidArgumentError(`postSend: ${numSge} SGEs, the QP takes at most ${qp.cap.maxSendSge}`);
    }
    this.execSend(qp, wr, opcode, total);
  }

  /**
   * The checks every posted send passes first, in the provider's order: the QP's state, the
   * signalling, the flags, room in the send queue (counting `pending` requests of an open
   * `wrStart` session). Throws EINVAL or ENOMEM.
   */
  private checkSendable(qp: QueuePair, flags: number, pending: number, what: string): void {
    if (qp.destroyed || this.closed) throw new InvalidArgumentError(`${what}: the QP is destroyed`);
    if (!ACCEPTS_SENDS[qp.state]) throw new InvalidArgumentError(`${what}: QP ${qp.qpNum} is in ${QP_STATE_NAMES[qp.state]}, sends need RTS or SQD`);
    if (!Number.isInteger(flags) || flags < 0) throw new InvalidArgumentError(`${what}: sendFlags must be a non-negative integer`);
    if ((flags & SendFlags.SIGNALED) === 0 && !qp.sqSigAll) {
      throw new InvalidArgumentError(`${what}: unsignaled sends are not supported by EFA (set SendFlags.SIGNALED, or create the QP with sqSigAll)`);
    }
    if ((flags & ~(SendFlags.SIGNALED | SendFlags.INLINE)) !== 0) {
      throw new InvalidArgumentError(`${what}: sendFlags 0x${flags.toString(16)}: EFA takes SIGNALED and INLINE only`);
    }
    if (qp.sqOutstanding + pending >= qp.cap.maxSendWr) {
      throw new ResourceExhaustedError(`${what}: the send queue of QP ${qp.qpNum} is full (${qp.cap.maxSendWr} outstanding)`);
    }
  }

  /** Checks the SGE lengths (and inline size); returns the total. */
  private checkSendSgl(qp: QueuePair, sgl: readonly Sge[] | undefined, inline: number, what: string): number {
    const numSge = sgl === undefined ? 0 : sgl.length;
    let total = 0;
    for (let i = 0; i < numSge; i++) {
      const len = (sgl as readonly Sge[])[i].length;
      if (!Number.isInteger(len) || len < 0) throw new InvalidArgumentError(`${what}: sgList[${i}].length must be a non-negative integer`);
      total += len;
    }
    if (inline !== 0 && total > qp.cap.maxInlineData) {
      throw new InvalidArgumentError(`${what}: ${total} inline bytes, the QP takes at most ${qp.cap.maxInlineData}`);
    }
    return total;
  }

  /**
   * Carries out a send work request that passed the post-time checks: from here on every
   * failure is a completion.
   */
  private execSend(qp: QueuePair, wr: SendWr, opcode: number, total: number, inline: Uint8Array | null = null): void {
    if (opcode === WrOpcode.RDMA_WRITE || opcode === WrOpcode.RDMA_WRITE_WITH_IMM || opcode === WrOpcode.RDMA_READ) {
      this.execRdma(qp, wr, opcode, total);
      return;
    }
    const sgl = wr.sgList;
    const numSge = sgl === undefined ? 0 : sgl.length;
    const imm = opcode === WrOpcode.SEND_WITH_IMM ? (wr.immData ?? 0) >>> 0 : undefined;
    qp.sqOutstanding++;
    this.stats.send_wrs++;
    const ah = this.checkDest(qp, wr, total, this.attributes.maxMsgSize, WcOpcode.SEND);
    if (ah === null) return;
    const remoteQpn = wr.remoteQpn;
    const srd = qp.qpType === QpType.SRD;
    const off = srd ? SRD_PAYLOAD_OFFSET : UD_PAYLOAD_OFFSET;
    // A UD send completes at once while the socket may still hold its buffer: it returns to
    // its pool through the transport's onSent.
    const ud = srd ? null : this.udPool.take();
    const buf = ud === null ? (this.txPool.pop() ?? Buffer.allocUnsafeSlow(this.txPoolBytes)) : ud.buf;
    if (inline !== null) {
      buf.set(inline, off);
    } else if (!this.gather(qp, sgl, numSge, buf, off)) {
      if (ud === null) this.txPool.push(buf);
      else ud.release();
      this.completeSend(qp, wr.wrId, EfaStatus.LOCAL_ERROR_INVALID_LKEY, 0, WcOpcode.SEND);
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
    this.transmitTo(buf, len, ah.peer.host, ah.peer.port, (ud as PooledBuffer).release);
    this.completeSend(qp, wr.wrId, EfaStatus.SUCCESS, total, WcOpcode.SEND);
  }

  /** Carries out an RDMA work request that passed the post-time checks. */
  private execRdma(qp: QueuePair, wr: SendWr, opcode: number, total: number): void {
    qp.sqOutstanding++;
    const read = opcode === WrOpcode.RDMA_READ;
    const wcOpcode = read ? RDMA_READ_WC_OPCODE : WcOpcode.RDMA_WRITE;
    const ah = this.checkDest(qp, wr, total, this.attributes.maxRdmaSize, wcOpcode);
    if (ah === null) return;
    const sgl = wr.sgList;
    const local = this.resolveSgl(qp, sgl, sgl === undefined ? 0 : sgl.length, read);
    if (local === null) {
      this.completeSend(qp, wr.wrId, EfaStatus.LOCAL_ERROR_INVALID_LKEY, 0, wcOpcode);
      return;
    }
    const remoteAddr = wr.remoteAddr ?? 0;
    const rkey = (wr.rkey ?? 0) >>> 0;
    const qkey = wr.remoteQkey >>> 0;
    if (read) this.rdma.postRead(qp, wr.wrId, ah.peer, wr.remoteQpn, qkey, local, total, remoteAddr, rkey);
    else this.rdma.postWrite(qp, wr.wrId, ah.peer, wr.remoteQpn, qkey, local, total, remoteAddr, rkey, opcode === WrOpcode.RDMA_WRITE_WITH_IMM ? (wr.immData ?? 0) >>> 0 : undefined);
    this.rdma.drain();
    this.kickTimer();
  }

  /**
   * The AH, length and remote QPN of a work request: its AH, or null once it was completed
   * with the error (an AH of another PD, too long, a QPN that cannot be one).
   */
  private checkDest(qp: QueuePair, wr: SendWr, total: number, maxLen: number, wcOpcode: number): AddressHandle | null {
    const ah = wr.ah;
    let status: EfaStatus = EfaStatus.SUCCESS;
    if (!(ah instanceof AddressHandle) || ah.destroyed || ah.pd !== qp.pd) status = EfaStatus.LOCAL_ERROR_INVALID_AH;
    else if (total > maxLen) status = EfaStatus.LOCAL_ERROR_BAD_LENGTH;
    else if (!Number.isInteger(wr.remoteQpn) || wr.remoteQpn < 0 || wr.remoteQpn > 0xffff) status = EfaStatus.REMOTE_ERROR_BAD_DEST_QPN;
    if (status === EfaStatus.SUCCESS) return ah;
    this.completeSend(qp, wr.wrId, status, 0, wcOpcode);
    return null;
  }

  /**
   * The local buffers of an RDMA work request, checked now: each SGE names a live MR of the
   * QP's PD and stays inside it; a read's destination needs LOCAL_WRITE. Null when not.
   */
  private resolveSgl(qp: QueuePair, sgl: readonly Sge[] | undefined, n: number, writesLocal: boolean): LocalSgl | null {
    const out: LocalSgl = { mrs: [], addrs: [], lens: [] };
    for (let i = 0; i < n; i++) {
      const sge = (sgl as readonly Sge[])[i];
      const mr = this.mrs.get(sge.lkey >>> 0);
      if (mr === undefined || mr.pd !== qp.pd) return null;
      if (writesLocal && (mr.access & AccessFlags.LOCAL_WRITE) === 0) return null;
      if (!Number.isInteger(sge.addr) || sge.addr < 0 || sge.addr + sge.length > mr.buffer.length) return null;
      out.mrs.push(mr);
      out.addrs.push(sge.addr);
      out.lens.push(sge.length);
    }
    return out;
  }

  // ------------------------------------------------------------ ibv_wr_* API

  /**
   * Opens a batch of work requests on `qp`, as `ibv_wr_start`. Set `qp.wrId` and `qp.wrFlags`,
   * call an operation (`wrSend`, `wrRdmaWrite`, ...), then its address (`wrSetUdAddr`) and
   * data (`wrSetSge`, `wrSetSgeList`, `wrSetInlineData`); `wrComplete` posts the batch, or
   * nothing when any call failed (it throws that first error), `wrAbort` drops it.
   */
  wrStart(qp: QueuePair): void {
    if (qp.destroyed || this.closed) throw new InvalidArgumentError('wrStart: the QP is destroyed');
    if (qp.wrSession !== null) throw new InvalidArgumentError('wrStart: a batch is already open on this QP (wrComplete or wrAbort first)');
    qp.wrSession = new WrSession();
  }

  /** `ibv_wr_send`. */
  wrSend(qp: QueuePair): void {
    this.wrBegin(qp, WrOpcode.SEND, QpSendOps.SEND, 'wrSend');
  }

  /** `ibv_wr_send_imm`. */
  wrSendImm(qp: QueuePair, immData: number): void {
    const wr = this.wrBegin(qp, WrOpcode.SEND_WITH_IMM, QpSendOps.SEND_WITH_IMM, 'wrSendImm');
    if (wr !== null) wr.immData = immData >>> 0;
  }

  /** `ibv_wr_rdma_write`: to `remoteAddr` (an offset in the remote MR) of the MR `rkey` names. */
  wrRdmaWrite(qp: QueuePair, rkey: number, remoteAddr: number): void {
    const wr = this.wrBegin(qp, WrOpcode.RDMA_WRITE, QpSendOps.RDMA_WRITE, 'wrRdmaWrite');
    if (wr !== null) this.setRemote(qp, wr, rkey, remoteAddr, 'wrRdmaWrite');
  }

  /** `ibv_wr_rdma_write_imm`: a write whose last packet completes a receive at the target. */
  wrRdmaWriteImm(qp: QueuePair, rkey: number, remoteAddr: number, immData: number): void {
    const wr = this.wrBegin(qp, WrOpcode.RDMA_WRITE_WITH_IMM, QpSendOps.RDMA_WRITE_WITH_IMM, 'wrRdmaWriteImm');
    if (wr !== null) {
      this.setRemote(qp, wr, rkey, remoteAddr, 'wrRdmaWriteImm');
      wr.immData = immData >>> 0;
    }
  }

  /** `ibv_wr_rdma_read`: from `remoteAddr` of the MR `rkey` names, into the SGE set next. */
  wrRdmaRead(qp: QueuePair, rkey: number, remoteAddr: number): void {
    const wr = this.wrBegin(qp, WrOpcode.RDMA_READ, QpSendOps.RDMA_READ, 'wrRdmaRead');
    if (wr !== null) this.setRemote(qp, wr, rkey, remoteAddr, 'wrRdmaRead');
  }

  /** `ibv_wr_set_ud_addr`: where the current request goes (EFA addresses RDMA this way too). */
  wrSetUdAddr(qp: QueuePair, ah: AddressHandle, remoteQpn: number, remoteQkey: number): void {
    const wr = this.wrCurrent(qp, 'wrSetUdAddr');
    if (wr === null) return;
    wr.ah = ah;
    wr.remoteQpn = remoteQpn;
    wr.remoteQkey = remoteQkey >>> 0;
  }

  /** `ibv_wr_set_sge`. */
  wrSetSge(qp: QueuePair, lkey: number, addr: number, length: number): void {
    this.wrSetSgeList(qp, [{ lkey, addr, length }]);
  }

  /** `ibv_wr_set_sge_list`: at most maxSendSge entries for a send, one for RDMA (EINVAL beyond). */
  wrSetSgeList(qp: QueuePair, sgl: readonly Sge[]): void {
    const wr = this.wrCurrent(qp, 'wrSetSgeList');
    if (wr === null) return;
    const session = qp.wrSession as WrSession;
    const op = session.opcodes[session.opcodes.length - 1];
    const max = op === WrOpcode.SEND || op === WrOpcode.SEND_WITH_IMM ? qp.cap.maxSendSge : MAX_RDMA_SGE;
    if (!Array.isArray(sgl) || sgl.length > max) {
      session.fail(new InvalidArgumentError(`wrSetSgeList: ${Array.isArray(sgl) ? sgl.length : 'no'} SGEs, this operation takes at most ${max}`));
      return;
    }
    let total: number;
    try {
      total = this.checkSendSgl(qp, sgl, 0, 'wrSetSgeList');
    } catch (err) {
      session.fail(err as InvalidArgumentError);
      return;
    }
    wr.sgList = sgl.map((e) => ({ lkey: e.lkey, addr: e.addr, length: e.length }));
    session.inline[session.inline.length - 1] = null;
    session.totals[session.totals.length - 1] = total;
  }

  /** `ibv_wr_set_inline_data`: the bytes are copied now (sends only, at most maxInlineData). */
  wrSetInlineData(qp: QueuePair, data: Uint8Array): void {
    const wr = this.wrCurrent(qp, 'wrSetInlineData');
    if (wr === null) return;
    const session = qp.wrSession as WrSession;
    const op = session.opcodes[session.opcodes.length - 1];
    if (op !== WrOpcode.SEND && op !== WrOpcode.SEND_WITH_IMM) {
      session.fail(new InvalidArgumentError('wrSetInlineData: EFA carries inline data on sends only'));
      return;
    }
    if (!(data instanceof Uint8Array) || data.length > qp.cap.maxInlineData) {
      session.fail(new InvalidArgumentError(`wrSetInlineData: ${data instanceof Uint8Array ? data.length : 'no'} inline bytes, the QP takes at most ${qp.cap.maxInlineData}`));
      return;
    }
    wr.sgList = undefined;
    session.inline[session.inline.length - 1] = Uint8Array.prototype.slice.call(data) as Uint8Array;
    session.totals[session.totals.length - 1] = data.length;
  }

  /**
   * Posts the batch, as `ibv_wr_complete`. If any call of the batch failed, nothing is posted
   * and that first error is thrown (EINVAL, ENOMEM, EOPNOTSUPP).
   */
  wrComplete(qp: QueuePair): void {
    const session = qp.wrSession;
    if (session === null) throw new InvalidArgumentError('wrComplete: no batch is open (wrStart first)');
    qp.wrSession = null;
    if (session.error !== null) throw session.error;
    if (qp.destroyed || this.closed) throw new InvalidArgumentError('wrComplete: the QP is destroyed');
    for (let i = 0; i < session.wrs.length; i++) this.execSend(qp, session.wrs[i], session.opcodes[i], session.totals[i], session.inline[i]);
  }

  /** Drops the batch, as `ibv_wr_abort`. */
  wrAbort(qp: QueuePair): void {
    qp.wrSession = null;
  }

  /** Starts the next request of the batch: the post-time checks run now, as the provider's. */
  private wrBegin(qp: QueuePair, opcode: number, op: number, what: string): SendWr | null {
    const session = qp.wrSession;
    if (session === null) throw new InvalidArgumentError(`${what}: no batch is open (wrStart first)`);
    if (session.error !== null) return null;
    if ((qp.sendOps & op) === 0) {
      session.fail(new NotSupportedError(`${what}: the QP was not created for this operation (sendOpsFlags 0x${qp.sendOps.toString(16)})`));
      return null;
    }
    try {
      this.checkSendable(qp, qp.wrFlags, session.wrs.length, what);
    } catch (err) {
      session.fail(err as InvalidArgumentError);
      return null;
    }
    const wr: SendWr = { wrId: qp.wrId, opcode, sendFlags: qp.wrFlags, ah: undefined as unknown as AddressHandle, remoteQpn: -1, remoteQkey: 0 };
    session.wrs.push(wr);
    session.opcodes.push(opcode);
    session.inline.push(null);
    session.totals.push(0);
    return wr;
  }

  private wrCurrent(qp: QueuePair, what: string): SendWr | null {
    const session = qp.wrSession;
    if (session === null) throw new InvalidArgumentError(`${what}: no batch is open (wrStart first)`);
    if (session.error !== null) return null;
    const wr = session.last;
    if (wr === undefined) {
      session.fail(new InvalidArgumentError(`${what}: no operation to apply it to (wrSend, wrRdmaWrite, ... first)`));
      return null;
    }
    return wr;
  }

  private setRemote(qp: QueuePair, wr: SendWr, rkey: number, remoteAddr: number, what: string): void {
    if (!Number.isInteger(remoteAddr) || remoteAddr < 0 || remoteAddr > Number.MAX_SAFE_INTEGER) {
      (qp.wrSession as WrSession).fail(new InvalidArgumentError(`${what}: remoteAddr must be a non-negative integer`));
      return;
    }
    wr.rkey = rkey >>> 0;
    wr.remoteAddr = remoteAddr;
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
    if (op.msg !== null) {
      this.rdma.segmentDone(op, status);
      return;
    }
    const qp = op.owner as QueuePair;
    if (qp.destroyed || qp.discarding) return;
    this.completeSend(qp, op.wrId, status as EfaStatus, status === EfaStatus.SUCCESS ? op.byteLen : 0, WcOpcode.SEND);
  }

  /**
   * Places an SRD message in the destination QP's oldest posted receive. Returns the status
   * the sender will report: SUCCESS, REMOTE_ERROR_RNR (no receive posted: it retries), or a
   * final error.
   */
  private deliverSrd(buf: Buffer, hdr: PacketHeader, payloadOff: number, payloadLen: number, srdPeer: SrdPeer): number {
    // The engine hands back the peer the device gave it with the packet (handleDatagram).
    const peer = srdPeer as Peer;
    // Read data is matched to the read by its id; it names no receive queue to check.
    if (hdr.type === PacketType.SRD_READ_RESP) return this.rdma.onReadResponse(buf, hdr, peer);
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
    if (hdr.type === PacketType.SRD_RDMA_WRITE) return this.receiveWrite(qp, buf, hdr, peer);
    if (hdr.type === PacketType.SRD_READ_REQ) return this.rdma.acceptRead(qp, buf, hdr, peer);
    if (qp.rq.count === 0) {
      this.stats.drop('rx_drop_no_recv_wr');
      return EfaStatus.REMOTE_ERROR_RNR;
    }
    const status = this.deliver(qp, buf, hdr, payloadOff, payloadLen, false, peer);
    if (status === EfaStatus.SUCCESS) return EfaStatus.SUCCESS;
    if (status === EfaStatus.LOCAL_ERROR_BAD_LENGTH) return EfaStatus.REMOTE_ERROR_BAD_LENGTH;
    return EfaStatus.REMOTE_ERROR_BAD_ADDRESS;
  }

  /**
   * A segment of an RDMA write to `qp`: placed in the MR its rkey names. The last packet of a
   * write with immediate then completes a receive (or, on a QP that takes unsolicited write
   * receives, a completion of its own): with none posted it is refused RNR before anything
   * is placed, and the sender tries it again.
   */
  private receiveWrite(qp: QueuePair, buf: Buffer, hdr: PacketHeader, peer: Peer): number {
    const withImm = (hdr.flags & FLAG_HAS_IMM) !== 0;
    if (withImm && !qp.unsolicitedWriteRecv && qp.rq.count === 0) {
      this.stats.drop('rx_drop_no_recv_wr');
      return EfaStatus.REMOTE_ERROR_RNR;
    }
    const status = this.rdma.placeWrite(qp, buf, hdr);
    if (status !== EfaStatus.SUCCESS || !withImm) return status;
    const rq = qp.rq;
    const consume = !qp.unsolicitedWriteRecv;
    const wc = qp.recvCq.push(qp);
    if (wc !== null) {
      wc.wrId = consume ? rq.wrId[rq.head] : 0;
      wc.status = 0;
      wc.vendorErr = 0;
      wc.opcode = WcOpcode.RECV_RDMA_WITH_IMM;
      wc.qpNum = qp.qpNum;
      wc.srcQp = hdr.srcQpn;
      wc.byteLen = this.rdma.placedLength;
      wc.immData = hdr.imm;
      wc.wcFlags = WcFlags.WITH_IMM;
      wc.unsolicited = !consume;
      this.setSender(qp, wc, peer);
    }
    if (consume) rq.advance();
    return EfaStatus.SUCCESS;
  }

  /**
   * The sender of a receive completion: the AH the receiver's PD has for it, else its GID, as
   * the peer record's own bytes (no copy per message; WorkCompletion.sgid says not to write it).
   */
  private setSender(qp: QueuePair, wc: WorkCompletion, peer: Peer): void {
    const ah = qp.pd.ahByDeviceIndex.get(peer.deviceIndex);
    if (ah !== undefined) {
      wc.ah = ah.ahNum;
    } else {
      wc.ah = AH_UNKNOWN;
      // Only a CQ created for it carries the GID (efadv_create_cq with WITH_SGID).
      if (qp.recvCq.withSgid) wc.sgid = peer.gid;
    }
  }

  /** Runs the device's due timers (SRD acks and retransmissions); the io layer's timer calls it. */
  onTimer(): void {
    if (this.closed) return;
    const now = this.clock();
    this.srd.onTimer(now);
    this.rdma.onTimer(now);
    this.rdma.drain();
    this.kickTimer();
  }

  private kickTimer(): void {
    if (this.timer === null) return;
    let d = this.srd.nextDeadline();
    const r = this.rdma.nextDeadline();
    if (r < d) d = r;
    if (d !== Infinity) this.timer.arm(d);
  }

  private completeSend(qp: QueuePair, wrId: number, status: EfaStatus, byteLen: number, opcode: number): void {
    const wc = qp.sendCq.push(qp);
    if (wc === null) return;
    wc.wrId = wrId;
    wc.status = wcStatusFromEfa(status);
    wc.vendorErr = status;
    wc.opcode = opcode;
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
      this.receiveUd(buf, hdr, peer);
      return;
    }
    this.srd.onPacket(this.clock(), buf, hdr, peer);
    this.rdma.drain();
    this.kickTimer();
  }

  private receiveUd(buf: Buffer, hdr: PacketHeader, peer: Peer): void {
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
    this.deliver(qp, buf, hdr, hdr.hdrLen, hdr.payloadLen, true, peer);
  }

  /**
   * Scatters a message into the QP's oldest posted receive and completes it. With `grh`, the
   * 40-byte GRH goes first (UD). Returns the completion status.
   */
  private deliver(qp: QueuePair, buf: Buffer, hdr: PacketHeader, payloadOff: number, payloadLen: number, grh: boolean, peer: Peer): EfaStatus {
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
      this.setSender(qp, wc, peer);
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

/** The smallest power of two >= n (n >= 1). */
function roundUpPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

function defaultClock(): number {
  return performance.now();
}
