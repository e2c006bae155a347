/*
 * What both lab rank programs set up: a device with the scenario's SRD settings, one SRD QP
 * with its CQ driven by a CompletionPoller, a receive ring, one send buffer, and the address
 * exchange through the daemon.
 */
import { AccessFlags, QpState, QpType } from '../../device/constants';
import type { AddressHandle } from '../../device/address-handle';
import type { CompletionQueue } from '../../device/completion-queue';
import type { MemoryRegion } from '../../device/memory-region';
import type { QueuePair } from '../../device/queue-pair';
import type { ProtectionDomain } from '../../device/protection-domain';
import { openDevice, type EfaDevice } from '../../open-device';
import { CC_MODES, type CcMode } from '../../srd/srd-config';

const QKEY = 0x1ab;

/** How a lab rank's device and QP are set up. */
export interface LabEndpointOptions {
  /** SRD paths per peer; null keeps the device's default. */
  paths: number | null;
  /** Congestion control; null keeps the device's default. */
  cc: CcMode | null;
  /** Bytes of every message (the receive slots and the send buffer). */
  size: number;
  sendDepth: number;
  recvDepth: number;
}

/** Another rank's QP, as published under the job's keys. */
export interface PeerInfo {
  rank: number;
  gid: string;
  qpn: number;
  /** Its device name: the target of a partition aimed at it. */
  name: string;
}

/** A lab rank's device and QP. Close with {@link LabEndpoint.close}. */
export class LabEndpoint {
  private constructor(
    readonly dev: EfaDevice,
    readonly pd: ProtectionDomain,
    readonly cq: CompletionQueue,
    readonly qp: QueuePair,
    readonly size: number,
    private readonly recvBuf: Buffer,
    private readonly recvMr: MemoryRegion,
    readonly sendBuf: Buffer,
    private readonly sendMr: MemoryRegion,
  ) {}

  /**
   * Opens the device (the scenario's paths and cc), and an
   * SRD QP in RTS with `recvDepth` receives posted.
   */
  static async open(o: LabEndpointOptions): Promise<LabEndpoint> {
    // Over EFA_EMU_SRD's other tunables, which a user may set to vary the experiment.
    const dev = await openDevice({ ...(o.paths !== null ? { paths: o.paths } : {}), ...(o.cc !== null ? { cc: o.cc } : {}) });
    try {
      const pd = await dev.allocPd();
      const cq = await dev.createCq({ cqe: o.sendDepth + o.recvDepth + 64, channel: dev.createCompChannel() });
      const qp = await dev.createQp(pd, {
        qpType: QpType.SRD,
        sendCq: cq,
        recvCq: cq,
        cap: { maxSendWr: o.sendDepth, maxRecvWr: o.recvDepth, maxSendSge: 1, maxRecvSge: 1 },
      });
      const recvBuf = Buffer.alloc(o.recvDepth * o.size);
      const recvMr = await dev.regMr(pd, recvBuf, AccessFlags.LOCAL_WRITE);
      // Every send points at this one buffer: what a message carries is its sender (written
      // once), never a per-message value, so sends in flight never need their own bytes.
      const sendBuf = Buffer.alloc(o.size);
      const sendMr = await dev.regMr(pd, sendBuf, 0);
      await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
      await dev.modifyQp(qp, { qpState: QpState.RTR });
      await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
      const ep = new LabEndpoint(dev, pd, cq, qp, o.size, recvBuf, recvMr, sendBuf, sendMr);
      for (let i = 0; i < o.recvDepth; i++) ep.postRecv(i);
      return ep;
    } catch (err) {
      await dev.close();
      throw err;
    }
  }

  /** Posts receive slot `slot` (its wrId is the slot). */
  postRecv(slot: number): void {
    this.dev.postRecv(this.qp, { wrId: slot, sgList: [{ addr: slot * this.size, length: this.size, lkey: this.recvMr.lkey }] });
  }

  /** Posts one message of `size` bytes from the send buffer. */
  postSend(wrId: number, peer: { ah: AddressHandle; qpn: number }): void {
    this.dev.postSend(this.qp, { wrId, sgList: [{ addr: 0, length: this.size, lkey: this.sendMr.lkey }], ah: peer.ah, remoteQpn: peer.qpn, remoteQkey: QKEY });
  }

  /** The receive slot's bytes. */
  recvBytes(slot: number): Buffer {
    return this.recvBuf.subarray(slot * this.size, (slot + 1) * this.size);
  }

  /** Publishes this rank's QP under `key`/rank. */
  async publish(key: string): Promise<void> {
    const rank = this.dev.rank ?? 0;
    const info: PeerInfo = { rank, gid: this.dev.gidText, qpn: this.qp.qpNum, name: this.dev.name };
    await this.dev.daemon.put(`${key}/${rank}`, JSON.stringify(info));
  }

  /** Reads another rank's QP and makes an address handle for it. */
  async peer(key: string, rank: number): Promise<PeerInfo & { ah: AddressHandle }> {
    const info = JSON.parse(await this.dev.daemon.get(`${key}/${rank}`, DAEMON_WAIT_MS)) as PeerInfo;
    return { ...info, ah: await this.dev.createAh(this.pd, { gid: info.gid }) };
  }

  close(): Promise<void> {
    return this.dev.close();
  }
}

/** Longest a rank waits on the daemon (a key, a barrier): the command's timeout stops hung jobs first. */
export const DAEMON_WAIT_MS = 600_000;

/** Reads `--cc`: delay, on (= delay) or off; null when not given. */
export function parseCc(text: string | undefined): CcMode | null {
  if (text === undefined || text === '') return null;
  const mode = text === 'on' ? 'delay' : text;
  if (!(CC_MODES as readonly string[]).includes(mode)) throw new Error(`--cc must be delay, on or off, got ${text}`);
  return mode as CcMode;
}

/** The counters worth reporting from a snapshot: every non-zero one. */
export function nonZeroCounters(snapshot: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(snapshot)) if (typeof v === 'number' && v !== 0) out[k] = v;
  return out;
}

/** Waits until the shared clock reads `atMs` (sharedNowMs). */
export function sleepUntil(atMs: number, now: () => number): Promise<void> {
  const wait = atMs - now();
  return wait <= 0 ? Promise.resolve() : new Promise((resolve) => setTimeout(resolve, wait));
}
