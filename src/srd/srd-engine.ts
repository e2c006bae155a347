import { isNewerIncarnation } from '../common/incarnation';
import { encodeHeader, FLAG_HAS_IMM, FLAG_PATH_SHIFT, PacketType, type PacketHeader } from '../wire/header';
import { RDMA_HDR_LEN } from '../wire/rdma-header';
import { decodeSrdAck, decodeSrdData, decodeSrdNak, SRD_DATA_HDR_LEN, SrdFields } from '../wire/srd-header';
import { ReceiveState } from './receive-state';
import { CongestionControl } from './congestion';
import { PathCounters, PathSet } from './path-set';
import { Requester } from './requester';
import { Responder } from './responder';
import { SendState } from './send-state';
import { SrdChannel, type SrdPeer } from './srd-channel';
import { resolveSrdConfig, type SrdConfig } from './srd-config';
import type { SrdCounters, SrdHost } from './srd-host';

export type { SrdPeer } from './srd-channel';

/** Offset of the payload in an SRD data packet: the device gathers the message there. */
export const SRD_PAYLOAD_OFFSET = SRD_DATA_HDR_LEN;
/** Offset of the payload in an RDMA packet (SRD data plus the RDMA extension). */
export const RDMA_PAYLOAD_OFFSET = RDMA_HDR_LEN;

/**
 * SRD, sans-IO: reliable, unordered delivery of packets of at most one MTU between devices:
 * messages, and the segments of RDMA operations (which the device splits and joins).
 *
 * Inputs are `postSend`, `onPacket` and `onTimer`, each with the time (ms) passed in;
 * outputs go through the SrdHost (transmit, deliver, completeSend, releaseBuffer) and
 * `nextDeadline()`, which says when `onTimer` wants to run. One SrdChannel per remote device,
 * shared by all QPs as on EFA, holds the requester's and the responder's state for it.
 *
 * - A message is delivered the moment it arrives; a loss, an RNR wait or a slow QP never
 *   holds back another message, on the same QP or another.
 * - At most once: the receiver's ledger remembers every PSN of the sender's session it
 *   delivered or refused, and the sender's window start tells it what it may forget.
 * - Retransmission on an RTO from measured RTT (RFC 6298) with exponential back-off, and fast
 *   retransmission of holes the selective acks reveal.
 * - Receiver-not-ready replies are retried after a back-off, up to the QP's rnr_retry.
 * - Nothing hangs: a send fails (UNRESP_REMOTE, or UNREACH_REMOTE when the peer never
 *   answered) once its peer made no progress for `unresponsiveTimeoutMs`.
 */
export class SrdEngine {
  readonly config: SrdConfig;
  /** This device's incarnation: the session of every send, and what acks report. */
  readonly incarnation: number;
  readonly requester: Requester;
  readonly responder: Responder;
  private readonly counters: SrdCounters;
  private readonly localGid: Uint8Array;
  private readonly channels: SrdChannel[] = [];
  private readonly fields = new SrdFields();
  /** Per-path figures, all peers together. */
  readonly pathCounters: PathCounters;
  private readonly cc: CongestionControl;
  private readonly initialCwnd: number;

  constructor(opts: { host: SrdHost; counters: SrdCounters; localGid: Uint8Array; incarnation: number; config?: Partial<SrdConfig> }) {
    this.counters = opts.counters;
    this.localGid = opts.localGid;
    this.incarnation = opts.incarnation >>> 0;
    this.config = resolveSrdConfig(opts.config);
    this.pathCounters = new PathCounters(this.config.paths);
    this.cc = new CongestionControl(this.config, this.pathCounters);
    this.initialCwnd = this.cc.initialWindow;
    this.responder = new Responder(this.config, opts.host, opts.counters, opts.localGid, this.incarnation, this.pathCounters);
    this.requester = new Requester(this.config, opts.host, opts.counters, this.responder, this.channels, this.cc, this.pathCounters);
  }

  /** When `onTimer` next wants to run (ms on the caller's clock), or Infinity. */
  nextDeadline(): number {
    let d = this.requester.heap.peekDeadline();
    if (this.responder.ackDeadline < d) d = this.responder.ackDeadline;
    return d;
  }

  /**
   * The round trip the links add by themselves (ms): what the device's own fault injector
   * delays (delay and jitter, both ways). Congestion control judges queueing above it.
   */
  setLinkDelay(ms: number): void {
    this.cc.setLinkDelay(ms);
  }

  /** Per-path counters and the congestion controller's, under their queryStats names. */
  pathStats(out: Record<string, number>): void {
    this.pathCounters.snapshot(out);
    let cwnd = 0;
    for (const ch of this.channels) cwnd += ch.tx.cwnd;
    out.cwnd_sum = Math.round(cwnd * 100) / 100;
  }

  /** Sends posted and not yet completed, all peers together. */
  get outstanding(): number {
    return this.requester.outstanding;
  }

  /** The engine's state for `peer`, created on first use and kept on the peer record. */
  channelOf(peer: SrdPeer): SrdChannel {
    let ch = peer.srd;
    if (ch === null) {
      const paths = new PathSet(this.config, this.pathCounters);
      ch = new SrdChannel(peer, new SendState(this.incarnation, this.config, paths, this.initialCwnd), new ReceiveState());
      peer.srd = ch;
      this.channels.push(ch);
    }
    return ch;
  }

  /**
   * Takes a message whose payload the caller gathered at SRD_PAYLOAD_OFFSET of `buf` (the
   * engine owns `buf` until it hands it back through releaseBuffer). It is sent now if there
   * is room, else it waits (a full window never fails a send). An RDMA packet (`type` one of
   * the RDMA types) has its extension written by the caller between SRD_DATA_HDR_LEN and
   * `hdrLen`, and names the operation it belongs to in `msg`.
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
    type: PacketType = PacketType.SRD_DATA,
    hdrLen: number = SRD_DATA_HDR_LEN,
    msg: unknown = null,
  ): void {
    const ch = this.channelOf(peer);
    if (isNewerIncarnation(peer.incarnation, ch.tx.rxIncarnation)) ch.tx.rxIncarnation = peer.incarnation;
    const hasImm = imm !== undefined;
    encodeHeader(buf, type, hasImm ? FLAG_HAS_IMM : 0, hdrLen, srcQpn, dstQpn, payloadLen, qkey, hasImm ? imm >>> 0 : 0, this.localGid);
    const op = this.requester.take();
    op.owner = owner;
    op.msg = msg;
    op.wrId = wrId;
    op.byteLen = payloadLen;
    op.buf = buf;
    op.len = hdrLen + payloadLen;
    op.rnrRetry = rnrRetry;
    this.requester.post(now, ch, op);
  }

  /**
   * Handles one SRD packet whose base header was decoded (and checksum verified) into `hdr`,
   * from `peer`, whose endpoint the device checked.
   */
  onPacket(now: number, buf: Buffer, hdr: PacketHeader, peer: SrdPeer): void {
    const f = this.fields;
    const ch = this.channelOf(peer);
    switch (hdr.type) {
      case PacketType.SRD_DATA:
      case PacketType.SRD_RDMA_WRITE:
      case PacketType.SRD_READ_REQ:
      case PacketType.SRD_READ_RESP:
        if (!decodeSrdData(buf, hdr.hdrLen, f)) break;
        // The session of a data packet is its sender's incarnation, as acks report it.
        if (f.pbSession !== 0 && f.pbSession === ch.tx.session) this.requester.onAck(now, ch, f.pbCum, f.pbEcho, f.session, null, 0, -1);
        this.responder.onData(now, ch, buf, hdr, f);
        return;
      case PacketType.SRD_ACK:
        if (!decodeSrdAck(buf, hdr.hdrLen, f)) break;
        if (f.session !== ch.tx.session) return this.dropStale();
        this.counters.acks_received++;
        this.requester.onAck(now, ch, f.cumAck, f.echoTime, f.incarnation, buf, f.sackBase, hdr.flags >> FLAG_PATH_SHIFT);
        return;
      case PacketType.SRD_NAK:
        if (!decodeSrdNak(buf, hdr.hdrLen, f)) break;
        if (f.session !== ch.tx.session) return this.dropStale();
        this.requester.onNak(now, ch, f.psn, f.status, hdr.flags >> FLAG_PATH_SHIFT);
        return;
      default:
        break;
    }
    this.counters.rx_drop_bad_header++;
    this.counters.rx_drops++;
  }

  /** An ack or NAK for a send session this device does not have (an earlier incarnation's). */
  private dropStale(): void {
    this.counters.rx_drop_stale++;
    this.counters.rx_drops++;
  }

  /** Runs what is due: coalesced acks, retransmissions, RNR retries, failures of silent peers. */
  onTimer(now: number): void {
    this.responder.onTimer(now);
    this.requester.onTimer(now);
  }

  /**
   * Completes every send of `owner` (a QP moved to ERR or destroyed) with `status`, and the
   * receivers learn through the window start to forget them.
   */
  abandonOwner(now: number, owner: unknown, status: number): void {
    this.requester.abandonOwner(now, owner, status);
  }
}
