import { EfaStatus } from '../common/efa-status';
import { copyBytes } from '../common/copy-bytes';
import type { SrdEngine } from '../srd/srd-engine';
import type { SrdPeer } from '../srd/srd-channel';
import type { SendOp } from '../srd/send-op';
import { PacketType, type PacketHeader } from '../wire/header';
import { decodeRdma, RDMA_HDR_LEN, RdmaFields, writeRdma } from '../wire/rdma-header';
import { AccessFlags, WcOpcode } from './constants';
import type { DeviceStats } from './device-stats';
import type { MemoryRegion } from './memory-region';
import type { QueuePair } from './queue-pair';

/** Segments of one operation posted to SRD at a time: a 1 GiB write is not copied at once. */
const SEGMENT_WINDOW = 64;

/**
 * RDMA segments posted to SRD and not settled, per peer, all operations together: what a
 * send to that peer can find queued ahead of it. Twice the default SRD window keeps the pipe
 * full while a message posted behind a stream of large writes waits for a bounded number of
 * packets, not for every segment of every write.
 */
const PEER_SEGMENT_CAP = 256;

/** The segments one peer has outstanding, and the operations waiting for room under the cap. */
class PeerSegments {
  outstanding = 0;
  waiting: RdmaOp[] = [];
  /** In the unit's list of peers to refill. */
  queued = false;
}

/** EFA's provider reports an RDMA read's completion with IBV_WC_SEND (it tells writes apart only). */
export const RDMA_READ_WC_OPCODE = WcOpcode.SEND;

/** A timer this late (ms) means this process did not run: the time is not the peer's silence. */
const STALL_MS = 20;

/** What the RDMA unit needs from its device. */
export interface RdmaHost {
  readonly srd: SrdEngine;
  readonly stats: DeviceStats;
  /** Payload bytes per packet. */
  readonly mtu: number;
  /** How long a read waits for its data after the target accepted it, with no data arriving. */
  readonly readTimeoutMs: number;
  clock(): number;
  /** A send buffer of at least RDMA_HDR_LEN + mtu bytes (handed back by the engine). */
  takeTxBuffer(): Buffer;
  /** Completes a send-queue work request with an EFA status. */
  completeSend(qp: QueuePair, wrId: number, status: number, byteLen: number, opcode: number): void;
  /** The registered MR with this key, if any. */
  mrByKey(key: number): MemoryRegion | undefined;
}

/** The local side of a scatter/gather list, resolved to MRs when the request was posted. */
export interface LocalSgl {
  mrs: MemoryRegion[];
  addrs: number[];
  lens: number[];
}

const KIND_WRITE = 0;
const KIND_READ = 1;
const KIND_READ_RESPONSE = 2;

/**
 * One multi-packet operation: an RDMA write or read this device initiated, or the data a
 * read asked of this device (a response job). Its segments are SRD packets of their own
 * (each acked, retransmitted and deduplicated by the engine); this object joins them.
 */
export class RdmaOp {
  kind = KIND_WRITE;
  qp: QueuePair | null = null;
  wrId = 0;
  peer: SrdPeer | null = null;
  srcQpn = 0;
  dstQpn = 0;
  qkey = 0;
  rnrRetry = 7;
  rkey = 0;
  remoteAddr = 0;
  total = 0;
  /** Writes: where the payload of the last (immediate-carrying) packet starts. */
  end = 0;
  imm: number | undefined = undefined;
  /** Bytes handed to SRD as segments so far (from the start of the operation). */
  next = 0;
  /** Segments posted and not settled yet. */
  inFlight = 0;
  /** First error status of a segment (0: none yet). */
  error = 0;
  /** The immediate-carrying last packet of a write with immediate was posted. */
  finalPosted = false;
  /** Reads: the request was accepted by the target (its ack arrived). */
  accepted = false;
  /** Reads: bytes of data arrived. */
  arrived = 0;
  /** Reads: the id the target's responses carry. */
  opId = 0;
  /** Reads: when the read fails for want of data (ms), Infinity before the target accepted it. */
  deadline = Infinity;
  done = false;
  /** In its peer's list of operations waiting for room. */
  listed = false;
  /** Local buffers: the source of a write, the destination of a read. */
  sgl: LocalSgl | null = null;
  /** Response jobs: the MR and offset the data comes from. */
  srcMr: MemoryRegion | null = null;
}

/**
 * RDMA read and write over SRD: segmentation into MTU packets, placement at the target with
 * its rkey, bounds, access and PD checks, read responses, and the completions.
 *
 * - A write completes at the initiator once every segment is acknowledged: the target acks a
 *   segment only after placing it. With immediate data, the last packet goes out only after
 *   the others are acknowledged, so the target's completion follows the placement of all of
 *   it; it consumes a receive there (RNR, retried by SRD, when none is posted) unless the QP
 *   takes unsolicited write receives.
 * - A read sends one request; the target checks it (a refusal fails the read with the
 *   target's status) and sends the data back as SRD packets of its own. The read completes
 *   when every byte arrived; if the data stops coming it fails in bounded time.
 * - Work that completes a segment never posts from inside the engine: follow-up segments are
 *   queued and posted by `drain()` once the engine call returned.
 */
export class RdmaUnit {
  private readonly host: RdmaHost;
  private readonly fields = new RdmaFields();
  private readonly reads = new Map<number, RdmaOp>();
  private nextOpId = 1;
  private readonly peers = new WeakMap<SrdPeer, PeerSegments>();
  /** Peers where segments settled (room came free): their waiting operations post in drain(). */
  private readonly refill: PeerSegments[] = [];
  /** Earliest read deadline, or Infinity. */
  private earliest = Infinity;

  constructor(host: RdmaHost) {
    this.host = host;
  }

  /** Reads waiting for data (for tests and `status`). */
  get pendingReads(): number {
    return this.reads.size;
  }

  // ------------------------------------------------------------------ initiator

  /** Starts an RDMA write (with immediate when `imm` is defined) of the bytes `sgl` names. */
  postWrite(qp: QueuePair, wrId: number, peer: SrdPeer, dstQpn: number, qkey: number, sgl: LocalSgl, total: number, remoteAddr: number, rkey: number, imm: number | undefined): void {
    const op = this.newOp(KIND_WRITE, qp, wrId, peer, dstQpn, qkey, sgl, total, remoteAddr, rkey);
    op.imm = imm;
    // The last packet carries the immediate; a plain write has no such packet.
    op.end = imm === undefined ? total : total === 0 ? 0 : total - (((total - 1) % this.host.mtu) + 1);
    this.host.stats.rdma_write_wrs++;
    this.pump(op);
  }

  /** Starts an RDMA read of `total` bytes at (remoteAddr, rkey) into `sgl`. */
  postRead(qp: QueuePair, wrId: number, peer: SrdPeer, dstQpn: number, qkey: number, sgl: LocalSgl, total: number, remoteAddr: number, rkey: number): void {
    const op = this.newOp(KIND_READ, qp, wrId, peer, dstQpn, qkey, sgl, total, remoteAddr, rkey);
    do {
      op.opId = this.nextOpId;
      this.nextOpId = (this.nextOpId + 1) >>> 0 || 1;
    } while (this.reads.has(op.opId));
    this.reads.set(op.opId, op);
    this.host.stats.rdma_read_wrs++;
    const buf = this.host.takeTxBuffer();
    writeRdma(buf, rkey, remoteAddr, total, op.opId);
    op.inFlight = 1;
    op.next = total;
    this.host.srd.postSend(this.host.clock(), peer, qp, wrId, buf, 0, qp.qpNum, dstQpn, qkey, undefined, qp.rnrRetry, PacketType.SRD_READ_REQ, RDMA_HDR_LEN, op);
  }

  private newOp(kind: number, qp: QueuePair, wrId: number, peer: SrdPeer, dstQpn: number, qkey: number, sgl: LocalSgl, total: number, remoteAddr: number, rkey: number): RdmaOp {
    const op = new RdmaOp();
    op.kind = kind;
    op.qp = qp;
    op.wrId = wrId;
    op.peer = peer;
    op.srcQpn = qp.qpNum;
    op.dstQpn = dstQpn;
    op.qkey = qkey;
    op.rnrRetry = qp.rnrRetry;
    op.sgl = sgl;
    op.total = total;
    op.remoteAddr = remoteAddr;
    op.rkey = rkey;
    return op;
  }

  private peerOf(peer: SrdPeer): PeerSegments {
    let ps = this.peers.get(peer);
    if (ps === undefined) {
      ps = new PeerSegments();
      this.peers.set(peer, ps);
    }
    return ps;
  }

  /**
   * `op` has segments to post: it waits in its peer's list, posted by the next drain() once
   * the peer is queued. `now` queues it at once (room is known to be there); otherwise the
   * next settled segment of the peer does (the cap is full, so one will settle).
   */
  private want(op: RdmaOp, ps: PeerSegments, now: boolean): void {
    if (!op.listed) {
      op.listed = true;
      ps.waiting.push(op);
    }
    if (now) this.queuePeer(ps);
  }

  private queuePeer(ps: PeerSegments): void {
    if (ps.queued) return;
    ps.queued = true;
    this.refill.push(ps);
  }

  /**
   * Posts the next segments of a write or a response job, up to the segment window and the
   * peer's cap; what does not fit waits in the peer's list (every settled segment of that peer
   * makes room, so it is never forgotten).
   */
  private pump(op: RdmaOp): void {
    const ps = this.peerOf(op.peer as SrdPeer);
    const host = this.host;
    const mtu = host.mtu;
    const now = host.clock();
    const isWrite = op.kind === KIND_WRITE;
    const owner = isWrite ? op.qp : op;
    const type = isWrite ? PacketType.SRD_RDMA_WRITE : PacketType.SRD_READ_RESP;
    // A zero-length plain write is one empty packet, so that it is still acknowledged.
    const emptyWrite = isWrite && op.total === 0 && op.imm === undefined && op.next === 0 && op.inFlight === 0 && !op.finalPosted;
    while ((op.next < op.end || emptyWrite) && op.inFlight < SEGMENT_WINDOW && op.error === 0 && ps.outstanding < PEER_SEGMENT_CAP) {
      const len = op.end - op.next < mtu ? op.end - op.next : mtu;
      const buf = host.takeTxBuffer();
      if (isWrite) {
        gatherSgl(op.sgl as LocalSgl, op.next, buf, RDMA_HDR_LEN, len);
        writeRdma(buf, op.rkey, op.remoteAddr + op.next, op.total, 0);
      } else {
        copyBytes((op.srcMr as MemoryRegion).buffer as Buffer, op.remoteAddr + op.next, buf, RDMA_HDR_LEN, len);
        writeRdma(buf, 0, op.next, op.total, op.opId);
        host.stats.rdma_read_resp_bytes += len;
      }
      op.next += len;
      op.inFlight++;
      ps.outstanding++;
      if (isWrite) op.finalPosted = op.imm === undefined && op.next >= op.end;
      host.srd.postSend(now, op.peer as SrdPeer, owner, op.wrId, buf, len, op.srcQpn, op.dstQpn, op.qkey, undefined, op.rnrRetry, type, RDMA_HDR_LEN, op);
      if (emptyWrite) break;
    }
    const finalDue = isWrite && op.imm !== undefined && !op.finalPosted && op.inFlight === 0 && op.next >= op.end && op.error === 0;
    if (finalDue && ps.outstanding >= PEER_SEGMENT_CAP) {
      this.want(op, ps, false);
    } else if (finalDue) {
      // Every other byte is placed: the immediate goes with the last bytes.
      const len = op.total - op.end;
      const buf = host.takeTxBuffer();
      gatherSgl(op.sgl as LocalSgl, op.end, buf, RDMA_HDR_LEN, len);
      writeRdma(buf, op.rkey, op.remoteAddr + op.end, op.total, 0);
      op.finalPosted = true;
      op.inFlight++;
      ps.outstanding++;
      host.srd.postSend(now, op.peer as SrdPeer, owner, op.wrId, buf, len, op.srcQpn, op.dstQpn, op.qkey, op.imm, op.rnrRetry, type, RDMA_HDR_LEN, op);
    }
    // Held back by the peer's cap (not by its own window: its own settling segments refill it).
    const more = op.next < op.end || (isWrite && op.total === 0 && op.imm === undefined && !op.finalPosted);
    if (more && op.error === 0 && op.inFlight < SEGMENT_WINDOW) this.want(op, ps, false);
  }

  /** A segment (or read request) settled with `status`; called by the device from the engine. */
  segmentDone(sop: SendOp, status: number): void {
    const op = sop.msg as RdmaOp;
    op.inFlight--;
    if (op.kind !== KIND_READ) {
      // A segment of this peer settled: whatever waits for room there may go.
      const ps = this.peerOf(op.peer as SrdPeer);
      ps.outstanding--;
      if (ps.waiting.length > 0) this.queuePeer(ps);
    }
    if (op.done) return;
    if (status !== EfaStatus.SUCCESS && op.error === 0) op.error = status;
    if (op.kind === KIND_READ_RESPONSE) {
      if (op.error !== 0) {
        op.done = true;
        return;
      }
      if (op.next < op.end) this.want(op, this.peerOf(op.peer as SrdPeer), true);
      else if (op.inFlight === 0) op.done = true;
      return;
    }
    const qp = op.qp as QueuePair;
    if (op.kind === KIND_READ) {
      if (op.error !== 0) return this.finishRead(op, op.error);
      op.accepted = true;
      if (op.arrived >= op.total) return this.finishRead(op, EfaStatus.SUCCESS);
      this.setDeadline(op, this.host.clock() + this.host.readTimeoutMs);
      return;
    }
    if (op.error !== 0) {
      if (op.inFlight === 0) this.finishWrite(qp, op, op.error);
      return;
    }
    if (op.inFlight === 0 && op.finalPosted) this.finishWrite(qp, op, EfaStatus.SUCCESS);
    else if (!op.finalPosted) this.want(op, this.peerOf(op.peer as SrdPeer), true);
  }

  private finishWrite(qp: QueuePair, op: RdmaOp, status: number): void {
    op.done = true;
    const stats = this.host.stats;
    if (status === EfaStatus.SUCCESS) stats.rdma_write_bytes += op.total;
    else stats.rdma_write_wr_err++;
    if (!qp.destroyed && !qp.discarding) this.host.completeSend(qp, op.wrId, status, status === EfaStatus.SUCCESS ? op.total : 0, WcOpcode.RDMA_WRITE);
  }

  private finishRead(op: RdmaOp, status: number): void {
    if (op.done) return;
    op.done = true;
    this.reads.delete(op.opId);
    if (op.deadline === this.earliest) this.recomputeEarliest();
    const stats = this.host.stats;
    if (status === EfaStatus.SUCCESS) stats.rdma_read_bytes += op.total;
    else stats.rdma_read_wr_err++;
    const qp = op.qp as QueuePair;
    if (!qp.destroyed && !qp.discarding) this.host.completeSend(qp, op.wrId, status, status === EfaStatus.SUCCESS ? op.total : 0, RDMA_READ_WC_OPCODE);
  }

  /** Posts what segment completions made room for; the device calls it after each engine call. */
  drain(): void {
    const q = this.refill;
    for (let i = 0; i < q.length; i++) {
      const ps = q[i];
      ps.queued = false;
      // Oldest first; those still short of room list themselves again (pump).
      const ops = ps.waiting;
      ps.waiting = [];
      for (const op of ops) {
        op.listed = false;
        if (!op.done) this.pump(op);
      }
    }
    q.length = 0;
  }

  /**
   * Data of a read this device asked for. Returns the status the responder acks it with:
   * data of a read no longer waited for is accepted (and dropped), so the target stops.
   */
  onReadResponse(buf: Buffer, hdr: PacketHeader, peer: SrdPeer): number {
    const f = this.fields;
    if (!decodeRdma(buf, hdr.hdrLen, f)) return EfaStatus.REMOTE_ERROR_BAD_STATUS;
    const op = this.reads.get(f.opId);
    const len = hdr.payloadLen;
    if (op === undefined || op.done || op.peer !== peer || op.srcQpn !== hdr.dstQpn || f.addr + len > op.total) {
      this.host.stats.rdma_read_resp_stale++;
      return EfaStatus.SUCCESS;
    }
    scatterSgl(op.sgl as LocalSgl, f.addr, buf, hdr.hdrLen, len);
    op.arrived += len;
    if (op.arrived >= op.total && op.accepted) this.finishRead(op, EfaStatus.SUCCESS);
    else if (op.accepted) this.setDeadline(op, this.host.clock() + this.host.readTimeoutMs);
    return EfaStatus.SUCCESS;
  }

  // ------------------------------------------------------------------ target

  /**
   * A write segment for `qp` (whose state and Q_Key the device checked): places it, or returns
   * the status it is refused with. `placedLength` then tells the write's total length.
   */
  placeWrite(qp: QueuePair, buf: Buffer, hdr: PacketHeader): number {
    const f = this.fields;
    if (!decodeRdma(buf, hdr.hdrLen, f)) return EfaStatus.REMOTE_ERROR_BAD_STATUS;
    const len = hdr.payloadLen;
    const status = this.checkRemote(qp, f.rkey, f.addr, len, AccessFlags.REMOTE_WRITE);
    if (status !== EfaStatus.SUCCESS) return status;
    if (len > 0) copyBytes(buf, hdr.hdrLen, (this.host.mrByKey(f.rkey) as MemoryRegion).buffer as Buffer, f.addr, len);
    this.host.stats.rdma_write_recv_bytes += len;
    return EfaStatus.SUCCESS;
  }

  /** The total length the write packet `placeWrite` just placed names (what a write-with-immediate completion reports). */
  get placedLength(): number {
    return this.fields.length;
  }

  /** A read request for `qp`: checks it and starts sending the data back. */
  acceptRead(qp: QueuePair, buf: Buffer, hdr: PacketHeader, peer: SrdPeer): number {
    const f = this.fields;
    if (!decodeRdma(buf, hdr.hdrLen, f)) return EfaStatus.REMOTE_ERROR_BAD_STATUS;
    const status = this.checkRemote(qp, f.rkey, f.addr, f.length, AccessFlags.REMOTE_READ);
    if (status !== EfaStatus.SUCCESS) return status;
    if (f.length === 0) return EfaStatus.SUCCESS;
    const job = new RdmaOp();
    job.kind = KIND_READ_RESPONSE;
    job.peer = peer;
    job.srcQpn = qp.qpNum;
    job.dstQpn = hdr.srcQpn;
    job.opId = f.opId;
    job.total = f.length;
    job.end = f.length;
    job.remoteAddr = f.addr;
    job.srcMr = this.host.mrByKey(f.rkey) as MemoryRegion;
    job.rnrRetry = 7;
    // Sent once the engine finished with the request (its ack goes first).
    this.want(job, this.peerOf(peer), true);
    return EfaStatus.SUCCESS;
  }

  /** rkey, PD, access and bounds of a remote access to `qp`'s memory. */
  private checkRemote(qp: QueuePair, rkey: number, addr: number, len: number, access: number): number {
    // A zero-length access touches no memory: no key is checked (as InfiniBand allows).
    if (len === 0) return EfaStatus.SUCCESS;
    const mr = this.host.mrByKey(rkey);
    if (mr === undefined || !mr.valid || mr.rkey !== rkey || mr.pd !== qp.pd || (mr.access & access) === 0 || addr + len > mr.buffer.length) {
      this.host.stats.rdma_remote_access_errors++;
      return EfaStatus.REMOTE_ERROR_BAD_ADDRESS;
    }
    return EfaStatus.SUCCESS;
  }

  // ------------------------------------------------------------------ lifetime

  /** Completes `qp`'s reads still waiting for data with `status` (ERR: FLUSHED; destroyed: none). */
  flushQp(qp: QueuePair, status: number): void {
    for (const op of [...this.reads.values()]) if (op.qp === qp) this.finishRead(op, status);
  }

  /** When `onTimer` next wants to run, or Infinity. */
  nextDeadline(): number {
    return this.earliest;
  }

  /** Fails reads whose data stopped coming. */
  onTimer(now: number): void {
    if (now < this.earliest) return;
    const late = now - this.earliest;
    for (const op of [...this.reads.values()]) {
      if (op.deadline > now) continue;
      // A stalled process is not a silent peer: the data may be waiting in the socket.
      if (late > STALL_MS) op.deadline = now + this.host.readTimeoutMs;
      else this.finishRead(op, EfaStatus.LOCAL_ERROR_UNRESP_REMOTE);
    }
    this.recomputeEarliest();
  }

  private setDeadline(op: RdmaOp, at: number): void {
    const old = op.deadline;
    op.deadline = at;
    if (at < this.earliest) this.earliest = at;
    else if (old === this.earliest) this.recomputeEarliest();
  }

  private recomputeEarliest(): void {
    let e = Infinity;
    for (const op of this.reads.values()) if (op.deadline < e) e = op.deadline;
    this.earliest = e;
  }
}

/** Copies `len` bytes starting `from` bytes into the SGL's data into `out` at `off`. */
export function gatherSgl(sgl: LocalSgl, from: number, out: Buffer, off: number, len: number): void {
  copySgl(sgl, from, out, off, len, false);
}

/** Copies `len` bytes of `src` at `off` into the SGL's data starting `to` bytes in. */
export function scatterSgl(sgl: LocalSgl, to: number, src: Buffer, off: number, len: number): void {
  copySgl(sgl, to, src, off, len, true);
}

/** Copies between the SGL's data (from byte `at` of it) and `buf` at `off`, into the SGL when `intoSgl`. */
function copySgl(sgl: LocalSgl, at: number, buf: Buffer, off: number, len: number, intoSgl: boolean): void {
  let skip = at;
  for (let i = 0; i < sgl.mrs.length && len > 0; i++) {
    const l = sgl.lens[i];
    if (skip >= l) {
      skip -= l;
      continue;
    }
    const k = l - skip < len ? l - skip : len;
    const mem = sgl.mrs[i].buffer as Buffer;
    if (intoSgl) copyBytes(buf, off, mem, sgl.addrs[i] + skip, k);
    else copyBytes(mem, sgl.addrs[i] + skip, buf, off, k);
    off += k;
    len -= k;
    skip = 0;
  }
}
