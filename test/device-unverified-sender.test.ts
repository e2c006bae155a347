// Nothing is delivered from a sender before the control plane has confirmed that the GID it
// claims is leased to the endpoint it sends from. A server that hears from a client before it
// has an AH for it asks the daemon; meanwhile UD datagrams are held (a few) and SRD packets
// are dropped (the sender retransmits). A confirmation for another endpoint, or none, drops
// what was held.
import t from 'tap';
import { GRH_LENGTH, EfaStatus } from '../src/device/constants';
import type { Device } from '../src/device/device';
import { makeGid } from '../src/common/gid';
import { finishUdPacket } from '../src/ud/ud-packet';
import { createUdEnd, MemoryFabric, poll, postRecv, sendBytes, type UdEnd } from './helpers/memory-fabric';
import { createSrdEnd } from './helpers/sim-network';

async function pair(): Promise<{ fabric: MemoryFabric; a: UdEnd; b: UdEnd }> {
  const fabric = new MemoryFabric();
  const a = await createUdEnd(fabric.addDevice('a'));
  const b = await createUdEnd(fabric.addDevice('b'));
  return { fabric, a, b };
}

t.test('a UD datagram from a stranger waits for the confirmation, then is delivered', async (t) => {
  const { fabric, a, b } = await pair();
  const ah = await a.dev.createAh(a.pd, { gid: b.dev.gidText });
  // b has no AH for a: a is a stranger to b until the control plane vouches for it.
  fabric.slowLookups = [];
  postRecv(b, 1);
  sendBytes(a, ah, b, 1, Buffer.from('early'));
  fabric.deliverAll();
  t.same(poll(b.dev, b.recvCq), [], 'not delivered before the daemon answered');
  t.equal(b.dev.stats.rx_held_unverified, 1, 'held');
  t.equal(fabric.slowLookups?.length, 1, 'the daemon was asked once');
  t.equal(await fabric.answerLookups(), 1);
  const wcs = poll(b.dev, b.recvCq);
  t.equal(wcs.length, 1, 'delivered once the endpoint is confirmed');
  t.equal(wcs[0].vendorErr, EfaStatus.SUCCESS);
  t.equal(b.buf.toString('utf8', GRH_LENGTH, GRH_LENGTH + 5), 'early');
  t.equal(b.dev.stats.rx_drops, 0, 'nothing dropped');
  // From now on, no waiting.
  postRecv(b, 2);
  sendBytes(a, ah, b, 2, Buffer.from('later'));
  fabric.deliverAll();
  t.equal(poll(b.dev, b.recvCq).length, 1, 'the next one is delivered at once');
});

t.test('a stranger whose GID the daemon places elsewhere: what it sent is dropped, never delivered', async (t) => {
  const { fabric, a, b } = await pair();
  const ah = await a.dev.createAh(a.pd, { gid: b.dev.gidText });
  fabric.slowLookups = [];
  postRecv(b, 1);
  sendBytes(a, ah, b, 1, Buffer.from('spoof'));
  // The same bytes, from an endpoint that is not a's.
  const pkt = fabric.queued.shift();
  t.ok(pkt, 'a datagram was sent');
  fabric.inject(b.dev, (pkt as { buf: Buffer }).buf, '127.0.0.1:40999');
  t.equal(b.dev.stats.rx_held_unverified, 1, 'held while the daemon is asked');
  await fabric.answerLookups();
  t.same(poll(b.dev, b.recvCq), [], 'not delivered: the daemon leased that GID to another endpoint');
  t.equal(b.dev.stats.rx_drop_unverified, 1, 'dropped as unverified');
  fabric.inject(b.dev, (pkt as { buf: Buffer }).buf, '127.0.0.1:40999');
  t.equal(b.dev.stats.rx_drop_unknown_endpoint, 1, 'and later copies from there are refused at once');
  t.same(poll(b.dev, b.recvCq), [], 'still nothing delivered');
});

t.test('a GID the daemon does not know: held datagrams dropped; a bounded number held meanwhile', async (t) => {
  const { fabric, b } = await pair();
  fabric.slowLookups = [];
  postRecv(b, 1);
  // Twenty datagrams claiming an index the daemon never leased: at most 8 are held.
  const forged = Buffer.alloc(40 + 4);
  finishUdPacket(forged, 4, 1, b.qp.qpNum, b.qkey, undefined, makeGid(fabric.fabricId, 77));
  for (let i = 0; i < 20; i++) fabric.inject(b.dev, forged, '127.0.0.1:41000');
  t.equal(b.dev.stats.rx_held_unverified, 8, 'eight held');
  t.equal(b.dev.stats.rx_drop_unverified, 12, 'the rest dropped at once');
  await fabric.answerLookups();
  t.same(poll(b.dev, b.recvCq), [], 'none delivered');
  t.equal(b.dev.stats.rx_drop_unverified, 20, 'the held ones dropped once the daemon said no');
  t.equal(b.dev.stats.rx_drops, 20, 'every one counted');
});

t.test('SRD from a stranger is dropped until confirmed, then the sender\'s retransmission is delivered once', async (t) => {
  const fabric = new MemoryFabric();
  const make = async (dev: Device) => {
    const cq = await dev.createCq({ cqe: 64 });
    return { ...(await createSrdEnd(dev, { qkey: 7, bufSize: 4096, maxSendWr: 8, maxRecvWr: 8, sendCq: cq, recvCq: cq })), cq };
  };
  const a = await make(fabric.addDevice('a'));
  const b = await make(fabric.addDevice('b'));
  const ah = await a.dev.createAh(a.pd, { gid: b.dev.gidText });
  fabric.slowLookups = [];
  b.dev.postRecv(b.qp, { wrId: 1, sgList: [{ addr: 0, length: 1024, lkey: b.mr.lkey }] });
  a.buf.write('srd-hello', 2048);
  a.dev.postSend(a.qp, { wrId: 9, sgList: [{ addr: 2048, length: 9, lkey: a.mr.lkey }], ah, remoteQpn: b.qp.qpNum, remoteQkey: 7 });
  fabric.deliverAll();
  t.equal(b.dev.stats.rx_drop_unverified, 1, 'the first copy is dropped: b does not know a yet');
  t.same(poll(b.dev, b.cq), [], 'nothing delivered');
  await fabric.answerLookups();
  // a's RTO fires and it resends.
  fabric.now += 50;
  a.dev.onTimer();
  fabric.deliverAll();
  const recv = poll(b.dev, b.cq);
  t.equal(recv.length, 1, 'the retransmission is delivered');
  t.equal(b.buf.toString('utf8', 0, 9), 'srd-hello');
  fabric.now += 2; // past the ack hold time: b's coalesced ack goes out
  b.dev.onTimer();
  fabric.deliverAll();
  const sent = poll(a.dev, a.cq);
  t.match(sent, [{ wrId: 9, status: EfaStatus.SUCCESS }], 'and the send completes SUCCESS');
});

t.test('a device the control plane announced (list at open, peer_up later) is heard without a lookup', async (t) => {
  const { fabric, a, b } = await pair();
  const ah = await a.dev.createAh(a.pd, { gid: b.dev.gidText });
  fabric.slowLookups = [];
  const [host, port] = fabric.endpointOf(a.dev).split(':');
  b.dev.learnEndpoint(a.dev.gidText, { host, port: Number(port) }, 0, 'a');
  postRecv(b, 1);
  sendBytes(a, ah, b, 1, Buffer.from('known'));
  fabric.deliverAll();
  t.equal(poll(b.dev, b.recvCq).length, 1, 'delivered at once');
  t.equal(fabric.slowLookups?.length, 0, 'no lookup was needed');
  t.equal(b.dev.stats.rx_held_unverified, 0, 'nothing held');
});
