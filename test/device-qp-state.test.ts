// The QP state machine of DESIGN §6: which transitions exist, which attributes each needs or
// takes, what posting needs, when receives complete, ERR flushes, RESET discards, and QP
// numbers of destroyed QPs kept out of reach of late packets.
import t from 'tap';
import { InvalidArgumentError } from '../src/common/errors';
import { AdminOpcode as Op, AdminStatus as St } from '../src/device/admin';
import { QpState, QpType, WcOpcode, EfaStatus } from '../src/device/constants';
import type { Device } from '../src/device/device';
import type { QpAttr } from '../src/device/qp-state-machine';
import type { QueuePair } from '../src/device/queue-pair';
import {
  DEFAULT_QKEY,
  expectAdminError,
  MemoryFabric,
  poll,
  postRecv,
  sendBytes,
  thrown,
  udPair,
} from './helpers/memory-fabric';

const { RESET, INIT, RTR, RTS, SQD, ERR } = QpState;
const NAMES = ['RESET', 'INIT', 'RTR', 'RTS', 'SQD', 'SQE', 'ERR'];
const TO_INIT: QpAttr = { qpState: INIT, pkeyIndex: 0, portNum: 1, qkey: 0x1234 };

async function qpOn(dev: Device, qpType: QpType = QpType.UD): Promise<QueuePair> {
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 64 });
  return dev.createQp(pd, { qpType, sendCq: cq, recvCq: cq, cap: { maxSendWr: 8, maxRecvWr: 8 } });
}

/** A fresh QP driven to `state` along the valid path. */
async function qpIn(dev: Device, state: number, qpType: QpType = QpType.UD): Promise<QueuePair> {
  const qp = await qpOn(dev, qpType);
  const path: QpAttr[] = [TO_INIT, { qpState: RTR }, { qpState: RTS, sqPsn: 0 }, { qpState: SQD }];
  if (state === ERR) {
    await dev.modifyQp(qp, { qpState: ERR });
    return qp;
  }
  for (let s = 0; s < state; s++) await dev.modifyQp(qp, path[s]);
  return qp;
}

function setup(): { fabric: MemoryFabric; dev: Device } {
  const fabric = new MemoryFabric();
  return { fabric, dev: fabric.addDevice('efa0') };
}

t.test('state numbers are those of ibv_qp_state', async (t) => {
  t.same([RESET, INIT, RTR, RTS, SQD, QpState.SQE, ERR], [0, 1, 2, 3, 4, 5, 6]);
});

t.test('the valid path RESET -> INIT -> RTR -> RTS -> SQD -> RTS', async (t) => {
  const { dev } = setup();
  const qp = await qpOn(dev);
  t.equal((await dev.queryQp(qp)).qpState, RESET, 'a new QP is in RESET');
  await dev.modifyQp(qp, { qpState: INIT, pkeyIndex: 0, portNum: 1, qkey: 0x1234 });
  t.equal((await dev.queryQp(qp)).qpState, INIT, 'RESET -> INIT with pkeyIndex 0, portNum 1, qkey');
  t.equal(qp.qkey, 0x1234);
  await dev.modifyQp(qp, { qpState: INIT, qkey: 0x2345 });
  t.equal((await dev.queryQp(qp)).qkey, 0x2345, 'INIT -> INIT may change the qkey');
  await dev.modifyQp(qp, { qpState: RTR });
  t.equal((await dev.queryQp(qp)).qpState, RTR, 'INIT -> RTR needs nothing');
  await dev.modifyQp(qp, { qpState: RTS, sqPsn: 77 });
  const info = await dev.queryQp(qp);
  t.equal(info.qpState, RTS, 'RTR -> RTS with sqPsn');
  t.equal(info.sqPsn, 77);
  await dev.modifyQp(qp, { qpState: SQD });
  t.equal((await dev.queryQp(qp)).qpState, SQD, 'RTS -> SQD');
  await dev.modifyQp(qp, { qpState: RTS });
  t.equal((await dev.queryQp(qp)).qpState, RTS, 'SQD -> RTS');
  await dev.modifyQp(qp, { qkey: 0x3456 });
  t.equal((await dev.queryQp(qp)).qkey, 0x3456, 'RTS -> RTS (no qpState) may change the qkey');

  const qp2 = await qpIn(dev, RTR);
  await dev.modifyQp(qp2, { qpState: RTS, sqPsn: 0, qkey: 0x99 });
  t.equal(qp2.qkey, 0x99, 'RTR -> RTS may carry a qkey');
  const qp3 = await qpIn(dev, INIT);
  await dev.modifyQp(qp3, { qpState: RTR, qkey: 0x98 });
  t.equal(qp3.qkey, 0x98, 'INIT -> RTR may carry a qkey');
});

t.test('any state -> ERR and any state -> RESET', async (t) => {
  const { dev } = setup();
  for (const from of [RESET, INIT, RTR, RTS, SQD, ERR]) {
    for (const to of [ERR, RESET]) {
      const qp = await qpIn(dev, from);
      t.equal(qp.state, from, `drove a QP to ${NAMES[from]}`);
      await dev.modifyQp(qp, { qpState: to });
      t.equal((await dev.queryQp(qp)).qpState, to, `${NAMES[from]} -> ${NAMES[to]}`);
      await dev.destroyQp(qp);
    }
  }
  const qp = await qpIn(dev, RTS);
  await dev.modifyQp(qp, { qpState: ERR });
  await dev.modifyQp(qp, { qpState: RESET });
  await dev.modifyQp(qp, TO_INIT);
  await dev.modifyQp(qp, { qpState: RTR });
  await dev.modifyQp(qp, { qpState: RTS, sqPsn: 1 });
  t.equal(qp.state, RTS, 'a QP is reusable after ERR -> RESET');
});

t.test('invalid transitions fail EINVAL (MODIFY_QP, status 5) and change nothing', async (t) => {
  const { dev } = setup();
  const cases: Array<[number, QpAttr]> = [
    [RESET, { qpState: RTR }],
    [RESET, { qpState: RTS, sqPsn: 0 }],
    [RESET, { qpState: SQD }],
    [INIT, { qpState: RTS, sqPsn: 0 }],
    [INIT, { qpState: SQD }],
    [RTR, { qpState: INIT }],
    [RTR, { qpState: SQD }],
    [RTS, { qpState: INIT }],
    [RTS, { qpState: RTR }],
    [SQD, { qpState: INIT }],
    [SQD, { qpState: RTR }],
    [ERR, { qpState: INIT, pkeyIndex: 0, portNum: 1, qkey: 1 }],
    [ERR, { qpState: RTR }],
    [ERR, { qpState: RTS, sqPsn: 0 }],
    [RTS, { qpState: QpState.SQE }],
    [RTS, { qpState: 7 as never }],
    [RESET, { qkey: 5 }],
    [RTR, { qkey: 5 }],
    [ERR, { qkey: 5 }],
  ];
  for (const [from, attr] of cases) {
    const qp = await qpIn(dev, from);
    const qkey = qp.qkey;
    const what = `${NAMES[from]} with ${JSON.stringify(attr)}`;
    await expectAdminError(t, dev.modifyQp(qp, attr), Op.MODIFY_QP, St.ILLEGAL_PARAMETER, 'EINVAL', what);
    t.equal(qp.state, from, `${what}: state unchanged`);
    t.equal(qp.qkey, qkey, `${what}: qkey unchanged`);
    await dev.destroyQp(qp);
  }
});

t.test('required attributes, extra attributes, pkeyIndex, port, rnrRetry', async (t) => {
  const { dev } = setup();
  // The kernel's answers (efa_verbs.c efa_modify_qp): an invalid transition or attribute set
  // is EINVAL; a port other than 1 or a P_Key index other than 0 is EOPNOTSUPP.
  const fails = async (from: number, attr: QpAttr, what: string, qpType: QpType = QpType.UD, errno = 'EINVAL') => {
    const qp = await qpIn(dev, from, qpType);
    await expectAdminError(t, dev.modifyQp(qp, attr), Op.MODIFY_QP, errno === 'EINVAL' ? St.ILLEGAL_PARAMETER : St.UNSUPPORTED_OPCODE, errno, what);
    t.equal(qp.state, from, `${what}: state unchanged`);
    await dev.destroyQp(qp);
  };
  await fails(RESET, { qpState: INIT, pkeyIndex: 0, portNum: 1 }, 'RESET -> INIT without qkey');
  await fails(RESET, { qpState: INIT, portNum: 1, qkey: 1 }, 'RESET -> INIT without pkeyIndex');
  await fails(RESET, { qpState: INIT, pkeyIndex: 0, qkey: 1 }, 'RESET -> INIT without portNum');
  await fails(RTR, { qpState: RTS }, 'RTR -> RTS without sqPsn');
  await fails(RESET, { ...TO_INIT, sqPsn: 0 }, 'RESET -> INIT does not take sqPsn');
  await fails(INIT, { qpState: RTR, sqPsn: 0 }, 'INIT -> RTR does not take sqPsn');
  await fails(RTS, { qpState: SQD, qkey: 5 }, 'RTS -> SQD takes nothing');
  await fails(RTS, { qpState: ERR, qkey: 5 }, 'a move to ERR takes no attributes');
  await fails(RTS, { qpState: RESET, sqPsn: 0 }, 'a move to RESET takes no attributes');
  await fails(RESET, { ...TO_INIT, foo: 1 } as QpAttr, 'unknown attribute');
  await fails(RESET, { ...TO_INIT, pkeyIndex: 1 }, 'pkeyIndex 1', QpType.UD, 'EOPNOTSUPP');
  await fails(RESET, { ...TO_INIT, portNum: 2 }, 'port 2', QpType.UD, 'EOPNOTSUPP');
  await fails(RESET, { ...TO_INIT, portNum: 0 }, 'port 0', QpType.UD, 'EOPNOTSUPP');
  await fails(RTS, { qpState: RTS, timeout: 14 } as QpAttr, 'an attribute of another transport (timeout)', QpType.UD, 'EOPNOTSUPP');
  await fails(RTS, { rnrRetry: 1 }, 'RTS -> RTS does not take rnrRetry (SRD takes it on RTR -> RTS only)', QpType.SRD);
  await fails(RESET, { qpState: ERR }, 'RESET -> ERR is not an SRD transition', QpType.SRD);
  await fails(RESET, { ...TO_INIT, qkey: 2 ** 32 }, 'qkey over 32 bits');
  await fails(RESET, { ...TO_INIT, qkey: -1 }, 'negative qkey');
  await fails(RTR, { qpState: RTS, sqPsn: 2 ** 24 }, 'sqPsn over 24 bits');
  await fails(RTR, { qpState: RTS, sqPsn: 0, rnrRetry: 3 }, 'rnrRetry on UD');
  await fails(RTR, { qpState: RTS, sqPsn: 0, rnrRetry: 8 }, 'rnrRetry 8 on SRD', QpType.SRD);
  await fails(RTR, { qpState: RTS, sqPsn: 0, rnrRetry: -1 }, 'rnrRetry -1 on SRD', QpType.SRD);
  await fails(INIT, { qpState: RTR, rnrRetry: 3 }, 'INIT -> RTR does not take rnrRetry', QpType.SRD);

  const srd = await qpIn(dev, RTR, QpType.SRD);
  t.equal((await dev.queryQp(srd)).rnrRetry, 7, 'SRD rnrRetry defaults to 7 (retry forever)');
  await dev.modifyQp(srd, { qpState: RTS, sqPsn: 0, rnrRetry: 3 });
  t.equal((await dev.queryQp(srd)).rnrRetry, 3, 'rnrRetry 0..7 accepted on SRD at RTR -> RTS');
  const ud = await qpIn(dev, INIT);
  await dev.modifyQp(ud, { qpState: RTR, pkeyIndex: 0, qkey: 9 });
  t.equal(ud.state, RTR, 'INIT -> RTR takes pkeyIndex and qkey (optional)');
  const ud2 = await qpIn(dev, RESET);
  await dev.modifyQp(ud2, { qpState: ERR });
  t.equal(ud2.state, ERR, 'RESET -> ERR is a UD transition');
});

t.test('a privileged qkey (top bit set) fails EPERM', async (t) => {
  const { dev } = setup();
  for (const qkey of [0x80000000, 0xffffffff, 0x80000001]) {
    const qp = await qpOn(dev);
    await expectAdminError(t, dev.modifyQp(qp, { ...TO_INIT, qkey }), Op.MODIFY_QP, St.ILLEGAL_PARAMETER, 'EPERM', `RESET -> INIT qkey 0x${qkey.toString(16)}`);
    t.equal(qp.state, RESET, 'state unchanged');
  }
  const qp = await qpIn(dev, RTS);
  await expectAdminError(t, dev.modifyQp(qp, { qkey: 0x80000000 }), Op.MODIFY_QP, St.ILLEGAL_PARAMETER, 'EPERM', 'RTS -> RTS privileged qkey');
  t.equal(qp.qkey, 0x1234, 'qkey unchanged');
  await dev.modifyQp(qp, { qkey: 0x7fffffff });
  t.equal(qp.qkey, 0x7fffffff, 'the largest unprivileged qkey is fine');
});

t.test('curQpState must match the current state', async (t) => {
  const { dev } = setup();
  const qp = await qpIn(dev, RTR);
  await expectAdminError(t, dev.modifyQp(qp, { qpState: RTS, sqPsn: 0, curQpState: INIT }), Op.MODIFY_QP, St.ILLEGAL_PARAMETER, 'EINVAL', 'curQpState INIT while RTR');
  t.equal(qp.state, RTR);
  await expectAdminError(t, dev.modifyQp(qp, { qpState: ERR, curQpState: RTS }), Op.MODIFY_QP, St.ILLEGAL_PARAMETER, 'EINVAL', 'curQpState mismatch on a move to ERR');
  const early = await qpIn(dev, INIT);
  await expectAdminError(t, dev.modifyQp(early, { qpState: RTR, curQpState: INIT }), Op.MODIFY_QP, St.ILLEGAL_PARAMETER, 'EINVAL', 'curQpState from INIT (the IB core allows it from RTR, RTS, SQD, SQE only)');
  await dev.modifyQp(qp, { qpState: RTS, sqPsn: 0, curQpState: RTR });
  t.equal(qp.state, RTS, 'a matching curQpState is accepted');
});

t.test('modifyQp / queryQp on a destroyed QP fail EINVAL', async (t) => {
  const { dev } = setup();
  const qp = await qpIn(dev, INIT);
  await dev.destroyQp(qp);
  await expectAdminError(t, dev.modifyQp(qp, { qpState: RTR }), Op.MODIFY_QP, St.ILLEGAL_PARAMETER, 'EINVAL', 'modify destroyed');
  await expectAdminError(t, dev.queryQp(qp), Op.QUERY_QP, St.ILLEGAL_PARAMETER, 'EINVAL', 'query destroyed');
  await expectAdminError(t, dev.modifyQp(await qpOn(dev), null as never), Op.MODIFY_QP, St.MALFORMED_REQUEST, 'EINVAL', 'no attributes');
});

t.test('queryQp reflects every change', async (t) => {
  const { dev } = setup();
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 8 });
  const qp = await dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 3, maxRecvWr: 5, maxRecvSge: 2 } });
  t.same(await dev.queryQp(qp), {
    qpNum: qp.qpNum,
    qpType: 'SRD',
    qpState: RESET,
    qkey: 0,
    sqPsn: 0,
    rnrRetry: 7,
    // As EFA's provider reports them: the send ring a power of two, the receive ring a power of two of SGE slots.
    cap: { maxSendWr: 4, maxRecvWr: 8, maxSendSge: 1, maxRecvSge: 2, maxInlineData: 0 },
    pkeyIndex: 0,
    portNum: 1,
  });
  await dev.modifyQp(qp, { ...TO_INIT, qkey: 0xabc });
  await dev.modifyQp(qp, { qpState: RTR });
  await dev.modifyQp(qp, { qpState: RTS, sqPsn: 0x123456, rnrRetry: 2 });
  t.match(await dev.queryQp(qp), { qpState: RTS, qkey: 0xabc, sqPsn: 0x123456, rnrRetry: 2 });
  await dev.modifyQp(qp, { qpState: RESET });
  const after = await dev.queryQp(qp);
  t.match(after, { qpState: RESET, qkey: 0, sqPsn: 0 }, 'RESET clears qkey and sqPsn');
  t.equal(after.rnrRetry, 7, 'RESET restores the SRD rnrRetry default (7)');
  const info = await dev.queryQp(qp);
  info.cap.maxSendWr = 99;
  t.equal(qp.cap.maxSendWr, 4, 'queryQp returns a copy of cap');
});

t.test('postSend needs RTS or SQD; postRecv fails in RESET and ERR', async (t) => {
  const { fabric, dev } = setup();
  const peer = fabric.addDevice('efa1');
  for (const state of [RESET, INIT, RTR, RTS, SQD, ERR]) {
    const qp = await qpIn(dev, state);
    const mr = await dev.regMr(qp.pd, Buffer.alloc(64));
    const ah = await dev.createAh(qp.pd, { gid: peer.gidText });
    const wr = { wrId: 1, ah, remoteQpn: 2, remoteQkey: 1, sgList: [{ addr: 0, length: 8, lkey: mr.lkey }] };
    const sendErr = thrown(() => dev.postSend(qp, wr));
    if (state === RTS || state === SQD) t.equal(sendErr, undefined, `postSend accepted in ${NAMES[state]}`);
    else {
      t.ok(sendErr instanceof InvalidArgumentError, `postSend in ${NAMES[state]} throws InvalidArgumentError`);
      t.equal(sendErr?.code, 'EINVAL');
    }
    const recvErr = thrown(() => dev.postRecv(qp, { wrId: 2, sgList: [{ addr: 0, length: 64, lkey: mr.lkey }] }));
    if (state === RESET || state === ERR) {
      t.ok(recvErr instanceof InvalidArgumentError, `postRecv in ${NAMES[state]} throws InvalidArgumentError`);
      t.equal(recvErr?.code, 'EINVAL');
    } else t.equal(recvErr, undefined, `postRecv accepted in ${NAMES[state]}`);
  }
  const qp = await qpIn(dev, RTS);
  await dev.destroyQp(qp);
  t.equal(thrown(() => dev.postRecv(qp, { wrId: 1, sgList: [] }))?.code, 'EINVAL', 'postRecv on a destroyed QP');
});

t.test('receives complete only from RTR on', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair({ b: { state: 'INIT' } });
  postRecv(b, 1);
  sendBytes(a, ahAtoB, b, 10, Buffer.from('in init'));
  t.equal(fabric.deliverAll(), 1);
  t.equal(b.dev.stats.rx_drop_qp_state, 1, 'a packet to a QP in INIT is dropped as rx_drop_qp_state');
  t.same(poll(b.dev, b.recvCq), [], 'and completes nothing');

  await b.dev.modifyQp(b.qp, { qpState: RTR });
  sendBytes(a, ahAtoB, b, 11, Buffer.from('in rtr'));
  fabric.deliverAll();
  const wcs = poll(b.dev, b.recvCq);
  t.equal(wcs.length, 1, 'in RTR the packet completes the receive posted in INIT');
  t.match(wcs[0], { wrId: 1, vendorErr: EfaStatus.SUCCESS, opcode: WcOpcode.RECV });

  // A QP in RESET (no receive can even be posted) drops too.
  await b.dev.modifyQp(b.qp, { qpState: RESET });
  sendBytes(a, ahAtoB, b, 12, Buffer.from('in reset'));
  fabric.deliverAll();
  t.equal(b.dev.stats.rx_drop_qp_state, 2, 'a packet to a QP in RESET is dropped as rx_drop_qp_state');

  // And a QP in SQD still receives.
  await b.dev.modifyQp(b.qp, { qpState: INIT, pkeyIndex: 0, portNum: 1, qkey: DEFAULT_QKEY });
  await b.dev.modifyQp(b.qp, { qpState: RTR });
  await b.dev.modifyQp(b.qp, { qpState: RTS, sqPsn: 0 });
  await b.dev.modifyQp(b.qp, { qpState: SQD });
  postRecv(b, 2);
  sendBytes(a, ahAtoB, b, 13, Buffer.from('in sqd'));
  fabric.deliverAll();
  t.match(poll(b.dev, b.recvCq), [{ wrId: 2, vendorErr: EfaStatus.SUCCESS }], 'SQD receives');
});

t.test('ERR flushes posted receives with FLUSHED; later packets are dropped', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  postRecv(b, 101);
  postRecv(b, 102, 4096);
  postRecv(b, 103, 8192);
  await b.dev.modifyQp(b.qp, { qpState: ERR });
  const wcs = poll(b.dev, b.recvCq);
  t.same(
    wcs.map((w) => [w.wrId, w.vendorErr, w.opcode, w.qpNum]),
    [
      [101, EfaStatus.FLUSHED, WcOpcode.RECV, b.qp.qpNum],
      [102, EfaStatus.FLUSHED, WcOpcode.RECV, b.qp.qpNum],
      [103, EfaStatus.FLUSHED, WcOpcode.RECV, b.qp.qpNum],
    ],
    'every posted receive completes FLUSHED (1), in order',
  );
  t.equal(EfaStatus.FLUSHED, 1);
  t.equal(b.qp.rq.count, 0, 'nothing stays posted');
  sendBytes(a, ahAtoB, b, 1, Buffer.from('late'));
  fabric.deliverAll();
  t.equal(b.dev.stats.rx_drop_qp_state, 1, 'a packet to a QP in ERR is dropped');
  t.same(poll(b.dev, b.recvCq), []);
});

t.test('RESET discards posted receives without completions', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  postRecv(b, 1);
  postRecv(b, 2, 4096);
  await b.dev.modifyQp(b.qp, { qpState: RESET });
  t.same(poll(b.dev, b.recvCq), [], 'no completion for the discarded receives');
  await b.dev.modifyQp(b.qp, { qpState: INIT, pkeyIndex: 0, portNum: 1, qkey: DEFAULT_QKEY });
  await b.dev.modifyQp(b.qp, { qpState: RTR });
  sendBytes(a, ahAtoB, b, 1, Buffer.from('after reset'));
  fabric.deliverAll();
  t.equal(b.dev.stats.rx_drop_no_recv_wr, 1, 'the discarded receives are gone: the next packet finds none');
  t.same(poll(b.dev, b.recvCq), []);
});

t.test('a destroyed QP number is quarantined', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  const oldQpn = b.qp.qpNum;
  await b.dev.destroyQp(b.qp);
  const fresh = await b.dev.createQp(b.pd, { qpType: QpType.UD, sendCq: b.sendCq, recvCq: b.recvCq, cap: { maxSendWr: 4, maxRecvWr: 4 } });
  t.not(fresh.qpNum, oldQpn, 'a new QP does not get the number');
  // A late packet for the old QP.
  a.dev.postSend(a.qp, { wrId: 1, ah: ahAtoB, remoteQpn: oldQpn, remoteQkey: DEFAULT_QKEY, sgList: [{ addr: 0, length: 4, lkey: a.mr.lkey }] });
  fabric.deliverAll();
  t.equal(b.dev.stats.rx_drop_unknown_qpn, 1, 'a late packet for it is dropped as rx_drop_unknown_qpn');
  t.equal(b.dev.stats.rx_drops, 1);
});

t.test('quarantine holds when QP numbers wrap around', async (t) => {
  // Numbers are handed out round-robin over 2..65535; after a full lap the allocator comes
  // back to a number released moments ago and must skip it while it is quarantined.
  const fabric = new MemoryFabric();
  const dev = fabric.addDevice('efa0', { maxQp: 65534 });
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 4 });
  const init = { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 1, maxRecvWr: 1 } };
  const keep = await dev.createQp(pd, init);
  t.equal(keep.qpNum, 2, 'the first QP number is 2');
  for (let i = 3; i <= 0xffff; i++) await dev.destroyQp(await dev.createQp(pd, init));
  fabric.advance(10_001); // every number but `keep`'s is out of quarantine now
  await dev.destroyQp(keep);
  const next = await dev.createQp(pd, init);
  t.not(next.qpNum, 2, 'the number released a moment ago is skipped although the cursor is on it');
  t.equal(next.qpNum, 3, 'the next number out of quarantine is taken');

  // With every other number busy, only the quarantined one is left: creation fails ENOMEM.
  const live = [next];
  for (let i = 4; i <= 0xffff; i++) live.push(await dev.createQp(pd, init));
  await expectAdminError(t, dev.createQp(pd, init), Op.CREATE_QP, St.RESOURCE_ALLOCATION_FAILURE, 'ENOMEM', 'only a quarantined number left');
  fabric.advance(10_001);
  const reused = await dev.createQp(pd, init);
  t.equal(reused.qpNum, 2, 'after the quarantine the number is handed out again');
});
