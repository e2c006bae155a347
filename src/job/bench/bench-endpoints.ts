import dgram from 'node:dgram';
import type { EfaDevice } from '../../open-device';
import { AccessFlags, GRH_LENGTH, QpState, QpType, WcOpcode, WcStatus } from '../../device/constants';
import type { AddressHandle } from '../../device/address-handle';
import type { CompletionQueue } from '../../device/completion-queue';
import type { QueuePair } from '../../device/queue-pair';
import type { WorkCompletion } from '../../device/work-completion';
import { CompletionPoller } from '../../completion-poller';
import { DatagramCoalescer } from '../../io/datagram-coalescer';

/** `raw-batched`: the raw harness with the emulator's doorbell batching (datagram-coalescer). */
export type BenchType = 'raw' | 'raw-batched' | 'ud' | 'srd';

export type { PollMode } from '../../completion-poller';
import type { PollMode } from '../../completion-poller';

/**
 * One side of a benchmark connection, the same for bare UDP and for the verbs path, so the
 * harness above measures both alike. Messages carry a 32-bit tag in their first bytes.
 */
export interface BenchEndpoint {
  /** Sends `size` bytes tagged `tag`; false when the send queue is full (try after a completion). */
  send(tag: number, size: number): boolean;
  /** Called for each message received, with its tag. */
  onRecv: (tag: number) => void;
  /** Called for each send completion (verbs only; raw sends complete at once). */
  onSendDone: (ok: boolean) => void;
  /** Begins reporting: `event` sleeps until the next event, `busy` spins (setImmediate). */
  start(): void;
  stop(): void;
  close(): Promise<void>;
  /** Packets retransmitted by the transport so far (SRD), else 0. */
  retransmits(): number;
}

const QKEY = 0x0be7c4;
const RECV_DEPTH = 1024;

/** Bare node:dgram: the baseline, no device and no reliability. */
export class RawEndpoint implements BenchEndpoint {
  onRecv: (tag: number) => void = () => undefined;
  onSendDone: (ok: boolean) => void = () => undefined;
  private peerHost = '127.0.0.1';
  private peerPort = 0;
  private spinning = false;
  private readonly spinBound = (): void => this.spin();

  /** With batching: the emulator's coalescer between the harness and the socket. */
  private readonly coalescer: DatagramCoalescer | null;
  private readonly deliverBound = (msg: Buffer): void => {
    if (msg.length >= 4) this.onRecv(msg.readUInt32BE(0));
  };

  private constructor(
    private readonly socket: dgram.Socket,
    readonly port: number,
    private readonly mode: PollMode,
    batched: boolean,
  ) {
    this.coalescer = batched ? new DatagramCoalescer((buf, len, host, p, onSent) => (onSent ? socket.send(buf, 0, len, p, host, onSent) : socket.send(buf, 0, len, p, host))) : null;
    const co = this.coalescer;
    socket.on(
      'message',
      co === null
        ? (msg: Buffer) => {
            if (msg.length >= 4) this.onRecv(msg.readUInt32BE(0));
          }
        : (msg: Buffer) => co.receive(msg, '', 0, this.deliverBound),
    );
  }

  /** `batched`: pack the messages of one run into datagrams as the devices do (`raw-batched`). */
  static async open(mode: PollMode, batched = false): Promise<RawEndpoint> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, '127.0.0.1', () => resolve());
    });
    try {
      socket.setRecvBufferSize(4 * 1024 * 1024);
      socket.setSendBufferSize(4 * 1024 * 1024);
    } catch {
      // Capped by the kernel: only more loss.
    }
    return new RawEndpoint(socket, socket.address().port, mode, batched);
  }

  connect(host: string, port: number): void {
    this.peerHost = host;
    this.peerPort = port;
  }

  send(tag: number, size: number): boolean {
    // A fresh buffer per datagram, as the device path has: dgram may still hold the last one.
    const buf = Buffer.allocUnsafe(size);
    buf.writeUInt32BE(tag >>> 0, 0);
    if (this.coalescer !== null) this.coalescer.send(buf, size, this.peerHost, this.peerPort);
    else this.socket.send(buf, 0, size, this.peerPort, this.peerHost);
    return true;
  }

  /** Busy mode for raw sockets keeps the loop spinning, so datagrams are read without sleeping. */
  start(): void {
    if (this.mode !== 'busy' || this.spinning) return;
    this.spinning = true;
    setImmediate(this.spinBound);
  }

  private spin(): void {
    if (this.spinning) setImmediate(this.spinBound);
  }

  stop(): void {
    this.spinning = false;
  }

  close(): Promise<void> {
    this.stop();
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }

  retransmits(): number {
    return 0;
  }
}

/** A UD or SRD QP of an emulated device. */
export class VerbsEndpoint implements BenchEndpoint {
  onRecv: (tag: number) => void = () => undefined;
  onSendDone: (ok: boolean) => void = () => undefined;
  readonly qp: QueuePair;
  private readonly grh: number;
  private readonly slot: number;
  private readonly poller: CompletionPoller;
  private readonly sge = [{ addr: 0, length: 0, lkey: 0 }];
  private readonly wr: { wrId: number; sgList: { addr: number; length: number; lkey: number }[]; ah: AddressHandle; remoteQpn: number; remoteQkey: number };
  private readonly recvSge = [{ addr: 0, length: 0, lkey: 0 }];
  private readonly recvWr = { wrId: 0, sgList: this.recvSge };

  private constructor(
    private readonly dev: EfaDevice,
    cq: CompletionQueue,
    qp: QueuePair,
    private readonly sendBuf: Buffer,
    sendLkey: number,
    private readonly recvBuf: Buffer,
    private readonly recvLkey: number,
    mode: PollMode,
    maxSize: number,
  ) {
    this.qp = qp;
    this.grh = qp.qpType === QpType.UD ? GRH_LENGTH : 0;
    this.slot = this.grh + maxSize;
    this.sge[0].lkey = sendLkey;
    this.wr = { wrId: 0, sgList: this.sge, ah: null as unknown as AddressHandle, remoteQpn: 0, remoteQkey: QKEY };
    this.poller = new CompletionPoller(dev, cq, mode, (wcs, n) => this.handle(wcs, n));
  }

  static async open(dev: EfaDevice, type: 'ud' | 'srd', maxSize: number, sendDepth: number, mode: PollMode): Promise<VerbsEndpoint> {
    const pd = await dev.allocPd();
    const channel = mode === 'event' ? dev.createCompChannel() : null;
    const cq = await dev.createCq({ cqe: RECV_DEPTH + sendDepth + 64, channel });
    const qp = await dev.createQp(pd, {
      qpType: type === 'ud' ? QpType.UD : QpType.SRD,
      sendCq: cq,
      recvCq: cq,
      cap: { maxSendWr: sendDepth, maxRecvWr: RECV_DEPTH, maxSendSge: 1, maxRecvSge: 1 },
    });
    const grh = type === 'ud' ? GRH_LENGTH : 0;
    const sendBuf = Buffer.alloc(maxSize);
    const recvBuf = Buffer.alloc((grh + maxSize) * RECV_DEPTH);
    const sendMr = await dev.regMr(pd, sendBuf, 0);
    const recvMr = await dev.regMr(pd, recvBuf, AccessFlags.LOCAL_WRITE);
    await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
    await dev.modifyQp(qp, { qpState: QpState.RTR });
    await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
    const ep = new VerbsEndpoint(dev, cq, qp, sendBuf, sendMr.lkey, recvBuf, recvMr.lkey, mode, maxSize);
    for (let i = 0; i < RECV_DEPTH; i++) ep.postRecv(i);
    return ep;
  }

  async connect(gid: string, qpn: number): Promise<void> {
    this.wr.ah = await this.dev.createAh(this.qp.pd, { gid });
    this.wr.remoteQpn = qpn;
  }

  private postRecv(slot: number): void {
    this.recvWr.wrId = slot;
    this.recvSge[0].addr = slot * this.slot;
    this.recvSge[0].length = this.slot;
    this.recvSge[0].lkey = this.recvLkey;
    this.dev.postRecv(this.qp, this.recvWr);
  }

  send(tag: number, size: number): boolean {
    if (this.qp.sqOutstanding >= this.qp.cap.maxSendWr) return false;
    // The device copies the payload at post time, so one send buffer serves every send.
    this.sendBuf.writeUInt32BE(tag >>> 0, 0);
    this.sge[0].length = size;
    this.wr.wrId = tag;
    this.dev.postSend(this.qp, this.wr);
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
      if (wc.opcode === WcOpcode.RECV) {
        const slot = wc.wrId;
        const ok = wc.status === WcStatus.SUCCESS;
        const tag = ok ? this.recvBuf.readUInt32BE(slot * this.slot + this.grh) : 0;
        this.postRecv(slot);
        if (ok) this.onRecv(tag);
      } else {
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
