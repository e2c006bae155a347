import { isNewerIncarnation } from '../common/incarnation';
import { EfaStatus } from '../common/efa-status';
import { sealPacket, setPacketPath, writeU32 } from '../wire/header';
import type { CongestionControl } from './congestion';
import type { PathCounters } from './path-set';
import { OFF_TX_TIME, OFF_WINDOW_START, sackBit, SACK_BITS, writeSrdData } from '../wire/srd-header';
import { DeadlineHeap } from './deadline-heap';
import { MAX_PSN_SPAN } from './psn-ledger';
import { OpState, SendOp } from './send-op';
import type { SendState } from './send-state';
import type { SrdChannel } from './srd-channel';
import type { SrdConfig } from './srd-config';
import type { SrdCounters, SrdHost } from './srd-host';

const RNR = EfaStatus.REMOTE_ERROR_RNR;

/** A timer this late (ms) says the device itself was stalled. */
const STALL_MS = 20;

/** How a data packet going to a peer picks up the ack owed to that peer (the responder). */
export interface AckCarrier {
  /** Writes the piggybacked-ack fields of a data packet for `ch` (zeros when none is owed). */
  fillPiggyback(ch: SrdChannel, buf: Buffer): void;
}

/**
 * The requester side of SRD: sends in flight, their retransmission, RNR back-off and
 * completion, for every peer of the device.
 *
 * What bounds a peer is the number of packets actually in flight to it (`window`) and, for
 * all peers together, `deviceWindow`. A send refused with RNR retires its PSN (the receiver
 * answers every later copy of that PSN the same way, so nothing is delivered twice) and
 * waits out its back-off holding no slot; it then goes out again under a new PSN. A lost
 * packet holds only its own slot: the receiver tracks any span of PSNs above it.
 *
 * Every send completes in bounded time: it fails once its peer, asked something all along,
 * has made no progress for `unresponsiveTimeoutMs` since the send was posted (or woke from
 * a back-off), and the sends waiting behind it fail with it. Progress is an answer to what
 * is outstanding now (an ack that completes a send, a NAK of a PSN in flight), never an echo
 * of a copy already settled. A peer that keeps making progress completes what it is sent:
 * every loss is independent, so a packet retransmitted for ever is not a schedule that
 * exists, while the sends it overtook complete.
 */
export class Requester {
  /** The deadlines of sends in flight and parked. */
  readonly heap = new DeadlineHeap();
  /** What all peers count against the device-wide window (the sum of their pipes). */
  deviceInFlight = 0;

  private readonly cfg: SrdConfig;
  private readonly timeoutMs: number;
  private readonly host: SrdHost;
  private readonly counters: SrdCounters;
  private readonly acks: AckCarrier;
  private readonly channels: readonly SrdChannel[];
  private readonly cc: CongestionControl;
  private readonly pathCounters: PathCounters;
  private readonly pool: SendOp[] = [];
  private readonly recycleBound = (op: SendOp): void => this.recycle(op);
  /** Channels waiting for device-wide room, served in turn (a ring: head index plus array). */
  private blocked: SrdChannel[] = [];
  private blockedHead = 0;
  /** Timer turns, to reset per-peer retransmission bursts. */
  private turn = 0;
  /** True while onTimer runs: resends are then limited per peer (rtoBurst). */
  private inTimer = false;

  constructor(cfg: SrdConfig, host: SrdHost, counters: SrdCounters, acks: AckCarrier, channels: readonly SrdChannel[], cc: CongestionControl, pathCounters: PathCounters) {
    this.cc = cc;
    this.pathCounters = pathCounters;
    this.cfg = cfg;
    this.timeoutMs = cfg.unresponsiveTimeoutMs;
    this.host = host;
    this.counters = counters;
    this.acks = acks;
    this.channels = channels;
  }

  /** A send object from the pool. */
  take(): SendOp {
    const op = this.pool.pop() ?? new SendOp();
    op.recycle = this.recycleBound;
    return op;
  }

  /** Takes a send whose datagram is encoded up to its SRD extension; sends it now if there is room. */
  post(now: number, ch: SrdChannel, op: SendOp): void {
    op.channel = ch;
    op.since = now;
    op.state = OpState.QUEUED;
    ch.tx.queue.push(op);
    this.pump(now, ch);
  }

  // ------------------------------------------------------------------ sending

  private peerRoom(tx: SendState): boolean {
    return tx.inFlight < this.cfg.window && tx.inNet < Math.floor(tx.cwnd) && tx.lostCount === 0 && ((tx.nextPsn - tx.windowStart) >>> 0) < MAX_PSN_SPAN - 1;
  }

  /** Keeps the device-wide count in step with what `tx` may count against it. */
  private repipe(tx: SendState): void {
    const cw = Math.floor(tx.cwnd);
    const pipe = tx.inNet < cw ? tx.inNet : cw;
    this.deviceInFlight += pipe - tx.pipe;
    tx.pipe = pipe;
  }

  /** Acks completed `n` sends, with a round trip of `rttMs` (< 0: none): the controller sets the window. */
  private grow(tx: SendState, now: number, rttMs: number, n: number): void {
    const before = tx.cwnd;
    this.cc.onAck(tx, now, rttMs, n);
    if (tx.cwnd !== before) this.repipe(tx);
  }

  /** A retransmission timeout: the peer gets one packet in flight until acks come back. */
  private collapse(tx: SendState): void {
    tx.ssthresh = Math.max(2, tx.inFlight / 2, tx.cwnd / 2);
    tx.cwnd = 1;
    this.repipe(tx);
  }

  /** Resends lost packets, then sends what waits for `ch`, while it and the device have room. */
  private pump(now: number, ch: SrdChannel): void {
    const tx = ch.tx;
    // Within a timer turn, resends stay within the turn's burst; acks open the window again.
    if (tx.lostCount > 0) this.repair(now, ch, this.inTimer && tx.burstTurn === this.turn ? tx.burstLeft : Infinity);
    while (tx.waiting > 0 && this.peerRoom(tx)) {
      if (this.deviceInFlight >= this.cfg.deviceWindow) {
        this.block(ch);
        return;
      }
      this.launchNext(now, ch);
    }
  }

  /** True when `tx` has work the device-wide window is all that holds back. */
  private wantsDevice(tx: SendState): boolean {
    if (tx.lostCount > 0) return tx.inNet < Math.floor(tx.cwnd) && (!this.inTimer || tx.burstTurn !== this.turn || tx.burstLeft > 0);
    return tx.waiting > 0 && this.peerRoom(tx);
  }

  /** Launches the next waiting send of `ch` (or fails it, if the peer has been silent too long). */
  private launchNext(now: number, ch: SrdChannel): void {
    const tx = ch.tx;
    const op = (tx.ready.size > 0 ? tx.ready.shift() : tx.queue.shift()) as SendOp;
    if (tx.inFlight > 0 && now >= this.silentAt(tx, op)) this.failWaiting(ch, op);
    else this.launch(now, ch, op);
  }

  private block(ch: SrdChannel): void {
    if (ch.tx.blocked) return;
    ch.tx.blocked = true;
    this.blocked.push(ch);
  }

  /** A device-wide slot came free: peers that waited for one go first, one send each in turn. */
  private slotFreed(now: number, ch: SrdChannel): void {
    while (this.blockedHead < this.blocked.length && this.deviceInFlight < this.cfg.deviceWindow) {
      const c = this.blocked[this.blockedHead++];
      c.tx.blocked = false;
      if (!this.wantsDevice(c.tx)) continue;
      // One unit of work each, in turn: a lost packet resent first, else a new one launched.
      // A peer whose lost packets cannot go yet (still in the socket, or about to fail)
      // leaves the line; its own timers bring it back.
      if (c.tx.lostCount > 0) {
        if (this.repair(now, c, 1) === 0) continue;
      } else {
        this.launchNext(now, c);
      }
      if (this.wantsDevice(c.tx)) this.block(c);
    }
    if (this.blockedHead === this.blocked.length) {
      this.blocked.length = 0;
      this.blockedHead = 0;
    } else if (this.blockedHead > 64 && this.blockedHead * 2 > this.blocked.length) {
      this.blocked = this.blocked.slice(this.blockedHead);
      this.blockedHead = 0;
    }
    this.pump(now, ch);
  }

  /** First transmission of a send under a new PSN. */
  private launch(now: number, ch: SrdChannel, op: SendOp): void {
    const tx = ch.tx;
    const psn = tx.nextPsn;
    tx.nextPsn = (psn + 1) >>> 0;
    op.psn = psn;
    op.state = OpState.IN_FLIGHT;
    op.retries = 0;
    op.fastRetransmitted = false;
    op.lostAt = Infinity;
    op.launchedAt = now;
    op.copies = 0;
    if (!op.stamped) {
      // Known before the first ack, the incarnation keeps even the first messages from
      // reaching a later process under the same name; later PSNs of this send keep it.
      op.destIncarnation = tx.rxIncarnation;
      op.stamped = true;
    }
    if (op.rnrCount > 0) this.counters.rnr_retries++;
    if (tx.inFlight === 0) {
      tx.busySince = now;
      tx.stallCredit = 0;
    }
    tx.append(op);
    this.repipe(tx);
    writeSrdData(op.buf as Buffer, tx.session, psn, 0, 0, op.destIncarnation);
    this.transmit(now, ch, op, -1);
  }

  /** Sends the current copy of `op` on a path: any (avoid -1, a new packet) or preferably not `avoid`. */
  private transmit(now: number, ch: SrdChannel, op: SendOp, avoid: number): void {
    const tx = ch.tx;
    const buf = op.buf as Buffer;
    const path = tx.paths.pick(now, avoid);
    op.path = path;
    op.copies++;
    this.pathCounters.tx[path]++;
    setPacketPath(buf, path);
    writeU32(buf, OFF_WINDOW_START, tx.windowStart);
    op.lastTxTime = microseconds(now);
    op.sentAt = now;
    writeU32(buf, OFF_TX_TIME, op.lastTxTime);
    this.acks.fillPiggyback(ch, buf);
    sealPacket(buf, op.len);
    op.rtoAt = now + tx.rto.backedOff(op.retries);
    this.heap.set(op, this.inFlightDeadline(tx, op));
    op.inSocket++;
    this.host.transmit(buf, op.len, ch.peer.host, ch.peer.port, op.onSent);
  }

  /** Resends a hole the selective acks revealed, without waiting for its RTO (nor backing off). */
  private fastRetransmit(now: number, ch: SrdChannel, op: SendOp): void {
    op.fastRetransmitted = true;
    op.lostAt = Infinity;
    ch.tx.paths.lost(now, op.path);
    this.retransmit(now, ch, op);
  }

  /** Sends `op` again, on another path than its lost copy's where there is one. */
  private retransmit(now: number, ch: SrdChannel, op: SendOp): void {
    this.counters.retrans_pkts++;
    this.counters.retrans_bytes += op.len;
    this.pathCounters.retrans[op.path]++;
    this.transmit(now, ch, op, op.path);
  }

  // ------------------------------------------------------------------ answers

  /**
   * Applies an ack: every send below `cum` and each one the selective map (`sack`, bits from
   * `sackBase`; null for a piggybacked ack) names was delivered.
   */
  onAck(now: number, ch: SrdChannel, cum: number, echoTime: number, incarnation: number, sack: Uint8Array | null, sackBase: number, ackPath: number): void {
    const tx = ch.tx;
    tx.everAnswered = true;
    // An ack travels back on the path of the packet it echoes: that path delivered.
    if (ackPath >= 0 && ackPath < tx.paths.n) tx.paths.delivered(ackPath);
    // Incarnations only grow: a late ack of a dead predecessor does not win over a newer one.
    if (isNewerIncarnation(incarnation, tx.rxIncarnation)) tx.rxIncarnation = incarnation;
    // A receiver never acks beyond what was sent; a bogus cum must not complete new sends.
    const limit = ((cum - tx.nextPsn) | 0) > 0 ? tx.nextPsn : cum;
    let settled = 0;
    while (tx.head !== null && ((tx.head.psn - limit) | 0) < 0) {
      this.settleDelivered(tx, tx.head);
      settled++;
    }
    if (sack !== null) {
      let highest = -1;
      for (let op = tx.head; op !== null; ) {
        const next = op.next;
        const d = (op.psn - sackBase) | 0;
        if (d >= SACK_BITS) break;
        if (d >= 0 && sackBit(sack, d)) {
          this.settleDelivered(tx, op);
          settled++;
        }
        op = next;
      }
      for (let i = SACK_BITS - 1; i >= 0; i--) {
        if (sackBit(sack, i)) {
          highest = i;
          break;
        }
      }
      // Holes with at least dupThresh later packets delivered are lost, most likely, once
      // they are older than the round trip's usual spread (srtt + 4 rttvar, as an RTO without
      // its floor; RACK reasons alike): a copy merely overtaken, or whose NAK is still on its
      // way, must not be sent twice.
      if (highest >= 0) {
        const last = (sackBase + highest - this.cfg.dupThresh) >>> 0;
        const rto = tx.rto;
        const wait = rto.srtt + (4 * rto.rttvar > rto.srtt / 4 ? 4 * rto.rttvar : rto.srtt / 4);
        for (let op = tx.head; op !== null && ((op.psn - last) | 0) <= 0; op = op.next) {
          if (op.fastRetransmitted || op.inSocket > 0 || op.lost) continue;
          if (now - op.sentAt < wait) {
            // Not old enough yet: look again when it is, even if no other ack comes.
            op.lostAt = op.sentAt + wait;
            if (op.lostAt < op.deadline) this.heap.set(op, op.lostAt);
            continue;
          }
          this.fastRetransmit(now, ch, op);
        }
      }
    }
    // The echo names the copy that reached the receiver (the latest it delivered, or the
    // duplicate just answered), so the round trip is unambiguous even for a resent packet.
    const echoed = (microseconds(now) - echoTime) >>> 0;
    const valid = echoTime !== 0 && echoed < 60_000_000;
    // Every answer on a path measures it, a late copy's too: that is how a slow path shows.
    if (valid && ackPath >= 0 && ackPath < tx.paths.n) {
      this.pathCounters.sampleRtt(ackPath, echoed);
      tx.paths.sampleRtt(ackPath, echoed / 1000);
    }
    if (settled > 0) {
      // No Karn rule is needed, and none may be, since a peer slower than the backed-off RTO
      // would then never give a sample (every packet resent before its ack) and its RTO could
      // never grow to fit.
      let rtt = -1;
      if (valid) {
        rtt = echoed / 1000;
        tx.rto.sample(rtt);
      }
      this.progressed(tx, now);
      this.grow(tx, now, rtt, settled);
      this.slotFreed(now, ch);
    }
  }

  /** A NAK of one PSN: receiver not ready (back off, retry under a new PSN) or a final error. */
  onNak(now: number, ch: SrdChannel, psn: number, status: number, path: number): void {
    const tx = ch.tx;
    tx.everAnswered = true;
    // Like an ack, a NAK comes back on the path of the packet refused, which got through.
    if (path < tx.paths.n) tx.paths.delivered(path);
    if (status === RNR) this.counters.rnr_received++;
    const op = tx.find(psn);
    // Not in flight: an answer to a copy of a PSN already retired or completed.
    if (op === null) return;
    this.progressed(tx, now);
    if (status !== RNR) {
      // The receiver restarted: what it refused was meant for its predecessor. New sends go
      // unstamped until its acks tell the new incarnation.
      if (status === EfaStatus.REMOTE_ERROR_UNKNOWN_PEER && tx.rxIncarnation === op.destIncarnation) tx.rxIncarnation = 0;
      this.settle(op, status);
      this.slotFreed(now, ch);
      return;
    }
    op.rnrCount++;
    if (op.rnrRetry !== 7 && op.rnrCount > op.rnrRetry) {
      this.counters.rnr_retry_exceeded++;
      this.settle(op, RNR);
      this.slotFreed(now, ch);
      return;
    }
    tx.unlink(op);
    this.repipe(tx);
    // The packet left the network as an ack's would: the window may grow, or a peer's
    // refused messages, retried first, would hold a small window and starve its other QPs.
    this.grow(tx, now, -1, 1);
    op.state = OpState.PARKED;
    tx.parked++;
    const backoff = Math.min(this.cfg.rnrBackoffMs * 2 ** Math.min(op.rnrCount - 1, 30), this.cfg.rnrBackoffMaxMs);
    this.heap.set(op, now + backoff);
    this.slotFreed(now, ch);
  }

  // ------------------------------------------------------------------ time

  /** Runs what is due: retransmissions, ends of RNR back-offs, failures of silent peers. */
  onTimer(now: number): void {
    this.turn++;
    this.inTimer = true;
    const heap = this.heap;
    // Deadlines this late mean this device did not run (a busy or starved process): that time
    // is not the peers' silence.
    const late = now - heap.peekDeadline();
    if (late > STALL_MS) for (const ch of this.channels) if (ch.tx.inFlight > 0) ch.tx.stallCredit += late;
    try {
      while (heap.peekDeadline() <= now) {
        const op = heap.peek() as SendOp;
        const ch = op.channel as SrdChannel;
        if (op.state === OpState.PARKED) this.wake(now, ch, op);
        else this.inFlightDue(now, ch, op);
      }
    } finally {
      this.inTimer = false;
    }
  }

  private wake(now: number, ch: SrdChannel, op: SendOp): void {
    const tx = ch.tx;
    this.heap.remove(op);
    tx.parked--;
    op.state = OpState.READY;
    // A back-off is not silence of the peer: the wait for it starts over.
    op.since = now;
    tx.ready.push(op);
    this.pump(now, ch);
  }

  private inFlightDue(now: number, ch: SrdChannel, op: SendOp): void {
    const tx = ch.tx;
    if (now >= this.silentAt(tx, op)) {
      this.countSilence(tx);
      this.settle(op, this.silenceStatus(tx));
      // The peer was asked and said nothing for a whole timeout: what waits for it fails too,
      // rather than each send in turn taking the window and a timeout of its own.
      for (let w = tx.ready.shift(); w !== null; w = tx.ready.shift()) this.failWaiting(ch, w);
      for (let w = tx.queue.shift(); w !== null; w = tx.queue.shift()) this.failWaiting(ch, w);
      this.slotFreed(now, ch);
      return;
    }
    if (now >= op.lostAt) {
      // Found lost by the selective acks, and now old enough to resend. (A copy the socket
      // still holds is left to later acks or its RTO: the deadline must move on.)
      op.lostAt = Infinity;
      if (now < op.rtoAt && op.inSocket === 0) {
        this.fastRetransmit(now, ch, op);
        return;
      }
    }
    if (now >= op.rtoAt) {
      // Looked at again after another RTO if it is still waiting then.
      op.rtoAt = now + tx.rto.backedOff(op.retries);
      // A copy the socket still holds has not even left: it is not lost, just late.
      if (op.inSocket === 0) {
        if (tx.burstTurn !== this.turn) {
          tx.burstTurn = this.turn;
          tx.burstLeft = this.cfg.rtoBurst;
        }
        if (!op.lost) {
          if (tx.timeoutTurn !== this.turn) {
            tx.timeoutTurn = this.turn;
            this.counters.retrans_timeout_events++;
            tx.rto.timedOut();
            // Only a peer that answered nothing since this copy left is in trouble; one lost
            // packet among acked ones is not a reason to slow the rest down.
            if (tx.lastProgressAt < op.sentAt) this.collapse(tx);
          }
          // A copy unanswered while the peer answered others says its path is bad; a peer
          // silent on every path says nothing about any one of them.
          if (tx.lastProgressAt >= op.sentAt) tx.paths.lost(now, op.path);
          tx.markLost(op);
          this.repipe(tx);
        }
        this.heap.set(op, this.inFlightDeadline(tx, op));
        // The room the lost packet left goes to peers waiting for the device first, then to
        // this peer's resends (pump) within its window and the turn's burst.
        this.slotFreed(now, ch);
        return;
      }
    }
    this.heap.set(op, this.inFlightDeadline(tx, op));
  }

  /**
   * Resends lost packets, oldest first, while the congestion window has room (at most `budget`
   * of them: a timer turn resends rtoBurst per peer at most).
   */
  private repair(now: number, ch: SrdChannel, budget: number): number {
    const tx = ch.tx;
    let resent = 0;
    while (budget > 0 && tx.lostCount > 0 && tx.inNet < Math.floor(tx.cwnd)) {
      if (this.deviceInFlight >= this.cfg.deviceWindow) {
        this.block(ch);
        return resent;
      }
      const op = tx.firstLost();
      // None the socket let go of, or the oldest is about to fail for the peer's silence.
      if (op === null || now >= this.silentAt(tx, op)) return resent;
      resent++;
      budget--;
      if (this.inTimer && tx.burstTurn === this.turn) tx.burstLeft--;
      tx.markResent(op);
      op.retries++;
      op.fastRetransmitted = false;
      op.lostAt = Infinity;
      this.retransmit(now, ch, op);
      this.repipe(tx);
    }
    return resent;
  }

  /**
   * The earlier of its RTO and the peer's silence running out. (The failure check compare `now` with these same sums, so a deadline that is due always
   * acts: never a float rounding that re-arms the same instant for ever.)
   */
  private inFlightDeadline(tx: SendState, op: SendOp): number {
    let d = op.rtoAt;
    if (op.lostAt < d) d = op.lostAt;
    const silent = this.silentAt(tx, op);
    if (silent < d) d = silent;
    return d;
  }

  /**
   * When `op` fails if the peer makes no progress before: a timeout after the latest of its
   * post (or wake), the peer's last progress, and the moment the peer was last asked
   * something after a pause (meaningful while the peer has packets in flight).
   */
  private silentAt(tx: SendState, op: SendOp): number {
    let since = op.since > tx.lastProgressAt ? op.since : tx.lastProgressAt;
    if (tx.busySince > since) since = tx.busySince;
    // A peer whose measured round trips are long (a starved receiver, a deep queue) is slow,
    // not dead: it gets four RTOs of silence when that is longer than the timeout (the RTO is
    // capped at half the timeout, so never more than twice the timeout).
    const rto4 = 4 * tx.rto.rto;
    return since + (rto4 > this.timeoutMs ? rto4 : this.timeoutMs) + tx.stallCredit;
  }

  /** Answers were heard from the peer (or it was just asked after a pause): its clock restarts. */
  private progressed(tx: SendState, now: number): void {
    tx.lastProgressAt = now;
    tx.stallCredit = 0;
  }

  private silenceStatus(tx: SendState): EfaStatus {
    return tx.everAnswered ? EfaStatus.LOCAL_ERROR_UNRESP_REMOTE : EfaStatus.LOCAL_ERROR_UNREACH_REMOTE;
  }

  private countSilence(tx: SendState): void {
    if (tx.everAnswered) this.counters.unresponsive_remote_events++;
    else this.counters.unreachable_remote_events++;
  }

  private failWaiting(ch: SrdChannel, op: SendOp): void {
    this.countSilence(ch.tx);
    this.host.completeSend(op, this.silenceStatus(ch.tx));
    this.finish(op);
  }

  // ------------------------------------------------------------------ completion

  /** An ack says `op` arrived: with a single copy sent, its path is known to deliver. */
  private settleDelivered(tx: SendState, op: SendOp): void {
    if (op.copies === 1) tx.paths.delivered(op.path);
    this.settle(op, EfaStatus.SUCCESS);
  }

  /** Completes a send in flight or parked; the caller frees its slot (slotFreed). */
  private settle(op: SendOp, status: number): void {
    const tx = (op.channel as SrdChannel).tx;
    if (op.state === OpState.IN_FLIGHT) {
      tx.unlink(op);
      this.repipe(tx);
    } else if (op.state === OpState.PARKED) {
      tx.parked--;
    }
    this.heap.remove(op);
    this.host.completeSend(op, status);
    this.finish(op);
  }

  private finish(op: SendOp): void {
    op.state = OpState.DONE;
    if (op.inSocket === 0) this.recycle(op);
  }

  private recycle(op: SendOp): void {
    const buf = op.buf;
    op.reset();
    this.pool.push(op);
    if (buf !== null) this.host.releaseBuffer(buf);
  }

  /**
   * Completes every send of `owner` (a QP moved to ERR or destroyed) with `status`; the
   * receivers learn through the window start to forget them.
   */
  abandonOwner(now: number, owner: unknown, status: number): void {
    for (const op of this.heap.toArray()) if (op.owner === owner && op.state === OpState.PARKED) this.settle(op, status);
    for (const ch of this.channels) {
      const tx = ch.tx;
      for (let op = tx.head; op !== null; ) {
        const next = op.next;
        if (op.owner === owner) this.settle(op, status);
        op = next;
      }
      for (const q of [tx.ready, tx.queue]) {
        for (const op of q.removeWhere((o) => o.owner === owner)) {
          this.host.completeSend(op, status);
          this.finish(op);
        }
      }
    }
    for (const ch of this.channels) this.slotFreed(now, ch);
  }

  /** Sends posted and not completed, all peers together. */
  get outstanding(): number {
    let n = 0;
    for (const ch of this.channels) n += ch.tx.inFlight + ch.tx.parked + ch.tx.waiting;
    return n;
  }
}

/** The clock in microseconds, low 32 bits, never 0 (0 means "no timestamp" in acks). */
export function microseconds(nowMs: number): number {
  const us = Math.floor(nowMs * 1000) >>> 0;
  return us === 0 ? 1 : us;
}
