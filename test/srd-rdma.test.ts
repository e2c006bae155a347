// RDMA read, write and write with immediate over SRD, in the simulation: data placed byte for
// byte at every size around the MTU and far beyond it, under loss, duplication and reordering;
// the target's checks (rkey, bounds, access, PD) as EFA statuses; write with immediate
// consuming a receive, waiting (RNR) for one, or completing unsolicited; reads that lose their
// target fail in bounded time; the seed's generation refuses RDMA.
import t from 'tap';
import { EfaStatus } from '../src/common/efa-status';
import { WcStatus } from '../src/common/wc-status';
import { AccessFlags, EfadvQpFlags, EfadvWcFlags, WcFlags, WcOpcode } from '../src/device/constants';
import type { Device } from '../src/device/device';
import { EfadvDeviceCaps } from '../src/device/generations';
import type { AddressHandle } from '../src/device/address-handle';
import { createSrdEnd, patternPayload, pollAll, postRecvs, postSrdRecv, postSrdSend, srdSim, type SrdEnd, type SrdSim } from './helpers/sim-network';

const RW = AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE | AccessFlags.REMOTE_READ;
const MTU = 8192;

/** Posts one RDMA work request through the wr* API. */
function post(
  end: SrdEnd,
  ah: AddressHandle,
  target: SrdEnd,
  op: 'write' | 'writeImm' | 'read',
  wrId: number,
  localAddr: number,
  length: number,
  remoteAddr: number,
  rkey = target.mr.rkey,
  imm = 0,
  lkey = end.mr.lkey,
): void {
  const dev = end.dev;
  const qp = end.qp;
  dev.wrStart(qp);
  qp.wrId = wrId;
  qp.wrFlags = 0;
  if (op === 'write') dev.wrRdmaWrite(qp, rkey, remoteAddr);
  else if (op === 'writeImm') dev.wrRdmaWriteImm(qp, rkey, remoteAddr, imm);
  else dev.wrRdmaRead(qp, rkey, remoteAddr);
  dev.wrSetUdAddr(qp, ah, target.qp.qpNum, target.qkey);
  dev.wrSetSge(qp, lkey, localAddr, length);
  dev.wrComplete(qp);
}

async function pair(extra: { faults?: string; seed?: number; bufSize?: number; b?: Record<string, unknown>; generation?: string } = {}): Promise<SrdSim> {
  const size = extra.bufSize ?? 4 * 1024 * 1024;
  return srdSim({
    seed: extra.seed ?? 1,
    trace: false,
    faults: extra.faults,
    generation: extra.generation,
    a: { bufSize: size, access: RW },
    b: { bufSize: size, access: RW, ...(extra.b ?? {}) },
  });
}

function runUntilSends(s: SrdSim, dev: Device, end: SrdEnd, n: number, maxMs = 60_000) {
  const got: ReturnType<typeof pollAll> = [];
  const ok = s.sim.runUntil(() => {
    got.push(...pollAll(dev, end.sendCq));
    return got.length >= n;
  }, s.sim.now + maxMs);
  return { ok, got };
}

const SIZES = [0, 1, 100, MTU - 1, MTU, MTU + 1, 3 * MTU + 17, 65536, 1 << 20];

for (const faults of [undefined, 'loss=5%,dup=5%,reorder=20%,delay=20us,jitter=10us']) {
  const label = faults === undefined ? 'clean' : faults;
  t.test(`RDMA write, every size (${label}): placed byte for byte, one completion each`, async (t) => {
    const s = await pair({ faults, seed: 7 });
    const [a, b] = s.ends;
    let off = 0;
    const plan: Array<{ len: number; src: number; dst: number }> = [];
    for (const len of SIZES) {
      plan.push({ len, src: off, dst: off + 13 });
      a.buf.set(patternPayload(len + 1, len), off);
      off += len + 64;
    }
    plan.forEach((p, i) => post(a, s.ahs[0][1], b, 'write', i, p.src, p.len, p.dst));
    const { ok, got } = runUntilSends(s, a.dev, a, plan.length);
    t.ok(ok, 'every write completed');
    t.same(got.map((w) => w.vendorErr), plan.map(() => EfaStatus.SUCCESS), 'all SUCCESS');
    t.same(got.map((w) => w.opcode), plan.map(() => WcOpcode.RDMA_WRITE), 'as IBV_WC_RDMA_WRITE');
    t.same([...got.map((w) => w.wrId)].sort((x, y) => x - y), plan.map((_, i) => i), 'each once');
    for (const p of plan) t.ok(b.buf.subarray(p.dst, p.dst + p.len).equals(a.buf.subarray(p.src, p.src + p.len)), `${p.len} B placed intact`);
    t.equal(pollAll(b.dev, b.recvCq).length, 0, 'a plain write completes nothing at the target');
    t.equal(a.dev.stats.rdma_write_wrs, plan.length, 'rdma_write_wrs');
    t.equal(a.dev.stats.rdma_write_bytes, SIZES.reduce((x, y) => x + y, 0), 'rdma_write_bytes');
    t.equal(b.dev.stats.rdma_write_recv_bytes >= SIZES.reduce((x, y) => x + y, 0), true, 'rdma_write_recv_bytes at the target');
    if (faults !== undefined) t.ok(a.dev.stats.retrans_pkts > 0, `losses were repaired (${a.dev.stats.retrans_pkts} resent)`);
  });

  t.test(`RDMA read, every size (${label}): the data arrives byte for byte`, async (t) => {
    const s = await pair({ faults, seed: 11 });
    const [a, b] = s.ends;
    let off = 0;
    const plan: Array<{ len: number; src: number; dst: number }> = [];
    for (const len of SIZES) {
      plan.push({ len, src: off + 5, dst: off });
      b.buf.set(patternPayload(len + 7, len), off + 5);
      off += len + 64;
    }
    plan.forEach((p, i) => post(a, s.ahs[0][1], b, 'read', i, p.dst, p.len, p.src));
    const { ok, got } = runUntilSends(s, a.dev, a, plan.length);
    t.ok(ok, 'every read completed');
    t.same(got.map((w) => w.vendorErr), plan.map(() => EfaStatus.SUCCESS), 'all SUCCESS');
    t.same(got.map((w) => w.opcode), plan.map(() => WcOpcode.SEND), "reported as IBV_WC_SEND, as EFA's provider does");
    for (const p of plan) t.ok(a.buf.subarray(p.dst, p.dst + p.len).equals(b.buf.subarray(p.src, p.src + p.len)), `${p.len} B read intact`);
    t.equal(a.dev.stats.rdma_read_wrs, plan.length, 'rdma_read_wrs');
    t.equal(a.dev.stats.rdma_read_bytes, SIZES.reduce((x, y) => x + y, 0), 'rdma_read_bytes');
    t.ok(b.dev.stats.rdma_read_resp_bytes >= SIZES.reduce((x, y) => x + y, 0), 'rdma_read_resp_bytes at the target');
    t.equal(a.dev.rdma.pendingReads, 0, 'no read left waiting');
  });

  t.test(`RDMA write with immediate (${label}): one receive completion after all the data`, async (t) => {
    const s = await pair({ faults, seed: 13 });
    const [a, b] = s.ends;
    const lens = [0, 10, MTU, 5 * MTU + 3, 200_000];
    postRecvs(b, lens.length, 16);
    let off = 0;
    const dsts: number[] = [];
    lens.forEach((len, i) => {
      a.buf.set(patternPayload(i + 100, len), off);
      dsts.push(off + 1);
      post(a, s.ahs[0][1], b, 'writeImm', i, off, len, off + 1, b.mr.rkey, 0xabc00 + i);
      off += len + 32;
    });
    const { ok, got } = runUntilSends(s, a.dev, a, lens.length);
    t.ok(ok, 'every write completed');
    t.ok(got.every((w) => w.vendorErr === EfaStatus.SUCCESS), 'all SUCCESS');
    s.sim.drain(s.sim.now + 100);
    const recvs = pollAll(b.dev, b.recvCq);
    t.equal(recvs.length, lens.length, 'one receive completion per write');
    for (const r of recvs) {
      const i = r.immData - 0xabc00;
      t.equal(r.opcode, WcOpcode.RECV_RDMA_WITH_IMM, 'IBV_WC_RECV_RDMA_WITH_IMM');
      t.ok((r.wcFlags & WcFlags.WITH_IMM) !== 0, 'WITH_IMM');
      t.equal(r.byteLen, lens[i], 'byte_len is the written length');
      t.equal(r.unsolicited, false, 'solicited: it consumed a receive');
      t.equal(r.srcQp, a.qp.qpNum, 'src_qp');
    }
    t.same(new Set(recvs.map((r) => r.wrId)).size, lens.length, 'each consumed a distinct receive');
    lens.forEach((len, i) => {
      let src = 0;
      for (let k = 0; k < i; k++) src += lens[k] + 32;
      t.ok(b.buf.subarray(dsts[i], dsts[i] + len).equals(patternPayload(i + 100, len)), `${len} B placed`);
    });
  });
}

t.test('write with immediate and no receive posted: RNR until one is, then it completes once', async (t) => {
  const s = await pair();
  const [a, b] = s.ends;
  a.buf.set(patternPayload(9, 3 * MTU), 0);
  post(a, s.ahs[0][1], b, 'writeImm', 1, 0, 3 * MTU, 0, b.mr.rkey, 77);
  s.sim.runFor(30);
  t.equal(pollAll(a.dev, a.sendCq).length, 0, 'no completion while the target has no receive');
  t.ok(b.dev.stats.rnr_sent > 0, 'the target answered RNR');
  postRecvs(b, 1, 16);
  const { ok, got } = runUntilSends(s, a.dev, a, 1);
  t.ok(ok && got[0].vendorErr === EfaStatus.SUCCESS, 'then the write completes SUCCESS');
  s.sim.drain(s.sim.now + 50);
  const r = pollAll(b.dev, b.recvCq);
  t.equal(r.length, 1, 'exactly one receive completion');
  t.equal(r[0].immData, 77, 'with the immediate');
  t.ok(b.buf.subarray(0, 3 * MTU).equals(patternPayload(9, 3 * MTU)), 'and the data');
});

t.test('unsolicited write receive: completes at a QP with no receives posted, flagged unsolicited', async (t) => {
  const s = await pair({ b: { qpFlags: EfadvQpFlags.UNSOLICITED_WRITE_RECV, recvCqFlags: EfadvWcFlags.WITH_IS_UNSOLICITED } });
  const [a, b] = s.ends;
  a.buf.set(patternPayload(5, 20_000), 0);
  post(a, s.ahs[0][1], b, 'writeImm', 3, 0, 20_000, 100, b.mr.rkey, 0x1234);
  const { ok, got } = runUntilSends(s, a.dev, a, 1);
  t.ok(ok && got[0].vendorErr === EfaStatus.SUCCESS, 'SUCCESS without any receive posted');
  s.sim.drain(s.sim.now + 50);
  const cq = b.recvCq;
  t.equal(cq.startPoll(), 0, 'the extended CQ has the completion');
  t.equal(cq.readOpcode(), WcOpcode.RECV_RDMA_WITH_IMM, 'RECV_RDMA_WITH_IMM');
  t.equal(cq.isUnsolicited(), true, 'efadv_wc_is_unsolicited');
  t.equal(cq.wrId, 0, 'wr_id 0: no receive consumed');
  t.equal(cq.readImmData(), 0x1234, 'the immediate');
  t.equal(cq.readByteLen(), 20_000, 'the length');
  cq.endPoll();
  t.ok(b.buf.subarray(100, 20_100).equals(patternPayload(5, 20_000)), 'the data placed');
  t.equal(b.dev.stats.rnr_sent, 0, 'no RNR');
});

t.test("the target's checks: unknown rkey, out of bounds, missing access, another PD", async (t) => {
  const s = await pair({ bufSize: 65536 });
  const [a, b] = s.ends;
  const dev = b.dev;
  const roBuf = Buffer.alloc(4096);
  const ro = await dev.regMr(b.pd, roBuf, AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_READ);
  const otherPd = await dev.allocPd();
  const foreign = await dev.regMr(otherPd, Buffer.alloc(4096), RW);
  const cases: Array<{ what: string; op: 'write' | 'read'; rkey: number; addr: number; len: number }> = [
    { what: 'unknown rkey (write)', op: 'write', rkey: 0xdead00, addr: 0, len: 100 },
    { what: 'unknown rkey (read)', op: 'read', rkey: 0xdead00, addr: 0, len: 100 },
    { what: 'past the end (write)', op: 'write', rkey: b.mr.rkey, addr: 65536 - 50, len: 100 },
    { what: 'past the end (read, multi-packet)', op: 'read', rkey: b.mr.rkey, addr: 60000, len: 3 * MTU },
    { what: 'write to a read-only MR', op: 'write', rkey: ro.rkey, addr: 0, len: 10 },
    { what: 'MR of another PD (read)', op: 'read', rkey: foreign.rkey, addr: 0, len: 10 },
  ];
  cases.forEach((c, i) => post(a, s.ahs[0][1], b, c.op, i, 0, c.len, c.addr, c.rkey));
  const { ok, got } = runUntilSends(s, a.dev, a, cases.length);
  t.ok(ok, 'every request completed');
  for (const w of got) {
    t.equal(w.vendorErr, EfaStatus.REMOTE_ERROR_BAD_ADDRESS, `${cases[w.wrId].what}: REMOTE_ERROR_BAD_ADDRESS`);
    t.equal(w.status, WcStatus.REM_ACCESS_ERR, `${cases[w.wrId].what}: IBV_WC_REM_ACCESS_ERR`);
  }
  t.equal(roBuf.readUInt32BE(0), 0, 'the read-only MR was not written');
  t.ok(b.dev.stats.rdma_remote_access_errors >= cases.length, 'counted at the target');
  t.equal(a.dev.stats.rdma_write_wr_err + a.dev.stats.rdma_read_wr_err, cases.length, 'rdma_*_wr_err at the initiator');
  // A later valid write still works: the errors were per request.
  a.buf.write('still fine', 0);
  post(a, s.ahs[0][1], b, 'write', 99, 0, 10, 0);
  const after = runUntilSends(s, a.dev, a, 1);
  t.equal(after.got[0]?.vendorErr, EfaStatus.SUCCESS, 'a valid write afterwards: SUCCESS');
  t.equal(b.buf.toString('utf8', 0, 10), 'still fine');
});

t.test('local errors: an lkey of another PD, a read into memory without LOCAL_WRITE, beyond maxRdmaSize', async (t) => {
  const s = await pair({ bufSize: 65536 });
  const [a, b] = s.ends;
  const noWrite = await a.dev.regMr(a.pd, Buffer.alloc(4096), 0);
  post(a, s.ahs[0][1], b, 'read', 1, 0, 100, 0, b.mr.rkey, 0, noWrite.lkey);
  post(a, s.ahs[0][1], b, 'write', 2, 0, 100, 0, b.mr.rkey, 0, 0x777700);
  const { got } = runUntilSends(s, a.dev, a, 2);
  t.same(
    got.map((w) => [w.wrId, w.vendorErr, w.status]),
    [
      [1, EfaStatus.LOCAL_ERROR_INVALID_LKEY, WcStatus.LOC_PROT_ERR],
      [2, EfaStatus.LOCAL_ERROR_INVALID_LKEY, WcStatus.LOC_PROT_ERR],
    ],
    'LOCAL_ERROR_INVALID_LKEY',
  );
  t.equal(a.dev.attributes.maxRdmaSize, 1 << 30, 'maxRdmaSize 1 GiB');
});

t.test('a read whose target dies after accepting it fails in bounded time', async (t) => {
  const s = await pair({ bufSize: 4 << 20 });
  const [a, b] = s.ends;
  post(a, s.ahs[0][1], b, 'read', 1, 0, 2 << 20, 0);
  // Let the request be accepted and some data flow, then cut the target off for good.
  s.sim.runUntil(() => b.dev.stats.rdma_read_resp_bytes > 100_000, s.sim.now + 1000);
  s.sim.partitionDevice(s.nodes[1].index, s.sim.now, Infinity);
  const start = s.sim.now;
  const { ok, got } = runUntilSends(s, a.dev, a, 1, 30_000);
  t.ok(ok, 'the read completed');
  t.equal(got[0].vendorErr, EfaStatus.LOCAL_ERROR_UNRESP_REMOTE, 'LOCAL_ERROR_UNRESP_REMOTE');
  t.ok(s.sim.now - start < 6000, `within the read timeout (${(s.sim.now - start).toFixed(0)} ms)`);
  t.equal(a.dev.rdma.pendingReads, 0, 'nothing left waiting');
});

t.test('moving the QP to ERR flushes RDMA work in flight, reads included', async (t) => {
  const s = await pair({ bufSize: 4 << 20, faults: 'delay=2ms' });
  const [a, b] = s.ends;
  post(a, s.ahs[0][1], b, 'read', 1, 0, 2 << 20, 0);
  post(a, s.ahs[0][1], b, 'write', 2, 0, 2 << 20, 0);
  s.sim.runFor(3);
  t.ok(a.dev.stats.tx_pkts > 0 && a.dev.rdma.pendingReads === 1, 'under way');
  await a.dev.modifyQp(a.qp, { qpState: 6 });
  const got = pollAll(a.dev, a.sendCq);
  t.same(
    got.map((w) => [w.wrId, w.vendorErr]).sort((x, y) => x[0] - y[0]),
    [
      [1, EfaStatus.FLUSHED],
      [2, EfaStatus.FLUSHED],
    ],
    'both FLUSHED, once each',
  );
  s.sim.drain(s.sim.now + 5000);
  t.equal(pollAll(a.dev, a.sendCq).length, 0, 'nothing completes later');
  t.equal(a.dev.rdma.pendingReads, 0, 'no read left');
});

t.test('the seed generation (efa0) refuses RDMA as the 2018 device did', async (t) => {
  const s = await srdSim({ trace: false, generation: 'efa0' });
  const [a] = s.ends;
  t.equal(a.dev.attributes.vendorPartId, 0xefa0, 'vendor_part_id 0xefa0');
  t.equal(a.dev.attributes.deviceCaps & (EfadvDeviceCaps.RDMA_READ | EfadvDeviceCaps.RDMA_WRITE | EfadvDeviceCaps.UNSOLICITED_WRITE_RECV), 0, 'no RDMA capability');
  t.equal(a.dev.attributes.maxPd, 128, '128 PDs');
  await t.rejects(a.dev.regMr(a.pd, Buffer.alloc(64), AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_READ), { code: 'EOPNOTSUPP' }, 'REMOTE_READ: EOPNOTSUPP');
  await t.rejects(a.dev.regMr(a.pd, Buffer.alloc(64), AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE), { code: 'EOPNOTSUPP' }, 'REMOTE_WRITE: EOPNOTSUPP');
  a.dev.wrStart(a.qp);
  a.qp.wrId = 1;
  a.dev.wrRdmaRead(a.qp, 1, 0);
  t.throws(() => a.dev.wrComplete(a.qp), { code: 'EOPNOTSUPP' }, 'a read on a QP that cannot do one: EOPNOTSUPP at wrComplete');
  await t.rejects(
    a.dev.createQp(a.pd, { qpType: 'SRD', sendCq: a.sendCq, recvCq: a.recvCq, cap: { maxSendWr: 4, maxRecvWr: 4 }, efadv: { flags: EfadvQpFlags.UNSOLICITED_WRITE_RECV } }),
    { code: 'EOPNOTSUPP' },
    'unsolicited write receive: EOPNOTSUPP',
  );
});

t.test('efa1 reads but does not write (RDMA_WRITE arrived with a later generation)', async (t) => {
  const s = await srdSim({ trace: false, generation: 'efa1' });
  const [a] = s.ends;
  await t.resolves(a.dev.regMr(a.pd, Buffer.alloc(64), AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_READ), 'REMOTE_READ registers');
  await t.rejects(a.dev.regMr(a.pd, Buffer.alloc(64), AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE), { code: 'EOPNOTSUPP' }, 'REMOTE_WRITE: EOPNOTSUPP');
});

t.test('a send is not held behind a stream of large writes to the same peer (another QP)', async (t) => {
  // 16 writes of 1 MiB (2048 packets) on one QP, then a 64-byte send on another QP of the same
  // device to the same peer: it waits for a bounded number of segments (the per-peer cap of
  // segments outstanding), not for the segments every write posted before it queued.
  const s = await pair({ bufSize: 17 << 20, faults: 'delay=50us' });
  const [a, b] = s.ends;
  const a2 = await createSrdEnd(a.dev, { pd: a.pd, bufSize: 4096 });
  const b2 = await createSrdEnd(b.dev, { pd: b.pd, bufSize: 4096 });
  const ah = s.ahs[0][1];
  for (let i = 0; i < 16; i++) post(a, ah, b, 'write', i, i << 20, 1 << 20, i << 20);
  postSrdRecv(b2, 1, 0, 64);
  postSrdSend(a2, ah, b2, 77, patternPayload(77, 64));
  let writesDone = 0;
  let placedBefore = -1;
  const ok = s.sim.runUntil(() => {
    writesDone += pollAll(a.dev, a.sendCq).length;
    if (placedBefore < 0 && pollAll(b.dev, b2.recvCq).length > 0) placedBefore = b.dev.stats.rdma_write_recv_bytes;
    return writesDone === 16 && placedBefore >= 0;
  }, s.sim.now + 30_000);
  t.ok(ok, 'everything completed');
  t.ok(placedBefore >= 0 && placedBefore <= 3 * (1 << 20), `the send arrived after ${(placedBefore / 2 ** 20).toFixed(2)} MiB of the 16 MiB of writes were placed (at most 3)`);
  t.ok(b2.buf.subarray(0, 64).equals(patternPayload(77, 64)), 'and was delivered');
});
