import type { Prng } from '../common/prng';
import { EfaStatus } from '../common/efa-status';
import type { Device } from '../device/device';
import type { QueuePair } from '../device/queue-pair';
import type { WorkCompletion } from '../device/work-completion';
import type { SendWr, Sge } from '../device/work-requests';
import type { RdmConfig } from './rdm-config';
import type { RxOp, TxOp } from './rdm-ops';
import type { RdmPeer } from './rdm-peer';
import type { RdmStats } from './rdm-stats';

/** One packet buffer the endpoint sends from (a slice of one registered region). */
export class TxSlot {
  len = 0;
  peer: RdmPeer | null = null;
  owner: TxOp | RxOp | null = null;
  /** Payload bytes of the owner's message this packet carries. */
  payload = 0;
  type = 0;
  /** This packet was refused receiver-not-ready at least once: when, and how often. */
  firstRnrAt = 0;
  rnrs = 0;
  /** Resent however long the peer refuses it (no `rnrTimeoutMs`). */
  patient = false;
  constructor(
    readonly index: number,
    readonly buf: Buffer,
  ) {}
}

/** Something that waits for a free packet slot (an op with data, a receive owing a CTS or EOR, a peer owing a handshake). */
export interface SlotWaiter {
  waitingForSlot: boolean;
}

/** What the sender tells the endpoint. Each call hands over a slot the sender frees right after. */
export interface PacketSenderEvents {
  /** The packet reached the peer. */
  delivered(slot: TxSlot): void;
  /** The packet failed for good with this EFA status (RNR past `rnrTimeoutMs` included). */
  failed(slot: TxSlot, status: number): void;
  /** True when a queued packet need not go any more (its operation failed meanwhile). */
  stale(slot: TxSlot): boolean;
  /** A waiter may take a slot now. */
  serve(w: SlotWaiter): void;
  /** Asks for progress at `deadline` (back-off ends). */
  armAt(deadline: number): void;
}

/**
 * The endpoint's way out: a fixed pool of registered packet buffers (`txSize`, what the
 * provider's TX packet pool is), one queue per peer for packets that must wait (the peer's AH
 * is being made, or it is in RNR back-off), and the provider's RNR rule: a packet refused once
 * is resent at once, refused again it puts its peer in back-off (random 40..120 us, or
 * `rnrBackoffInitialMs`, doubling up to `rnrBackoffCapMs`), and a resent packet that gets
 * through ends the back-off.
 */
export class PacketSender {
  private readonly slots: TxSlot[] = [];
  private readonly free: number[] = [];
  private readonly waiters: SlotWaiter[] = [];
  /** Peers with packets queued. */
  private readonly queuedPeers = new Set<RdmPeer>();
  private readonly wr: SendWr;
  private readonly sge: Sge;

  constructor(
    private readonly device: Device,
    private readonly qp: QueuePair,
    lkey: number,
    txBuf: Buffer,
    private readonly mtu: number,
    private readonly config: RdmConfig,
    private readonly prng: Prng,
    private readonly clock: () => number,
    private readonly stats: RdmStats,
    private readonly events: PacketSenderEvents,
  ) {
    for (let i = 0; i < config.txSize; i++) {
      this.slots.push(new TxSlot(i, txBuf.subarray(i * mtu, (i + 1) * mtu)));
      this.free.push(config.txSize - 1 - i);
    }
    // The device copies a request at post time, so one request object serves every packet.
    this.sge = { addr: 0, length: 0, lkey };
    this.wr = { wrId: 0, sgList: [this.sge], ah: null as never, remoteQpn: 0, remoteQkey: 0 };
  }

  /** A free slot, or null (then `waitFor`). */
  alloc(): TxSlot | null {
    const i = this.free.pop();
    return i === undefined ? null : this.slots[i];
  }

  /** Queues a waiter (once) to be served when a slot frees. */
  waitFor(w: SlotWaiter): void {
    if (w.waitingForSlot) return;
    w.waitingForSlot = true;
    this.waiters.push(w);
  }

  /** Hands free slots to waiters, oldest first. */
  serveWaiters(): void {
    while (this.waiters.length > 0 && this.free.length > 0) {
      const w = this.waiters.shift() as SlotWaiter;
      w.waitingForSlot = false;
      this.events.serve(w);
    }
  }

  /** Sends a packet now, or queues it behind its peer's earlier ones, back-off or AH. */
  send(slot: TxSlot): void {
    const peer = slot.peer as RdmPeer;
    if (peer.queued > 0 || peer.ah === null || peer.backoffUntil > this.clock()) {
      this.enqueue(peer, slot);
      return;
    }
    this.post(slot);
  }

  /** Sends what queued peers may send now. */
  flush(now: number): void {
    if (this.queuedPeers.size === 0) return;
    for (const peer of this.queuedPeers) {
      if (peer.ah === null) continue;
      if (peer.backoffUntil > now) {
        this.events.armAt(peer.backoffUntil);
        continue;
      }
      while (peer.queued > 0 && peer.backoffUntil <= now) this.post(this.slots[peer.queue[peer.queueHead++]]);
      if (peer.queued === 0) {
        peer.queue.length = 0;
        peer.queueHead = 0;
        this.queuedPeers.delete(peer);
      }
    }
  }

  /** Re-arms the wake-ups of peers in back-off (the endpoint's timer fired). */
  armQueued(now: number): void {
    for (const peer of this.queuedPeers) if (peer.ah !== null) this.events.armAt(Math.max(now, peer.backoffUntil));
  }

  /** Drops what is queued for a peer that failed. */
  dropQueued(peer: RdmPeer): void {
    while (peer.queued > 0) this.release(this.slots[peer.queue[peer.queueHead++]]);
    peer.queue.length = 0;
    peer.queueHead = 0;
    this.queuedPeers.delete(peer);
  }

  /** A send completion of one of our packets. */
  complete(wc: WorkCompletion): void {
    const slot = this.slots[wc.wrId];
    if (slot === undefined || slot.peer === null) return;
    if (wc.status === 0) {
      const peer = slot.peer;
      if (slot.rnrs > 0) {
        peer.rnrBackoffMs = 0;
        peer.backoffUntil = 0;
        this.stats.inc('rnr_resent_ok');
      }
      this.events.delivered(slot);
      this.release(slot);
    } else if (wc.vendorErr === EfaStatus.REMOTE_ERROR_RNR) {
      this.refused(slot);
    } else {
      this.fail(slot, wc.vendorErr !== 0 ? wc.vendorErr : EfaStatus.LOCAL_ERROR_QP_INTERNAL_ERROR);
    }
  }

  private refused(slot: TxSlot): void {
    const peer = slot.peer as RdmPeer;
    const now = this.clock();
    this.stats.inc('rnr_packets');
    if (slot.rnrs === 0) slot.firstRnrAt = now;
    slot.rnrs++;
    if (!slot.patient && now - slot.firstRnrAt > this.config.rnrTimeoutMs) {
      this.fail(slot, EfaStatus.REMOTE_ERROR_RNR);
      return;
    }
    if (slot.rnrs > 1) {
      const c = this.config;
      const first = c.rnrBackoffInitialMs > 0 ? c.rnrBackoffInitialMs : (40 + this.prng.int(81)) / 1000;
      peer.rnrBackoffMs = peer.rnrBackoffMs === 0 ? first : Math.min(c.rnrBackoffCapMs, peer.rnrBackoffMs * 2);
      peer.backoffUntil = Math.max(peer.backoffUntil, now + peer.rnrBackoffMs);
      this.stats.inc('rnr_backoffs');
    }
    this.enqueue(peer, slot);
  }

  private fail(slot: TxSlot, status: number): void {
    this.events.failed(slot, status);
    // The endpoint may have failed the peer, which frees what was queued, not this slot.
    if (slot.peer !== null) this.release(slot);
  }

  private enqueue(peer: RdmPeer, slot: TxSlot): void {
    peer.queue.push(slot.index);
    this.queuedPeers.add(peer);
    if (peer.ah !== null) this.events.armAt(peer.backoffUntil);
  }

  private post(slot: TxSlot): void {
    if (this.events.stale(slot)) {
      this.release(slot);
      return;
    }
    const peer = slot.peer as RdmPeer;
    const wr = this.wr;
    wr.wrId = slot.index;
    wr.ah = peer.ah as NonNullable<RdmPeer['ah']>;
    wr.remoteQpn = peer.addr.qpn;
    wr.remoteQkey = peer.addr.connid;
    this.sge.addr = slot.index * this.mtu;
    this.sge.length = slot.len;
    try {
      this.device.postSend(this.qp, wr);
    } catch {
      // The QP cannot send (destroyed, or in error): the packet's operation fails.
      this.fail(slot, EfaStatus.LOCAL_ERROR_QP_INTERNAL_ERROR);
    }
  }

  private release(slot: TxSlot): void {
    slot.owner = null;
    slot.peer = null;
    this.free.push(slot.index);
  }
}
