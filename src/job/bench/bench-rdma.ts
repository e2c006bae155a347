import type { EfaDevice } from '../../open-device';
import { AccessFlags, QpState, QpType, WcOpcode, WcStatus } from '../../device/constants';
import type { AddressHandle } from '../../device/address-handle';
import type { QueuePair } from '../../device/queue-pair';
import type { WorkCompletion } from '../../device/work-completion';
import { CompletionPoller, type PollMode } from '../../completion-poller';

const QKEY = 0x0be7c5;
const RECV_DEPTH = 1024;

/** What a peer publishes so that the other side can read and write its buffer. */
export interface RdmaPeerInfo {
  gid: string;
  qpn: number;
  rkey: number;
}

/**
 * An SRD QP for the RDMA tests (perftest's ib_write_* / ib_read_*): one registered buffer of
 * the largest size, remote read and write allowed. RDMA goes through the `wr*` API, as EFA's
 * provider takes it; write-with-immediate completes a receive at the target (the latency
 * test's "arrived" signal, as `ib_write_lat --write_with_imm`).
 */
export class RdmaEndpoint {
  /** A send-queue completion: a write placed, or a read's data arrived. */
  onSendDone: (ok: boolean) => void = () => undefined;
  /** A write with immediate arrived here, with its immediate. */
  onImm: (imm: number) => void = () => undefined;
  readonly qp: QueuePair;
  readonly buf: Buffer;
  readonly rkey: number;
  private readonly lkey: number;
  private readonly poller: CompletionPoller;
  private ah: AddressHandle | null = null;
  private peer: RdmaPeerInfo | null = null;

  private constructor(
    private readonly dev: EfaDevice,
    qp: QueuePair,
    buf: Buffer,
    lkey: number,
    rkey: number,
    poller: (ep: RdmaEndpoint) => CompletionPoller,
  ) {
    this.qp = qp;
    this.buf = buf;
    this.lkey = lkey;
    this.rkey = rkey;
    this.poller = poller(this);
  }

  static async open(dev: EfaDevice, maxSize: number, sendDepth: number, mode: PollMode): Promise<RdmaEndpoint> {
    const pd = await dev.allocPd();
    const channel = mode === 'event' ? dev.createCompChannel() : null;
    const cq = await dev.createCq({ cqe: RECV_DEPTH + sendDepth + 64, channel });
    const qp = await dev.createQp(pd, {
      qpType: QpType.SRD,
      sendCq: cq,
      recvCq: cq,
      cap: { maxSendWr: sendDepth, maxRecvWr: RECV_DEPTH, maxSendSge: 1, maxRecvSge: 1 },
    });
    const buf = Buffer.alloc(Math.max(maxSize, 64));
    const mr = await dev.regMr(pd, buf, AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE | AccessFlags.REMOTE_READ);
    await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
    await dev.modifyQp(qp, { qpState: QpState.RTR });
    await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
    const ep = new RdmaEndpoint(dev, qp, buf, mr.lkey, mr.rkey, (e) => new CompletionPoller(dev, cq, mode, (wcs, n) => e.handle(wcs, n)));
    // Write-with-immediate consumes receives; they carry no data.
    for (let i = 0; i < RECV_DEPTH; i++) dev.postRecv(qp, { wrId: i, sgList: [] });
    return ep;
  }

  info(): RdmaPeerInfo {
    return { gid: this.dev.gidText, qpn: this.qp.qpNum, rkey: this.rkey };
  }

  async connect(peer: RdmaPeerInfo): Promise<void> {
    this.ah = await this.dev.createAh(this.qp.pd, { gid: peer.gid });
    this.peer = peer;
  }

  /**
   * Posts one RDMA operation of `size` bytes between the start of both buffers; false when
   * the send queue is full.
   */
  post(op: 'write' | 'writeImm' | 'read', tag: number, size: number): boolean {
    const qp = this.qp;
    if (qp.sqOutstanding >= qp.cap.maxSendWr) return false;
    const peer = this.peer as RdmaPeerInfo;
    const dev = this.dev;
    dev.wrStart(qp);
    qp.wrId = tag;
    qp.wrFlags = 0;
    if (op === 'read') dev.wrRdmaRead(qp, peer.rkey, 0);
    else if (op === 'write') dev.wrRdmaWrite(qp, peer.rkey, 0);
    else dev.wrRdmaWriteImm(qp, peer.rkey, 0, tag);
    dev.wrSetUdAddr(qp, this.ah as AddressHandle, peer.qpn, QKEY);
    dev.wrSetSge(qp, this.lkey, 0, size);
    dev.wrComplete(qp);
    return true;
  }

  start(): void {
    this.poller.start();
  }

  stop(): void {
    this.poller.stop();
  }

  private handle(wcs: readonly WorkCompletion[], n: number): void {
    for (let i = 0; i < n; i++) {
      const wc = wcs[i];
      if (wc.opcode === WcOpcode.RECV_RDMA_WITH_IMM) {
        this.dev.postRecv(this.qp, { wrId: wc.wrId, sgList: [] });
        if (wc.status === WcStatus.SUCCESS) this.onImm(wc.immData);
      } else if (wc.opcode < WcOpcode.RECV) {
        this.onSendDone(wc.status === WcStatus.SUCCESS);
      }
    }
  }

  close(): Promise<void> {
    this.stop();
    return Promise.resolve();
  }

  retransmits(): number {
    return this.dev.stats.retrans_pkts;
  }
}
