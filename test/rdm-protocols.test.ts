/*
 * The RDM endpoint's message protocols at their boundaries: every size on either side of the
 * eager, medium and long-read thresholds goes through the protocol the provider would pick,
 * arrives intact, and is counted under that protocol on both sides.
 */
import t from 'tap';
import { FI_ADDR_UNSPEC } from '../src/rdm/rdm-peer';
import { RdmCqEntry, RdmCqErrEntry } from '../src/rdm/rdm-cq';
import { FI_EAVAIL } from '../src/rdm/fi-errno';
import { decodeReq, RdmPktType, ReqFields, type RdmProtocol } from '../src/rdm/rdm-wire';
import { OFF_HDR_LEN, PacketType } from '../src/wire/header';
import { rdmSim } from './helpers/rdm-sim';
import { pattern } from './helpers/rdm-scenario';


/** Reads completions from a CQ into a list until `want` arrived; errors are returned too. */
function drain(cq: { read(out: RdmCqEntry[], max?: number): number; readerr(out: RdmCqErrEntry): number }, into: RdmCqEntry[], errs: RdmCqErrEntry[]): void {
  const out = [new RdmCqEntry()];
  for (;;) {
    const n = cq.read(out, 1);
    if (n === 1) {
      const e = new RdmCqEntry();
      Object.assign(e, out[0]);
      into.push(e);
      continue;
    }
    if (n === -FI_EAVAIL) {
      const e = new RdmCqErrEntry();
      cq.readerr(e);
      errs.push(e);
      continue;
    }
    return;
  }
}

t.test('each size takes the protocol its threshold names, and arrives intact', async (t) => {
  const s = await rdmSim({ n: 2, seed: 3 });
  const [a, b] = s.eps;
  const eager = a.eagerMaxSize;
  const cases: Array<[number, RdmProtocol]> = [
    [0, 'eager'],
    [1, 'eager'],
    [eager, 'eager'],
    [eager + 1, 'medium'],
    [65536, 'medium'],
    [65537, 'longcts'],
    [1048575, 'longcts'],
    [1048576, 'longread'],
    [3 * 1048576 + 7, 'longread'],
  ];
  for (const tagged of [false, true]) {
    for (const [i, [len, proto]] of cases.entries()) {
      const before = { tx: a.stats.txMessages(proto), rx: b.stats.rxMessages(proto) };
      const msg = pattern(i + (tagged ? 100 : 0), len);
      const into = Buffer.alloc(len + 16);
      if (tagged) b.trecv(into, FI_ADDR_UNSPEC, 0x1234n + BigInt(i), 0n, `r${i}`);
      else b.recv(into, FI_ADDR_UNSPEC, `r${i}`);
      const rc = tagged ? a.tsend(msg, s.addr[0][1], 0x1234n + BigInt(i), `s${i}`) : a.send(msg, s.addr[0][1], `s${i}`);
      t.equal(rc, 0, 'posted');
      const sent: RdmCqEntry[] = [];
      const got: RdmCqEntry[] = [];
      const errs: RdmCqErrEntry[] = [];
      const ok = await s.run(() => {
        drain(a.cq, sent, errs);
        drain(b.cq, got, errs);
        return (sent.length === 1 && got.length === 1) || errs.length > 0;
      }, 5000);
      t.ok(ok, `${len} B ${tagged ? 'tagged' : 'untagged'} completed`);
      t.same(errs, [], 'no errors');
      t.equal(got[0]?.len, len, 'receive length');
      t.equal(got[0]?.srcAddr, s.addr[1][0], 'source is the sender');
      t.ok(into.subarray(0, len).equals(msg), `${len} B intact`);
      t.equal(a.stats.txMessages(proto), before.tx + 1, `${len} B sent as ${proto}`);
      t.equal(b.stats.rxMessages(proto), before.rx + 1, `${len} B received as ${proto}`);
    }
  }
  await a.close();
  await b.close();
});

t.test('medium segments are cut as the provider cuts them: 8-byte aligned, the remainder on the last', async (t) => {
  const s = await rdmSim({ n: 2, seed: 5 });
  const [a, b] = s.eps;
  const segs: Array<[number, number]> = [];
  const f = new ReqFields();
  s.sim.intercept = (p) => {
    if (p.info.type !== PacketType.SRD_DATA) return;
    const hdr = p.buf[OFF_HDR_LEN];
    const rdm = p.buf.subarray(hdr, hdr + p.info.payloadLen);
    if (rdm[0] === RdmPktType.MEDIUM_TAGRTM && decodeReq(rdm, rdm.length, f)) segs.push([f.segOffset, f.payloadLen]);
  };
  // Let the handshake finish first, so every segment has the 4-byte connid header (room 8156).
  const warm = Buffer.alloc(8);
  b.recv(Buffer.alloc(8));
  a.send(warm, s.addr[0][1]);
  const out = [new RdmCqEntry()];
  t.ok(await s.run(() => a.cq.read(out) === 1, 2000), 'warm-up message');
  t.ok(await s.run(() => b.cq.read(out) === 1 && a.statsSnapshot().handshakes_received === 1, 2000), 'handshake in');
  for (const [len, want] of [
    [20000, [[0, 6664], [6664, 6664], [13328, 6672]]],
    [65536, []],
  ] as Array<[number, Array<[number, number]>]>) {
    segs.length = 0;
    const msg = pattern(len, len);
    const into = Buffer.alloc(len);
    b.trecv(into, FI_ADDR_UNSPEC, 9n, 0n);
    a.tsend(msg, s.addr[0][1], 9n);
    t.ok(await s.run(() => b.cq.read(out) === 1, 5000), `${len} B received`);
    segs.sort((x, y) => x[0] - y[0]);
    const total = segs.reduce((n, [, l]) => n + l, 0);
    t.equal(total, len, `${len} B: the segments cover the message once`);
    if (len === 20000) t.same(segs, want, '20000 B: 6664, 6664, 6672');
    else t.ok(segs.every(([o, l], i) => o % 8 === 0 && (i === segs.length - 1 || l % 8 === 0)), `${len} B: offsets and all but the last length 8-byte aligned`);
    t.ok(into.equals(msg), `${len} B intact`);
  }
  await a.close();
  await b.close();
});
