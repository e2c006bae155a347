import { WcStatus } from '../common/wc-status';
import { encodeHeader, FLAG_HAS_IMM, FLAG_RNR_LAST, OFF_FLAGS, PacketType, sealPacket, writeU32, type PacketHeader } from '../wire/header';
import {
  decodeSrdAck,
  decodeSrdData,
  decodeSrdNak,
  OFF_TX_TIME,
  OFF_WINDOW_START,
  sackBit,
  SACK_BITS,
  setSackBit,
  SRD_ACK_HDR_LEN,
  SRD_DATA_HDR_LEN,
  SRD_NAK_HDR_LEN,
  SrdFields,
  writeSrdAck,
  writeSrdData,
  writeSrdNak,
  writePiggyback,
} from '../wire/srd-header';
import { isNewerIncarnation } from '../common/incarnation';
import { ReceiveContext, RX_WINDOW } from './receive-context';
import { SendContext } from './send-context';
import { SendOp } from './send-op';
import { resolveSrdConfig, type SrdConfig } from './srd-config';
import type { SrdCounters, SrdHost } from './srd-host';

/** Where a send goes: the remote device's index (GID low 32 bits) and its UDP endpoint. */
export interface SrdPeer {
  readonly deviceIndex: number;
  readonly host: string;
  readonly port: number;
  /** The remote device's incarnation from the control plane, 0 when unknown. */
  readonly incarnation: number;
}

/** Offset of the payload in an SRD data packet: the device gathers the message there. */
export const SRD_PAYLOAD_OFFSET = SRD_DATA_HDR_LEN;

const RNR = WcStatus.REMOTE_ERROR_RNR;

/**
 * SRD, sans-IO: reliable, unordered delivery of messages of at most one MTU between devices.
 *
 * Inputs are `postSend`, `onPacket` and `onTimer`, each with the time (ms) passed in;
 * outputs go through the SrdHost (transmit, deliver, completeSend) and `nextDeadline()`,
 * which says when `onTimer` wants to run. Per remote device there is one SendContext and one
 * ReceiveContext, shared by all QPs, as on EFA.
 *
 * - A message is delivered the moment it arrives; a loss never delays later messages.
 * - At most once: the receiver remembers which PSNs of the sender's session it delivered,
 *   and the sender's window start tells it what it may forget.
 * - Acks are cumulative plus a 128-bit selective-ack map, coalesced per turn of the event
 *   loop and at least every `ackEvery` packets.
 * - Retransmission on an RTO from measured RTT (RFC 6298) with exponential back-off, and fast
 *   retransmission of holes the selective acks reveal.
 * - Receiver-not-ready replies are retried after a back-off, up to the QP's rnr_retry.
 * - A packet with no answer for `unresponsiveTimeoutMs` fails: UNRESP_REMOTE when the peer
 *   answered before, UNREACH_REMOTE when it never did. Nothing hangs.
 */
export class SrdEngine {
  readonly config: SrdConfig;
  private readonly host: SrdHost;
  private readonly counters: SrdCounters;
  /** This device's incarnation: the session of every send context, and what acks report. */
  readonly incarnation: number;
  private readonly localGid: Uint8Array;
  private readonly senders = new Map<number, SendContext>();
  private readonly senderList: SendContext[] = [];
  private readonly receivers = new Map<number, ReceiveContext>();
  private readonly ackQueue: ReceiveContext[] = [];
  private ackDeadline = Infinity;
  private earliest = Infinity;
  private readonly pool: SendOp[] = [];
  private readonly fields = new SrdFields();

  constructor(opts: { host: SrdHost; counters: SrdCounters; localGid: Uint8Array; incarnation: number; config?: Partial<SrdConfig> }) {
    this.host = opts.host;
    this.counters = opts.counters;
    this.localGid = opts.localGid;
    this.incarnation = opts.incarnation >>> 0;
    this.config = resolveSrdConfig(opts.config);
  }

  /** When `onTimer` next wants to run (ms on the caller's clock), or Infinity. */
  nextDeadline(): number {
    return this.earliest < this.ackDeadline ? this.earliest : this.ackDeadline;
  }

  /** Sends in flight or queued, all peers together. */
  get outstanding(): number {
    let n = 0;
    for (const ctx of this.senderList) n += ctx.inFlight + ctx.queued;
    return n;
  }

  /**
   * Takes a message whose payload the caller gathered at SRD_PAYLOAD_OFFSET of `buf`. It is
   * sent now if the peer's window has room, else queued (a full window never fails a send).
   */
  postSend(
    now: number,
    peer: SrdPeer,
    owner: unknown,
    wrId: number,
    buf: Buffer,
    payloadLen: number,
    srcQpn: number,
    dstQpn: number,
    qkey: number,
    imm: number | undefined,
    rnrRetry: number,
  ): void {
    let ctx = this.senders.get(peer.deviceIndex);
    if (ctx === undefined) {
      ctx = new SendContext(peer.deviceIndex, peer.host, peer.port, this.incarnation, this.config);
      this.senders.set(peer.deviceIndex, ctx);
      this.senderList.push(ctx);
    } else {
      // A peer that restarted elsewhere is reached at its new endpoint from now on.
      ctx.host = peer.host;
      ctx.port = peer.port;
    }
    // Known before the first ack, the incarnation keeps even the first messages from reaching
    // a later process under the same name.
    if (isNewerIncarnation(peer.incarnation, ctx.rxIncarnation)) ctx.rxIncarnation = peer.incarnation;
    const hasImm = imm !== undefined;
    encodeHeader(buf, PacketType.SRD_DATA, hasImm ? FLAG_HAS_IMM : 0, SRD_DATA_HDR_LEN, srcQpn, dstQpn, payloadLen, qkey, hasImm ? imm >>> 0 : 0, this.localGid);
    const op = this.pool.pop() ?? new SendOp();
    op.owner = owner;
    op.wrId = wrId;
    op.byteLen = payloadLen;
    op.buf = buf;
    op.len = SRD_DATA_HDR_LEN + payloadLen;
    op.rnrRetry = rnrRetry;
    op.answeredAt = now;
    if (ctx.queued === 0 && ctx.inFlight < ctx.window) this.launch(now, ctx, op);
    else ctx.queue.push(op);
  }

  /** First transmission of a message: it takes the next PSN. */
  private launch(now: number, ctx: SendContext, op: SendOp): void {
    const psn = ctx.nextPsn;
    ctx.nextPsn = (psn + 1) >>> 0;
    op.psn = psn;
    op.destIncarnation = ctx.rxIncarnation;
    ctx.ring[ctx.slot(psn)] = op;
    writeSrdData(op.buf as Buffer, ctx.session, psn, ctx.windowStart, 0, op.destIncarnation);
    this.transmit(now, ctx, op);
  }

  private transmit(now: number, ctx: SendContext, op: SendOp): void {
    const buf = op.buf as Buffer;
    writeU32(buf, OFF_WINDOW_START, ctx.windowStart);
    op.lastTxTime = microseconds(now);
    writeU32(buf, OFF_TX_TIME, op.lastTxTime);
    // The receiver must know when an RNR answer to this copy is final, so that no copy of it
    // is delivered after the sender has failed the send.
    if (op.rnrRetry !== 7 && op.rnrCount >= op.rnrRetry) buf[OFF_FLAGS] |= FLAG_RNR_LAST;
    else buf[OFF_FLAGS] &= ~FLAG_RNR_LAST;
    // Data going back to a peer whose messages wait for an ack carries that ack, when no
    // hole needs a selective part: a request/response exchange then sends no ack packets.
    const rx = this.receivers.get(ctx.peerIndex);
    if (rx !== undefined && rx.hasSession && rx.unacked > 0 && ((rx.highest + 1) >>> 0) === rx.base) {
      writePiggyback(buf, rx.session, rx.base, rx.echoTime);
      rx.unacked = 0;
      rx.freshDeliveries = 0;
      this.counters.acks_piggybacked++;
    } else {
      writePiggyback(buf, 0, 0, 0);
    }
    sealPacket(buf, op.len);
    const d = now + ctx.rto.backedOff(op.retries);
    op.deadline = d;
    if (d < ctx.deadline) ctx.deadline = d;
    if (d < this.earliest) this.earliest = d;
    this.host.transmit(buf, op.len, ctx.host, ctx.port);
  }

  /**
   * Handles one SRD packet whose base header was decoded (and checksum verified) into `hdr`.
   * `fromHost`/`fromPort` is where it came from: acks and NAKs go back there.
   */
  onPacket(now: number, buf: Buffer, hdr: PacketHeader, peerIndex: number, fromHost: string, fromPort: number): void {
    const f = this.fields;
    switch (hdr.type) {
      case PacketType.SRD_DATA:
        if (decodeSrdData(buf, hdr.hdrLen, f)) this.onData(now, buf, hdr, peerIndex, fromHost, fromPort);
        else this.dropBadHeader();
        return;
      case PacketType.SRD_ACK:
        if (decodeSrdAck(buf, hdr.hdrLen, f)) this.onAck(now, buf, peerIndex);
        else this.dropBadHeader();
        return;
      case PacketType.SRD_NAK:
        if (decodeSrdNak(buf, hdr.hdrLen, f)) this.onNak(now, peerIndex);
        else this.dropBadHeader();
        return;
      default:
        this.dropBadHeader();
    }
  }

  private dropBadHeader(): void {
    this.counters.rx_drop_bad_header++;
    this.counters.rx_drops++;
  }

  // ------------------------------------------------------------------ receiver

  private onData(now: number, buf: Buffer, hdr: PacketHeader, peerIndex: number, fromHost: string, fromPort: number): void {
    const f = this.fields;
    if (f.pbSession !== 0) {
      const ctx = this.senders.get(peerIndex);
      if (ctx !== undefined && f.pbSession === ctx.session) {
        // The session of a data packet is its sender's incarnation, as acks report it.
        this.applyAck(now, ctx, f.pbCum, f.pbEcho, f.session, null);
      }
    }
    let rx = this.receivers.get(peerIndex);
    if (rx === undefined) {
      rx = new ReceiveContext(peerIndex);
      this.receivers.set(peerIndex, rx);
    }
    if (f.destIncarnation !== 0 && f.destIncarnation !== this.incarnation) {
      // Meant for an earlier incarnation of this device (the process restarted): refusing it
      // keeps "at most once" across restarts; the sender fails it with UNKNOWN_PEER.
      this.counters.rx_drop_wrong_incarnation++;
      this.counters.rx_drops++;
      rx.host = fromHost;
      rx.port = fromPort;
      this.sendNakTo(fromHost, fromPort, f.session, f.psn, WcStatus.REMOTE_ERROR_UNKNOWN_PEER, f.txTime);
      return;
    }
    if (!rx.hasSession || rx.session !== f.session) {
      if (rx.isStale(f.session)) {
        this.counters.rx_drop_stale++;
        this.counters.rx_drops++;
        return;
      }
      rx.startSession(f.session, f.windowStart);
    }
    rx.host = fromHost;
    rx.port = fromPort;
    rx.advanceTo(f.windowStart);
    const psn = f.psn;
    const ahead = (psn - rx.base) | 0;
    if (ahead >= RX_WINDOW) {
      this.counters.rx_drop_window++;
      this.counters.rx_drops++;
      return;
    }
    rx.echoTime = f.txTime;
    if (rx.isDelivered(psn)) {
      // A retransmission of something delivered: its ack was lost or is late. Answer now.
      this.counters.rx_drop_duplicate++;
      this.counters.rx_drops++;
      this.sendAck(rx);
      return;
    }
    const refused = rx.refused.get(psn);
    if (refused !== undefined) {
      // A copy of a refused message: answered the same way, never delivered.
      this.counters.rx_drop_duplicate++;
      this.counters.rx_drops++;
      this.sendNak(rx, psn, refused, f.txTime);
      return;
    }
    const status = this.host.deliver(buf, hdr, hdr.hdrLen, hdr.payloadLen);
    if (status === WcStatus.SUCCESS) {
      // A new gap, or a hole filled, is news the sender acts on (fast retransmit, window): say
      // it at once. Packets that simply continue the stream are acked together.
      const d = (psn - rx.highest) | 0;
      const news = d > 1 || d < 0;
      if (d > 0) rx.highest = psn;
      rx.markDelivered(psn);
      if (rx.unacked === 0) rx.firstUnackedAt = now;
      rx.unacked++;
      rx.freshDeliveries++;
      if (news || rx.unacked >= this.config.ackEvery) this.sendAck(rx);
      else this.scheduleAck(now, rx);
    } else if (status === RNR) {
      this.counters.rnr_sent++;
      // The sender gives up after this answer: every later copy must get it too.
      if ((hdr.flags & FLAG_RNR_LAST) !== 0) rx.refused.set(psn, RNR);
      this.sendNak(rx, psn, RNR, f.txTime);
    } else {
      rx.refused.set(psn, status);
      this.sendNak(rx, psn, status, f.txTime);
    }
  }

  private scheduleAck(now: number, rx: ReceiveContext): void {
    if (rx.ackScheduled) return;
    rx.ackScheduled = true;
    this.ackQueue.push(rx);
    // Looked at on the next timer turn: ack then unless the stream is still flowing.
    if (now < this.ackDeadline) this.ackDeadline = now;
  }

  private sendAck(rx: ReceiveContext): void {
    const buf = Buffer.allocUnsafe(SRD_ACK_HDR_LEN);
    encodeHeader(buf, PacketType.SRD_ACK, 0, SRD_ACK_HDR_LEN, 0, 0, 0, 0, 0, this.localGid);
    writeSrdAck(buf, rx.session, rx.base, rx.echoTime, this.incarnation);
    const base = rx.base;
    for (let i = 0; i < SACK_BITS; i++) {
      if (rx.delivered[(base + 1 + i) % RX_WINDOW] === 1) setSackBit(buf, i);
    }
    sealPacket(buf, SRD_ACK_HDR_LEN);
    rx.unacked = 0;
    rx.freshDeliveries = 0;
    this.counters.acks_sent++;
    this.host.transmit(buf, SRD_ACK_HDR_LEN, rx.host, rx.port);
  }

  private sendNak(rx: ReceiveContext, psn: number, status: number, echoTime: number): void {
    this.sendNakTo(rx.host, rx.port, rx.session, psn, status, echoTime);
  }

  private sendNakTo(host: string, port: number, session: number, psn: number, status: number, echoTime: number): void {
    const buf = Buffer.allocUnsafe(SRD_NAK_HDR_LEN);
    encodeHeader(buf, PacketType.SRD_NAK, 0, SRD_NAK_HDR_LEN, 0, 0, 0, 0, 0, this.localGid);
    writeSrdNak(buf, session, psn, status, echoTime);
    sealPacket(buf, SRD_NAK_HDR_LEN);
    this.host.transmit(buf, SRD_NAK_HDR_LEN, host, port);
  }

  private flushAcks(now: number): void {
    const q = this.ackQueue;
    let kept = 0;
    let next = Infinity;
    for (let i = 0; i < q.length; i++) {
      const rx = q[i];
      if (rx.unacked === 0) {
        rx.ackScheduled = false;
        continue;
      }
      const heldUntil = rx.firstUnackedAt + this.config.ackDelayMs;
      if (rx.freshDeliveries > 0 && now < heldUntil) {
        // Still flowing: look again next turn, at the latest when the hold time is up.
        rx.freshDeliveries = 0;
        q[kept++] = rx;
        next = now;
        continue;
      }
      rx.ackScheduled = false;
      this.sendAck(rx);
    }
    q.length = kept;
    this.ackDeadline = next;
  }

  // ------------------------------------------------------------------ sender

  private onAck(now: number, buf: Buffer, peerIndex: number): void {
    const f = this.fields;
    const ctx = this.senders.get(peerIndex);
    if (ctx === undefined || f.session !== ctx.session) {
      // For a send context this device no longer has (an earlier incarnation): stale.
      this.counters.rx_drop_stale++;
      this.counters.rx_drops++;
      return;
    }
    this.counters.acks_received++;
    this.applyAck(now, ctx, f.cumAck, f.echoTime, f.incarnation, buf);
  }

  /** Applies an ack (a packet of its own, or piggybacked without SACK bits when `sack` is null). */
  private applyAck(now: number, ctx: SendContext, cum: number, echoTime: number, incarnation: number, sack: Buffer | null): void {
    ctx.everHeard = true;
    ctx.lastHeardAt = now;
    // Incarnations only grow: a late ack of a dead predecessor does not win over a newer one.
    if (isNewerIncarnation(incarnation, ctx.rxIncarnation)) ctx.rxIncarnation = incarnation;
    const echoed = (microseconds(now) - echoTime) >>> 0;
    if (echoTime !== 0 && echoed < 60_000_000) ctx.rto.sample(echoed / 1000);
    // Everything below cum_ack is delivered.
    while (((ctx.windowStart - cum) | 0) < 0 && ctx.windowStart !== ctx.nextPsn) {
      const op = ctx.opAt(ctx.windowStart);
      if (op !== null) this.settle(ctx, op, WcStatus.SUCCESS);
      else ctx.windowStart = (ctx.windowStart + 1) >>> 0;
    }
    this.advanceWindow(ctx);
    let highest = -1;
    for (let i = 0; sack !== null && i < SACK_BITS; i++) {
      if (!sackBit(sack, i)) continue;
      highest = i;
      const op = ctx.opAt((cum + 1 + i) >>> 0);
      if (op !== null) this.settle(ctx, op, WcStatus.SUCCESS);
    }
    if (highest >= 0) {
      // Holes with at least dupThresh later packets delivered are lost, most likely.
      const limit = (cum + 1 + highest - this.config.dupThresh) >>> 0;
      for (let psn = ctx.windowStart; ((psn - limit) | 0) <= 0 && psn !== ctx.nextPsn; psn = (psn + 1) >>> 0) {
        const op = ctx.opAt(psn);
        if (op === null || op.fastRetransmitted || op.rnrWaiting) continue;
        op.fastRetransmitted = true;
        this.retransmit(now, ctx, op);
      }
    }
    this.pump(now, ctx);
  }

  private onNak(now: number, peerIndex: number): void {
    const f = this.fields;
    const ctx = this.senders.get(peerIndex);
    if (ctx === undefined || f.session !== ctx.session) {
      this.counters.rx_drop_stale++;
      this.counters.rx_drops++;
      return;
    }
    ctx.everHeard = true;
    ctx.lastHeardAt = now;
    const op = ctx.opAt(f.psn);
    if (op === null) return;
    if (f.status !== RNR) {
      // The receiver restarted: what it refused was meant for its predecessor. New sends go
      // unstamped until its acks tell the new incarnation.
      if (f.status === WcStatus.REMOTE_ERROR_UNKNOWN_PEER && ctx.rxIncarnation === op.destIncarnation) ctx.rxIncarnation = 0;
      this.settle(ctx, op, f.status);
      this.pump(now, ctx);
      return;
    }
    this.counters.rnr_received++;
    // A NAK of an earlier attempt (duplicated or late) was already counted.
    if (op.rnrWaiting || f.echoTime !== op.lastTxTime) return;
    op.rnrCount++;
    op.answeredAt = now;
    if (op.rnrRetry !== 7 && op.rnrCount > op.rnrRetry) {
      this.counters.rnr_retry_exceeded++;
      this.settle(ctx, op, RNR);
      this.pump(now, ctx);
      return;
    }
    op.rnrWaiting = true;
    const backoff = Math.min(this.config.rnrBackoffMs * 2 ** Math.min(op.rnrCount - 1, 20), this.config.rnrBackoffMaxMs);
    op.deadline = now + backoff;
    if (op.deadline < ctx.deadline) ctx.deadline = op.deadline;
    if (op.deadline < this.earliest) this.earliest = op.deadline;
  }

  private retransmit(now: number, ctx: SendContext, op: SendOp): void {
    this.counters.retrans_pkts++;
    this.counters.retrans_bytes += op.len;
    this.transmit(now, ctx, op);
  }

  /** Completes an op and frees its window slot. */
  private settle(ctx: SendContext, op: SendOp, status: number): void {
    ctx.ring[ctx.slot(op.psn)] = null;
    this.host.completeSend(op, status);
    op.reset();
    this.pool.push(op);
    this.advanceWindow(ctx);
  }

  private advanceWindow(ctx: SendContext): void {
    while (ctx.windowStart !== ctx.nextPsn && ctx.ring[ctx.slot(ctx.windowStart)] === null) {
      ctx.windowStart = (ctx.windowStart + 1) >>> 0;
    }
  }

  /** Sends queued messages while the window has room. */
  private pump(now: number, ctx: SendContext): void {
    while (ctx.queued > 0 && ctx.inFlight < ctx.window) {
      const op = ctx.dequeue() as SendOp;
      this.launch(now, ctx, op);
    }
  }

  // ------------------------------------------------------------------ time

  /** Runs what is due: coalesced acks, retransmissions, RNR retries, and unresponsive-peer failures. */
  onTimer(now: number): void {
    if (this.ackDeadline <= now) this.flushAcks(now);
    if (this.earliest > now) return;
    let earliest = Infinity;
    for (let c = 0; c < this.senderList.length; c++) {
      const ctx = this.senderList[c];
      if (ctx.deadline <= now) this.scan(now, ctx);
      if (ctx.deadline < earliest) earliest = ctx.deadline;
    }
    this.earliest = earliest;
  }

  private scan(now: number, ctx: SendContext): void {
    const timeout = this.config.unresponsiveTimeoutMs;
    let next = Infinity;
    let timedOut = false;
    let burst = this.config.rtoBurst;
    for (let psn = ctx.windowStart; psn !== ctx.nextPsn; psn = (psn + 1) >>> 0) {
      const op = ctx.ring[ctx.slot(psn)];
      if (op === null || op.psn !== psn) continue;
      if (op.deadline <= now) {
        if (now - Math.max(op.answeredAt, ctx.lastHeardAt) >= timeout) {
          this.failUnresponsive(ctx);
          this.settle(ctx, op, ctx.everHeard ? WcStatus.LOCAL_ERROR_UNRESP_REMOTE : WcStatus.LOCAL_ERROR_UNREACH_REMOTE);
          continue;
        }
        if (op.rnrWaiting) {
          op.rnrWaiting = false;
          this.counters.rnr_retries++;
          this.transmit(now, ctx, op);
        } else if (burst > 0) {
          burst--;
          timedOut = true;
          op.retries++;
          op.fastRetransmitted = false;
          this.retransmit(now, ctx, op);
        } else {
          op.deadline = now + ctx.rto.backedOff(op.retries);
        }
      }
      if (op.deadline < next) next = op.deadline;
    }
    if (timedOut) this.counters.retrans_timeout_events++;
    ctx.deadline = next;
    // Queued sends share the silence budget: posted long enough ago to a silent peer, they
    // fail now instead of waiting for a window slot and a whole new timeout. FIFO, so only
    // the head can be due.
    for (let op = ctx.peek(); op !== null && now - Math.max(op.answeredAt, ctx.lastHeardAt) >= timeout; op = ctx.peek()) {
      ctx.dequeue();
      this.failUnresponsive(ctx);
      this.host.completeSend(op, ctx.everHeard ? WcStatus.LOCAL_ERROR_UNRESP_REMOTE : WcStatus.LOCAL_ERROR_UNREACH_REMOTE);
      op.reset();
      this.pool.push(op);
    }
    // Launches lower ctx.deadline themselves.
    this.pump(now, ctx);
  }

  private failUnresponsive(ctx: SendContext): void {
    if (ctx.everHeard) this.counters.unresponsive_remote_events++;
    else this.counters.unreachable_remote_events++;
  }

  // ------------------------------------------------------------------ lifetime

  /**
   * Abandons every send of `owner` (a QP moved to ERR or destroyed): each completes with
   * `status`, and the receiver learns through the window start to forget them.
   */
  abandonOwner(owner: unknown, status: number): void {
    for (const ctx of this.senderList) {
      for (let psn = ctx.windowStart; psn !== ctx.nextPsn; psn = (psn + 1) >>> 0) {
        const op = ctx.ring[ctx.slot(psn)];
        if (op !== null && op.psn === psn && op.owner === owner) this.settle(ctx, op, status);
      }
      let kept = 0;
      const q = ctx.queue;
      for (let i = ctx.queueHead; i < q.length; i++) {
        const op = q[i];
        if (op.owner === owner) {
          this.host.completeSend(op, status);
          op.reset();
          this.pool.push(op);
        } else {
          q[kept++] = op;
        }
      }
      q.length = kept;
      ctx.queueHead = 0;
    }
  }
}

/** The clock in microseconds, low 32 bits, never 0 (0 means "no timestamp" in acks). */
function microseconds(nowMs: number): number {
  const us = Math.floor(nowMs * 1000) >>> 0;
  return us === 0 ? 1 : us;
}
