// Conformance with rdma-core's pyverbs EFA tests (tests/test_efadv.py, tests/test_efa_srd.py,
// tests/efa_base.py): each case names the pyverbs case it follows. Where pyverbs skips for a
// capability the device lacks, the case runs on a generation that has it and the refusal
// (EOPNOTSUPP) is asserted on one that lacks it. Provider rules the pyverbs helpers rely on
// (rdma-core providers/efa/verbs.c, the kernel driver) have cases of their own at the end.
// Traffic runs in the discrete-event simulator: deterministic, bounded by virtual time.
import t from 'tap';
import { Prng } from '../src/common/prng';
import type { AddressHandle } from '../src/device/address-handle';
import type { CompletionChannel } from '../src/device/completion-channel';
import type { CompletionQueue } from '../src/device/completion-queue';
import {
  AccessFlags,
  AH_UNKNOWN,
  EFADV_QP_DRIVER_TYPE_SRD,
  EfaStatus,
  EfadvQpFlags,
  EfadvWcFlags,
  ENOENT,
  QpSendOps,
  QpState,
  QpType,
  SendFlags,
  WcFlags,
  WcOpcode,
  WcStatus,
  WrOpcode,
} from '../src/device/constants';
import type { Device } from '../src/device/device';
import { EfadvDeviceCaps, GENERATION_NAMES, GENERATIONS } from '../src/device/generations';
import type { MemoryRegion } from '../src/device/memory-region';
import type { ProtectionDomain } from '../src/device/protection-domain';
import type { QueuePair } from '../src/device/queue-pair';
import { createUdEnd, expectAdminError, MemoryFabric, rejection, thrown } from './helpers/memory-fabric';
import { createSrdEnd, patternPayload, pollAll, postSrdRecv, SimNetwork, srdSim, type SrdEnd } from './helpers/sim-network';

const SRD_QKEY = 0x11111111; // tests/efa_base.py SRDResources.SRD_QKEY
const MSG = 1024; // tests/base.py default msg_size
const SLOT = 4096;
const ITERS = 100;
const ALL_OPS = [QpSendOps.SEND, QpSendOps.SEND_WITH_IMM, QpSendOps.RDMA_READ, QpSendOps.RDMA_WRITE, QpSendOps.RDMA_WRITE_WITH_IMM];
const OP_CAP: Record<number, number> = {
  [QpSendOps.SEND]: 0,
  [QpSendOps.SEND_WITH_IMM]: 0,
  [QpSendOps.RDMA_READ]: EfadvDeviceCaps.RDMA_READ,
  [QpSendOps.RDMA_WRITE]: EfadvDeviceCaps.RDMA_WRITE,
  [QpSendOps.RDMA_WRITE_WITH_IMM]: EfadvDeviceCaps.RDMA_WRITE,
};
const ADMIN = { CREATE_QP: 1, MODIFY_QP: 2, CREATE_CQ: 9, REG_MR: 7, GET_FEATURE: 11 };
const ST = { RESOURCE: 1, UNSUPPORTED: 3, ILLEGAL: 5 };

// ------------------------------------------------------------------ SRDResources (tests/efa_base.py)

interface SideOpts {
  qpCount?: number;
  sendOpsFlags?: number;
  access?: number;
  qpFlags?: number;
  recvWcFlags?: number;
  channel?: boolean;
  maxSendWr?: number;
  maxRecvWr?: number;
}

interface Side {
  dev: Device;
  pd: ProtectionDomain;
  buf: Buffer;
  mr: MemoryRegion;
  sendCq: CompletionQueue;
  recvCq: CompletionQueue;
  channel: CompletionChannel | null;
  qps: QueuePair[];
}

/** As SRDResources: PD, CQ(s), MR, then SRD driver QPs (sq_sig_all 0) moved RESET -> RTS. */
async function makeSide(dev: Device, o: SideOpts): Promise<Side> {
  const pd = await dev.allocPd();
  const channel = o.channel === true ? dev.createCompChannel() : null;
  const sendCq = await dev.createCq({ cqe: 4096, channel });
  const recvCq = await dev.createCq({ cqe: 4096, channel, efadv: { wcFlags: o.recvWcFlags ?? 0 } });
  const buf = Buffer.alloc(1 << 20);
  const mr = await dev.regMr(pd, buf, o.access ?? AccessFlags.LOCAL_WRITE);
  const qps: QueuePair[] = [];
  for (let i = 0; i < (o.qpCount ?? 8); i++) {
    const qp = await dev.createQp(pd, {
      qpType: QpType.SRD,
      sendCq,
      recvCq,
      sqSigAll: false,
      sendOpsFlags: o.sendOpsFlags,
      efadv: { driverQpType: EFADV_QP_DRIVER_TYPE_SRD, flags: o.qpFlags ?? 0 },
      cap: { maxSendWr: o.maxSendWr ?? 1000, maxRecvWr: o.maxRecvWr ?? 1000, maxSendSge: 1, maxRecvSge: 1 },
    });
    await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: SRD_QKEY });
    await dev.modifyQp(qp, { qpState: QpState.RTR });
    await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
    qps.push(qp);
  }
  return { dev, pd, buf, mr, sendCq, recvCq, channel, qps };
}

interface Players {
  sim: SimNetwork;
  client: Side;
  server: Side;
  /** client's AH for the server, server's AH for the client */
  ahC: AddressHandle;
  ahS: AddressHandle;
}

async function players(o: SideOpts & { generation?: string; seed?: number; server?: SideOpts } = {}): Promise<Players> {
  const sim = new SimNetwork({ seed: o.seed ?? 1 });
  const extra = o.generation === undefined ? {} : { generation: o.generation };
  const nc = sim.addDevice('client', extra);
  const ns = sim.addDevice('server', extra);
  const client = await makeSide(nc.device, o);
  const server = await makeSide(ns.device, { ...o, ...(o.server ?? {}) });
  const ahC = await client.dev.createAh(client.pd, { gid: server.dev.gidText });
  const ahS = await server.dev.createAh(server.pd, { gid: client.dev.gidText });
  return { sim, client, server, ahC, ahS };
}

interface Rec {
  wrId: number;
  status: number;
  vendorErr: number;
  opcode: number;
  byteLen: number;
  imm: number;
  qpNum: number;
  srcQp: number;
  wcFlags: number;
}

/** Everything queued on `cq`, through the extended poll (ex) or ibv_poll_cq. */
function drainCq(side: Side, cq: CompletionQueue, ex: boolean): Rec[] {
  if (!ex) {
    return pollAll(side.dev, cq).map((w) => ({ wrId: w.wrId, status: w.status, vendorErr: w.vendorErr, opcode: w.opcode, byteLen: w.byteLen, imm: w.immData, qpNum: w.qpNum, srcQp: w.srcQp, wcFlags: w.wcFlags }));
  }
  const out: Rec[] = [];
  if (cq.startPoll() !== 0) return out;
  do {
    out.push({ wrId: cq.wrId, status: cq.status, vendorErr: cq.readVendorErr(), opcode: cq.readOpcode(), byteLen: cq.readByteLen(), imm: cq.readImmData(), qpNum: cq.readQpNum(), srcQp: cq.readSrcQp(), wcFlags: cq.readWcFlags() });
  } while (cq.nextPoll() === 0);
  cq.endPoll();
  return out;
}

/** Runs the simulation until each CQ holds its count (bounded in virtual time). */
function runUntilQueued(sim: SimNetwork, wants: Array<[CompletionQueue, number]>, maxMs = 10_000): boolean {
  return sim.runUntil(() => wants.every(([cq, n]) => cq.depthUsed >= n), sim.now + maxMs);
}

/** The next event of `ch`, or null when none comes before the event loop turns. */
function nextEvent(ch: CompletionChannel): Promise<CompletionQueue | null> {
  return Promise.race([ch.getCqEvent(), new Promise<null>((r) => setImmediate(() => r(null)))]);
}

type TrafficOp = 'send' | 'sendImm' | 'writeImm';

/**
 * u.traffic: per iteration, the server posts a receive on each QP and the client sends on
 * each; then the other way round. Checks every completion and every byte; returns problems.
 */
async function traffic(p: Players, o: { op: TrafficOp; newSend: boolean; iters?: number; size?: number; events?: boolean }): Promise<{ problems: string[]; recvs: number; events: number }> {
  const problems: string[] = [];
  const size = o.size ?? MSG;
  let recvs = 0;
  let events = 0;
  for (let i = 0; i < (o.iters ?? ITERS); i++) {
    for (const [snd, rcv, ah] of [[p.client, p.server, p.ahC], [p.server, p.client, p.ahS]] as const) {
      const n = snd.qps.length;
      if (o.events === true) {
        snd.dev.reqNotifyCq(snd.sendCq);
        rcv.dev.reqNotifyCq(rcv.recvCq);
      }
      const payloads: Buffer[] = [];
      for (let q = 0; q < n; q++) {
        const id = i * 64 + q;
        rcv.dev.postRecv(rcv.qps[q], { wrId: id, sgList: [{ addr: q * SLOT, length: SLOT, lkey: rcv.mr.lkey }] });
        const data = patternPayload(id * 7 + (snd === p.client ? 1 : 2), size);
        payloads.push(data);
        const src = 0x80000 + q * SLOT;
        data.copy(snd.buf, src);
        const imm = (0xa5000000 + id) >>> 0;
        const qp = snd.qps[q];
        if (o.newSend) {
          snd.dev.wrStart(qp);
          qp.wrId = id;
          qp.wrFlags = SendFlags.SIGNALED;
          if (o.op === 'send') snd.dev.wrSend(qp);
          else if (o.op === 'sendImm') snd.dev.wrSendImm(qp, imm);
          else snd.dev.wrRdmaWriteImm(qp, rcv.mr.rkey, 0x40000 + q * SLOT, imm);
          snd.dev.wrSetUdAddr(qp, ah, rcv.qps[q].qpNum, SRD_QKEY);
          snd.dev.wrSetSge(qp, snd.mr.lkey, src, size);
          snd.dev.wrComplete(qp);
        } else {
          snd.dev.postSend(qp, {
            wrId: id,
            opcode: o.op === 'send' ? WrOpcode.SEND : WrOpcode.SEND_WITH_IMM,
            immData: imm,
            sendFlags: SendFlags.SIGNALED,
            sgList: [{ addr: src, length: size, lkey: snd.mr.lkey }],
            ah,
            remoteQpn: rcv.qps[q].qpNum,
            remoteQkey: SRD_QKEY,
          });
        }
      }
      if (!runUntilQueued(p.sim, [[snd.sendCq, n], [rcv.recvCq, n]])) problems.push(`iter ${i}: completions missing`);
      if (o.events === true && snd.channel !== null && rcv.channel !== null) {
        const e1 = await nextEvent(snd.channel);
        const e2 = await nextEvent(rcv.channel);
        if (e1 !== snd.sendCq || e2 !== rcv.recvCq) problems.push(`iter ${i}: events for the wrong CQs`);
        else events += 2;
        snd.channel.ackCqEvents(1);
        rcv.channel.ackCqEvents(1);
      }
      const sends = drainCq(snd, snd.sendCq, o.newSend);
      const got = drainCq(rcv, rcv.recvCq, o.newSend);
      const sendOpcode = o.op === 'writeImm' ? WcOpcode.RDMA_WRITE : WcOpcode.SEND;
      for (const w of sends) {
        if (w.status !== WcStatus.SUCCESS || w.vendorErr !== EfaStatus.SUCCESS || w.opcode !== sendOpcode) problems.push(`iter ${i}: send ${w.wrId} ${JSON.stringify(w)}`);
      }
      if (sends.map((w) => w.wrId).sort((x, y) => x - y).join() !== Array.from({ length: n }, (_, q) => i * 64 + q).join()) problems.push(`iter ${i}: send wr_ids`);
      if (got.length !== n) problems.push(`iter ${i}: ${got.length} receives`);
      for (const w of got) {
        const q = w.wrId - i * 64;
        const wantOp = o.op === 'writeImm' ? WcOpcode.RECV_RDMA_WITH_IMM : WcOpcode.RECV;
        const withImm = o.op !== 'send';
        if (q < 0 || q >= n || w.status !== WcStatus.SUCCESS || w.opcode !== wantOp || w.byteLen !== size) {
          problems.push(`iter ${i}: recv ${JSON.stringify(w)}`);
          continue;
        }
        if (w.qpNum !== rcv.qps[q].qpNum || w.srcQp !== snd.qps[q].qpNum) problems.push(`iter ${i}: recv qp ${w.qpNum} src ${w.srcQp}`);
        if (withImm !== ((w.wcFlags & WcFlags.WITH_IMM) !== 0) || (withImm && w.imm !== ((0xa5000000 + w.wrId) >>> 0))) problems.push(`iter ${i}: imm ${w.imm} flags ${w.wcFlags}`);
        const at = o.op === 'writeImm' ? 0x40000 + q * SLOT : q * SLOT;
        if (!rcv.buf.subarray(at, at + size).equals(payloads[q])) problems.push(`iter ${i}: data of qp ${q}`);
        recvs++;
      }
    }
  }
  return { problems, recvs, events };
}

/** u.rdma_traffic: each side in turn reads or writes the other's MR on every QP. */
function rdmaTraffic(p: Players, op: 'read' | 'write', iters = ITERS): { problems: string[]; done: number } {
  const problems: string[] = [];
  let done = 0;
  for (let i = 0; i < iters; i++) {
    for (const [ini, tgt, ah] of [[p.client, p.server, p.ahC], [p.server, p.client, p.ahS]] as const) {
      const n = ini.qps.length;
      const want: Buffer[] = [];
      for (let q = 0; q < n; q++) {
        const data = patternPayload(i * 131 + q * 3 + (ini === p.client ? 0 : 1), MSG);
        want.push(data);
        const local = 0x10000 + q * SLOT;
        const remote = 0x20000 + q * SLOT;
        (op === 'read' ? tgt : ini).buf.set(data, op === 'read' ? remote : local);
        const qp = ini.qps[q];
        ini.dev.wrStart(qp);
        qp.wrId = i * 64 + q;
        qp.wrFlags = SendFlags.SIGNALED;
        if (op === 'read') ini.dev.wrRdmaRead(qp, tgt.mr.rkey, remote);
        else ini.dev.wrRdmaWrite(qp, tgt.mr.rkey, remote);
        ini.dev.wrSetUdAddr(qp, ah, tgt.qps[q].qpNum, SRD_QKEY);
        ini.dev.wrSetSge(qp, ini.mr.lkey, local, MSG);
        ini.dev.wrComplete(qp);
      }
      if (!runUntilQueued(p.sim, [[ini.sendCq, n]])) problems.push(`iter ${i}: completions missing`);
      for (const w of drainCq(ini, ini.sendCq, true)) {
        // The provider reports an RDMA read's completion as IBV_WC_SEND (rc providers/efa/verbs.c efa_wc_read_opcode).
        const wantOp = op === 'read' ? WcOpcode.SEND : WcOpcode.RDMA_WRITE;
        if (w.status !== WcStatus.SUCCESS || w.opcode !== wantOp || w.qpNum !== ini.qps[w.wrId - i * 64]?.qpNum) problems.push(`iter ${i}: ${JSON.stringify(w)}`);
        else done++;
      }
      for (let q = 0; q < n; q++) {
        const at = op === 'read' ? 0x10000 + q * SLOT : 0x20000 + q * SLOT;
        if (!(op === 'read' ? ini : tgt).buf.subarray(at, at + MSG).equals(want[q])) problems.push(`iter ${i}: data of qp ${q}`);
      }
      if (drainCq(tgt, tgt.recvCq, true).length !== 0) problems.push(`iter ${i}: the target saw a completion`);
    }
  }
  return { problems, done };
}

function codeOf(fn: () => unknown): string | undefined {
  return (thrown(fn) as { code?: string } | undefined)?.code;
}

/** Posts one wr-API SEND of `len` bytes from `e`'s buffer at 0x8000 (returns what wrComplete threw). */
function wrSendOne(e: SrdEnd, ah: AddressHandle, to: SrdEnd, wrId: number, len = 64, flags = SendFlags.SIGNALED): string | undefined {
  return codeOf(() => {
    e.dev.wrStart(e.qp);
    e.qp.wrId = wrId;
    e.qp.wrFlags = flags;
    e.dev.wrSend(e.qp);
    e.dev.wrSetUdAddr(e.qp, ah, to.qp.qpNum, to.qkey);
    e.dev.wrSetSge(e.qp, e.mr.lkey, 0x8000, len);
    e.dev.wrComplete(e.qp);
  });
}

// ================================================================== tests/test_efadv.py

t.test('rdma-core tests/test_efadv.py EfaQueryDeviceTest.test_efadv_query: every generation', async (t) => {
  const fabric = new MemoryFabric();
  for (const name of GENERATION_NAMES) {
    const dev = fabric.addDevice(name, undefined, { generation: name });
    const prof = GENERATIONS[name];
    const attr = await dev.efadvQueryDevice();
    t.equal(attr.compMask, 0, `${name}: comp_mask is an out field, always 0`);
    t.same(
      [attr.maxSqWr, attr.maxRqWr, attr.maxSqSge, attr.maxRqSge, attr.inlineBufSize, attr.inlineBufSizeEx, attr.deviceCaps, attr.maxRdmaSize],
      [prof.maxSqWr, prof.maxRqWr, prof.maxSqSge, prof.maxRqSge, prof.maxInlineData, prof.maxInlineData, prof.deviceCaps, prof.maxRdmaSize],
      `${name}: efadv_device_attr matches the generation's profile`,
    );
    const hasRdma = (attr.deviceCaps & (EfadvDeviceCaps.RDMA_READ | EfadvDeviceCaps.RDMA_WRITE)) !== 0;
    t.equal(attr.maxRdmaSize > 0, hasRdma, `${name}: max_rdma_size set exactly when an RDMA cap is`);
    // tests/efa_base.py is_efa_dev: vendor_id 0x1d0f
    const base = await dev.queryDevice();
    t.equal(base.vendorId, 0x1d0f, `${name}: Amazon vendor id (is_efa_dev)`);
    t.equal(base.vendorPartId, prof.vendorPartId, `${name}: vendor_part_id is the PCI id`);
  }
});

t.test('rdma-core tests/test_efadv.py EfaQPTest.test_efadv_create_driver_qp', async (t) => {
  const dev = new MemoryFabric().addDevice('a');
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 100 });
  const qp = await dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, efadv: { driverQpType: EFADV_QP_DRIVER_TYPE_SRD }, cap: { maxSendWr: 10, maxRecvWr: 10 } });
  const info = await dev.queryQp(qp);
  t.equal(info.qpType, QpType.SRD, 'an SRD QP');
  t.equal(info.qpState, QpState.RESET, 'created in RESET');
  // kernel efa_create_qp: a driver QP whose driver_qp_type is not SRD is EOPNOTSUPP
  await expectAdminError(t, dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, efadv: { driverQpType: 1 }, cap: { maxSendWr: 10, maxRecvWr: 10 } }), ADMIN.CREATE_QP, ST.UNSUPPORTED, 'EOPNOTSUPP');
});

t.test('rdma-core tests/test_efadv.py EfaQPExTest.test_efadv_create_qp_ex: random caps and send ops (seeded)', async (t) => {
  const rng = new Prng(0xefa5eed);
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('efa3', undefined, { generation: 'efa3' });
  const a = await dev.queryDevice();
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 64 });
  const failures: string[] = [];
  for (let round = 0; round < 60; round++) {
    // Even rounds: tests/utils.py random_qp_cap (max_qp_wr / 8, max_sge / 2, inline 0..16);
    // odd rounds: anywhere within the efadv limits.
    const pyverbs = round % 2 === 0;
    const maxRecvSge = pyverbs ? 1 + rng.int(Math.floor(a.maxSge / 2)) : 1 + rng.int(a.maxRqSge);
    const cap = pyverbs
      ? { maxSendWr: 1 + rng.int(a.maxQpWr / 8), maxRecvWr: 1 + rng.int(a.maxQpWr / 8), maxSendSge: 1 + rng.int(Math.floor(a.maxSge / 2)), maxRecvSge, maxInlineData: rng.int(17) }
      : {
          maxSendWr: 1 + rng.int(a.maxSqWr),
          maxRecvWr: 1 + rng.int(Math.floor(a.maxRqWr / maxRecvSge)),
          maxSendSge: 1 + rng.int(a.maxSqSge),
          maxRecvSge,
          maxInlineData: rng.int(a.maxInlineData + 1),
        };
    let ops = 0;
    while (ops === 0) for (const op of ALL_OPS) if (rng.int(2) === 1) ops |= op;
    const sqSigAll = rng.int(2) === 1;
    const err = await rejection(
      dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, sqSigAll, sendOpsFlags: ops, efadv: { driverQpType: EFADV_QP_DRIVER_TYPE_SRD }, cap }).then(async (qp) => {
        const got = (await dev.queryQp(qp)).cap;
        if (got.maxSendWr < cap.maxSendWr || (got.maxSendWr & (got.maxSendWr - 1)) !== 0 || got.maxRecvWr < cap.maxRecvWr || got.maxSendSge !== cap.maxSendSge || got.maxRecvSge !== cap.maxRecvSge || got.maxInlineData !== cap.maxInlineData) {
          failures.push(`round ${round}: asked ${JSON.stringify(cap)}, got ${JSON.stringify(got)}`);
        }
        await dev.destroyQp(qp);
      }),
    );
    if (err !== undefined) failures.push(`round ${round}: ${JSON.stringify(cap)} ops 0x${ops.toString(16)}: ${String(err)}`);
  }
  t.same(failures, [], 'every random QP within the device limits is created on efa3, caps at least as asked');

  // Where pyverbs would skip (EOPNOTSUPP): every non-empty subset on every generation.
  for (const name of GENERATION_NAMES) {
    const d = fabric.addDevice(`g-${name}`, undefined, { generation: name });
    const caps = GENERATIONS[name].deviceCaps;
    const gpd = await d.allocPd();
    const gcq = await d.createCq({ cqe: 8 });
    const wrong: string[] = [];
    for (let mask = 1; mask < 32; mask++) {
      const ops = ALL_OPS.filter((_, k) => (mask & (1 << k)) !== 0).reduce((x, y) => x | y, 0);
      const supported = ALL_OPS.every((op) => (ops & op) === 0 || (caps & OP_CAP[op]) === OP_CAP[op]);
      const err = await rejection(d.createQp(gpd, { qpType: QpType.SRD, sendCq: gcq, recvCq: gcq, sendOpsFlags: ops, efadv: { driverQpType: EFADV_QP_DRIVER_TYPE_SRD }, cap: { maxSendWr: 8, maxRecvWr: 8 } }).then((qp) => d.destroyQp(qp)));
      const code = (err as { code?: string } | undefined)?.code;
      if (supported ? err !== undefined : code !== 'EOPNOTSUPP') wrong.push(`ops 0x${ops.toString(16)}: ${String(err ?? 'created')}`);
    }
    t.same(wrong, [], `${name}: a subset succeeds iff the device has each op, else EOPNOTSUPP`);
  }
});

t.test('rdma-core tests/test_efadv.py EfaCqTest.test_dv_cq_ex_with_sgid', async (t) => {
  const sim = new SimNetwork({ seed: 5 });
  const nc = sim.addDevice('client');
  const ns = sim.addDevice('server');
  t.ok(((await ns.device.efadvQueryDevice()).deviceCaps & EfadvDeviceCaps.CQ_WITH_SGID) !== 0, 'the device has CQ_WITH_SGID (required_dev_cap)');
  const client = await createSrdEnd(nc.device);
  const server = await createSrdEnd(ns.device, { recvCqFlags: EfadvWcFlags.WITH_SGID });
  const ah = await nc.device.createAh(client.pd, { gid: ns.device.gidText });
  const clientGid = nc.device.queryGid(1, 0);
  const once = (wrId: number) => {
    postSrdRecv(server, wrId, 0, 1024);
    t.equal(wrSendOne(client, ah, server, wrId), undefined, `send ${wrId} posted`);
    t.ok(runUntilQueued(sim, [[client.sendCq, 1], [server.recvCq, 1]]), `send ${wrId} completed at both ends`);
    t.equal(client.sendCq.startPoll(), 0, 'client poll_cq_ex');
    t.equal(client.sendCq.status, WcStatus.SUCCESS, 'client success');
    t.equal(client.sendCq.readVendorErr(), EfaStatus.SUCCESS, 'vendor_err 0');
    t.equal(codeOf(() => client.sendCq.readSgid()), 'EOPNOTSUPP', 'a CQ created without WITH_SGID has no read_sgid');
    client.sendCq.endPoll();
    t.equal(server.recvCq.startPoll(), 0, 'server poll_cq_ex');
    t.equal(server.recvCq.readOpcode(), WcOpcode.RECV, 'IBV_WC_RECV');
  };
  once(1);
  t.equal(Buffer.from(server.recvCq.readSgid() ?? []).toString('hex'), Buffer.from(clientGid).toString('hex'), 'no AH for the sender: read_sgid is the sender GID');
  t.equal(server.recvCq.readSlid(), AH_UNKNOWN, 'and slid 0xFFFF');
  server.recvCq.endPoll();
  const back = await ns.device.createAh(server.pd, { gid: nc.device.gidText });
  once(2);
  t.equal(server.recvCq.readSgid(), null, 'with an AH for the sender: ENOENT (null)');
  t.equal(server.recvCq.readSlid(), back.ahNum, 'and slid is that AH');
  server.recvCq.endPoll();
  t.equal(server.recvCq.startPoll(), ENOENT, 'nothing more');
});

// ================================================================== tests/test_efa_srd.py QPSRDTestCase

const TRAFFIC: Array<[string, TrafficOp, boolean, number | undefined]> = [
  ['test_qp_ex_srd_send', 'send', true, QpSendOps.SEND],
  ['test_qp_ex_srd_send_imm', 'sendImm', true, QpSendOps.SEND_WITH_IMM],
  ['test_qp_ex_srd_rdma_write_with_imm', 'writeImm', true, QpSendOps.RDMA_WRITE_WITH_IMM],
  ['test_qp_ex_srd_old_send', 'send', false, undefined],
  ['test_qp_ex_srd_old_send_imm', 'sendImm', false, undefined],
];
for (const [name, op, newSend, ops] of TRAFFIC) {
  t.test(`rdma-core tests/test_efa_srd.py QPSRDTestCase.${name}: 8 QPs, ${ITERS} iterations, data verified`, async (t) => {
    const access = op === 'writeImm' ? AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE : AccessFlags.LOCAL_WRITE;
    const p = await players({ sendOpsFlags: ops, access });
    const r = await traffic(p, { op, newSend });
    t.same(r.problems.slice(0, 5), [], 'every completion SUCCESS with the right fields, every byte placed');
    t.equal(r.recvs, ITERS * 8 * 2, 'one receive completion per message, both ways');
  });
}

t.test('rdma-core tests/test_efa_srd.py QPSRDTestCase.test_qp_ex_srd_zero_size', async (t) => {
  const p = await players({ sendOpsFlags: QpSendOps.SEND });
  const r = await traffic(p, { op: 'send', newSend: true, size: 0, iters: 20 });
  t.same(r.problems.slice(0, 5), [], 'zero-length sends complete SUCCESS, receives report byte_len 0');
  t.equal(r.recvs, 20 * 8 * 2, 'every zero-length message received');
});

for (const [name, op, ops, cap, access, lacking] of [
  ['test_qp_ex_srd_rdma_read', 'read', QpSendOps.RDMA_READ, EfadvDeviceCaps.RDMA_READ, AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_READ, 'efa0'],
  ['test_qp_ex_srd_rdma_write', 'write', QpSendOps.RDMA_WRITE, EfadvDeviceCaps.RDMA_WRITE, AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE, 'efa1'],
] as const) {
  t.test(`rdma-core tests/test_efa_srd.py QPSRDTestCase.${name}`, async (t) => {
    const p = await players({ sendOpsFlags: ops, access });
    t.ok(((await p.client.dev.efadvQueryDevice()).deviceCaps & cap) !== 0, 'efa3 has the capability');
    const r = rdmaTraffic(p, op);
    t.same(r.problems.slice(0, 5), [], 'every RDMA op SUCCESS, data identical');
    t.equal(r.done, ITERS * 8 * 2, 'all completed');
    // Where pyverbs skips: a generation without the capability refuses the QP and the MR.
    const dev = new MemoryFabric().addDevice(lacking, undefined, { generation: lacking });
    const pd = await dev.allocPd();
    const cq = await dev.createCq({ cqe: 8 });
    await expectAdminError(t, dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, sendOpsFlags: ops, cap: { maxSendWr: 8, maxRecvWr: 8 } }), ADMIN.CREATE_QP, ST.UNSUPPORTED, 'EOPNOTSUPP', `${lacking}: QP with the op`);
    await expectAdminError(t, dev.regMr(pd, Buffer.alloc(64), access), ADMIN.REG_MR, ST.UNSUPPORTED, 'EOPNOTSUPP', `${lacking}: MR with the remote access`);
  });
}

t.test('rdma-core tests/test_efa_srd.py QPSRDTestCase.test_qp_ex_srd_rdma_unsolicited_write_with_imm', async (t) => {
  const p = await players({
    qpCount: 8,
    sendOpsFlags: QpSendOps.RDMA_WRITE_WITH_IMM,
    access: AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE,
    server: { qpFlags: EfadvQpFlags.UNSOLICITED_WRITE_RECV, recvWcFlags: EfadvWcFlags.WITH_IS_UNSOLICITED },
  });
  const { client, server, ahC, sim } = p;
  const problems: string[] = [];
  for (let i = 0; i < ITERS; i++) {
    for (let q = 0; q < 8; q++) {
      const data = patternPayload(i * 8 + q, MSG);
      data.copy(client.buf, q * SLOT);
      const qp = client.qps[q];
      client.dev.wrStart(qp);
      qp.wrId = i * 8 + q;
      qp.wrFlags = SendFlags.SIGNALED;
      client.dev.wrRdmaWriteImm(qp, server.mr.rkey, 0x40000 + q * SLOT, 0x1234 + q);
      client.dev.wrSetUdAddr(qp, ahC, server.qps[q].qpNum, SRD_QKEY);
      client.dev.wrSetSge(qp, client.mr.lkey, q * SLOT, MSG);
      client.dev.wrComplete(qp);
      if (!runUntilQueued(sim, [[client.sendCq, 1], [server.recvCq, 1]])) problems.push(`${i}/${q}: no completion`);
      const s = drainCq(client, client.sendCq, true);
      if (s.length !== 1 || s[0].status !== WcStatus.SUCCESS) problems.push(`${i}/${q}: send ${JSON.stringify(s)}`);
      const cq = server.recvCq;
      if (cq.startPoll() !== 0) {
        problems.push(`${i}/${q}: no receive completion`);
        continue;
      }
      if (cq.status !== WcStatus.SUCCESS || cq.readImmData() !== 0x1234 + q || !cq.isUnsolicited() || cq.wrId !== 0 || cq.readQpNum() !== server.qps[q].qpNum) problems.push(`${i}/${q}: recv`);
      cq.endPoll();
      if (!server.buf.subarray(0x40000 + q * SLOT, 0x40000 + q * SLOT + MSG).equals(data)) problems.push(`${i}/${q}: data`);
    }
  }
  t.same(problems.slice(0, 5), [], 'no receive posted: every write-with-imm completes unsolicited with its immediate and its data');
  // Where pyverbs skips (required_dev_cap UNSOLICITED_WRITE_RECV): efa2 refuses the QP flag and the CQ flag.
  const dev = new MemoryFabric().addDevice('efa2', undefined, { generation: 'efa2' });
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 8 });
  await expectAdminError(t, dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, efadv: { flags: EfadvQpFlags.UNSOLICITED_WRITE_RECV }, cap: { maxSendWr: 8, maxRecvWr: 8 } }), ADMIN.CREATE_QP, ST.UNSUPPORTED, 'EOPNOTSUPP', 'efa2: QP flag');
  await expectAdminError(t, dev.createCq({ cqe: 8, efadv: { wcFlags: EfadvWcFlags.WITH_IS_UNSOLICITED } }), ADMIN.CREATE_CQ, ST.UNSUPPORTED, 'EOPNOTSUPP', 'efa2: CQ flag');
});

/** One client/server SRD pair (qp_count 1) in the simulator. */
async function onePair(o: { a?: Parameters<typeof createSrdEnd>[1]; b?: Parameters<typeof createSrdEnd>[1] } = {}) {
  const s = await srdSim({ seed: 9, trace: false, a: o.a, b: o.b });
  return { ...s, a: s.ends[0], b: s.ends[1], ab: s.ahs[0][1] };
}

t.test('rdma-core tests/test_efa_srd.py QPSRDTestCase.test_post_receive_qp_state_bad_flow', async (t) => {
  const { b } = await onePair();
  t.equal(codeOf(() => postSrdRecv(b, 1)), undefined, 'a receive is accepted in RTS');
  await b.dev.modifyQp(b.qp, { qpState: QpState.RESET });
  t.equal(codeOf(() => postSrdRecv(b, 2)), 'EINVAL', 'in RESET: EINVAL');
  await b.dev.modifyQp(b.qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: b.qkey });
  t.equal(codeOf(() => postSrdRecv(b, 3)), undefined, 'in INIT receives are accepted again');
});

t.test('rdma-core tests/test_efa_srd.py QPSRDTestCase.test_post_send_qp_state_bad_flow', async (t) => {
  const { sim, a, b, ab } = await onePair();
  await a.dev.modifyQp(a.qp, { qpState: QpState.RESET });
  const sent = sim.stats.sent;
  t.equal(wrSendOne(a, ab, b, 1), 'EINVAL', 'wr_complete in RESET: EINVAL');
  sim.runFor(100);
  t.equal(sim.stats.sent, sent, 'nothing went on the wire');
  t.equal(pollAll(a.dev, a.sendCq).length, 0, 'no completion');
  t.equal(a.qp.wrSession, null, 'the session is closed');
});

t.test('rdma-core tests/test_efa_srd.py QPSRDTestCase.test_full_rq_bad_flow', async (t) => {
  const { b } = await onePair({ b: { maxRecvWr: 1000 } });
  const cap = (await b.dev.queryQp(b.qp)).cap;
  t.equal(cap.maxRecvWr, 1024, 'max_recv_wr 1000 (1 SGE) is reported rounded up to 1024');
  let firstError: string | undefined;
  let posted = 0;
  for (let i = 0; i <= cap.maxRecvWr && firstError === undefined; i++) {
    firstError = codeOf(() => postSrdRecv(b, i, 0, 64));
    if (firstError === undefined) posted++;
  }
  t.equal(posted, cap.maxRecvWr, 'exactly max_recv_wr receives fit');
  t.equal(firstError, 'ENOMEM', 'the next one: ENOMEM');
});

t.test('rdma-core tests/test_efa_srd.py QPSRDTestCase.test_full_sq_bad_flow', async (t) => {
  const { sim, a, b, ab } = await onePair({ a: { maxSendWr: 1000 }, b: { maxRecvWr: 2048 } });
  const cap = (await a.dev.queryQp(a.qp)).cap;
  t.equal(cap.maxSendWr, 1024, 'max_send_wr 1000 is reported rounded up to 1024');
  for (let i = 0; i < cap.maxSendWr + 1; i++) postSrdRecv(b, i, 0, 128);
  const codes: Array<string | undefined> = [];
  for (let i = 0; i < cap.maxSendWr; i++) codes.push(wrSendOne(a, ab, b, i));
  t.same(codes.filter((c) => c !== undefined), [], 'max_send_wr sends posted (each its own wr_start/complete)');
  t.equal(wrSendOne(a, ab, b, 9999), 'ENOMEM', 'the next, without polling: ENOMEM');
  sim.runFor(1); // completions arrive, but slots are freed by polling only
  t.equal(wrSendOne(a, ab, b, 9998), 'ENOMEM', 'still ENOMEM while the completions are not polled');
  t.ok(runUntilQueued(sim, [[a.sendCq, cap.maxSendWr]]), 'all completed');
  const done = pollAll(a.dev, a.sendCq);
  t.ok(done.length === cap.maxSendWr && done.every((w) => w.status === WcStatus.SUCCESS), 'all SUCCESS');
  t.equal(wrSendOne(a, ab, b, 10000), undefined, 'once polled, a send fits again');
});

t.test('rdma-core tests/test_efa_srd.py QPSRDTestCase.test_rq_with_larger_sgl_bad_flow', async (t) => {
  const { b } = await onePair();
  const max = (await b.dev.queryQp(b.qp)).cap.maxRecvSge;
  const sgl = (n: number) => Array.from({ length: n }, (_, k) => ({ addr: k * 64, length: 64, lkey: b.mr.lkey }));
  t.equal(codeOf(() => b.dev.postRecv(b.qp, { wrId: 1, sgList: sgl(max + 1) })), 'EINVAL', `max_recv_sge (${max}) + 1 SGEs: EINVAL`);
  t.equal(codeOf(() => b.dev.postRecv(b.qp, { wrId: 2, sgList: sgl(max) })), undefined, `${max} SGEs are accepted`);
});

for (const newSend of [false, true]) {
  t.test(`rdma-core tests/test_efa_srd.py CqEventsSRDTestCase.test_cq_events_srd (${newSend ? 'ibv_wr API' : 'legacy post_send'})`, async (t) => {
    const p = await players({ qpCount: 1, sendOpsFlags: QpSendOps.SEND, channel: true });
    const r = await traffic(p, { op: 'send', newSend, events: true });
    t.same(r.problems.slice(0, 5), [], 'each armed CQ raised its event; traffic intact');
    t.equal(r.events, ITERS * 2 * 2, 'one event per armed CQ per iteration and direction');
    t.equal(r.recvs, ITERS * 2, 'all messages received');
    t.equal(p.client.channel?.unacked, 0, 'every client event acknowledged');
    t.equal(p.server.channel?.unacked, 0, 'every server event acknowledged');
  });
}

// ================================================================== provider semantics (rc providers/efa/verbs.c, kernel efa_verbs.c)

t.test('rc providers/efa/verbs.c efa_post_send_validate_wr: unsignaled sends and send flags', async (t) => {
  const s = await srdSim({ seed: 2, trace: false });
  const [a, b] = s.ends; // sq_sig_all true (createSrdEnd's default)
  const pd = a.pd;
  const qp0 = await a.dev.createQp(pd, { qpType: QpType.SRD, sendCq: a.sendCq, recvCq: a.recvCq, sqSigAll: false, cap: { maxSendWr: 16, maxRecvWr: 16, maxInlineData: 32 } });
  await a.dev.modifyQp(qp0, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: a.qkey });
  await a.dev.modifyQp(qp0, { qpState: QpState.RTR });
  await a.dev.modifyQp(qp0, { qpState: QpState.RTS, sqPsn: 0 });
  const e0: SrdEnd = { ...a, qp: qp0 };
  const ah = s.ahs[0][1];
  const legacy = (e: SrdEnd, flags: number, opcode: number = WrOpcode.SEND) =>
    codeOf(() => e.dev.postSend(e.qp, { wrId: 1, opcode, sendFlags: flags, sgList: [{ addr: 0, length: 8, lkey: e.mr.lkey }], ah, remoteQpn: b.qp.qpNum, remoteQkey: b.qkey }));
  t.equal(legacy(e0, 0), 'EINVAL', 'sq_sig_all 0, no SIGNALED (post_send): EINVAL');
  t.equal(wrSendOne(e0, ah, b, 1, 8, 0), 'EINVAL', 'sq_sig_all 0, no SIGNALED (wr API): EINVAL');
  t.equal(legacy(e0, SendFlags.SIGNALED), undefined, 'with SIGNALED: accepted');
  t.equal(wrSendOne(e0, ah, b, 2, 8, SendFlags.SIGNALED), undefined, 'with SIGNALED (wr API): accepted');
  t.equal(legacy(a, 0), undefined, 'sq_sig_all 1: no flags is fine');
  for (const [name, f] of [['FENCE', SendFlags.FENCE], ['SOLICITED', SendFlags.SOLICITED]] as const) {
    t.equal(legacy(a, SendFlags.SIGNALED | f), 'EINVAL', `flag ${name}: EINVAL (post_send)`);
    t.equal(wrSendOne(a, ah, b, 3, 8, SendFlags.SIGNALED | f), 'EINVAL', `flag ${name}: EINVAL (wr API)`);
  }
  for (const [name, op] of [['RDMA_WRITE', WrOpcode.RDMA_WRITE], ['RDMA_WRITE_WITH_IMM', WrOpcode.RDMA_WRITE_WITH_IMM], ['RDMA_READ', WrOpcode.RDMA_READ]] as const) {
    t.equal(legacy(a, SendFlags.SIGNALED, op), 'EINVAL', `classic post_send with ${name}: EINVAL`);
  }
});

t.test('rc providers/efa/verbs.c ibv_wr_* API: SGE lists, inline data, abort', async (t) => {
  const access = AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE | AccessFlags.REMOTE_READ;
  const { sim, a, b, ab } = await onePair({ a: { access }, b: { access } });
  postSrdRecv(b, 1, 0, 1024);
  const sent = sim.stats.sent;
  const batch = (fill: () => void) =>
    codeOf(() => {
      a.dev.wrStart(a.qp);
      a.qp.wrId = 1;
      a.qp.wrFlags = SendFlags.SIGNALED;
      a.dev.wrSend(a.qp); // a valid first request of the batch
      a.dev.wrSetUdAddr(a.qp, ab, b.qp.qpNum, b.qkey);
      a.dev.wrSetSge(a.qp, a.mr.lkey, 0, 16);
      a.qp.wrId = 2;
      fill();
      a.dev.wrComplete(a.qp);
    });
  const two = [{ addr: 0, length: 8, lkey: a.mr.lkey }, { addr: 64, length: 8, lkey: a.mr.lkey }];
  t.equal(batch(() => { a.dev.wrRdmaWrite(a.qp, b.mr.rkey, 0); a.dev.wrSetUdAddr(a.qp, ab, b.qp.qpNum, b.qkey); a.dev.wrSetSgeList(a.qp, two); }), 'EINVAL', '2 SGEs on an RDMA write: wr_complete EINVAL');
  t.equal(batch(() => { a.dev.wrRdmaWrite(a.qp, b.mr.rkey, 0); a.dev.wrSetUdAddr(a.qp, ab, b.qp.qpNum, b.qkey); a.dev.wrSetInlineData(a.qp, Buffer.alloc(8)); }), 'EINVAL', 'inline data on an RDMA write: EINVAL');
  t.equal(batch(() => { a.dev.wrRdmaRead(a.qp, b.mr.rkey, 0); a.dev.wrSetUdAddr(a.qp, ab, b.qp.qpNum, b.qkey); a.dev.wrSetInlineData(a.qp, Buffer.alloc(8)); }), 'EINVAL', 'inline data on an RDMA read: EINVAL');
  const maxInline = (await a.dev.queryQp(a.qp)).cap.maxInlineData;
  t.equal(batch(() => { a.dev.wrSend(a.qp); a.dev.wrSetUdAddr(a.qp, ab, b.qp.qpNum, b.qkey); a.dev.wrSetInlineData(a.qp, Buffer.alloc(maxInline + 1)); }), 'EINVAL', `inline over max_inline_data (${maxInline}): EINVAL`);
  t.equal(codeOf(() => a.dev.postSend(a.qp, { wrId: 3, sendFlags: SendFlags.INLINE, sgList: [{ addr: 0, length: maxInline + 1, lkey: a.mr.lkey }], ah: ab, remoteQpn: b.qp.qpNum, remoteQkey: b.qkey })), 'EINVAL', 'post_send INLINE over max_inline_data: EINVAL');
  a.dev.wrStart(a.qp);
  a.qp.wrId = 4;
  a.dev.wrSend(a.qp);
  a.dev.wrSetUdAddr(a.qp, ab, b.qp.qpNum, b.qkey);
  a.dev.wrSetSge(a.qp, a.mr.lkey, 0, 16);
  a.dev.wrAbort(a.qp);
  sim.runFor(200);
  t.equal(sim.stats.sent, sent, 'failed sessions and wr_abort put nothing on the wire (the valid first request was rolled back too)');
  t.equal(pollAll(a.dev, a.sendCq).length + pollAll(b.dev, b.recvCq).length, 0, 'and completed nothing');
  // After all that, an inline send of exactly max_inline_data goes through, its bytes copied at post time.
  const data = patternPayload(77, maxInline);
  a.dev.wrStart(a.qp);
  a.qp.wrId = 5;
  a.qp.wrFlags = SendFlags.SIGNALED | SendFlags.INLINE;
  a.dev.wrSend(a.qp);
  a.dev.wrSetUdAddr(a.qp, ab, b.qp.qpNum, b.qkey);
  a.dev.wrSetInlineData(a.qp, data);
  a.dev.wrComplete(a.qp);
  data.fill(0);
  t.ok(runUntilQueued(sim, [[a.sendCq, 1], [b.recvCq, 1]]), 'the inline send completed');
  const r = pollAll(b.dev, b.recvCq);
  t.equal(r[0]?.wrId, 1, 'into the receive posted first');
  t.equal(r[0]?.byteLen, maxInline, 'with max_inline_data bytes');
  t.ok(b.buf.subarray(0, maxInline).equals(patternPayload(77, maxInline)), 'the bytes as they were at post time');
  // A QP created without an op in send_ops_flags cannot post it.
  const qp = await a.dev.createQp(a.pd, { qpType: QpType.SRD, sendCq: a.sendCq, recvCq: a.recvCq, sendOpsFlags: QpSendOps.SEND, cap: { maxSendWr: 8, maxRecvWr: 8 } });
  await a.dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: a.qkey });
  await a.dev.modifyQp(qp, { qpState: QpState.RTR });
  await a.dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
  const other: SrdEnd = { ...a, qp };
  t.equal(codeOf(() => { other.dev.wrStart(qp); other.dev.wrRdmaWrite(qp, b.mr.rkey, 0); other.dev.wrSetUdAddr(qp, ab, b.qp.qpNum, b.qkey); other.dev.wrSetSge(qp, a.mr.lkey, 0, 8); other.dev.wrComplete(qp); }), 'EOPNOTSUPP', 'RDMA write on a SEND-only QP: refused');
});

t.test('rc providers/efa/verbs.c efa_setup_qp / create_cq: queue depths rounded as the provider does', async (t) => {
  const dev = new MemoryFabric().addDevice('a');
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 16 });
  const qp = await dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 100, maxRecvWr: 100, maxRecvSge: 3 } });
  const cap = (await dev.queryQp(qp)).cap;
  t.equal(cap.maxSendWr, 128, 'max_send_wr 100 -> 128');
  t.equal(cap.maxRecvWr, 170, 'max_recv_wr 100 x 3 SGEs -> 512 descriptors / 3 = 170');
  t.equal(cap.maxRecvSge, 3, 'max_recv_sge unchanged');
  await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: 1 });
  const mr = await dev.regMr(pd, Buffer.alloc(4096));
  const sgl = [0, 1, 2].map((k) => ({ addr: k * 8, length: 8, lkey: mr.lkey }));
  let posted = 0;
  while (posted < 1000 && codeOf(() => dev.postRecv(qp, { wrId: posted, sgList: sgl })) === undefined) posted++;
  t.equal(posted, 170, 'and 170 three-SGE receives fit');
  const attr = await dev.queryDevice();
  const depths: number[] = [];
  for (const cqe of [1, 3, 100, 1024, 1025]) depths.push((await dev.createCq({ cqe })).cqe);
  t.same(depths, [1, 4, 128, 1024, 2048], 'cqe rounded up to a power of two');
  await expectAdminError(t, dev.createCq({ cqe: 0 }), ADMIN.CREATE_CQ, ST.ILLEGAL, 'EINVAL', 'cqe 0');
  await expectAdminError(t, dev.createCq({ cqe: attr.maxCqe + 1 }), ADMIN.CREATE_CQ, ST.ILLEGAL, 'EINVAL', 'cqe beyond max_cqe');
});

t.test('kernel efa_query_port / efa_query_gid / efa_query_pkey', async (t) => {
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('a');
  const port = await dev.queryPort(1);
  const attr = await dev.queryDevice();
  t.same(
    [port.state, port.gidTblLen, port.pkeyTblLen, port.lmc, port.maxVlNum, port.activeWidth, port.activeSpeed, port.physState, port.linkLayer],
    [4, 1, 1, 1, 1, 2, 32, 5, 0],
    'ACTIVE, one GID, one P_Key, lmc 1, one VL, 4X EDR, LinkUp, link layer unspecified',
  );
  t.equal(port.maxMsgSz, attr.mtu, 'max_msg_sz is the device MTU');
  await expectAdminError(t, dev.queryPort(2), ADMIN.GET_FEATURE, ST.ILLEGAL, 'EINVAL', 'port 2');
  t.same(Buffer.from(dev.queryGid(1, 0)).toString('hex'), Buffer.from(dev.gid).toString('hex'), 'GID index 0 is the device address');
  t.equal(codeOf(() => dev.queryGid(1, 1)), 'EINVAL', 'GID index 1: EINVAL');
  t.equal(dev.queryPkey(1, 0), 0xffff, 'P_Key 0xffff');
  t.equal(codeOf(() => dev.queryPkey(1, 1)), 'EINVAL', 'P_Key index 1: EINVAL');
});

t.test('kernel efa_modify_qp: UD and SRD state tables, rnr_retry, port', async (t) => {
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('a');
  const ud = await createUdEnd(dev, { state: 'RESET' });
  await dev.modifyQp(ud.qp, { qpState: QpState.ERR });
  t.equal((await dev.queryQp(ud.qp)).qpState, QpState.ERR, 'UD RESET -> ERR is valid');
  const srd = await createSrdEnd(dev, { state: 'RESET' });
  await expectAdminError(t, dev.modifyQp(srd.qp, { qpState: QpState.ERR }), ADMIN.MODIFY_QP, ST.ILLEGAL, 'EINVAL', 'SRD RESET -> ERR');
  t.equal((await dev.queryQp(srd.qp)).qpState, QpState.RESET, 'the SRD QP stayed in RESET');
  await expectAdminError(t, dev.modifyQp(srd.qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 2, qkey: 5 }), ADMIN.MODIFY_QP, ST.UNSUPPORTED, 'EOPNOTSUPP', 'port 2');
  await dev.modifyQp(srd.qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: 5 });
  await expectAdminError(t, dev.modifyQp(srd.qp, { qpState: QpState.RTR, rnrRetry: 3 }), ADMIN.MODIFY_QP, ST.ILLEGAL, 'EINVAL', 'rnr_retry on INIT -> RTR');
  await dev.modifyQp(srd.qp, { qpState: QpState.RTR });
  await dev.modifyQp(srd.qp, { qpState: QpState.RTS, sqPsn: 0, rnrRetry: 2 });
  const info = await dev.queryQp(srd.qp);
  t.equal(info.rnrRetry, 2, 'SRD RTR -> RTS takes rnr_retry');
  t.equal(info.qpState, QpState.RTS, 'and reaches RTS');
  const ud2 = await createUdEnd(dev, { state: 'RTR' });
  await expectAdminError(t, dev.modifyQp(ud2.qp, { qpState: QpState.RTS, sqPsn: 0, rnrRetry: 2 }), ADMIN.MODIFY_QP, ST.ILLEGAL, 'EINVAL', 'UD RTR -> RTS with rnr_retry');
});

t.test('rc providers/efa/verbs.c to_ibv_status: EFA statuses as ibv_wc_status on real completions', async (t) => {
  const access = AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE;
  const { sim, a, b, ab, ends } = await onePair({ a: { rnrRetry: 0, access }, b: { access } });
  const seen: Array<[string, number, number, number, number]> = [];
  const sendOnce = (what: string, wantEfa: number, wantWc: number, post: () => void) => {
    post();
    runUntilQueued(sim, [[a.sendCq, 1]], 20_000);
    const w = pollAll(a.dev, a.sendCq);
    seen.push([what, w[0]?.vendorErr ?? -1, w[0]?.status ?? -1, wantEfa, wantWc]);
  };
  const sge = (length = 64, lkey = a.mr.lkey) => [{ addr: 0, length, lkey }];
  const send = (remoteQpn: number, sgList = sge(), ah = ab) => () => a.dev.postSend(a.qp, { wrId: 1, sgList, ah, remoteQpn, remoteQkey: b.qkey });
  sendOnce('no receive, rnr_retry 0', EfaStatus.REMOTE_ERROR_RNR, WcStatus.RNR_RETRY_EXC_ERR, send(b.qp.qpNum));
  sendOnce('unknown rkey', EfaStatus.REMOTE_ERROR_BAD_ADDRESS, WcStatus.REM_ACCESS_ERR, () => {
    a.dev.wrStart(a.qp);
    a.qp.wrId = 2;
    a.dev.wrRdmaWrite(a.qp, 0xdead00, 0);
    a.dev.wrSetUdAddr(a.qp, ab, b.qp.qpNum, b.qkey);
    a.dev.wrSetSge(a.qp, a.mr.lkey, 0, 64);
    a.dev.wrComplete(a.qp);
  });
  sendOnce('no such QP', EfaStatus.REMOTE_ERROR_BAD_DEST_QPN, WcStatus.REM_INV_RD_REQ_ERR, send(b.qp.qpNum + 100));
  sendOnce('bad lkey', EfaStatus.LOCAL_ERROR_INVALID_LKEY, WcStatus.LOC_PROT_ERR, send(b.qp.qpNum, sge(64, 0x7777700)));
  const otherPd = await a.dev.allocPd();
  const foreignAh = await a.dev.createAh(otherPd, { gid: ends[1].dev.gidText });
  sendOnce("an AH of another PD", EfaStatus.LOCAL_ERROR_INVALID_AH, WcStatus.LOC_QP_OP_ERR, send(b.qp.qpNum, sge(), foreignAh));
  sendOnce('longer than a message', EfaStatus.LOCAL_ERROR_BAD_LENGTH, WcStatus.LOC_LEN_ERR, send(b.qp.qpNum, sge((await a.dev.queryDevice()).maxMsgSize + 1)));
  postSrdRecv(b, 5, 0, 16);
  sendOnce('receive buffer too short', EfaStatus.REMOTE_ERROR_BAD_LENGTH, WcStatus.REM_INV_REQ_ERR, send(b.qp.qpNum));
  for (const [what, efa, wc, wantEfa, wantWc] of seen) t.same([efa, wc], [wantEfa, wantWc], `${what}: EFA status ${wantEfa} -> ibv_wc_status ${wantWc}`);
  const short = pollAll(b.dev, b.recvCq);
  t.same(short.map((w) => [w.wrId, w.vendorErr, w.status]), [[5, EfaStatus.LOCAL_ERROR_BAD_LENGTH, WcStatus.LOC_LEN_ERR]], 'the receiver: LOCAL_ERROR_BAD_LENGTH -> LOC_LEN_ERR');
  postSrdRecv(b, 6);
  postSrdRecv(b, 7);
  await b.dev.modifyQp(b.qp, { qpState: QpState.ERR });
  const flushed = pollAll(b.dev, b.recvCq);
  t.same(flushed.map((w) => [w.wrId, w.vendorErr, w.status]), [[6, EfaStatus.FLUSHED, WcStatus.WR_FLUSH_ERR], [7, EfaStatus.FLUSHED, WcStatus.WR_FLUSH_ERR]], 'QP to ERR: receives FLUSHED -> WR_FLUSH_ERR');
});

// ================================================================== RESET and the reported limits

t.test('rc providers/efa/verbs.c efa_modify_qp -> RESET re-inits the SQ (efa_qp_init_indices): outstanding sends are dropped', async (t) => {
  const { sim, a, b, ab } = await onePair({ a: { maxSendWr: 8 } });
  const cap = (await a.dev.queryQp(a.qp)).cap.maxSendWr;
  for (let i = 0; i < cap; i++) t.equal(wrSendOne(a, ab, b, i), undefined, `send ${i} posted`); // b has no receive: RNR, retried
  sim.runFor(5);
  await a.dev.modifyQp(a.qp, { qpState: QpState.RESET });
  await a.dev.modifyQp(a.qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: a.qkey });
  await a.dev.modifyQp(a.qp, { qpState: QpState.RTR });
  await a.dev.modifyQp(a.qp, { qpState: QpState.RTS, sqPsn: 0 });
  t.equal(wrSendOne(a, ab, b, 100), undefined, 'after RESET -> RTS the whole send queue is free again');
  for (let i = 0; i < 16; i++) postSrdRecv(b, i, 0, 1024);
  sim.runFor(2000);
  const old = pollAll(a.dev, a.sendCq).filter((w) => w.wrId < cap);
  t.equal(old.length, 0, 'no completion for a work request posted before the reset');
});

t.test('kernel efa_query_device: max_qp_wr and max_sge are the smaller of the SQ and RQ limits', async (t) => {
  const dev = new MemoryFabric().addDevice('efa1', undefined, { generation: 'efa1' });
  const a = await dev.queryDevice();
  const dv = await dev.efadvQueryDevice();
  // kernel: max_qp_wr = min(max_sq_depth, max_rq_depth), max_sge = min(max_sq_sge, max_rq_sge);
  // the public 0xefa1 capture (openucx/ucx contrib/ibmock) reads max_qp_wr 4096, max_sge 2.
  t.equal(a.maxQpWr, Math.min(dv.maxSqWr, dv.maxRqWr), 'max_qp_wr');
  t.equal(a.maxSge, Math.min(dv.maxSqSge, dv.maxRqSge), 'max_sge');
});
