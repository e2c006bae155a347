// Device objects and their admin commands: PD, MR, CQ, QP, AH lifetimes, reference rules,
// device attributes and admin statistics. Every failure is an AdminCommandError whose message
// names the command as the EFA driver logs it.
import t from 'tap';
import { ClosedError, DaemonError, InvalidArgumentError, ResourceBusyError } from '../src/common/errors';
import { makeGid } from '../src/common/gid';
import { AdminOpcode as Op, AdminStatus as St } from '../src/device/admin';
import { DEFAULT_ATTRIBUTES } from '../src/device/attributes';
import { AccessFlags, QpType } from '../src/device/constants';
import { Device } from '../src/device/device';
import { expectAdminError, MemoryFabric, rejection, thrown } from './helpers/memory-fabric';

function device(attributes = {}): { fabric: MemoryFabric; dev: Device } {
  const fabric = new MemoryFabric();
  return { fabric, dev: fabric.addDevice('efa0', attributes) };
}

const cap = { maxSendWr: 4, maxRecvWr: 4 };

t.test('allocPd / deallocPd', async (t) => {
  const { dev } = device();
  const a = await dev.allocPd();
  const b = await dev.allocPd();
  t.not(a, b, 'two PDs are two objects');
  t.not(a.pdn, b.pdn, 'with different PD numbers');
  await dev.deallocPd(a);
  t.ok(a.destroyed, 'deallocated PD is marked destroyed');
  await expectAdminError(t, dev.deallocPd(a), Op.DEALLOC_PD, St.ILLEGAL_PARAMETER, 'EINVAL', 'dealloc twice');
  await expectAdminError(t, dev.regMr(a, Buffer.alloc(8)), Op.REG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'regMr on a freed PD');
  const other = device().dev;
  const foreign = await other.allocPd();
  await expectAdminError(t, dev.deallocPd(foreign), Op.DEALLOC_PD, St.ILLEGAL_PARAMETER, 'EINVAL', 'PD of another device');
  await dev.deallocPd(b);
});

t.test('deallocPd with a live MR, QP or AH fails EBUSY (status 7)', async (t) => {
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('efa0');
  const peer = fabric.addDevice('efa1');

  const pd = await dev.allocPd();
  const mr = await dev.regMr(pd, Buffer.alloc(64));
  await expectAdminError(t, dev.deallocPd(pd), Op.DEALLOC_PD, St.RESOURCE_BUSY, 'EBUSY', 'PD with an MR');
  t.notOk(pd.destroyed, 'the PD survives the failed dealloc');
  await dev.deregMr(mr);
  await dev.deallocPd(pd);

  const pd2 = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 4 });
  const qp = await dev.createQp(pd2, { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap });
  await expectAdminError(t, dev.deallocPd(pd2), Op.DEALLOC_PD, St.RESOURCE_BUSY, 'EBUSY', 'PD with a QP');
  await dev.destroyQp(qp);
  await dev.deallocPd(pd2);

  const pd3 = await dev.allocPd();
  const ah = await dev.createAh(pd3, { gid: peer.gidText });
  await expectAdminError(t, dev.deallocPd(pd3), Op.DEALLOC_PD, St.RESOURCE_BUSY, 'EBUSY', 'PD with an AH');
  await dev.destroyAh(ah);
  await dev.deallocPd(pd3);
});

t.test('regMr: flags, empty buffer, size bound, input type', async (t) => {
  const { dev } = device({ maxMrSize: 64 });
  const pd = await dev.allocPd();
  const buf = Buffer.alloc(64);

  const mr = await dev.regMr(pd, buf);
  t.equal(mr.access, AccessFlags.LOCAL_WRITE, 'LOCAL_WRITE by default');
  t.equal(mr.length, 64);
  t.equal(mr.pd, pd);
  t.equal(mr.lkey, mr.rkey);
  buf[3] = 42;
  t.equal(mr.buffer[3], 42, 'the MR is a view of the caller buffer, not a copy');

  const ro = await dev.regMr(pd, Buffer.alloc(8), AccessFlags.REMOTE_READ);
  t.equal(ro.access, AccessFlags.REMOTE_READ, 'REMOTE_READ alone is fine');
  await dev.regMr(pd, Buffer.alloc(8), AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE);
  await dev.regMr(pd, Buffer.alloc(8), 0);
  const u8 = new Uint8Array(new ArrayBuffer(32), 8, 16);
  const mrU8 = await dev.regMr(pd, u8);
  t.equal(mrU8.length, 16, 'a Uint8Array view registers its own window');
  u8[0] = 9;
  t.equal(mrU8.buffer[0], 9, 'and aliases it');

  await expectAdminError(t, dev.regMr(pd, buf, AccessFlags.REMOTE_WRITE), Op.REG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'REMOTE_WRITE without LOCAL_WRITE');
  await expectAdminError(t, dev.regMr(pd, buf, 1 << 3), Op.REG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'unknown access bit');
  await expectAdminError(t, dev.regMr(pd, buf, 0x80000000), Op.REG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'top access bit');
  await expectAdminError(t, dev.regMr(pd, buf, 1.5), Op.REG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'non-integer access');
  await expectAdminError(t, dev.regMr(pd, Buffer.alloc(0)), Op.REG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'empty buffer');
  await expectAdminError(t, dev.regMr(pd, Buffer.alloc(65)), Op.REG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'buffer over maxMrSize');
  await expectAdminError(t, dev.regMr(pd, [1, 2, 3] as unknown as Buffer), Op.REG_MR, St.MALFORMED_REQUEST, 'EINVAL', 'not a buffer');
});

t.test('deregMr: twice, or an MR of another device, fails EINVAL', async (t) => {
  const { dev } = device();
  const pd = await dev.allocPd();
  const mr = await dev.regMr(pd, Buffer.alloc(16));
  await dev.deregMr(mr);
  t.notOk(mr.valid, 'deregistered MR is invalid');
  await expectAdminError(t, dev.deregMr(mr), Op.DEREG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'dereg twice');
  const other = device().dev;
  const otherMr = await other.regMr(await other.allocPd(), Buffer.alloc(16));
  await expectAdminError(t, dev.deregMr(otherMr), Op.DEREG_MR, St.ILLEGAL_PARAMETER, 'EINVAL', 'MR of another device');
  t.ok(otherMr.valid, 'the other device MR is untouched');
});

t.test('lkeys are unique and a deregistered lkey is not reused soon', async (t) => {
  const { dev } = device();
  const pd = await dev.allocPd();
  const seen = new Set<number>();
  const live = [];
  let dup = 0;
  for (let i = 0; i < 1000; i++) {
    const mr = await dev.regMr(pd, Buffer.alloc(8));
    if (seen.has(mr.lkey)) dup++;
    seen.add(mr.lkey);
    if (i % 3 === 0) live.push(mr);
    else await dev.deregMr(mr); // freed at once: its lkey must still not come back
  }
  t.equal(dup, 0, '1000 registrations (most deregistered right away) gave 1000 different lkeys');
  t.equal(new Set(live.map((m) => m.lkey)).size, live.length);

  const a = await dev.regMr(pd, Buffer.alloc(8));
  await dev.deregMr(a);
  const b = await dev.regMr(pd, Buffer.alloc(8));
  t.not(b.lkey, a.lkey, 'the next registration after a dereg gets another lkey');
});

t.test('lkeys stay unique when the MR index space (2^24) is used up', async (t) => {
  // White-box: 2^24 real registrations would take minutes, so the counter is moved forward.
  const { dev } = device();
  const pd = await dev.allocPd();
  const first = await dev.regMr(pd, Buffer.alloc(8)); // index 1
  const freed = await dev.regMr(pd, Buffer.alloc(8)); // index 2
  await dev.deregMr(freed);
  const internals = dev as unknown as { nextMrIndex: number };
  internals.nextMrIndex = 2 ** 24;
  const later = await dev.regMr(pd, Buffer.alloc(8));
  t.equal(later.lkey >>> 8, freed.lkey >>> 8, 'a freed index is reused once fresh ones run out');
  t.not(later.lkey, freed.lkey, 'with another key byte, so the stale lkey does not name it');
  t.not(later.lkey, first.lkey, 'a new lkey never equals a live one');
  const err = await rejection(dev.regMr(pd, Buffer.alloc(8)));
  t.equal((err as { code?: string } | undefined)?.code, 'ENOMEM', 'no free index left: ENOMEM, never a collision');
  t.equal(await rejection(dev.deregMr(first)), undefined, 'the older MR can still be deregistered');
  t.equal(await rejection(dev.deregMr(later)), undefined, 'and so can the newer one');
});

t.test('createCq: cqe bounds and channel', async (t) => {
  const { dev } = device();
  const cq = await dev.createCq({ cqe: 1 });
  t.equal(cq.cqe, 1);
  t.equal(cq.channel, null);
  const maxed = await dev.createCq({ cqe: DEFAULT_ATTRIBUTES.maxCqe });
  t.equal(maxed.cqe, 32768, 'cqe = maxCqe is allowed');
  await expectAdminError(t, dev.createCq({ cqe: 0 }), Op.CREATE_CQ, St.ILLEGAL_PARAMETER, 'EINVAL', 'cqe 0');
  await expectAdminError(t, dev.createCq({ cqe: 32769 }), Op.CREATE_CQ, St.ILLEGAL_PARAMETER, 'EINVAL', 'cqe > maxCqe');
  await expectAdminError(t, dev.createCq({ cqe: -1 }), Op.CREATE_CQ, St.ILLEGAL_PARAMETER, 'EINVAL', 'negative cqe');
  await expectAdminError(t, dev.createCq({ cqe: 2.5 }), Op.CREATE_CQ, St.ILLEGAL_PARAMETER, 'EINVAL', 'fractional cqe');
  const other = device().dev;
  const foreignChannel = other.createCompChannel();
  await expectAdminError(t, dev.createCq({ cqe: 4, channel: foreignChannel }), Op.CREATE_CQ, St.ILLEGAL_PARAMETER, 'EINVAL', 'channel of another device');
  const ch = dev.createCompChannel();
  const withCh = await dev.createCq({ cqe: 4, channel: ch });
  t.equal(withCh.channel, ch);
  t.equal(dev.pollCq(withCh, 0, []), 0, 'polling 0 entries');
  const perr = thrown(() => dev.pollCq(withCh, -1, []));
  t.ok(perr instanceof InvalidArgumentError, 'pollCq with a negative count');
  t.equal(perr?.code, 'EINVAL');
});

t.test('destroyCq while a QP uses it fails EBUSY', async (t) => {
  const { dev } = device();
  const pd = await dev.allocPd();
  const scq = await dev.createCq({ cqe: 4 });
  const rcq = await dev.createCq({ cqe: 4 });
  const qp = await dev.createQp(pd, { qpType: QpType.UD, sendCq: scq, recvCq: rcq, cap });
  await expectAdminError(t, dev.destroyCq(scq), Op.DESTROY_CQ, St.RESOURCE_BUSY, 'EBUSY', 'send CQ in use');
  await expectAdminError(t, dev.destroyCq(rcq), Op.DESTROY_CQ, St.RESOURCE_BUSY, 'EBUSY', 'recv CQ in use');
  t.notOk(scq.destroyed, 'CQ survives');
  await dev.destroyQp(qp);
  await dev.destroyCq(scq);
  await dev.destroyCq(rcq);
  t.ok(scq.destroyed);
  await expectAdminError(t, dev.destroyCq(scq), Op.DESTROY_CQ, St.ILLEGAL_PARAMETER, 'EINVAL', 'destroy twice');
  await expectAdminError(t, dev.createQp(pd, { qpType: QpType.UD, sendCq: scq, recvCq: scq, cap }), Op.CREATE_QP, St.ILLEGAL_PARAMETER, 'EINVAL', 'QP on a destroyed CQ');

  // One CQ for both queues is counted twice and released twice.
  const both = await dev.createCq({ cqe: 4 });
  const qp2 = await dev.createQp(pd, { qpType: QpType.UD, sendCq: both, recvCq: both, cap });
  await expectAdminError(t, dev.destroyCq(both), Op.DESTROY_CQ, St.RESOURCE_BUSY, 'EBUSY', 'shared CQ in use');
  await dev.destroyQp(qp2);
  await dev.destroyCq(both);

  const ch = dev.createCompChannel();
  const cqc = await dev.createCq({ cqe: 2, channel: ch });
  const err = thrown(() => dev.destroyCompChannel(ch));
  t.ok(err instanceof ResourceBusyError, 'destroyCompChannel while a CQ uses it');
  t.equal(err?.code, 'EBUSY');
  await dev.destroyCq(cqc);
  dev.destroyCompChannel(ch);
  t.ok(ch.closed);
});

t.test('createQp: type, CQs, caps, sqSigAll', async (t) => {
  const { dev } = device();
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 8 });
  const qp = await dev.createQp(pd, { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 2, maxRecvWr: 3 } });
  t.ok(qp.qpNum >= 2 && qp.qpNum <= 0xffff, 'QPN is 16-bit and not 0 or 1');
  t.same(qp.cap, { maxSendWr: 2, maxRecvWr: 4, maxSendSge: 1, maxRecvSge: 1, maxInlineData: 0 }, 'cap defaults, the receive ring rounded up to a power of two as the provider reports');
  const srd = await dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, cap, sqSigAll: true });
  t.not(srd.qpNum, qp.qpNum);
  const bad = (init: object, status: number, errno: string, what: string) =>
    expectAdminError(t, dev.createQp(pd, { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap, ...init } as never), Op.CREATE_QP, status, errno, what);
  await bad({ qpType: 'RC' }, St.UNSUPPORTED_OPCODE, 'EOPNOTSUPP', 'qpType RC');
  const unsignaled = await dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, cap, sqSigAll: false });
  t.equal(unsignaled.sqSigAll, false, 'sqSigAll false is accepted (each send must then ask to be signaled)');
  await bad({ cap: { maxSendWr: 0, maxRecvWr: 1 } }, St.ILLEGAL_PARAMETER, 'EINVAL', 'maxSendWr 0');
  await bad({ cap: { maxSendWr: 4097, maxRecvWr: 1 } }, St.ILLEGAL_PARAMETER, 'EINVAL', 'maxSendWr > maxSqWr');
  await bad({ cap: { maxSendWr: 1, maxRecvWr: 32769 } }, St.ILLEGAL_PARAMETER, 'EINVAL', 'maxRecvWr > maxRqWr');
  await bad({ cap: { maxSendWr: 1, maxRecvWr: 1, maxSendSge: 3 } }, St.ILLEGAL_PARAMETER, 'EINVAL', 'maxSendSge > 2');
  await bad({ cap: { maxSendWr: 1, maxRecvWr: 1, maxRecvSge: 4 } }, St.ILLEGAL_PARAMETER, 'EINVAL', 'maxRecvSge > 3');
  await bad({ cap: { maxSendWr: 1, maxRecvWr: 1, maxInlineData: 33 } }, St.ILLEGAL_PARAMETER, 'EINVAL', 'maxInlineData > 32');
  await bad({ cap: { maxRecvWr: 1 } }, St.ILLEGAL_PARAMETER, 'EINVAL', 'maxSendWr missing');
  await bad({ sendCq: {} }, St.ILLEGAL_PARAMETER, 'EINVAL', 'sendCq not a CQ');
  const other = device().dev;
  const foreignCq = await other.createCq({ cqe: 4 });
  await bad({ recvCq: foreignCq }, St.ILLEGAL_PARAMETER, 'EINVAL', 'recvCq of another device');
  await expectAdminError(t, dev.createQp(pd, null as never), Op.CREATE_QP, St.MALFORMED_REQUEST, 'EINVAL', 'no init');
  await dev.destroyQp(qp);
  await expectAdminError(t, dev.destroyQp(qp), Op.DESTROY_QP, St.ILLEGAL_PARAMETER, 'EINVAL', 'destroyQp twice');
});

t.test('createAh: one AH per (PD, GID), reference-counted', async (t) => {
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('efa0');
  const peer = fabric.addDevice('efa1');
  const pd = await dev.allocPd();
  const ah1 = await dev.createAh(pd, { gid: peer.gidText });
  const ah2 = await dev.createAh(pd, { gid: peer.gid });
  t.equal(ah2, ah1, 'same (PD, GID) gives the same AH, by text or by bytes');
  t.equal(ah1.refCount, 2);
  t.equal(ah1.ahNum, 2, 'the AH number is the fabric-wide one the control plane gave (device index 2)');
  t.equal(ah1.gid, peer.gidText);
  t.equal(ah1.pd, pd);
  t.equal(fabric.resolveCalls.length, 1, 'the GID is resolved once, then known');

  const pdB = await dev.allocPd();
  const ahB = await dev.createAh(pdB, { gid: peer.gidText });
  t.not(ahB, ah1, 'another PD gets its own AH');
  t.equal(ahB.ahNum, ah1.ahNum, 'with the same AH number');
  await dev.destroyAh(ahB);
  await dev.deallocPd(pdB);

  await dev.destroyAh(ah1);
  t.notOk(ah1.destroyed, 'one destroyAh of two references leaves it alive');
  await expectAdminError(t, dev.deallocPd(pd), Op.DEALLOC_PD, St.RESOURCE_BUSY, 'EBUSY', 'PD still holds the AH');
  await dev.destroyAh(ah1);
  t.ok(ah1.destroyed, 'the second destroyAh frees it');
  await expectAdminError(t, dev.destroyAh(ah1), Op.DESTROY_AH, St.ILLEGAL_PARAMETER, 'EINVAL', 'destroyAh a third time');
  const fresh = await dev.createAh(pd, { gid: peer.gidText });
  t.not(fresh, ah1, 'after the last reference went, a new AH object is made');
  await dev.destroyAh(fresh);
  await dev.deallocPd(pd);

  const self = await dev.createAh(await dev.allocPd(), { gid: dev.gidText });
  t.equal(self.ahNum, 1, 'an AH for the device itself (loopback) is allowed');
});

t.test('createAh: foreign fabric EINVAL, unknown GID ENOENT, malformed GID EINVAL', async (t) => {
  const fabric = new MemoryFabric({ fabricId: 0x11 });
  const dev = fabric.addDevice('efa0');
  fabric.addDevice('efa1');
  const pd = await dev.allocPd();

  const foreign = makeGid(0x22, 2);
  await expectAdminError(t, dev.createAh(pd, { gid: foreign }), Op.CREATE_AH, St.ILLEGAL_PARAMETER, 'EINVAL', 'GID of another fabric');
  t.same(fabric.resolveCalls, [], 'a foreign GID is refused without asking the control plane');

  const unknown = makeGid(0x11, 99);
  const err = await rejection(dev.createAh(pd, { gid: unknown }));
  t.ok(err instanceof DaemonError, 'an unknown GID fails with the resolver error');
  t.equal(err?.code, 'ENOENT');
  t.equal(fabric.resolveCalls.length, 1);

  await expectAdminError(t, dev.createAh(pd, { gid: 'fe80::zz' }), Op.CREATE_AH, St.ILLEGAL_PARAMETER, 'EINVAL', 'malformed GID text');
  await expectAdminError(t, dev.createAh(pd, { gid: new Uint8Array(4) }), Op.CREATE_AH, St.ILLEGAL_PARAMETER, 'EINVAL', 'GID of 4 bytes');
  await expectAdminError(t, dev.createAh(pd, {} as never), Op.CREATE_AH, St.ILLEGAL_PARAMETER, 'EINVAL', 'no GID');
  t.equal(pd.users, 0, 'no failed createAh left a reference on the PD');
  t.same(dev.admin.stats.toJSON().failed, { CREATE_AH: 5 }, 'each failure counted as a failed CREATE_AH');
});

t.test('queryDevice reports the EFA attributes', async (t) => {
  const { dev } = device();
  const a = await dev.queryDevice();
  t.match(a, {
    vendorId: 0x1d0f,
    maxQp: 256,
    maxSqWr: 4096,
    maxRqWr: 32768,
    maxSqSge: 2,
    maxRqSge: 3,
    maxInlineData: 32,
    maxCq: 512,
    maxCqe: 32768,
    maxMr: 262144,
    maxPd: 256,
    maxAh: 1024,
    generation: 'efa3',
    vendorPartId: 0xefa3,
    maxRdmaSize: 1 << 30,
    mtu: 8192,
    maxMsgSize: 8192,
    physPortCnt: 1,
  });
  a.maxPd = 1;
  t.equal((await dev.queryDevice()).maxPd, 256, 'the result is a copy');

  const small = device({ maxPd: 4, mtu: 4096 }).dev;
  const s = await small.queryDevice();
  t.equal(s.maxPd, 4, 'overrides are reported');
  t.equal(s.mtu, 4096);
  t.equal(s.maxMsgSize, 4096, 'maxMsgSize follows mtu');

  const fabric = new MemoryFabric();
  for (const [attrs, re] of [
    [{ maxPd: 0 }, /^attributes\.maxPd: /],
    [{ maxQp: 1.5 }, /^attributes\.maxQp: /],
    [{ nope: 1 }, /^attributes\.nope: unknown/],
    [{ mtu: 70000 }, /^attributes\.mtu: /],
    [{ mtu: 4096, maxMsgSize: 8192 }, /^attributes\.maxMsgSize: /],
  ] as const) {
    const err = thrown(() => fabric.addDevice('x', attrs as never));
    t.ok(err instanceof InvalidArgumentError, `bad attributes ${JSON.stringify(attrs)} throw InvalidArgumentError`);
    t.match(String(err?.message), re, 'naming the option');
  }
});

t.test('admin stats count submitted and failed commands by name', async (t) => {
  const { dev } = device();
  t.same(dev.admin.stats.toJSON(), { submitted: {}, failed: {} }, 'fresh device');
  const pd = await dev.allocPd();
  await dev.allocPd();
  await rejection(dev.regMr(pd, Buffer.alloc(0)));
  await dev.regMr(pd, Buffer.alloc(4));
  await rejection(dev.createCq({ cqe: 0 }));
  await dev.queryDevice();
  const stats = await dev.queryStats();
  t.equal(stats.rx_pkts, 0, 'queryStats returns the counters');
  t.same(dev.admin.stats.toJSON(), {
    submitted: { ALLOC_PD: 2, REG_MR: 2, CREATE_CQ: 1, GET_FEATURE: 1, GET_STATS: 1 },
    failed: { REG_MR: 1, CREATE_CQ: 1 },
  });
});

t.test('close is idempotent and later commands fail ECLOSED', async (t) => {
  const { dev } = device();
  const pd = await dev.allocPd();
  const p1 = dev.close();
  const p2 = dev.close();
  t.equal(p1, p2, 'close returns the same promise');
  await p1;
  t.ok(dev.closed);
  t.ok(pd.destroyed, 'objects are destroyed by close');
  const err = await rejection(dev.allocPd());
  t.ok(err instanceof ClosedError, 'allocPd after close');
  t.equal(err?.code, 'ECLOSED');
  t.doesNotThrow(() => dev.handleDatagram(Buffer.alloc(100), '127.0.0.1', 1), 'a datagram after close is ignored');
  t.equal(dev.stats.rx_pkts, 0, 'and not counted');
});
