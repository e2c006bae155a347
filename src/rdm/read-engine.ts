import { EfaStatus } from '../common/efa-status';
import type { Device } from '../device/device';
import type { QueuePair } from '../device/queue-pair';
import type { RxOp } from './rdm-ops';

/** wrIds at or above this are RDMA reads (below: packet slots). */
export const WR_READ_BASE = 0x4000_0000;
/** RDMA reads one endpoint has at the device at once (its send queue has room for them). */
export const MAX_READS = 64;

/**
 * Long-read receives pull their message with one RDMA read each (the device segments it):
 * at most MAX_READS at the device, the rest queued in order.
 */
export class ReadEngine {
  private readonly active = new Map<number, RxOp>();
  private readonly queue: RxOp[] = [];

  constructor(
    private readonly device: Device,
    private readonly qp: QueuePair,
    /** A read ended (EfaStatus.SUCCESS or the device's status). */
    private readonly done: (r: RxOp, status: number) => void,
  ) {}

  /** Queues the read of a receive whose buffer is registered (`r.mr`). */
  enqueue(r: RxOp): void {
    this.queue.push(r);
    this.start();
  }

  /** A completion whose wrId is a read's. */
  complete(wrId: number, status: number): void {
    const r = this.active.get(wrId - WR_READ_BASE);
    if (r === undefined) return;
    this.active.delete(r.id);
    this.done(r, status);
    this.start();
  }

  private start(): void {
    while (this.queue.length > 0 && this.active.size < MAX_READS) {
      const r = this.queue.shift() as RxOp;
      if (r.done || r.peer === null || r.peer.ah === null || r.mr === null) continue;
      const dev = this.device;
      const qp = this.qp;
      this.active.set(r.id, r);
      dev.wrStart(qp);
      qp.wrId = WR_READ_BASE + r.id;
      qp.wrFlags = 0;
      dev.wrRdmaRead(qp, r.readKey, r.readAddr);
      dev.wrSetUdAddr(qp, r.peer.ah, r.peer.addr.qpn, r.peer.addr.connid);
      dev.wrSetSge(qp, r.mr.lkey, 0, r.mr.buffer.length);
      try {
        dev.wrComplete(qp);
      } catch {
        this.active.delete(r.id);
        this.done(r, EfaStatus.LOCAL_ERROR_QP_INTERNAL_ERROR);
      }
    }
  }
}
