import { EfaStatus } from '../common/efa-status';
import { encodeHeader, FLAG_PATH_SHIFT, PacketType, sealPacket, setPacketPath, type PacketHeader } from '../wire/header';
import type { PathCounters } from './path-set';
import { PacketPool } from '../common/packet-pool';
import {
  setSackBit,
  SACK_BITS,
  SRD_ACK_HDR_LEN,
  SRD_NAK_HDR_LEN,
  writePiggyback,
  writeSrdAck,
  writeSrdNak,
  type SrdFields,
} from '../wire/srd-header';
import { MAX_PSN_SPAN, PSN_DELIVERED, PSN_UNKNOWN } from './psn-ledger';
import type { AckCarrier } from './requester';
import type { SrdChannel } from './srd-channel';
import type { SrdConfig } from './srd-config';
import type { SrdCounters, SrdHost } from './srd-host';

/** Acks one flush may send for one peer when its news is spread wider than one selective map. */
const MAX_ACKS_PER_FLUSH = 4;

/**
 * The responder side of SRD: receives data packets, delivers each message at most once
 * (its PSN ledger remembers what was delivered and what was refused), and generates the
 * acks and NAKs. Acks are cumulative plus a 128-bit selective map anchored where the news
 * is, coalesced per turn of the event loop and at least every `ackEvery` packets; data
 * going back to the peer carries them when no hole needs a selective part.
 */
export class Responder implements AckCarrier {
  /** When the ack timer next wants to run. */
  ackDeadline = Infinity;

  private readonly cfg: SrdConfig;
  private readonly host: SrdHost;
  private readonly counters: SrdCounters;
  private readonly localGid: Uint8Array;
  private readonly incarnation: number;
  private readonly ackQueue: SrdChannel[] = [];
  private readonly pathCounters: PathCounters;
  /** Ack and NAK buffers, back in the pool once the transport let go of them. */
  private readonly ackPool = new PacketPool(SRD_ACK_HDR_LEN, 256);
  private readonly nakPool = new PacketPool(SRD_NAK_HDR_LEN, 64);

  constructor(cfg: SrdConfig, host: SrdHost, counters: SrdCounters, localGid: Uint8Array, incarnation: number, pathCounters: PathCounters) {
    this.pathCounters = pathCounters;
    this.cfg = cfg;
    this.host = host;
    this.counters = counters;
    this.localGid = localGid;
    this.incarnation = incarnation >>> 0;
  }

  /** Handles a data packet whose base header is in `hdr` and SRD extension in `f`. */
  onData(now: number, ch: SrdChannel, buf: Buffer, hdr: PacketHeader, f: SrdFields): void {
    const rx = ch.rx;
    // Answers go back on the path the packet came by (the sender learns from them that it delivers).
    const path = hdr.flags >> FLAG_PATH_SHIFT;
    this.pathCounters.rx[path]++;
    if (f.destIncarnation !== 0 && f.destIncarnation !== this.incarnation) {
      // Meant for an earlier incarnation of this device (the process restarted): refusing it
      // keeps "at most once" across restarts; the sender fails it with UNKNOWN_PEER.
      this.drop('rx_drop_wrong_incarnation');
      this.sendNak(ch, f.session, f.psn, EfaStatus.REMOTE_ERROR_UNKNOWN_PEER, f.txTime, path);
      return;
    }
    if (!rx.hasSession || rx.session !== f.session) {
      if (rx.isStale(f.session)) {
        this.drop('rx_drop_stale');
        return;
      }
      rx.startSession(f.session, f.windowStart);
    }
    const ledger = rx.ledger;
    ledger.advanceTo(f.windowStart);
    const psn = f.psn;
    const state = ledger.get(psn);
    if (state === PSN_DELIVERED) {
      // A copy of something delivered (or given up by the sender): its ack was lost or is late.
      // Its answer echoes this copy, but the session's echo stays that of the latest delivery:
      // in a burst of spurious resends, acks of new data must still give the sender RTT samples.
      this.drop('rx_drop_duplicate');
      let lo = psn;
      let hi = psn;
      if (rx.unacked > 0) {
        if (((rx.newLow - lo) | 0) < 0) lo = rx.newLow;
        if (((rx.newHigh - hi) | 0) > 0) hi = rx.newHigh;
      }
      this.sendAcks(ch, lo, hi, f.txTime, path);
      return;
    }
    if (state !== PSN_UNKNOWN) {
      // A copy of a refused PSN: the same answer again, never a delivery.
      this.drop('rx_drop_duplicate');
      this.sendNak(ch, rx.session, psn, state, f.txTime, path);
      return;
    }
    if (((psn - ledger.base) | 0) >= MAX_PSN_SPAN) {
      this.drop('rx_drop_window');
      return;
    }
    const status = this.host.deliver(buf, hdr, hdr.hdrLen, hdr.payloadLen, ch.peer);
    if (status === EfaStatus.SUCCESS) {
      rx.echoTime = f.txTime;
      rx.echoPath = path;
      // A new gap, or a hole filled, is news the sender acts on (fast retransmit, window): say
      // it at once. Packets that simply continue the stream are acked together.
      const d = (psn - rx.highest) | 0;
      const news = d > 1 || d < 0;
      if (d > 0) rx.highest = psn;
      ledger.set(psn, PSN_DELIVERED);
      rx.noteDelivered(psn, now);
      if (news || rx.unacked >= this.cfg.ackEvery) this.flushAck(ch);
      else this.scheduleAck(now, ch);
      return;
    }
    // Final for this PSN, RNR included: the sender retries an RNR'd message under a new PSN,
    // so no copy of this one may ever be delivered.
    if (status === EfaStatus.REMOTE_ERROR_RNR) this.counters.rnr_sent++;
    ledger.set(psn, status);
    this.sendNak(ch, rx.session, psn, status, f.txTime, path);
  }

  /** Writes a cumulative ack into a data packet for `ch` when one is owed and no hole needs a map. */
  fillPiggyback(ch: SrdChannel, buf: Buffer): void {
    const rx = ch.rx;
    if (rx.hasSession && rx.unacked > 0 && ((rx.highest + 1) >>> 0) === rx.ledger.base) {
      writePiggyback(buf, rx.session, rx.ledger.base, rx.echoTime);
      rx.acked();
      this.counters.acks_piggybacked++;
    } else {
      writePiggyback(buf, 0, 0, 0);
    }
  }

  private drop(cause: 'rx_drop_duplicate' | 'rx_drop_stale' | 'rx_drop_window' | 'rx_drop_wrong_incarnation'): void {
    this.counters[cause]++;
    this.counters.rx_drops++;
  }

  private scheduleAck(now: number, ch: SrdChannel): void {
    const rx = ch.rx;
    if (rx.ackScheduled) return;
    rx.ackScheduled = true;
    this.ackQueue.push(ch);
    // Looked at on the next timer turn: ack then unless the stream is still flowing.
    if (now < this.ackDeadline) this.ackDeadline = now;
  }

  private flushAck(ch: SrdChannel): void {
    const rx = ch.rx;
    this.sendAcks(ch, rx.newLow, rx.newHigh, rx.echoTime, rx.echoPath);
  }

  /**
   * Acks the state of the session with selective maps that cover [lo, hi]: from the
   * cumulative point when that reaches, else anchored at `lo` (the news lies far above a
   * message still missing below).
   */
  private sendAcks(ch: SrdChannel, lo: number, hi: number, echoTime: number, path: number): void {
    const rx = ch.rx;
    const cum = rx.ledger.base;
    let start = ((hi - cum) | 0) <= SACK_BITS || ((lo - cum) | 0) <= 0 ? (cum + 1) >>> 0 : lo;
    for (let k = 0; k < MAX_ACKS_PER_FLUSH; k++) {
      this.sendAck(ch, start, echoTime, path);
      start = (start + SACK_BITS) >>> 0;
      if (((hi - start) | 0) < 0) break;
    }
    rx.acked();
  }

  private sendAck(ch: SrdChannel, sackBase: number, echoTime: number, path: number): void {
    const rx = ch.rx;
    const ledger = rx.ledger;
    const pooled = this.ackPool.take();
    const buf = pooled.buf;
    encodeHeader(buf, PacketType.SRD_ACK, 0, SRD_ACK_HDR_LEN, 0, 0, 0, 0, 0, this.localGid);
    writeSrdAck(buf, rx.session, ledger.base, echoTime, this.incarnation, sackBase);
    for (let i = 0; i < SACK_BITS; i++) {
      const psn = (sackBase + i) >>> 0;
      if (((psn - ledger.base) | 0) > 0 && ledger.get(psn) === PSN_DELIVERED) setSackBit(buf, i);
    }
    setPacketPath(buf, path);
    sealPacket(buf, SRD_ACK_HDR_LEN);
    this.counters.acks_sent++;
    this.host.transmit(buf, SRD_ACK_HDR_LEN, ch.peer.host, ch.peer.port, pooled.release);
  }

  private sendNak(ch: SrdChannel, session: number, psn: number, status: number, echoTime: number, path: number): void {
    const pooled = this.nakPool.take();
    const buf = pooled.buf;
    encodeHeader(buf, PacketType.SRD_NAK, 0, SRD_NAK_HDR_LEN, 0, 0, 0, 0, 0, this.localGid);
    writeSrdNak(buf, session, psn, status, echoTime);
    setPacketPath(buf, path);
    sealPacket(buf, SRD_NAK_HDR_LEN);
    this.host.transmit(buf, SRD_NAK_HDR_LEN, ch.peer.host, ch.peer.port, pooled.release);
  }

  /** Sends the acks that are due: at a pause in the stream, or once held ackDelayMs. */
  onTimer(now: number): void {
    if (this.ackDeadline > now) return;
    const q = this.ackQueue;
    let kept = 0;
    let next = Infinity;
    for (let i = 0; i < q.length; i++) {
      const ch = q[i];
      const rx = ch.rx;
      if (rx.unacked === 0) {
        rx.ackScheduled = false;
        continue;
      }
      const heldUntil = rx.firstUnackedAt + this.cfg.ackDelayMs;
      if (rx.freshDeliveries > 0 && now < heldUntil) {
        // Still flowing: look again next turn, at the latest when the hold time is up.
        rx.freshDeliveries = 0;
        q[kept++] = ch;
        next = now;
        continue;
      }
      rx.ackScheduled = false;
      this.flushAck(ch);
    }
    q.length = kept;
    this.ackDeadline = next;
  }
}
