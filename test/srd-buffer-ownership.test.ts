// A send buffer belongs to the socket from the moment it is handed over until the socket says
// it is done with it (a send queued in a full socket buffer is read later). Until then SRD
// neither rewrites it for a retransmission nor returns it to the pool for another message,
// even once the message was acknowledged.
import t from 'tap';
import { makeGid } from '../src/common/gid';
import { EfaStatus } from '../src/device/constants';
import { Device } from '../src/device/device';
import { WorkCompletion } from '../src/device/work-completion';
import { createSrdEnd } from './helpers/sim-network';

interface Handed {
  buf: Buffer;
  len: number;
  /** The bytes as they were when handed over. */
  snapshot: Buffer;
  onSent: (() => void) | null;
}

async function rig() {
  let now = 1000;
  const handed: Handed[] = [];
  const toB: Buffer[] = [];
  const toA: Buffer[] = [];
  const FABRIC = 0x0efa0bbb;
  const endpoints = { a: { host: '127.0.0.1', port: 46001 }, b: { host: '127.0.0.1', port: 46002 } };
  const resolver = (gid: string) => {
    const which = gid.endsWith(':1') ? 'a' : 'b';
    return { name: which, gid, ahn: which === 'a' ? 1 : 2, endpoint: endpoints[which], up: true };
  };
  // a's socket holds on to what it is given; the test decides when it lets go.
  const a = new Device({
    name: 'a',
    gid: makeGid(FABRIC, 1),
    clock: () => now,
    resolver,
    transport: {
      sendPacket: (buf, len, _h, _p, onSent) => {
        handed.push({ buf, len, snapshot: Buffer.from(buf.subarray(0, len)), onSent: onSent ?? null });
        toB.push(Buffer.from(buf.subarray(0, len)));
      },
    },
  });
  const b = new Device({
    name: 'b',
    gid: makeGid(FABRIC, 2),
    clock: () => now,
    resolver,
    transport: { sendPacket: (buf, len, _h, _p, onSent) => (onSent?.(), toA.push(Buffer.from(buf.subarray(0, len)))) },
  });
  const setup = async (dev: Device) => {
    const cq = await dev.createCq({ cqe: 64 });
    return { ...(await createSrdEnd(dev, { qkey: 5, bufSize: 8192, maxSendWr: 16, maxRecvWr: 16, sendCq: cq, recvCq: cq })), cq };
  };
  const ea = await setup(a);
  const eb = await setup(b);
  const ah = await a.createAh(ea.pd, { gid: b.gidText });
  await b.createAh(eb.pd, { gid: a.gidText });
  const send = (wrId: number, text: string) => {
    ea.buf.write(text, 4096);
    a.postSend(ea.qp, { wrId, sgList: [{ addr: 4096, length: text.length, lkey: ea.mr.lkey }], ah, remoteQpn: eb.qp.qpNum, remoteQkey: 5 });
  };
  const flush = () => {
    for (let p = toB.shift(); p !== undefined; p = toB.shift()) b.handleDatagram(p, endpoints.a.host, endpoints.a.port);
    now += 2;
    b.onTimer(); // coalesced acks out
    for (let p = toA.shift(); p !== undefined; p = toA.shift()) a.handleDatagram(p, endpoints.b.host, endpoints.b.port);
  };
  const wcs: WorkCompletion[] = [];
  const sendCompletions = () => {
    const out: number[] = [];
    for (let n = a.pollCq(ea.cq, 16, wcs); n > 0; n = a.pollCq(ea.cq, 16, wcs)) for (let i = 0; i < n; i++) out.push(wcs[i].vendorErr);
    return out;
  };
  for (let i = 0; i < 8; i++) b.postRecv(eb.qp, { wrId: i, sgList: [{ addr: i * 1024, length: 1024, lkey: eb.mr.lkey }] });
  return { a, b, handed, send, flush, sendCompletions, advance: (ms: number) => (now += ms), toB };
}

t.test('an acknowledged message\'s buffer is not reused while the socket still holds it', async (t) => {
  const r = await rig();
  r.send(1, 'first message');
  t.equal(r.handed.length, 1);
  t.ok(r.handed[0].onSent !== null, 'SRD data asks to be told when the socket is done');
  r.flush();
  t.same(r.sendCompletions(), [EfaStatus.SUCCESS], 'the message was acknowledged');
  // The socket has not let go of the first buffer: more messages must use other buffers.
  for (let i = 2; i < 6; i++) {
    r.send(i, `message number ${i}`);
    r.flush();
  }
  t.same(r.sendCompletions(), [0, 0, 0, 0], 'four more acknowledged');
  const first = r.handed[0];
  t.ok(r.handed.slice(1).every((h) => h.buf !== first.buf), 'none of them went out in the buffer the socket still holds');
  t.same(first.buf.subarray(0, first.len), first.snapshot, 'whose bytes are untouched');
  // Once the socket lets go, the buffer may serve again.
  first.onSent?.();
  for (const h of r.handed.slice(1)) h.onSent?.();
  r.send(6, 'after release');
  t.ok(r.handed.slice(0, 5).some((h) => h.buf === r.handed[5].buf), 'a released buffer is reused');
});

t.test('a copy still in the socket is not rewritten for a retransmission', async (t) => {
  const r = await rig();
  r.send(1, 'lost and held');
  r.toB.length = 0; // the first copy is lost on the way ...
  const held = r.handed[0]; // ... while the socket still holds the buffer
  r.advance(100);
  r.a.onTimer();
  t.equal(r.handed.length, 1, 'its RTO passed but nothing was resent: the copy has not even left');
  t.same(held.buf.subarray(0, held.len), held.snapshot, 'and its bytes were not rewritten');
  held.onSent?.();
  r.advance(100);
  r.a.onTimer();
  t.equal(r.handed.length, 2, 'once the socket let go, the next RTO resends it');
  t.equal(r.handed[1].buf, held.buf, 'from the same buffer');
  r.handed[1].onSent?.();
  r.flush();
  t.same(r.sendCompletions(), [EfaStatus.SUCCESS], 'delivered and acknowledged');
});
