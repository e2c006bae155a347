// Limits: object counts fail ENOMEM (RESOURCE_ALLOCATION_FAILURE) at the device attribute,
// full work queues reject posts with ENOMEM until a slot frees, a CQ overrun is an error
// (never a silent drop), and completion channels raise exactly the events they were armed for.
import t from 'tap';
import { CqOverrunError, InvalidArgumentError, ResourceExhaustedError } from '../src/common/errors';
import { AdminOpcode as Op, AdminStatus as St } from '../src/device/admin';
import { QpType, EfaStatus } from '../src/device/constants';
import type { AsyncEvent } from '../src/device/device';
import type { CompletionQueue } from '../src/device/completion-queue';
import {
  createUdEnd,
  DEFAULT_QKEY,
  expectAdminError,
  MemoryFabric,
  poll,
  postRecv,
  sendBytes,
  thrown,
  udPair,
} from './helpers/memory-fabric';

const cap = { maxSendWr: 2, maxRecvWr: 2 };
/** Lets queued microtasks and the I/O-less event queue drain: the device emits on a microtask. */
const drain = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

t.test('maxPd: the next allocPd fails ENOMEM (status 1)', async (t) => {
  const dev = new MemoryFabric().addDevice('efa0', { maxPd: 2 });
  const pds = [await dev.allocPd(), await dev.allocPd()];
  const err = await expectAdminError(t, dev.allocPd(), Op.ALLOC_PD, St.RESOURCE_ALLOCATION_FAILURE, 'ENOMEM', 'third PD');
  t.match(err.message, /^ALLOC_PD \(opcode 14\) failed: status 1, ENOMEM: /);
  await dev.deallocPd(pds[0]);
  t.ok(await dev.allocPd(), 'a freed slot can be used again');
  await expectAdminError(t, dev.allocPd(), Op.ALLOC_PD, St.RESOURCE_ALLOCATION_FAILURE, 'ENOMEM', 'full again');
});

t.test('maxQp: the next createQp fails ENOMEM', async (t) => {
  const dev = new MemoryFabric().addDevice('efa0', { maxQp: 2 });
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 8 });
  const init = { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap };
  const a = await dev.createQp(pd, init);
  await dev.createQp(pd, { ...init, qpType: QpType.SRD });
  await expectAdminError(t, dev.createQp(pd, init), Op.CREATE_QP, St.RESOURCE_ALLOCATION_FAILURE, 'ENOMEM', 'third QP');
  t.equal(pd.users, 2, 'the failed create left no reference');
  t.equal(cq.users, 4);
  await dev.destroyQp(a);
  t.ok(await dev.createQp(pd, init), 'after a destroy there is room again');
});

t.test('maxCq: the next createCq fails ENOMEM', async (t) => {
  const dev = new MemoryFabric().addDevice('efa0', { maxCq: 1 });
  const cq = await dev.createCq({ cqe: 4 });
  await expectAdminError(t, dev.createCq({ cqe: 4 }), Op.CREATE_CQ, St.RESOURCE_ALLOCATION_FAILURE, 'ENOMEM', 'second CQ');
  await dev.destroyCq(cq);
  t.ok(await dev.createCq({ cqe: 4 }), 'room again after destroyCq');
});

t.test('maxMr: the next regMr fails ENOMEM', async (t) => {
  const dev = new MemoryFabric().addDevice('efa0', { maxMr: 2 });
  const pd = await dev.allocPd();
  const mr = await dev.regMr(pd, Buffer.alloc(8));
  await dev.regMr(pd, Buffer.alloc(8));
  const err = await expectAdminError(t, dev.regMr(pd, Buffer.alloc(8)), Op.REG_MR, St.RESOURCE_ALLOCATION_FAILURE, 'ENOMEM', 'third MR');
  t.match(err.message, /^REG_MR \(opcode 7\) failed: status 1, ENOMEM: /, 'as DESIGN §6 spells it');
  t.equal(pd.users, 2);
  await dev.deregMr(mr);
  t.ok(await dev.regMr(pd, Buffer.alloc(8)), 'room again after deregMr');
});

t.test('maxAh: the next distinct AH fails ENOMEM, the same (PD, GID) still works', async (t) => {
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('efa0', { maxAh: 1 });
  const p1 = fabric.addDevice('efa1');
  const p2 = fabric.addDevice('efa2');
  const pd = await dev.allocPd();
  const ah = await dev.createAh(pd, { gid: p1.gidText });
  await expectAdminError(t, dev.createAh(pd, { gid: p2.gidText }), Op.CREATE_AH, St.RESOURCE_ALLOCATION_FAILURE, 'ENOMEM', 'AH for a second GID');
  const pd2 = await dev.allocPd();
  await expectAdminError(t, dev.createAh(pd2, { gid: p1.gidText }), Op.CREATE_AH, St.RESOURCE_ALLOCATION_FAILURE, 'ENOMEM', 'same GID, another PD');
  t.equal(await dev.createAh(pd, { gid: p1.gidText }), ah, 'the same (PD, GID) returns the existing AH at the limit');
  t.equal(pd.users, 1, 'failed AHs left no reference on the PDs');
  t.equal(pd2.users, 0);
  await dev.destroyAh(ah);
  await dev.destroyAh(ah);
  t.ok(await dev.createAh(pd, { gid: p2.gidText }), 'room again once the AH is gone');
});

t.test('a full send queue rejects postSend with ENOMEM until a completion is polled', async (t) => {
  const { a, b, ahAtoB } = await udPair({ a: { cap: { maxSendWr: 2 } } });
  sendBytes(a, ahAtoB, b, 1, Buffer.from('one'));
  sendBytes(a, ahAtoB, b, 2, Buffer.from('two'));
  const err = thrown(() => sendBytes(a, ahAtoB, b, 3, Buffer.from('three')));
  t.ok(err instanceof ResourceExhaustedError, 'ResourceExhaustedError');
  t.equal(err?.code, 'ENOMEM', 'code ENOMEM');
  t.equal(a.dev.stats.send_wrs, 2, 'the rejected send was not counted');
  t.equal(a.dev.stats.tx_pkts, 2, 'nor sent');

  const [wc] = poll(a.dev, a.sendCq, 1);
  t.equal(wc.wrId, 1);
  t.doesNotThrow(() => sendBytes(a, ahAtoB, b, 3, Buffer.from('three')), 'polling one completion frees one slot');
  t.equal(thrown(() => sendBytes(a, ahAtoB, b, 4, Buffer.from('four')))?.code, 'ENOMEM', 'and only one');

  // An error completion occupies a slot the same way until polled.
  poll(a.dev, a.sendCq);
  a.dev.postSend(a.qp, { wrId: 5, ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY, sgList: [{ addr: 0, length: 1, lkey: 0xbad }] });
  a.dev.postSend(a.qp, { wrId: 6, ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY, sgList: [{ addr: 0, length: 1, lkey: 0xbad }] });
  t.equal(thrown(() => sendBytes(a, ahAtoB, b, 7, Buffer.from('x')))?.code, 'ENOMEM', 'unpolled error completions hold their slots');
  t.match(poll(a.dev, a.sendCq), [{ wrId: 5, vendorErr: EfaStatus.LOCAL_ERROR_INVALID_LKEY }, { wrId: 6 }]);
  t.doesNotThrow(() => sendBytes(a, ahAtoB, b, 8, Buffer.from('x')));
});

t.test('a send CQ shared with receives frees send slots only for send completions', async (t) => {
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('efa0');
  const pd = await dev.allocPd();
  const buf = Buffer.alloc(4096);
  const mr = await dev.regMr(pd, buf);
  const cq = await dev.createCq({ cqe: 16 });
  const qp = await dev.createQp(pd, { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 4 } });
  await dev.modifyQp(qp, { qpState: 1, pkeyIndex: 0, portNum: 1, qkey: 5 });
  await dev.modifyQp(qp, { qpState: 2 });
  await dev.modifyQp(qp, { qpState: 3, sqPsn: 0 });
  const self = await dev.createAh(pd, { gid: dev.gidText });
  dev.postRecv(qp, { wrId: 100, sgList: [{ addr: 0, length: 1000, lkey: mr.lkey }] });
  dev.postSend(qp, { wrId: 1, ah: self, remoteQpn: qp.qpNum, remoteQkey: 5, sgList: [{ addr: 2000, length: 10, lkey: mr.lkey }] });
  fabric.deliverAll(); // loopback: the receive completes on the same CQ
  t.match(poll(dev, cq), [{ wrId: 1, opcode: 0 }, { wrId: 100, opcode: 128, vendorErr: EfaStatus.SUCCESS }], 'send then receive on one CQ');
  t.doesNotThrow(() => dev.postSend(qp, { wrId: 2, ah: self, remoteQpn: qp.qpNum, remoteQkey: 5 }), 'the send slot was freed');
});

t.test('a full receive queue rejects postRecv with ENOMEM', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair({ b: { cap: { maxRecvWr: 2 } } });
  postRecv(b, 1, 0);
  postRecv(b, 2, 4096);
  const err = thrown(() => postRecv(b, 3, 8192));
  t.ok(err instanceof ResourceExhaustedError, 'ResourceExhaustedError');
  t.equal(err?.code, 'ENOMEM');
  t.equal(b.dev.stats.recv_wrs, 2, 'not counted');
  sendBytes(a, ahAtoB, b, 1, Buffer.from('consume one'));
  fabric.deliverAll();
  t.doesNotThrow(() => postRecv(b, 3, 8192), 'a consumed receive frees its slot (before it is polled)');
  t.equal(thrown(() => postRecv(b, 4, 12288))?.code, 'ENOMEM');
  sendBytes(a, ahAtoB, b, 2, Buffer.from('2'));
  sendBytes(a, ahAtoB, b, 3, Buffer.from('3'));
  fabric.deliverAll();
  t.same(poll(b.dev, b.recvCq).map((w) => w.wrId), [1, 2, 3], 'the ring wraps around in order');
});

t.test('CQ overrun: pollCq throws ECQOVERRUN, counted, and a CQ_ERR async event', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair({ b: { recvCqe: 2 } });
  const events: AsyncEvent[] = [];
  b.dev.on('async_event', (ev: AsyncEvent) => events.push(ev));
  for (let i = 0; i < 3; i++) postRecv(b, i, i * 1000, 1000);
  for (let i = 0; i < 3; i++) sendBytes(a, ahAtoB, b, i, Buffer.from(`m${i}`));
  t.equal(fabric.deliverAll(), 3);
  t.equal(b.dev.stats.cq_overruns, 1, 'stats.cq_overruns');
  t.equal(events.length, 0, 'the event is not emitted inside the receive path');
  const err = thrown(() => poll(b.dev, b.recvCq));
  t.ok(err instanceof CqOverrunError, 'CqOverrunError');
  t.equal(err?.code, 'ECQOVERRUN');
  t.ok(b.recvCq.overrun);
  t.equal(thrown(() => poll(b.dev, b.recvCq))?.code, 'ECQOVERRUN', 'every later poll throws too');
  await drain();
  t.equal(events.length, 1, 'one async event');
  t.equal(events[0]?.eventType, 'CQ_ERR');
  t.equal(events[0]?.cq, b.recvCq, 'naming the CQ');

  // More completions after the overrun do not count or emit again.
  postRecv(b, 9, 5000, 1000);
  sendBytes(a, ahAtoB, b, 9, Buffer.from('more'));
  fabric.deliverAll();
  await drain();
  t.equal(b.dev.stats.cq_overruns, 1, 'counted once');
  t.equal(events.length, 1, 'emitted once');
  t.match(poll(a.dev, a.sendCq), [{}, {}, {}, {}], 'the sender side is unaffected');
});

t.test('a send CQ overruns the same way', async (t) => {
  const { a, b, ahAtoB } = await udPair({ a: { sendCqe: 2, cap: { maxSendWr: 8 } } });
  for (let i = 0; i < 3; i++) sendBytes(a, ahAtoB, b, i, Buffer.from('x'));
  t.equal(a.dev.stats.cq_overruns, 1);
  t.equal(thrown(() => poll(a.dev, a.sendCq))?.code, 'ECQOVERRUN');
});

t.test('a CQ of depth 2 holding 2 completions is not overrun', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair({ b: { recvCqe: 2 } });
  for (let round = 0; round < 3; round++) {
    postRecv(b, 1, 0, 1000);
    postRecv(b, 2, 1000, 1000);
    sendBytes(a, ahAtoB, b, 1, Buffer.from('a'));
    sendBytes(a, ahAtoB, b, 2, Buffer.from('b'));
    fabric.deliverAll();
    t.same(poll(b.dev, b.recvCq).map((w) => w.wrId), [1, 2], `round ${round}: both completions`);
    poll(a.dev, a.sendCq);
  }
  t.equal(b.dev.stats.cq_overruns, 0);
});

/** Devices a and b; b's CQs report to a completion channel of b. */
async function channelPair() {
  const fabric = new MemoryFabric();
  const devA = fabric.addDevice('a');
  const devB = fabric.addDevice('b');
  const ch = devB.createCompChannel();
  const a = await createUdEnd(devA);
  const b = await createUdEnd(devB, { channel: ch });
  const ah = await devA.createAh(a.pd, { gid: devB.gidText });
  const events: CompletionQueue[] = [];
  const send = (n = 1) => {
    for (let i = 0; i < n; i++) {
      postRecv(b, i, 0, 1000);
      sendBytes(a, ah, b, i, Buffer.from('ping'));
    }
    fabric.deliverAll();
  };
  return { fabric, a, b, ah, ch, events, send };
}

t.test('completion channel: reqNotifyCq then a completion gives one cq event', async (t) => {
  const { b, ch, send } = await channelPair();
  b.dev.reqNotifyCq(b.recvCq);
  const pending = ch.getCqEvent();
  send();
  const cq = await pending;
  t.equal(cq, b.recvCq, 'the event names the CQ');
  t.equal(ch.unacked, 1, 'one unacknowledged event');
  ch.ackCqEvents(1);
  t.equal(ch.unacked, 0);
  t.equal(poll(b.dev, b.recvCq).length, 1, 'the completion is there to poll');
});

t.test('completion channel: an event that found no listener waits for getCqEvent', async (t) => {
  const { b, ch, send } = await channelPair();
  b.dev.reqNotifyCq(b.recvCq);
  send();
  await drain();
  t.equal(await ch.getCqEvent(), b.recvCq, 'getCqEvent after the fact still gets it');
});

t.test('completion channel: one event per arm, none when not armed', async (t) => {
  const { b, ch, events, send } = await channelPair();
  ch.on('cq', (cq: CompletionQueue) => events.push(cq));

  send(2);
  await drain();
  t.equal(events.length, 0, 'not armed: no event');

  poll(b.dev, b.recvCq);
  b.dev.reqNotifyCq(b.recvCq);
  send(2);
  t.equal(events.length, 0, 'the event is not raised inside the receive path');
  await drain();
  t.same(events, [b.recvCq], 'armed once, two completions: one event');

  send(1);
  await drain();
  t.equal(events.length, 1, 'the arm was used up: no further event');

  b.dev.reqNotifyCq(b.recvCq);
  await drain();
  t.equal(events.length, 1, 'arming with completions already queued raises nothing by itself');
  send(1);
  await drain();
  t.equal(events.length, 2, 're-armed: the next completion raises one more');
  t.equal(poll(b.dev, b.recvCq).length, 4);
});

t.test('reqNotifyCq on a CQ without a channel fails EINVAL', async (t) => {
  const { a } = await channelPair();
  const err = thrown(() => a.dev.reqNotifyCq(a.recvCq));
  t.ok(err instanceof InvalidArgumentError);
  t.equal(err?.code, 'EINVAL');
});
