// The UD data path between devices of an in-memory fabric: GRH first in the receive buffer,
// completion fields as EFA reports them (srcQp, AH number or sender GID, immediate data),
// gather and scatter, and every local or remote fault turned into a completion status or a
// counted drop, never an exception from the receive path.
import t from 'tap';
import { InvalidArgumentError } from '../src/common/errors';
import { gidEquals } from '../src/common/gid';
import { AccessFlags, AH_UNKNOWN, GRH_LENGTH, SendFlags, WcFlags, WcOpcode, EfaStatus, WrOpcode } from '../src/device/constants';
import { finishUdPacket } from '../src/ud/ud-packet';
import { WIRE_MAGIC, WIRE_VERSION, OFF_VERSION } from '../src/wire/header';
import {
  createUdEnd,
  DEFAULT_QKEY,
  MemoryFabric,
  poll,
  postRecv,
  sendBytes,
  thrown,
  udPair,
} from './helpers/memory-fabric';

const text = (s: string) => Buffer.from(s, 'utf8');

t.test('a send arrives with the GRH first and the completion fields EFA reports', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  b.buf.fill(0xee);
  postRecv(b, 7, 0, 1000);
  const payload = text('hello, fabric');
  sendBytes(a, ahAtoB, b, 99, payload);

  const sends = poll(a.dev, a.sendCq);
  t.equal(sends.length, 1, 'the send completes at once (UD)');
  t.match(sends[0], { wrId: 99, vendorErr: EfaStatus.SUCCESS, opcode: WcOpcode.SEND, byteLen: payload.length, qpNum: a.qp.qpNum });
  t.equal(fabric.queued.length, 1, 'one datagram');
  t.equal(fabric.queued[0].to, fabric.endpointOf(b.dev), 'addressed to b');
  t.equal(fabric.queued[0].buf.length, 40 + payload.length, 'a 40-byte header and the payload');

  t.equal(fabric.deliverAll(), 1);
  const [wc, ...more] = poll(b.dev, b.recvCq);
  t.equal(more.length, 0, 'one receive completion');
  t.equal(wc.wrId, 7);
  t.equal(wc.vendorErr, EfaStatus.SUCCESS);
  t.equal(wc.opcode, WcOpcode.RECV);
  t.equal(WcOpcode.RECV, 128);
  t.equal(wc.byteLen, GRH_LENGTH + payload.length, 'byteLen = 40 + payload');
  t.equal(wc.srcQp, a.qp.qpNum, 'srcQp is the sender QP');
  t.equal(wc.qpNum, b.qp.qpNum);
  t.equal(wc.wcFlags, WcFlags.GRH, 'GRH flag, no WITH_IMM');

  const grh = b.buf.subarray(0, 40);
  t.equal(grh[0], 0x60, 'GRH byte 0 = 0x60');
  t.ok(gidEquals(a.dev.gid, grh, 8), 'GRH bytes 8..23 = sender GID');
  t.ok(gidEquals(b.dev.gid, grh, 24), 'GRH bytes 24..39 = receiver GID');
  t.same(b.buf.subarray(40, 40 + payload.length), payload, 'payload right after the GRH');
  t.equal(b.buf[40 + payload.length], 0xee, 'nothing written past the message');
});

t.test('SEND_WITH_IMM carries immediate data', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  postRecv(b, 1);
  postRecv(b, 2, 4096);
  sendBytes(a, ahAtoB, b, 1, text('imm'), { opcode: WrOpcode.SEND_WITH_IMM, immData: 0xdeadbeef });
  sendBytes(a, ahAtoB, b, 2, text('plain'));
  fabric.deliverAll();
  const [w1, w2] = poll(b.dev, b.recvCq);
  t.equal(w1.wcFlags, WcFlags.GRH | WcFlags.WITH_IMM, 'WITH_IMM flag');
  t.equal(w1.immData, 0xdeadbeef, 'immData, unsigned');
  t.equal(w2.wcFlags, WcFlags.GRH, 'the next plain send has no WITH_IMM');
  t.equal(w2.immData, 0, 'and no stale immediate');
});

t.test('receiver with an AH for the sender gets its AH number, without one the sender GID', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  postRecv(b, 1);
  sendBytes(a, ahAtoB, b, 1, text('who am i'));
  fabric.deliverAll();
  const [w1] = poll(b.dev, b.recvCq);
  t.equal(w1.ah, AH_UNKNOWN, 'no AH for the sender: ah = 0xFFFF');
  t.equal(AH_UNKNOWN, 0xffff);
  t.ok(w1.sgid !== null && w1.sgid.length === 16 && gidEquals(a.dev.gid, w1.sgid), 'sgid = the sender GID bytes');

  // An AH in another PD of b does not count: AHs are PD-scoped.
  const otherPd = await b.dev.allocPd();
  await b.dev.createAh(otherPd, { gid: a.dev.gidText });
  postRecv(b, 2);
  sendBytes(a, ahAtoB, b, 2, text('still unknown'));
  fabric.deliverAll();
  const [w2] = poll(b.dev, b.recvCq);
  t.equal(w2.ah, AH_UNKNOWN, 'an AH of another PD is not reported');
  t.equal(w2.sgid, w1.sgid, "every completion from one sender shares its GID's bytes: nothing copied per message");

  const ahBtoA = await b.dev.createAh(b.pd, { gid: a.dev.gidText });
  postRecv(b, 3);
  sendBytes(a, ahAtoB, b, 3, text('known now'));
  fabric.deliverAll();
  const [w3] = poll(b.dev, b.recvCq);
  t.equal(w3.ah, ahBtoA.ahNum, 'ah = the receiver AH number for the sender');
  t.equal(w3.ah, 1, 'which is the fabric-wide number of device a');
  t.equal(w3.sgid, null, 'and sgid is null');

  await b.dev.destroyAh(ahBtoA);
  postRecv(b, 4);
  sendBytes(a, ahAtoB, b, 4, text('forgotten'));
  fabric.deliverAll();
  t.equal(poll(b.dev, b.recvCq)[0].ah, AH_UNKNOWN, 'after destroyAh the GID is reported again');
});

t.test('gather from 2 SGEs and scatter into 3 SGEs with the GRH split', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  const mr2buf = Buffer.alloc(256);
  const mr2 = await a.dev.regMr(a.pd, mr2buf);
  a.buf.write('ABCDEFGHIJ', 100);
  mr2buf.write('0123456789abcdefghij', 50);

  // Scatter: 10 bytes, then 50 (30 of GRH + 20 of payload), then 100 in a second MR.
  const rbuf2 = Buffer.alloc(200, 0xee);
  const rmr2 = await b.dev.regMr(b.pd, rbuf2);
  b.buf.fill(0xee);
  b.dev.postRecv(b.qp, {
    wrId: 5,
    sgList: [
      { addr: 1000, length: 10, lkey: b.mr.lkey },
      { addr: 3000, length: 50, lkey: b.mr.lkey },
      { addr: 20, length: 100, lkey: rmr2.lkey },
    ],
  });
  a.dev.postSend(a.qp, {
    wrId: 6,
    sgList: [
      { addr: 100, length: 10, lkey: a.mr.lkey },
      { addr: 50, length: 20, lkey: mr2.lkey },
    ],
    ah: ahAtoB,
    remoteQpn: b.qp.qpNum,
    remoteQkey: DEFAULT_QKEY,
  });
  t.match(poll(a.dev, a.sendCq), [{ wrId: 6, vendorErr: EfaStatus.SUCCESS, byteLen: 30 }], 'send byteLen is the gathered total');
  fabric.deliverAll();
  t.match(poll(b.dev, b.recvCq), [{ wrId: 5, vendorErr: EfaStatus.SUCCESS, byteLen: 70 }]);

  const grh = Buffer.concat([b.buf.subarray(1000, 1010), b.buf.subarray(3000, 3030)]);
  t.equal(grh[0], 0x60, 'GRH starts in the first SGE');
  t.ok(gidEquals(a.dev.gid, grh, 8), 'sender GID spans SGE 1 and 2');
  t.ok(gidEquals(b.dev.gid, grh, 24));
  const payload = Buffer.concat([b.buf.subarray(3030, 3050), rbuf2.subarray(20, 30)]);
  t.equal(payload.toString(), 'ABCDEFGHIJ0123456789abcdefghij', 'payload = the two gathered pieces in order, across SGE 2 and 3');
  t.equal(b.buf[1010], 0xee, 'SGE 1 not overrun');
  t.equal(b.buf[3050], 0xee, 'SGE 2 not overrun');
  t.equal(rbuf2[30], 0xee, 'SGE 3 filled only as far as the message');
  t.equal(rbuf2[19], 0xee, 'nothing written before SGE 3');
});

t.test('a GRH exactly filling the first SGE, and an empty payload', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  b.dev.postRecv(b.qp, { wrId: 1, sgList: [{ addr: 0, length: 40, lkey: b.mr.lkey }, { addr: 500, length: 8, lkey: b.mr.lkey }] });
  sendBytes(a, ahAtoB, b, 1, text('12345678'));
  postRecv(b, 2, 1000, 40);
  a.dev.postSend(a.qp, { wrId: 2, ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY });
  fabric.deliverAll();
  const [w1, w2] = poll(b.dev, b.recvCq);
  t.match(w1, { wrId: 1, vendorErr: EfaStatus.SUCCESS, byteLen: 48 });
  t.equal(b.buf.subarray(500, 508).toString(), '12345678');
  t.match(w2, { wrId: 2, vendorErr: EfaStatus.SUCCESS, byteLen: 40 }, 'a zero-byte send delivers a GRH only');
});

t.test('QKey mismatch is dropped and counted, without a completion', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  postRecv(b, 1);
  sendBytes(a, ahAtoB, { qp: b.qp, qkey: DEFAULT_QKEY + 1 }, 1, text('wrong key'));
  t.match(poll(a.dev, a.sendCq), [{ vendorErr: EfaStatus.SUCCESS }], 'the sender cannot tell (UD)');
  fabric.deliverAll();
  t.equal(b.dev.stats.rx_drop_qkey_mismatch, 1, 'rx_drop_qkey_mismatch');
  t.equal(b.dev.stats.rx_drops, 1);
  t.same(poll(b.dev, b.recvCq), [], 'no completion');
  sendBytes(a, ahAtoB, b, 2, text('right key'));
  fabric.deliverAll();
  t.match(poll(b.dev, b.recvCq), [{ wrId: 1, vendorErr: EfaStatus.SUCCESS }], 'the receive is still posted for the next good packet');
});

t.test('no posted receive: dropped as rx_drop_no_recv_wr', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  sendBytes(a, ahAtoB, b, 1, text('nobody listens'));
  fabric.deliverAll();
  t.equal(b.dev.stats.rx_drop_no_recv_wr, 1);
  t.same(poll(b.dev, b.recvCq), []);
  t.match(poll(a.dev, a.sendCq), [{ vendorErr: EfaStatus.SUCCESS }], 'the UD send still succeeded');
});

t.test('receive buffer too short: LOCAL_ERROR_BAD_LENGTH (6) on the receive', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  const payload = Buffer.alloc(100, 1);
  b.buf.fill(0xee);
  postRecv(b, 1, 0, 40 + 99);
  sendBytes(a, ahAtoB, b, 1, payload);
  fabric.deliverAll();
  const [wc] = poll(b.dev, b.recvCq);
  t.equal(wc.vendorErr, EfaStatus.LOCAL_ERROR_BAD_LENGTH, 'status 6');
  t.equal(EfaStatus.LOCAL_ERROR_BAD_LENGTH, 6);
  t.equal(wc.wrId, 1);
  t.equal(b.buf[0], 0xee, 'nothing is written into a buffer that is too short');
  t.equal(b.dev.stats.recv_bytes, 0, 'no bytes counted as received');
  postRecv(b, 2, 0, 140);
  sendBytes(a, ahAtoB, b, 2, payload);
  fabric.deliverAll();
  t.match(poll(b.dev, b.recvCq), [{ wrId: 2, vendorErr: EfaStatus.SUCCESS, byteLen: 140 }], 'exactly 40 + payload fits');
});

t.test('a message over the MTU: send completes LOCAL_ERROR_BAD_LENGTH (6), nothing sent', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair({ a: { bufSize: 20000 }, b: { bufSize: 20000 } });
  const sge = (addr: number, length: number) => ({ addr, length, lkey: a.mr.lkey });
  a.dev.postSend(a.qp, { wrId: 1, sgList: [sge(0, 4097), sge(5000, 4096)], ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY });
  t.match(poll(a.dev, a.sendCq), [{ wrId: 1, vendorErr: EfaStatus.LOCAL_ERROR_BAD_LENGTH, byteLen: 0 }], '8193 bytes > mtu 8192');
  t.equal(fabric.queued.length, 0, 'nothing sent');
  t.equal(a.dev.stats.tx_pkts, 0);

  postRecv(b, 1, 0, 8192 + 40);
  a.dev.postSend(a.qp, { wrId: 2, sgList: [sge(0, 4096), sge(5000, 4096)], ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY });
  t.match(poll(a.dev, a.sendCq), [{ wrId: 2, vendorErr: EfaStatus.SUCCESS, byteLen: 8192 }], 'exactly the MTU is fine');
  fabric.deliverAll();
  t.match(poll(b.dev, b.recvCq), [{ wrId: 1, vendorErr: EfaStatus.SUCCESS, byteLen: 8232 }]);

  // A device with a smaller MTU enforces its own.
  const f2 = new MemoryFabric();
  const small = await udPair({ fabric: f2, attributes: { mtu: 1024 } });
  sendBytes(small.a, small.ahAtoB, small.b, 3, Buffer.alloc(1025));
  t.match(poll(small.a.dev, small.a.sendCq), [{ vendorErr: EfaStatus.LOCAL_ERROR_BAD_LENGTH }], 'mtu 1024: 1025 bytes rejected');
  t.equal(f2.queued.length, 0);
});

t.test('bad SGEs on a send: INVALID_LKEY (5) and nothing sent', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  const otherPd = await a.dev.allocPd();
  const foreignMr = await a.dev.regMr(otherPd, Buffer.alloc(64));
  const gone = await a.dev.regMr(a.pd, Buffer.alloc(64));
  await a.dev.deregMr(gone);
  const len = a.buf.length;
  const cases: Array<[string, { addr: number; length: number; lkey: number }[]]> = [
    ['SGE ending one byte past its MR', [{ addr: len - 10, length: 11, lkey: a.mr.lkey }]],
    ['SGE starting past its MR', [{ addr: len, length: 1, lkey: a.mr.lkey }]],
    ['negative addr', [{ addr: -1, length: 4, lkey: a.mr.lkey }]],
    ['fractional addr', [{ addr: 1.5, length: 4, lkey: a.mr.lkey }]],
    ['second SGE out of bounds', [{ addr: 0, length: 4, lkey: a.mr.lkey }, { addr: len - 1, length: 2, lkey: a.mr.lkey }]],
    ['unknown lkey', [{ addr: 0, length: 4, lkey: 0xdead }]],
    ['deregistered MR', [{ addr: 0, length: 4, lkey: gone.lkey }]],
    ['MR of another PD', [{ addr: 0, length: 4, lkey: foreignMr.lkey }]],
  ];
  for (const [what, sgList] of cases) {
    a.dev.postSend(a.qp, { wrId: 1, sgList, ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY });
    const wcs = poll(a.dev, a.sendCq);
    t.equal(wcs.length, 1, `${what}: one completion`);
    t.equal(wcs[0]?.vendorErr, EfaStatus.LOCAL_ERROR_INVALID_LKEY, `${what}: LOCAL_ERROR_INVALID_LKEY`);
  }
  t.equal(EfaStatus.LOCAL_ERROR_INVALID_LKEY, 5);
  t.equal(fabric.queued.length, 0, 'the fabric queue stays empty');
  t.equal(a.dev.stats.tx_pkts, 0, 'no packet counted');
  t.equal(a.dev.stats.send_bytes, 0, 'no bytes counted');
  t.same(a.dev.admin.stats.toJSON().failed, {}, 'data-path failures are completions, not admin failures');
  const edge = { addr: len - 10, length: 10, lkey: a.mr.lkey };
  a.dev.postSend(a.qp, { wrId: 2, sgList: [edge], ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY });
  t.match(poll(a.dev, a.sendCq), [{ wrId: 2, vendorErr: EfaStatus.SUCCESS }], 'an SGE ending exactly at the MR end is fine');
});

t.test('AH of another PD, destroyed, or not an AH: LOCAL_ERROR_INVALID_AH (4)', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  const otherPd = await a.dev.allocPd();
  const foreignAh = await a.dev.createAh(otherPd, { gid: b.dev.gidText });
  t.not(foreignAh, ahAtoB);
  sendBytes(a, foreignAh, b, 1, text('x'));
  t.match(poll(a.dev, a.sendCq), [{ wrId: 1, vendorErr: EfaStatus.LOCAL_ERROR_INVALID_AH }], 'AH of another PD');
  t.equal(EfaStatus.LOCAL_ERROR_INVALID_AH, 4);
  sendBytes(a, {} as never, b, 2, text('x'));
  t.match(poll(a.dev, a.sendCq), [{ wrId: 2, vendorErr: EfaStatus.LOCAL_ERROR_INVALID_AH }], 'not an AH at all');
  await a.dev.destroyAh(ahAtoB);
  t.ok(ahAtoB.destroyed, 'the only reference released');
  sendBytes(a, ahAtoB, b, 3, text('x'));
  t.match(poll(a.dev, a.sendCq), [{ wrId: 3, vendorErr: EfaStatus.LOCAL_ERROR_INVALID_AH }], 'destroyed AH');
  t.equal(fabric.queued.length, 0, 'nothing sent');
  t.equal(a.dev.stats.send_wrs, 3, 'each one still a send work request');
});

t.test('a receive naming a deregistered MR completes INVALID_LKEY', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  const rbuf = Buffer.alloc(256, 0xee);
  const rmr = await b.dev.regMr(b.pd, rbuf);
  b.dev.postRecv(b.qp, { wrId: 9, sgList: [{ addr: 0, length: 256, lkey: rmr.lkey }] });
  await b.dev.deregMr(rmr);
  sendBytes(a, ahAtoB, b, 1, text('into freed memory'));
  fabric.deliverAll();
  t.match(poll(b.dev, b.recvCq), [{ wrId: 9, vendorErr: EfaStatus.LOCAL_ERROR_INVALID_LKEY }]);
  t.equal(rbuf[0], 0xee, 'the deregistered buffer is not written');

  // Other bad receive SGEs.
  const otherPd = await b.dev.allocPd();
  const foreign = await b.dev.regMr(otherPd, Buffer.alloc(256));
  const readOnly = await b.dev.regMr(b.pd, Buffer.alloc(256), AccessFlags.REMOTE_READ);
  const bad: Array<[string, { addr: number; length: number; lkey: number }]> = [
    ['MR of another PD', { addr: 0, length: 256, lkey: foreign.lkey }],
    ['MR without LOCAL_WRITE', { addr: 0, length: 256, lkey: readOnly.lkey }],
    ['unknown lkey', { addr: 0, length: 256, lkey: 0xbad }],
    ['SGE past the MR end', { addr: b.buf.length - 100, length: 101, lkey: b.mr.lkey }],
  ];
  for (const [what, sge] of bad) {
    b.dev.postRecv(b.qp, { wrId: 10, sgList: [sge] });
    sendBytes(a, ahAtoB, b, 1, text('x'));
    fabric.deliverAll();
    t.match(poll(b.dev, b.recvCq), [{ wrId: 10, vendorErr: EfaStatus.LOCAL_ERROR_INVALID_LKEY }], `receive into ${what}`);
  }
});

t.test('malformed work requests throw EINVAL from the post call', async (t) => {
  const { a, b, ahAtoB } = await udPair({ a: { cap: { maxSendSge: 2, maxInlineData: 32 } } });
  const sge = { addr: 0, length: 4, lkey: a.mr.lkey };
  const wr = { wrId: 1, ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY };
  const expectEinval = (fn: () => void, what: string) => {
    const err = thrown(fn);
    t.ok(err instanceof InvalidArgumentError, `${what}: InvalidArgumentError`);
    t.equal(err?.code, 'EINVAL', `${what}: EINVAL`);
  };
  expectEinval(() => a.dev.postSend(a.qp, { ...wr, sgList: [sge, sge, sge] }), '3 SGEs on a QP of maxSendSge 2');
  expectEinval(() => a.dev.postSend(a.qp, { ...wr, sgList: [{ addr: 0, length: 33, lkey: a.mr.lkey }], sendFlags: SendFlags.INLINE }), '33 inline bytes > maxInlineData 32');
  expectEinval(() => a.dev.postSend(a.qp, { ...wr, sgList: [{ addr: 0, length: 17, lkey: a.mr.lkey }, { addr: 0, length: 16, lkey: a.mr.lkey }], sendFlags: SendFlags.INLINE }), 'inline total over 32 across SGEs');
  expectEinval(() => a.dev.postSend(a.qp, { ...wr, sgList: [{ addr: 0, length: -1, lkey: a.mr.lkey }] }), 'negative length');
  expectEinval(() => a.dev.postSend(a.qp, { ...wr, opcode: 0 }), 'RDMA write opcode');
  expectEinval(() => b.dev.postRecv(b.qp, { wrId: 1, sgList: [sge, sge, sge, sge] }), '4 receive SGEs on a QP of maxRecvSge 3');
  expectEinval(() => b.dev.postRecv(b.qp, { wrId: 1, sgList: [{ addr: 0, length: 1.5, lkey: b.mr.lkey }] }), 'fractional receive length');
  t.equal(a.dev.stats.send_wrs, 0, 'a rejected post is not counted');
  t.same(poll(a.dev, a.sendCq), [], 'and does not complete');
  t.equal(a.qp.sqOutstanding, 0, 'and takes no send-queue slot');
  t.equal(b.qp.rq.count, 0, 'no receive was queued by a rejected post');

  a.dev.postSend(a.qp, { ...wr, sgList: [{ addr: 0, length: 32, lkey: a.mr.lkey }], sendFlags: SendFlags.INLINE });
  t.match(poll(a.dev, a.sendCq), [{ vendorErr: EfaStatus.SUCCESS, byteLen: 32 }], '32 inline bytes are fine');
  const oneSge = await createUdEnd(a.dev, { pd: a.pd, cap: { maxSendSge: 1 } });
  const err = thrown(() => a.dev.postSend(oneSge.qp, { ...wr, sgList: [sge, sge] }));
  t.equal(err?.code, 'EINVAL', 'the QP cap (1), not only the device limit (2), bounds SGEs');
});

t.test('inline data is copied at post time', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair({ a: { cap: { maxInlineData: 32 } } });
  postRecv(b, 1);
  a.buf.write('inline!', 8192);
  sendBytes(a, ahAtoB, b, 1, text('inline!'), { sendFlags: SendFlags.INLINE });
  a.buf.write('CHANGED', 8192); // after the post, before delivery
  fabric.deliverAll();
  t.equal(b.buf.subarray(40, 47).toString(), 'inline!');
});

t.test('a corrupted datagram is dropped as rx_drop_bad_checksum', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  postRecv(b, 1);
  sendBytes(a, ahAtoB, b, 1, text('fragile payload'));
  fabric.corrupt(0, 45, 0x04);
  fabric.deliverAll();
  t.equal(b.dev.stats.rx_drop_bad_checksum, 1, 'rx_drop_bad_checksum');
  t.equal(b.dev.stats.rx_drops, 1);
  t.same(poll(b.dev, b.recvCq), [], 'no completion');
  t.equal(b.qp.rq.count, 1, 'the receive stays posted');
});

t.test('truncated, garbage or foreign-version datagrams are counted, never thrown', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  postRecv(b, 1);
  const sent: Buffer[] = [];
  sendBytes(a, ahAtoB, b, 1, text('0123456789'));
  sent.push(fabric.queued[0].buf);
  fabric.queued = [];
  const good = sent[0];

  const cases: Array<[string, Buffer, 'rx_drop_bad_header' | 'rx_drop_bad_version']> = [
    ['empty', Buffer.alloc(0), 'rx_drop_bad_header'],
    ['10 bytes', Buffer.alloc(10, 0xff), 'rx_drop_bad_header'],
    ['39 bytes of a real header', good.subarray(0, 39), 'rx_drop_bad_header'],
    ['real packet minus its last byte', good.subarray(0, good.length - 1), 'rx_drop_bad_header'],
    ['real packet plus a byte', Buffer.concat([good, Buffer.from([0])]), 'rx_drop_bad_header'],
    ['100 bytes of 0xA5', Buffer.alloc(100, 0xa5), 'rx_drop_bad_version'],
    ['HTTP request', Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + ' '.repeat(20)), 'rx_drop_bad_version'],
    ['version 2', (() => { const x = Buffer.from(good); x[OFF_VERSION] = WIRE_VERSION + 1; return x; })(), 'rx_drop_bad_version'],
    ['unknown type', (() => { const x = Buffer.from(good); x[3] = 200; return x; })(), 'rx_drop_bad_header'],
  ];
  t.equal(good.readUInt16BE(0), WIRE_MAGIC);
  for (const [what, buf, counter] of cases) {
    const before = b.dev.stats[counter];
    t.doesNotThrow(() => fabric.inject(b.dev, buf), `${what}: no throw`);
    t.equal(b.dev.stats[counter], before + 1, `${what}: counted in ${counter}`);
  }
  t.equal(b.dev.stats.rx_drops, cases.length, 'every one is a drop');
  t.equal(b.dev.stats.rx_pkts, cases.length, 'and was counted as received');
  t.same(poll(b.dev, b.recvCq), [], 'nothing completed');
  fabric.inject(b.dev, good);
  t.match(poll(b.dev, b.recvCq), [{ wrId: 1, vendorErr: EfaStatus.SUCCESS }], 'the device still works afterwards');
});

t.test('a datagram from a GID of another fabric is dropped as rx_drop_foreign_fabric', async (t) => {
  const { fabric, b } = await udPair({ fabric: new MemoryFabric({ fabricId: 0x1111 }) });
  postRecv(b, 1);
  // A twin fabric with the same layout: its packet names b's QP number and QKey, only the
  // sender GID's fabric id differs.
  const twin = await udPair({ fabric: new MemoryFabric({ fabricId: 0x2222 }) });
  t.equal(twin.b.qp.qpNum, b.qp.qpNum, 'same QP number on both fabrics');
  sendBytes(twin.a, twin.ahAtoB, twin.b, 1, text('from afar'));
  const pkt = twin.fabric.queued[0].buf;
  fabric.inject(b.dev, pkt);
  t.equal(b.dev.stats.rx_drop_foreign_fabric, 1, 'rx_drop_foreign_fabric');
  t.same(poll(b.dev, b.recvCq), [], 'no completion');
  // The same bytes from the right fabric are delivered: only the fabric id made the difference.
  const local = Buffer.alloc(40 + 9);
  local.write('from near', 40);
  finishUdPacket(local, 9, twin.a.qp.qpNum, b.qp.qpNum, DEFAULT_QKEY, undefined, fabric.devices[0].gid);
  fabric.inject(b.dev, local);
  t.match(poll(b.dev, b.recvCq), [{ wrId: 1, vendorErr: EfaStatus.SUCCESS }]);
});

t.test('loss, duplication and reordering reach the application as they happen', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  for (let i = 0; i < 6; i++) postRecv(b, 100 + i, i * 1000, 1000);
  for (let i = 0; i < 4; i++) sendBytes(a, ahAtoB, b, i, text(`m${i}`));
  fabric.drop(1); // m1 lost
  fabric.duplicate(0); // m0 twice
  fabric.swap(0, 3); // m3 first
  t.equal(fabric.deliverAll(), 4);
  const got = poll(b.dev, b.recvCq).map((w, i) => b.buf.subarray(i * 1000 + 40, i * 1000 + 40 + w.byteLen - 40).toString());
  t.same(got, ['m3', 'm0', 'm2', 'm0'], 'UD: lost, duplicated and reordered as the fabric did it');
  fabric.dropNext(1);
  sendBytes(a, ahAtoB, b, 9, text('gone'));
  t.equal(fabric.queued.length, 0, 'dropNext loses the next datagram before it is queued');
  t.equal(fabric.lost, 2);
});

t.test('counters match the traffic', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair();
  const sizes = [0, 1, 100, 1000, 8192];
  for (let i = 0; i < sizes.length; i++) postRecv(b, i, 0, 8232);
  postRecv(b, 99, 0, 8232); // one left over
  for (let i = 0; i < sizes.length; i++) {
    sendBytes(a, ahAtoB, b, i, Buffer.alloc(sizes[i], i), { addr: 0 });
    fabric.deliverAll();
    t.match(poll(b.dev, b.recvCq), [{ wrId: i, vendorErr: EfaStatus.SUCCESS, byteLen: 40 + sizes[i] }]);
  }
  const total = sizes.reduce((x, y) => x + y, 0);
  const n = sizes.length;
  const sa = a.dev.stats;
  const sb = b.dev.stats;
  t.equal(sa.tx_pkts, n, 'tx_pkts');
  t.equal(sa.tx_bytes, total + 40 * n, 'tx_bytes count the datagrams (40-byte header + payload)');
  t.equal(sa.send_wrs, n, 'send_wrs');
  t.equal(sa.send_bytes, total, 'send_bytes count the payload');
  t.equal(sb.rx_pkts, n, 'rx_pkts');
  t.equal(sb.rx_bytes, total + 40 * n, 'rx_bytes');
  t.equal(sb.recv_wrs, n + 1, 'recv_wrs count posted receives');
  t.equal(sb.recv_bytes, total, 'recv_bytes count the payload delivered');
  t.equal(sb.rx_drops, 0);
  t.equal(sa.rx_pkts + sb.tx_pkts, 0, 'nothing flowed the other way');
  const snapshot = await b.dev.queryStats();
  t.match(snapshot, { rx_pkts: n, recv_bytes: total, recv_wrs: n + 1 }, 'queryStats (GET_STATS) reports the same');
  t.equal(JSON.parse(JSON.stringify(b.dev.stats)).rx_bytes, total + 40 * n, 'stats serialise through toJSON');

  // A failed send is a work request but not a packet.
  a.dev.postSend(a.qp, { wrId: 1, sgList: [{ addr: 0, length: 4, lkey: 0xbad }], ah: ahAtoB, remoteQpn: b.qp.qpNum, remoteQkey: DEFAULT_QKEY });
  t.equal(sa.send_wrs, n + 1, 'send_wrs counts the failed send');
  t.equal(sa.tx_pkts, n, 'tx_pkts does not');
});
