/*
 * An in-memory fabric for sans-IO device tests: devices send into a FIFO queue instead of a
 * socket, the test decides when (and whether) each queued datagram is delivered, and a
 * manual clock stands in for the monotonic one. Nothing here sleeps or opens a socket.
 */
import { DaemonError } from '../../src/common/errors';
import { formatGid, gidDeviceIndex, gidFabricId, makeGid, parseGid } from '../../src/common/gid';
import { AdminCommandError } from '../../src/device/admin';
import type { AddressHandle } from '../../src/device/address-handle';
import type { DeviceAttributes } from '../../src/device/attributes';
import type { CompletionChannel } from '../../src/device/completion-channel';
import type { CompletionQueue } from '../../src/device/completion-queue';
import { AccessFlags, EfadvWcFlags, QpState, QpType } from '../../src/device/constants';
import { Device, type DeviceOptions, type ResolvedGid } from '../../src/device/device';
import type { MemoryRegion } from '../../src/device/memory-region';
import type { ProtectionDomain } from '../../src/device/protection-domain';
import type { QpCap, QueuePair } from '../../src/device/queue-pair';
import { WorkCompletion } from '../../src/device/work-completion';
import type { Sge } from '../../src/device/work-requests';

/** One datagram in flight: `from`/`to` are "host:port" endpoints. */
export interface QueuedPacket {
  from: string;
  to: string;
  buf: Buffer;
}

export interface MemoryFabricOptions {
  /** Fabric id written into every GID (bytes 8..11); default 0x0efa0001. */
  fabricId?: number;
  /** Clock start in ms (default 1000). */
  now?: number;
}

/** Extra Device options a test may want (quarantine, logger, timer, ...); the fabric sets the rest. */
export type ExtraDeviceOptions = Partial<Omit<DeviceOptions, 'name' | 'gid' | 'attributes' | 'transport' | 'resolver' | 'clock'>>;

const HOST = '127.0.0.1';
const BASE_PORT = 47000;

export class MemoryFabric {
  readonly fabricId: number;
  readonly devices: Device[] = [];
  /** Datagrams sent and not yet delivered, oldest first. Tests may edit it freely. */
  queued: QueuedPacket[] = [];
  /** Every datagram ever sent (copies), in send order, for inspection. */
  readonly sent: QueuedPacket[] = [];
  /** Manual clock (ms) every device of this fabric reads. */
  now: number;
  /** Datagrams delivered to a device so far. */
  delivered = 0;
  /** Datagrams lost by `dropNext` or addressed to no device of the fabric. */
  lost = 0;
  /** GIDs the resolver was asked about, in order. */
  readonly resolveCalls: string[] = [];
  /**
   * Called for each datagram as it is taken from the queue; returning false drops it.
   * Lets a test lose, inspect or count packets by content.
   */
  filter: ((p: QueuedPacket) => boolean) | null = null;
  private dropBudget = 0;
  private readonly byEndpoint = new Map<string, Device>();
  private readonly byGid = new Map<string, { device: Device; index: number }>();

  constructor(opts: MemoryFabricOptions = {}) {
    this.fabricId = (opts.fabricId ?? 0x0efa0001) >>> 0;
    this.now = opts.now ?? 1000;
  }

  /** Adds a device; its GID is makeGid(fabricId, n) where n = 1, 2, ... in order of adding. */
  addDevice(name: string, attributes?: Partial<DeviceAttributes>, extra: ExtraDeviceOptions = {}): Device {
    const index = this.devices.length + 1;
    const endpoint = `${HOST}:${BASE_PORT + index}`;
    const device = new Device({
      name,
      gid: makeGid(this.fabricId, index),
      attributes,
      clock: () => this.now,
      transport: {
        sendPacket: (buf, len, host, port, onSent) => {
          // The fabric copies what it is given, so the sender may reuse its buffer at once.
          onSent?.();
          if (this.dropBudget > 0) {
            this.dropBudget--;
            this.lost++;
            return;
          }
          const p = { from: endpoint, to: `${host}:${port}`, buf: Buffer.from(buf.subarray(0, len)) };
          this.queued.push(p);
          this.sent.push({ ...p, buf: Buffer.from(p.buf) });
        },
      },
      resolver: (gid) => this.resolve(gid),
      ...extra,
    });
    this.devices.push(device);
    this.byEndpoint.set(endpoint, device);
    this.byGid.set(device.gidText, { device, index });
    return device;
  }

  /** The "host:port" of a device of this fabric. */
  endpointOf(device: Device): string {
    for (const [ep, d] of this.byEndpoint) if (d === device) return ep;
    throw new Error(`device ${device.name} is not on this fabric`);
  }

  /**
   * The control plane's answer for a GID, at once (an in-memory daemon answers
   * synchronously); throws DaemonError ENOENT when unknown.
   */
  resolve(gid: string): ResolvedGid | Promise<ResolvedGid> {
    if (this.slowLookups !== null) {
      // A control plane that answers later, when the test says so (answerLookups).
      return new Promise<ResolvedGid>((resolve, reject) => {
        (this.slowLookups as Array<() => void>).push(() => {
          try {
            resolve(this.lookup(gid));
          } catch (err) {
            reject(err);
          }
        });
      });
    }
    return this.lookup(gid);
  }

  /**
   * Makes the control plane answer GID lookups only when `answerLookups` is called, as a real
   * daemon answers after a round trip (null: at once, the default).
   */
  slowLookups: Array<() => void> | null = null;

  /** Answers every lookup asked so far (with a slow control plane); resolves once they are delivered. */
  async answerLookups(): Promise<number> {
    const pending = this.slowLookups ?? [];
    const n = pending.length;
    for (const answer of pending.splice(0)) answer();
    // Promise callbacks of the device run on the microtask queue.
    await Promise.resolve();
    await Promise.resolve();
    return n;
  }

  private lookup(gid: string): ResolvedGid {
    this.resolveCalls.push(gid);
    let text: string;
    try {
      text = formatGid(parseGid(gid));
    } catch {
      throw new DaemonError('EINVAL', `not a GID: ${gid}`);
    }
    const entry = this.byGid.get(text);
    if (entry === undefined) throw new DaemonError('ENOENT', `GID ${text} is not leased on this fabric`);
    const [host, port] = this.endpointOf(entry.device).split(':');
    return {
      name: entry.device.name,
      gid: text,
      ahn: entry.index,
      endpoint: { host, port: Number(port) },
      up: !entry.device.closed,
    };
  }

  /** Delivers the oldest queued datagram; false when the queue is empty. */
  deliverOne(): boolean {
    const p = this.queued.shift();
    if (p === undefined) return false;
    if (this.filter !== null && !this.filter(p)) {
      this.lost++;
      return true;
    }
    const device = this.byEndpoint.get(p.to);
    if (device === undefined) {
      this.lost++;
      return true;
    }
    this.delivered++;
    // A copy: the device owns what it is handed (its decoder zeroes the CRC field in place).
    const [host, port] = p.from.split(':');
    device.handleDatagram(Buffer.from(p.buf), host, Number(port));
    return true;
  }

  /**
   * Delivers queued datagrams in FIFO order until the queue is empty (a delivery may queue
   * more); returns how many were taken from the queue.
   */
  deliverAll(limit = 100_000): number {
    let n = 0;
    while (this.queued.length > 0) {
      if (n >= limit) throw new Error(`deliverAll: more than ${limit} datagrams, a delivery loop?`);
      this.deliverOne();
      n++;
    }
    return n;
  }

  /**
   * Hands `buf` to `device` as if it had arrived from the wire (a copy is delivered), from
   * `from` ("host:port"), by default the endpoint of the fabric device whose GID the packet
   * names (an unknown endpoint when it names none).
   */
  inject(device: Device, buf: Uint8Array, from?: string): void {
    let source = from;
    if (source === undefined) {
      const named = buf.length >= 36 && gidFabricId(buf, 20) === this.fabricId ? this.devices[gidDeviceIndex(buf, 20) - 1] : undefined;
      source = named !== undefined ? this.endpointOf(named) : `${HOST}:1`;
    }
    const [host, port] = source.split(':');
    device.handleDatagram(Buffer.from(buf), host, Number(port));
  }

  // ------------------------------------------------------------- fault hooks

  /** The next `n` datagrams sent by any device are lost before being queued. */
  dropNext(n = 1): void {
    this.dropBudget += n;
  }

  /** Removes queued datagram `index` (lost) and returns it. */
  drop(index: number): QueuedPacket {
    const [p] = this.queued.splice(this.checkIndex(index), 1);
    this.lost++;
    return p;
  }

  /** Queues a copy of datagram `index` right after it. */
  duplicate(index: number): void {
    const p = this.queued[this.checkIndex(index)];
    this.queued.splice(index + 1, 0, { ...p, buf: Buffer.from(p.buf) });
  }

  /** XORs `mask` into byte `offset` of datagram `index` (default: its last byte, low bit). */
  corrupt(index: number, offset?: number, mask = 0x01): void {
    const p = this.queued[this.checkIndex(index)];
    const off = offset ?? p.buf.length - 1;
    if (off < 0 || off >= p.buf.length) throw new RangeError(`corrupt: offset ${off} outside a ${p.buf.length}-byte datagram`);
    p.buf[off] ^= mask;
  }

  /** Cuts datagram `index` to its first `len` bytes. */
  truncate(index: number, len: number): void {
    const p = this.queued[this.checkIndex(index)];
    p.buf = Buffer.from(p.buf.subarray(0, len));
  }

  /** Swaps queued datagrams `i` and `j`. */
  swap(i: number, j: number): void {
    this.checkIndex(i);
    this.checkIndex(j);
    const q = this.queued;
    [q[i], q[j]] = [q[j], q[i]];
  }

  /** Reorders the queue: `order` lists current indices in their new order (a permutation). */
  reorder(order: number[]): void {
    if (order.length !== this.queued.length || new Set(order).size !== order.length) {
      throw new RangeError('reorder: order must be a permutation of the queue indices');
    }
    this.queued = order.map((i) => this.queued[this.checkIndex(i)]);
  }

  /** Moves the clock forward. */
  advance(ms: number): void {
    this.now += ms;
  }

  private checkIndex(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.queued.length) {
      throw new RangeError(`no queued datagram ${i} (queue holds ${this.queued.length})`);
    }
    return i;
  }
}

// ------------------------------------------------------------------ UD QP helpers

export const DEFAULT_QKEY = 0x11111111;

/** A UD endpoint: one device's PD, buffer + MR, send and receive CQs, and QP. */
export interface UdEnd {
  dev: Device;
  pd: ProtectionDomain;
  buf: Buffer;
  mr: MemoryRegion;
  sendCq: CompletionQueue;
  recvCq: CompletionQueue;
  qp: QueuePair;
  qkey: number;
}

export interface UdEndOptions {
  qkey?: number;
  /** State to leave the QP in (default RTS). */
  state?: 'RESET' | 'INIT' | 'RTR' | 'RTS';
  /** Size of the registered buffer (default 16 KiB). */
  bufSize?: number;
  /** Depth of each CQ (default 64). */
  cqe?: number;
  sendCqe?: number;
  recvCqe?: number;
  channel?: CompletionChannel | null;
  cap?: Partial<QpCap>;
  qpType?: QpType;
  /** Use this PD instead of allocating one. */
  pd?: ProtectionDomain;
  /** efadv flags of the receive CQ (default WITH_SGID, so completions carry the sender GID). */
  recvCqFlags?: number;
}

/** Creates PD, MR, CQs and a QP on `dev` and moves the QP RESET -> INIT -> RTR -> RTS. */
export async function createUdEnd(dev: Device, opts: UdEndOptions = {}): Promise<UdEnd> {
  const qkey = opts.qkey ?? DEFAULT_QKEY;
  const pd = opts.pd ?? (await dev.allocPd());
  const buf = Buffer.alloc(opts.bufSize ?? 16384);
  const mr = await dev.regMr(pd, buf, AccessFlags.LOCAL_WRITE);
  const sendCq = await dev.createCq({ cqe: opts.sendCqe ?? opts.cqe ?? 64, channel: opts.channel ?? null });
  const recvCq = await dev.createCq({ cqe: opts.recvCqe ?? opts.cqe ?? 64, channel: opts.channel ?? null, efadv: { wcFlags: opts.recvCqFlags ?? EfadvWcFlags.WITH_SGID } });
  const qp = await dev.createQp(pd, {
    qpType: opts.qpType ?? QpType.UD,
    sendCq,
    recvCq,
    cap: { maxSendWr: 16, maxRecvWr: 16, maxSendSge: 2, maxRecvSge: 3, maxInlineData: 32, ...opts.cap },
  });
  const end: UdEnd = { dev, pd, buf, mr, sendCq, recvCq, qp, qkey };
  await moveQp(end, opts.state ?? 'RTS');
  return end;
}

/** Moves a QP in RESET forward to `state` along RESET -> INIT -> RTR -> RTS. */
export async function moveQp(end: Pick<UdEnd, 'dev' | 'qp' | 'qkey'>, state: 'RESET' | 'INIT' | 'RTR' | 'RTS'): Promise<void> {
  const order = ['RESET', 'INIT', 'RTR', 'RTS'];
  const target = order.indexOf(state);
  const { dev, qp } = end;
  if (target >= 1 && qp.state === QpState.RESET) await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: end.qkey });
  if (target >= 2 && qp.state === QpState.INIT) await dev.modifyQp(qp, { qpState: QpState.RTR });
  if (target >= 3 && qp.state === QpState.RTR) await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
}

export interface UdPair {
  fabric: MemoryFabric;
  a: UdEnd;
  b: UdEnd;
  /** a's AH for b (in a.pd). */
  ahAtoB: AddressHandle;
}

/** Two devices `a` and `b` on a fresh fabric, each with a ready UD QP, and a's AH for b. */
export async function udPair(
  opts: { fabric?: MemoryFabric; a?: UdEndOptions; b?: UdEndOptions; attributes?: Partial<DeviceAttributes> } = {},
): Promise<UdPair> {
  const fabric = opts.fabric ?? new MemoryFabric();
  const devA = fabric.addDevice('a', opts.attributes);
  const devB = fabric.addDevice('b', opts.attributes);
  const a = await createUdEnd(devA, opts.a);
  const b = await createUdEnd(devB, opts.b);
  const ahAtoB = await devA.createAh(a.pd, { gid: devB.gidText });
  return { fabric, a, b, ahAtoB };
}

/** Posts a one-SGE receive of `length` bytes at `addr` of the end's MR. */
export function postRecv(end: UdEnd, wrId: number, addr = 0, length = 4096): void {
  end.dev.postRecv(end.qp, { wrId, sgList: [{ addr, length, lkey: end.mr.lkey }] });
}

/**
 * Copies `payload` into the end's buffer at `addr` and posts it as a one-SGE send to
 * `remote` through `ah`.
 */
export function sendBytes(
  end: UdEnd,
  ah: AddressHandle,
  remote: { qp: QueuePair; qkey: number },
  wrId: number,
  payload: Uint8Array,
  extra: { addr?: number; opcode?: number; immData?: number; sendFlags?: number; sgList?: Sge[] } = {},
): void {
  const addr = extra.addr ?? 8192;
  end.buf.set(payload, addr);
  end.dev.postSend(end.qp, {
    wrId,
    opcode: extra.opcode,
    immData: extra.immData,
    sendFlags: extra.sendFlags,
    sgList: extra.sgList ?? [{ addr, length: payload.length, lkey: end.mr.lkey }],
    ah,
    remoteQpn: remote.qp.qpNum,
    remoteQkey: remote.qkey,
  });
}

/** Polls up to `max` completions and returns them as fresh objects. */
export function poll(dev: Device, cq: CompletionQueue, max = 64): WorkCompletion[] {
  const out: WorkCompletion[] = [];
  const n = dev.pollCq(cq, max, out);
  return out.slice(0, n);
}

// ------------------------------------------------------------------ error helpers

/** Runs `fn` and returns what it threw (undefined when it did not throw). */
export function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

/** Awaits `p` and returns its rejection reason (undefined when it resolved). */
export async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  return undefined;
}

/** The subset of a tap test this file needs (kept structural so tap's types need not be imported). */
export interface Asserts {
  ok(v: unknown, message: string): unknown;
  equal(found: unknown, wanted: unknown, message: string): unknown;
  match(found: unknown, pattern: unknown, message: string): unknown;
}

const ADMIN_NAMES: Record<number, string> = {
  1: 'CREATE_QP',
  2: 'MODIFY_QP',
  3: 'QUERY_QP',
  4: 'DESTROY_QP',
  5: 'CREATE_AH',
  6: 'DESTROY_AH',
  7: 'REG_MR',
  8: 'DEREG_MR',
  9: 'CREATE_CQ',
  10: 'DESTROY_CQ',
  11: 'GET_FEATURE',
  12: 'SET_FEATURE',
  13: 'GET_STATS',
  14: 'ALLOC_PD',
  15: 'DEALLOC_PD',
};

/**
 * Asserts that `p` rejects with an AdminCommandError of `opcode`, `status` and `errno`
 * whose message reads `NAME (opcode N) failed: status S, ERRNO: ...`. Returns the error.
 */
export async function expectAdminError(
  t: Asserts,
  p: Promise<unknown>,
  opcode: number,
  status: number,
  errno: string,
  what = '',
): Promise<any> {
  const err = await rejection(p);
  const label = what === '' ? `${ADMIN_NAMES[opcode]} fails ${errno}` : what;
  t.ok(err instanceof AdminCommandError, `${label}: an AdminCommandError (got ${String(err)})`);
  t.equal(err?.code, errno, `${label}: code ${errno}`);
  t.equal(err?.opcode, opcode, `${label}: opcode ${opcode}`);
  t.equal(err?.status, status, `${label}: status ${status}`);
  const re = new RegExp(`^${ADMIN_NAMES[opcode]} \\(opcode ${opcode}\\) failed: status ${status}, ${errno}: \\S`);
  t.match(String(err?.message), re, `${label}: message names the command`);
  return err;
}
