/*
 * Seeded RDMA scenarios for the simulation: devices issue random RDMA writes, writes with
 * immediate, reads and sends to each other under drawn faults (loss, duplication,
 * reordering, corruption, delay, and sometimes a partition), and an oracle checks what every
 * operation did:
 * - every operation completes exactly once, in bounded time;
 * - a successful write left exactly its bytes at the target, a successful read brought back
 *   exactly the target's bytes; a failed one wrote nothing outside its own slot;
 * - a write with immediate completes one receive at the target (or an unsolicited
 *   completion), after all its data was placed, never twice;
 * - errors only where a partition outlived the unresponsive timeout, and only the silence
 *   statuses; nothing is left pending at the end.
 * Used by test/srd-rdma-sim.test.ts (a few hundred seeds) and the soak (many more).
 */
import { EfaStatus, efaStatusStr } from '../../src/common/efa-status';
import { Prng } from '../../src/common/prng';
import { AccessFlags, EfadvQpFlags, EfadvWcFlags, WcOpcode } from '../../src/device/constants';
import type { AddressHandle } from '../../src/device/address-handle';
import { createSrdEnd, pollAll, SimNetwork, type SrdEnd } from './sim-network';

export const RDMA_TIMEOUT_MS = 300;
const MTU = 8192;

export interface RdmaScenarioParams {
  seed: number;
  devices: number;
  opsPerDevice: number;
  maxSize: number;
  loss: number;
  dup: number;
  reorder: number;
  corrupt: number;
  delayMs: number;
  window: number;
  postWindowMs: number;
  /** Device (1-based) cut off for [from, until), or null. */
  partition: { device: number; from: number; until: number } | null;
  /** Targets whose QP takes unsolicited write receives. */
  unsolicited: boolean;
}

export function drawRdmaParams(seed: number): RdmaScenarioParams {
  const r = new Prng(seed);
  const pick = <T>(xs: T[]): T => xs[r.int(xs.length)];
  const p: RdmaScenarioParams = {
    seed,
    devices: 2 + r.int(2),
    opsPerDevice: 4 + r.int(12),
    maxSize: pick([100, MTU, 3 * MTU + 5, 100_000]),
    loss: r.next() < 0.8 ? r.next() * 0.1 : 0,
    dup: r.next() < 0.5 ? r.next() * 0.1 : 0,
    reorder: r.next() < 0.6 ? r.next() * 0.3 : 0,
    corrupt: r.next() < 0.3 ? r.next() * 0.01 : 0,
    delayMs: 0.05 + r.next(),
    window: pick([4, 16, 128]),
    postWindowMs: r.next() * 20,
    partition: null,
    unsolicited: r.next() < 0.5,
  };
  if (r.next() < 0.25) {
    const from = r.next() * 30;
    // Short cuts must cost nothing; long ones may fail what waited on them.
    const len = r.next() < 0.5 ? r.next() * RDMA_TIMEOUT_MS * 0.3 : RDMA_TIMEOUT_MS * (1.5 + r.next() * 2);
    p.partition = { device: 1 + r.int(p.devices), from, until: from + len };
  }
  return p;
}

type Kind = 'write' | 'writeImm' | 'read' | 'send';

interface Op {
  id: number;
  kind: Kind;
  from: number;
  to: number;
  len: number;
  /** Offsets: in the initiator's buffer (write source / read destination), in the target's. */
  local: number;
  remote: number;
  postAt: number;
  completions: number;
  status: number;
  completedAt: number;
  recvs: number;
}

export interface RdmaScenarioResult {
  problems: string[];
  ops: number;
  ok: number;
  failed: number;
  bytes: number;
}

/** Each device's buffer: [source area (static pattern, read by peers) | per-op slots]. */
function layout(p: RdmaScenarioParams): { recvArea: number; slot: number; size: number } {
  const slot = p.maxSize + 64;
  const total = p.devices * p.opsPerDevice;
  // Sends land in one shared area at the end (their bytes are not checked, only their count).
  const recvArea = slot + slot * total * 2;
  return { recvArea, slot, size: recvArea + RECV_BYTES };
}

const RECV_BYTES = 2048;

function byteOf(dev: number, off: number): number {
  return (dev * 37 + off * 11 + (off >>> 8)) & 0xff;
}

export async function runRdmaScenario(p: RdmaScenarioParams): Promise<RdmaScenarioResult> {
  const problems: string[] = [];
  const problem = (s: string): void => {
    if (problems.length < 20) problems.push(s);
  };
  const faults = `loss=${(p.loss * 100).toFixed(3)}%,dup=${(p.dup * 100).toFixed(3)}%,reorder=${(p.reorder * 100).toFixed(3)}%,corrupt=${(p.corrupt * 100).toFixed(3)}%,delay=${p.delayMs.toFixed(3)}ms,seed=${p.seed}`;
  const sim = new SimNetwork({
    seed: p.seed,
    trace: false,
    faults,
    srd: { window: p.window, unresponsiveTimeoutMs: RDMA_TIMEOUT_MS, minRtoMs: 0.5, maxRtoMs: 8, initialRtoMs: 2, rnrBackoffMs: 0.25, rnrBackoffMaxMs: 4 },
  });
  const { slot, size, recvArea } = layout(p);
  const recvSgl = (e: SrdEnd) => [{ addr: recvArea, length: RECV_BYTES, lkey: e.mr.lkey }];
  const ends: SrdEnd[] = [];
  for (let i = 0; i < p.devices; i++) {
    const node = sim.addDevice(`efa${i}`);
    ends.push(
      await createSrdEnd(node.device, {
        bufSize: size,
        access: AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE | AccessFlags.REMOTE_READ,
        maxSendWr: 1024,
        maxRecvWr: 1024,
        cqe: 8192,
        qpFlags: p.unsolicited ? EfadvQpFlags.UNSOLICITED_WRITE_RECV : 0,
        recvCqFlags: p.unsolicited ? EfadvWcFlags.WITH_IS_UNSOLICITED : 0,
      }),
    );
  }
  for (let i = 0; i < p.devices; i++) for (let k = 0; k < slot; k++) ends[i].buf[k] = byteOf(i, k);
  const ahs: AddressHandle[][] = [];
  for (let i = 0; i < p.devices; i++) {
    ahs[i] = [];
    for (let j = 0; j < p.devices; j++) if (i !== j) ahs[i][j] = await ends[i].dev.createAh(ends[i].pd, { gid: ends[j].dev.gidText });
  }
  // Receives for sends and (solicited) writes with immediate: more than can ever be used.
  for (const e of ends) for (let k = 0; k < 512; k++) e.dev.postRecv(e.qp, { wrId: 1_000_000 + k, sgList: recvSgl(e) });
  if (p.partition !== null) sim.partitionDevice(p.partition.device, p.partition.from, p.partition.until);

  const r = new Prng(p.seed ^ 0x5a5a5a5a);
  const ops: Op[] = [];
  const kinds: Kind[] = ['write', 'writeImm', 'read', 'send'];
  let nextSlot = 0;
  for (let from = 0; from < p.devices; from++) {
    for (let k = 0; k < p.opsPerDevice; k++) {
      let to = r.int(p.devices - 1);
      if (to >= from) to++;
      const kind = kinds[r.int(kinds.length)];
      const len = kind === 'send' ? r.int(Math.min(RECV_BYTES, p.maxSize) + 1) : [0, 1, r.int(p.maxSize + 1), Math.min(p.maxSize, MTU), Math.min(p.maxSize, MTU + 1), p.maxSize][r.int(6)];
      const s = nextSlot++;
      const op: Op = {
        id: ops.length,
        kind,
        from,
        to,
        len,
        local: slot + s * 2 * slot,
        // Writes land in the op's own slot at the target; reads take from the source area.
        remote: kind === 'read' ? r.int(slot - len + 1) : slot + (s * 2 + 1) * slot + r.int(32),
        postAt: r.next() * p.postWindowMs,
        completions: 0,
        status: -1,
        completedAt: 0,
        recvs: 0,
      };
      if (kind === 'write' || kind === 'writeImm' || kind === 'send') for (let b = 0; b < len; b++) ends[from].buf[op.local + b] = (op.id * 29 + b * 3 + 1) & 0xff;
      ops.push(op);
    }
  }
  const dataOk = (op: Op): boolean => {
    const src = ends[op.from].buf;
    const dst = ends[op.to].buf;
    if (op.kind === 'read') return src.subarray(op.local, op.local + op.len).equals(dst.subarray(op.remote, op.remote + op.len));
    return dst.subarray(op.remote, op.remote + op.len).equals(src.subarray(op.local, op.local + op.len));
  };

  for (const op of ops) {
    sim.at(op.postAt, () => {
      const e = ends[op.from];
      const t = ends[op.to];
      const dev = e.dev;
      dev.wrStart(e.qp);
      e.qp.wrId = op.id;
      e.qp.wrFlags = 0;
      if (op.kind === 'write') dev.wrRdmaWrite(e.qp, t.mr.rkey, op.remote);
      else if (op.kind === 'writeImm') dev.wrRdmaWriteImm(e.qp, t.mr.rkey, op.remote, op.id);
      else if (op.kind === 'read') dev.wrRdmaRead(e.qp, t.mr.rkey, op.remote);
      else dev.wrSendImm(e.qp, op.id);
      dev.wrSetUdAddr(e.qp, ahs[op.from][op.to], t.qp.qpNum, t.qkey);
      dev.wrSetSge(e.qp, e.mr.lkey, op.local, op.len);
      dev.wrComplete(e.qp);
    });
  }

  const poll = (): void => {
    for (let i = 0; i < p.devices; i++) {
      const e = ends[i];
      for (const wc of pollAll(e.dev, e.sendCq)) {
        const op = ops[wc.wrId];
        if (op === undefined || op.from !== i) {
          problem(`device ${i}: send completion for unknown wr_id ${wc.wrId}`);
          continue;
        }
        op.completions++;
        if (op.completions > 1) problem(`op ${op.id} (${op.kind}) completed ${op.completions} times`);
        op.status = wc.vendorErr;
        op.completedAt = sim.now;
        if (wc.vendorErr === EfaStatus.SUCCESS && op.kind !== 'send' && !dataOk(op)) problem(`op ${op.id} (${op.kind} ${op.len} B ${op.from}->${op.to}): SUCCESS but the data differs`);
      }
      for (const wc of pollAll(e.dev, e.recvCq)) {
        const op = ops[wc.immData];
        if (wc.vendorErr !== EfaStatus.SUCCESS) {
          problem(`device ${i}: receive completion ${efaStatusStr(wc.vendorErr)}`);
          continue;
        }
        if (op === undefined || op.to !== i || (op.kind !== 'writeImm' && op.kind !== 'send')) {
          problem(`device ${i}: receive completion with immediate ${wc.immData} names no write or send to it`);
          continue;
        }
        op.recvs++;
        if (op.recvs > 1) problem(`op ${op.id} (${op.kind}): ${op.recvs} receive completions`);
        if (op.kind === 'writeImm') {
          if (wc.opcode !== WcOpcode.RECV_RDMA_WITH_IMM) problem(`op ${op.id}: opcode ${wc.opcode}, expected RECV_RDMA_WITH_IMM`);
          if (wc.byteLen !== op.len) problem(`op ${op.id}: byte_len ${wc.byteLen}, expected ${op.len}`);
          if (wc.unsolicited !== p.unsolicited) problem(`op ${op.id}: unsolicited ${wc.unsolicited}, the QP says ${p.unsolicited}`);
          if (!dataOk(op)) problem(`op ${op.id}: the receive completion came before all the data was placed`);
        }
        // Solicited completions consumed a receive: give it back.
        if (!wc.unsolicited) e.dev.postRecv(e.qp, { wrId: wc.wrId, sgList: recvSgl(e) });
      }
    }
  };
  sim.afterEvent = () => poll();
  const last = p.postWindowMs + (p.partition === null ? 0 : p.partition.until);
  // Generous: a read may wait twice the timeout after the target went silent.
  const bound = last + 10 * RDMA_TIMEOUT_MS + 2000;
  sim.runUntil(() => ops.every((o) => o.completions > 0), bound);
  // What the devices still owe each other (acks of read data that went out during a cut, say)
  // settles within a few timeouts of the partition's end: then nothing may be left.
  sim.drain(Math.max(sim.now, p.partition === null ? 0 : p.partition.until) + 4 * RDMA_TIMEOUT_MS);
  poll();

  const part = p.partition;
  const longCut = part !== null && part.until - part.from > RDMA_TIMEOUT_MS;
  let ok = 0;
  let failed = 0;
  let bytes = 0;
  for (const op of ops) {
    if (op.completions === 0) {
      problem(`op ${op.id} (${op.kind} ${op.len} B ${op.from}->${op.to}, posted ${op.postAt.toFixed(2)}) never completed (by t=${sim.now.toFixed(0)})`);
      continue;
    }
    if (op.status === EfaStatus.SUCCESS) {
      ok++;
      bytes += op.len;
      if ((op.kind === 'writeImm' || op.kind === 'send') && op.recvs !== 1) problem(`op ${op.id} (${op.kind}): SUCCESS at the initiator but ${op.recvs} receive completions`);
      continue;
    }
    failed++;
    const involved = part !== null && (part.device - 1 === op.from || part.device - 1 === op.to);
    const silence = op.status === EfaStatus.LOCAL_ERROR_UNRESP_REMOTE || op.status === EfaStatus.LOCAL_ERROR_UNREACH_REMOTE;
    if (!(longCut && involved && silence)) problem(`op ${op.id} (${op.kind} ${op.len} B ${op.from}->${op.to}) failed ${efaStatusStr(op.status)} at t=${op.completedAt.toFixed(1)} (partition: ${part === null ? 'none' : `${part.device - 1} [${part.from.toFixed(1)}, ${part.until.toFixed(1)})`})`);
    if (op.recvs > 1) problem(`op ${op.id}: failed, yet ${op.recvs} receive completions`);
  }
  // A write never touches bytes outside its own range of its slot (the slot's other bytes stay 0).
  for (const op of ops) {
    if (op.kind !== 'write' && op.kind !== 'writeImm') continue;
    const dst = ends[op.to].buf;
    const base = slot + Math.floor((op.remote - slot) / slot) * slot;
    for (let b = base; b < base + slot; b++) {
      if ((b < op.remote || b >= op.remote + op.len) && dst[b] !== 0) {
        problem(`op ${op.id} (${op.kind} ${op.len} B at ${op.remote - base} ${op.from}->${op.to} status ${op.status}): byte ${b - base} of its target slot is ${dst[b]}, outside the write`);
        break;
      }
    }
  }
  for (let i = 0; i < p.devices; i++) {
    if (ends[i].dev.rdma.pendingReads !== 0) problem(`device ${i}: ${ends[i].dev.rdma.pendingReads} reads still pending at the end`);
    if (ends[i].dev.srd.outstanding !== 0) problem(`device ${i}: ${ends[i].dev.srd.outstanding} SRD sends still outstanding at the end`);
  }
  return { problems, ops: ops.length, ok, failed, bytes };
}

export function describeRdmaParams(p: RdmaScenarioParams): string {
  return JSON.stringify(p);
}
