// Doorbell batching between two real devices on loopback: a burst of SRD sends shares
// datagrams (the counters show it), every message arrives once and intact, faults still hit
// packets (loss=5% drops about 5% of SRD packets, not 5% of datagrams), and a device with
// batching off still understands a peer that batches.
import t, { type Test } from 'tap';
import { startDaemon } from '../src/control/server';
import { openDevice, type EfaDevice } from '../src/open-device';
import { silentLogger } from '../src/common/logger';
import { AccessFlags, QpState, QpType, WcOpcode, WcStatus } from '../src/device/constants';
import { WorkCompletion } from '../src/device/work-completion';

const QKEY = 0x77;
const MSG = 256;
const RECV = 512;

async function pair(t: Test, senderCoalesce: number, receiverCoalesce: number, faults: string | null): Promise<{ a: EfaDevice; b: EfaDevice }> {
  const daemon = await startDaemon({ port: 0, statePath: null, logger: silentLogger() });
  t.teardown(() => daemon.close());
  const addr = { host: '127.0.0.1', port: daemon.port };
  const a = await openDevice({ daemon: addr, name: 'co0', rank: 0, logger: silentLogger(), faults, capture: null, coalesce: senderCoalesce });
  const b = await openDevice({ daemon: addr, name: 'co1', rank: 1, logger: silentLogger(), faults: null, capture: null, coalesce: receiverCoalesce });
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  return { a, b };
}

/** Streams `n` messages from a to b in bursts of `burst` posts per run; resolves with what b received. */
async function stream(a: EfaDevice, b: EfaDevice, n: number, burst: number): Promise<{ seen: Map<number, number>; corrupt: number }> {
  const setup = async (d: EfaDevice) => {
    const pd = await d.allocPd();
    const cq = await d.createCq({ cqe: 4096 });
    const qp = await d.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 512, maxRecvWr: RECV } });
    const buf = Buffer.alloc(RECV * MSG);
    const mr = await d.regMr(pd, buf, AccessFlags.LOCAL_WRITE);
    await d.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
    await d.modifyQp(qp, { qpState: QpState.RTR });
    await d.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
    return { pd, cq, qp, buf, mr };
  };
  const A = await setup(a);
  const B = await setup(b);
  for (let i = 0; i < RECV; i++) b.postRecv(B.qp, { wrId: i, sgList: [{ addr: i * MSG, length: MSG, lkey: B.mr.lkey }] });
  const ah = await a.createAh(A.pd, { gid: b.gidText });
  const seen = new Map<number, number>();
  let corrupt = 0;
  let sent = 0;
  let done = 0;
  const wcs = Array.from({ length: 64 }, () => new WorkCompletion());
  const deadline = Date.now() + 60_000;
  await new Promise<void>((resolve, reject) => {
    const tick = (): void => {
      if (Date.now() > deadline) return reject(new Error(`stream stuck: ${seen.size} of ${n} received, ${done} sends done`));
      // Posts of one run: the coalescer's unit of batching.
      for (let k = 0; k < burst && sent < n && sent - done < 256; k++, sent++) {
        const off = (sent % 256) * MSG;
        A.buf.fill(sent & 0xff, off, off + MSG);
        A.buf.writeUInt32BE(sent, off);
        a.postSend(A.qp, { wrId: sent, sgList: [{ addr: off, length: MSG, lkey: A.mr.lkey }], ah, remoteQpn: B.qp.qpNum, remoteQkey: QKEY });
      }
      for (let got = a.pollCq(A.cq, 64, wcs); got > 0; got = a.pollCq(A.cq, 64, wcs)) {
        for (let i = 0; i < got; i++) {
          if (wcs[i].status !== WcStatus.SUCCESS) return reject(new Error(`send ${wcs[i].wrId} failed: ${wcs[i].status}`));
          done++;
        }
      }
      for (let got = b.pollCq(B.cq, 64, wcs); got > 0; got = b.pollCq(B.cq, 64, wcs)) {
        for (let i = 0; i < got; i++) {
          const wc = wcs[i];
          if (wc.opcode !== WcOpcode.RECV || wc.status !== WcStatus.SUCCESS) return reject(new Error(`receive failed: ${wc.status}`));
          const off = wc.wrId * MSG;
          const id = B.buf.readUInt32BE(off);
          let ok = wc.byteLen === MSG;
          for (let j = 4; j < MSG && ok; j++) if (B.buf[off + j] !== (id & 0xff)) ok = false;
          if (!ok) corrupt++;
          seen.set(id, (seen.get(id) ?? 0) + 1);
          b.postRecv(B.qp, { wrId: wc.wrId, sgList: [{ addr: off, length: MSG, lkey: B.mr.lkey }] });
        }
      }
      if (seen.size === n && done === n) return resolve();
      setImmediate(tick);
    };
    tick();
  });
  return { seen, corrupt };
}

function checkOnce(t: Test, seen: Map<number, number>, n: number): void {
  let twice = 0;
  for (const c of seen.values()) if (c !== 1) twice++;
  t.equal(seen.size, n, `all ${n} messages arrived`);
  t.equal(twice, 0, 'none twice');
}

t.test('a burst of SRD sends shares datagrams; every message once, intact', async (t) => {
  const { a, b } = await pair(t, 65000, 65000, null);
  const n = 4000;
  const { seen, corrupt } = await stream(a, b, n, 32);
  checkOnce(t, seen, n);
  t.equal(corrupt, 0, 'none corrupt');
  const s = a.statsSnapshot();
  t.ok(s.tx_dgrams < s.tx_pkts / 2, `fewer than half as many datagrams (${s.tx_dgrams}) as packets (${s.tx_pkts})`);
  t.ok(s.packets_per_dgram > 2, `packets_per_dgram ${s.packets_per_dgram}`);
  t.ok(s.tx_bundles > 0, 'bundles sent');
  t.equal(b.statsSnapshot().rx_bundles, s.tx_bundles, 'and every one received as one');
});

t.test('loss=5% drops packets, not datagrams; SRD recovers every message', async (t) => {
  const { a, b } = await pair(t, 65000, 65000, 'loss=5%,seed=11');
  const n = 4000;
  const { seen } = await stream(a, b, n, 32);
  checkOnce(t, seen, n);
  const s = a.statsSnapshot();
  const rate = s.tx_injected_loss / s.tx_pkts;
  t.ok(rate > 0.03 && rate < 0.07, `injected loss ${(rate * 100).toFixed(2)}% of the ${s.tx_pkts} packets`);
  t.ok(s.tx_dgrams < s.tx_pkts / 2, `while datagrams were shared (${s.tx_dgrams} for ${s.tx_pkts})`);
});

t.test('a receiver with batching off splits the bundles of a peer that batches', async (t) => {
  const { a, b } = await pair(t, 65000, 0, null);
  const n = 2000;
  const { seen } = await stream(a, b, n, 32);
  checkOnce(t, seen, n);
  t.ok(b.statsSnapshot().rx_bundles > 0, 'bundles arrived and were split');
  t.equal(b.statsSnapshot().tx_bundles, 0, 'and it sent none itself');
});
