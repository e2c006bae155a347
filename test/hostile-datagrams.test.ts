// Two real devices (UDP sockets on 127.0.0.1, a real daemon) exchange a stream of SRD
// messages while sockets the fabric does not know blast the receiver's UDP port with garbage:
// random bytes, truncated headers, wrong and huge lengths, valid headers with unknown QPNs and
// wrong Q_Keys, garbage SRD sequence numbers and sessions, foreign fabrics, bad CRCs. Every
// real message must arrive exactly once, every send must succeed, the garbage must be dropped
// and counted by cause, and the heap must stay flat.
import { createSocket, type Socket } from 'node:dgram';
import t from 'tap';
import { makeGid, gidDeviceIndex, gidFabricId } from '../src/common/gid';
import { silentLogger } from '../src/common/logger';
import { startDaemon } from '../src/control/server';
import { AccessFlags, QpState, QpType } from '../src/device/constants';
import type { QueuePair } from '../src/device/queue-pair';
import type { AddressHandle } from '../src/device/address-handle';
import type { CompletionQueue } from '../src/device/completion-queue';
import type { MemoryRegion } from '../src/device/memory-region';
import { WcOpcode, EfaStatus, WorkCompletion } from '../src/index';
import { openDevice, type EfaDevice } from '../src/open-device';
import { encodeHeader, PacketType, sealPacket } from '../src/wire/header';
import { SRD_ACK_HDR_LEN, SRD_DATA_HDR_LEN, SRD_NAK_HDR_LEN, writeSrdAck, writeSrdData, writeSrdNak } from '../src/wire/srd-header';

const QKEY = 0x5151;
const MESSAGES = 3000;
const MAX_MESSAGES = 1_000_000;
const MSG_LEN = 64;
const RECV_SLOTS = 512;
const SLOT = 256;
const BLAST_MS = 2000;
const BLAST_MAX = 200_000;

interface End {
  dev: EfaDevice;
  cq: CompletionQueue;
  qp: QueuePair;
  buf: Buffer;
  mr: MemoryRegion;
}

async function makeEnd(daemonPort: number, name: string): Promise<End> {
  const dev = await openDevice({ name, daemon: { host: '127.0.0.1', port: daemonPort }, rank: null, faults: null, capture: null, logger: silentLogger() });
  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: 4096 });
  const qp = await dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 256, maxRecvWr: RECV_SLOTS } });
  const buf = Buffer.alloc(RECV_SLOTS * SLOT + 64 * MSG_LEN);
  const mr = await dev.regMr(pd, buf, AccessFlags.LOCAL_WRITE);
  await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
  await dev.modifyQp(qp, { qpState: QpState.RTR });
  await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
  return { dev, cq, qp, buf, mr };
}

/** A small seeded PRNG (mulberry32), so a failing blast can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  };
}

const KINDS = [
  'random',
  'truncated',
  'wrong_length',
  'huge_length',
  'unknown_qpn',
  'wrong_qkey',
  'garbage_seq',
  'garbage_ack',
  'foreign_fabric',
  'bad_crc',
  'bad_version',
] as const;
type Kind = (typeof KINDS)[number];

/**
 * Builds hostile datagrams aimed at `target`. Fake senders claim device indices of the real
 * fabric that no device holds (`fakeIndex`), never the real sender's index.
 */
function makeBlaster(seed: number, fabricId: number, target: { qpn: number; incarnation: number }, realIndices: number[]) {
  const rnd = prng(seed);
  const scratch = Buffer.alloc(2048);
  const fakeIndex = (): number => {
    // A bounded set of fake peers (the receiver keeps per-peer state) plus, now and then, any index.
    let i = rnd() % 8 === 0 ? rnd() : 1000 + (rnd() % 64);
    while (realIndices.includes(i)) i++;
    return i >>> 0;
  };
  const srdData = (qpn: number, qkey: number, payload: number, gidFabric = fabricId): number => {
    const len = SRD_DATA_HDR_LEN + payload;
    encodeHeader(scratch, PacketType.SRD_DATA, rnd() & 3, SRD_DATA_HDR_LEN, rnd() & 0xffff, qpn, payload, qkey, rnd(), makeGid(gidFabric, fakeIndex()));
    // Garbage sessions, PSNs and window starts; dest incarnation right, zero, or wrong.
    const dest = [0, target.incarnation, rnd()][rnd() % 3];
    writeSrdData(scratch, rnd() % 4 === 0 ? 1 + (rnd() % 3) : rnd(), rnd() % 2 === 0 ? rnd() % 512 : rnd(), rnd() % 2 === 0 ? rnd() % 512 : rnd(), rnd(), dest);
    for (let i = SRD_DATA_HDR_LEN; i < len; i++) scratch[i] = rnd() & 0xff;
    sealPacket(scratch, len);
    return len;
  };
  const counts: Record<Kind, number> = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  /** Writes the next datagram into the returned buffer; returns its length. */
  const next = (): [Buffer, number] => {
    const kind = KINDS[rnd() % KINDS.length];
    counts[kind]++;
    let len: number;
    switch (kind) {
      case 'random':
        len = rnd() % 300;
        for (let i = 0; i < len; i++) scratch[i] = rnd() & 0xff;
        break;
      case 'truncated':
        len = srdData(target.qpn, QKEY, 16);
        len = rnd() % 40; // a cut base header
        break;
      case 'wrong_length': {
        len = srdData(target.qpn, QKEY, 32);
        const claimed = (32 + 1 + (rnd() % 100)) & 0xffff;
        scratch[10] = claimed >> 8;
        scratch[11] = claimed & 0xff;
        sealPacket(scratch, len);
        break;
      }
      case 'huge_length':
        len = srdData(target.qpn, QKEY, 8);
        scratch[10] = 0xff;
        scratch[11] = 0xff;
        scratch[5] = rnd() & 0xff;
        sealPacket(scratch, len);
        break;
      case 'unknown_qpn':
        if (rnd() % 2 === 0) {
          len = srdData((target.qpn + 1 + (rnd() % 1000)) & 0xffff, QKEY, 16);
        } else {
          len = 40 + 16;
          encodeHeader(scratch, PacketType.UD_SEND, 0, 40, 1, (target.qpn + 1 + (rnd() % 1000)) & 0xffff, 16, QKEY, 0, makeGid(fabricId, fakeIndex()));
          sealPacket(scratch, len);
        }
        break;
      case 'wrong_qkey':
        len = srdData(target.qpn, (QKEY + 1 + (rnd() % 0xffff)) >>> 0, 16);
        break;
      case 'garbage_seq':
        len = srdData(target.qpn, QKEY, rnd() % 128);
        break;
      case 'garbage_ack':
        if (rnd() % 2 === 0) {
          len = SRD_ACK_HDR_LEN;
          encodeHeader(scratch, PacketType.SRD_ACK, 0, len, 0, 0, 0, 0, 0, makeGid(fabricId, fakeIndex()));
          writeSrdAck(scratch, rnd(), rnd(), rnd(), rnd(), rnd());
          for (let i = 60; i < 76; i++) scratch[i] = rnd() & 0xff;
        } else {
          len = SRD_NAK_HDR_LEN;
          encodeHeader(scratch, PacketType.SRD_NAK, 0, len, 0, 0, 0, 0, 0, makeGid(fabricId, fakeIndex()));
          writeSrdNak(scratch, rnd(), rnd(), rnd() & 0xff, rnd());
        }
        sealPacket(scratch, len);
        break;
      case 'foreign_fabric':
        len = srdData(target.qpn, QKEY, 16, (fabricId ^ (1 + (rnd() & 0xffff))) >>> 0);
        break;
      case 'bad_crc': {
        len = srdData(target.qpn, QKEY, rnd() % 64);
        const bit = rnd() % (len * 8);
        scratch[bit >> 3] ^= 0x80 >> (bit & 7);
        break;
      }
      case 'bad_version':
        len = srdData(target.qpn, QKEY, 16);
        if (rnd() % 2 === 0) scratch[2] ^= 1 + (rnd() % 255);
        else scratch[rnd() % 2] ^= 1 << rnd() % 8;
        sealPacket(scratch, len);
        break;
    }
    return [scratch, len];
  };
  return { next, counts };
}

interface TrafficResult {
  sendStatus: Record<number, number>;
  posted: number;
  received: number;
  duplicates: number;
  corrupt: number;
  /** Receive completions whose payload is not one of A's messages: forged datagrams the device accepted. */
  forged: number;
  recvErrors: number[];
  seen: Uint8Array;
}

/**
 * Streams numbered messages A -> B, 64 in flight, at least MESSAGES of them and on until
 * `keepGoing()` turns false; resolves once every send has completed and every message arrived.
 * B reposts each receive as it completes.
 */
function runTraffic(a: End, b: End, ah: AddressHandle, keepGoing: () => boolean): Promise<TrafficResult> {
  const r: TrafficResult = { sendStatus: {}, posted: 0, received: 0, duplicates: 0, corrupt: 0, forged: 0, recvErrors: [], seen: new Uint8Array(MAX_MESSAGES) };
  let sendDone = 0;
  const wcs: WorkCompletion[] = [];
  return new Promise<TrafficResult>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(`traffic stalled: posted ${r.posted}, send completions ${sendDone}, received ${r.received}`)), 60_000);
    const spin = (): void => {
      try {
        const failed = sendDone - (r.sendStatus[EfaStatus.SUCCESS] ?? 0);
        while (failed === 0 && r.posted < MAX_MESSAGES && (r.posted < MESSAGES || keepGoing()) && r.posted - sendDone < 64) {
          const seq = r.posted;
          const off = RECV_SLOTS * SLOT + (seq % 64) * MSG_LEN;
          a.buf.writeUInt32BE(seq, off);
          a.buf.fill(seq & 0xff, off + 4, off + MSG_LEN);
          a.dev.postSend(a.qp, { wrId: seq, sgList: [{ addr: off, length: MSG_LEN, lkey: a.mr.lkey }], ah, remoteQpn: b.qp.qpNum, remoteQkey: QKEY });
          r.posted++;
        }
        let n = a.dev.pollCq(a.cq, 64, wcs);
        for (let i = 0; i < n; i++) {
          r.sendStatus[wcs[i].vendorErr] = (r.sendStatus[wcs[i].vendorErr] ?? 0) + 1;
          sendDone++;
        }
        n = b.dev.pollCq(b.cq, 64, wcs);
        for (let i = 0; i < n; i++) {
          const wc = wcs[i];
          if (wc.opcode !== WcOpcode.RECV) continue;
          const slot = wc.wrId;
          if (wc.vendorErr !== EfaStatus.SUCCESS) r.recvErrors.push(wc.vendorErr);
          else {
            const off = slot * SLOT;
            const seq = b.buf.readUInt32BE(off);
            if (wc.byteLen !== MSG_LEN || seq >= r.posted) r.forged++;
            else if (b.buf[off + MSG_LEN - 1] !== (seq & 0xff) || b.buf[off + 4] !== (seq & 0xff)) r.corrupt++;
            else if (r.seen[seq]++ !== 0) r.duplicates++;
            else r.received++;
          }
          b.dev.postRecv(b.qp, { wrId: slot, sgList: [{ addr: slot * SLOT, length: SLOT, lkey: b.mr.lkey }] });
        }
        const stopped = r.posted >= MAX_MESSAGES || (r.posted >= MESSAGES && !keepGoing()) || failed > 0;
        if (stopped && sendDone === r.posted && (r.received >= r.posted || (r.sendStatus[EfaStatus.SUCCESS] ?? 0) < sendDone)) {
          clearTimeout(guard);
          resolve(r);
          return;
        }
        setImmediate(spin);
      } catch (err) {
        clearTimeout(guard);
        reject(err);
      }
    };
    spin();
  });
}

t.test('real SRD traffic survives a blast of hostile datagrams; the garbage is dropped and counted', async (t) => {
  const daemon = await startDaemon({ port: 0, logger: silentLogger() });
  t.teardown(() => daemon.close());
  const a = await makeEnd(daemon.port, `hostile-a-${process.pid}`);
  t.teardown(() => a.dev.close());
  const b = await makeEnd(daemon.port, `hostile-b-${process.pid}`);
  t.teardown(() => b.dev.close());
  const ah = await a.dev.createAh((a.qp as any).pd, { gid: b.dev.gidText });

  // Unknown sockets: not registered with the daemon, never leased a GID.
  const sockets: Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const s = createSocket('udp4');
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
    sockets.push(s);
  }
  t.teardown(() => Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r())))));

  // B: keep every receive slot posted.
  for (let i = 0; i < RECV_SLOTS; i++) b.dev.postRecv(b.qp, { wrId: i, sgList: [{ addr: i * SLOT, length: SLOT, lkey: b.mr.lkey }] });

  const statsBefore = { ...b.dev.stats.toJSON() };
  const aTxBefore = a.dev.stats.tx_pkts;
  const heapBefore = process.memoryUsage().heapUsed;

  // ------------------------------------------------------------------ blaster
  const blaster = makeBlaster(0xb1a57, gidFabricId(b.dev.gid), { qpn: b.qp.qpNum, incarnation: b.dev.incarnation }, [
    gidDeviceIndex(a.dev.gid),
    gidDeviceIndex(b.dev.gid),
  ]);
  let blasted = 0;
  let blastMs = 0;
  let sendErrors = 0;
  let inFlight = 0;
  const target = b.dev.endpoint;
  const blastStart = performance.now();
  const blastDone = new Promise<void>((resolve) => {
    const onSent = (err: Error | null): void => {
      inFlight--;
      if (err) sendErrors++;
    };
    const tick = (): void => {
      if (performance.now() - blastStart >= BLAST_MS || blasted >= BLAST_MAX) {
        if (inFlight === 0) {
          blastMs = performance.now() - blastStart;
          resolve();
        }
        else setImmediate(tick);
        return;
      }
      // A batch per turn, so the devices' own I/O still gets the event loop.
      for (let i = 0; i < 200 && inFlight < 2000 && blasted < BLAST_MAX; i++) {
        const [buf, len] = blaster.next();
        inFlight++;
        blasted++;
        sockets[blasted % sockets.length].send(Buffer.from(buf.subarray(0, len)), target.port, target.host, onSent);
      }
      setImmediate(tick);
    };
    tick();
  });

  // ------------------------------------------------------------------ real traffic A -> B
  let blastFinished = false;
  void blastDone.then(() => (blastFinished = true));
  const trafficDone = runTraffic(a, b, ah, () => !blastFinished);
  const [, traffic] = await Promise.all([blastDone, trafficDone]);
  const { sendStatus, posted, received, duplicates, corrupt, forged, recvErrors, seen } = traffic;
  const totalMs = performance.now() - blastStart;
  const heapAfter = process.memoryUsage().heapUsed;

  // The real traffic: everything arrived, exactly once, intact; every send succeeded.
  t.ok(posted >= MESSAGES, `A streamed ${posted} messages through the blast`);
  t.equal(sendStatus[EfaStatus.SUCCESS] ?? 0, posted, `every send completed SUCCESS (statuses ${JSON.stringify(sendStatus)})`);
  t.equal(received, posted, 'every message was received');
  t.equal(duplicates, 0, 'no message twice');
  t.equal(corrupt, 0, 'no message corrupt');
  t.same(recvErrors, [], 'no receive error completions');
  // DESIGN §3: "packets from endpoints the fabric does not know ... are dropped and counted".
  t.equal(forged, 0, 'no datagram from a socket the fabric does not know reached the application');
  t.equal(seen.subarray(0, posted).every((v) => v === 1), true, 'each sequence number exactly once');

  // The garbage: dropped and counted by cause.
  const after = b.dev.stats.toJSON();
  const delta = (k: string): number => after[k] - statsBefore[k];
  const causes = Object.keys(after).filter((k) => k.startsWith('rx_drop_'));
  const causeSum = causes.reduce((s, k) => s + delta(k), 0);
  t.equal(delta('rx_drops'), causeSum, 'rx_drops grew by the sum of its causes');
  // Well-formed packets from GIDs the daemon never leased get no further than the source
  // check (rx_drop_unverified, or rx_drop_unknown_endpoint once too many strangers wait).
  for (const k of ['rx_drop_bad_header', 'rx_drop_bad_checksum', 'rx_drop_bad_version', 'rx_drop_foreign_fabric', 'rx_drop_unverified']) {
    t.ok(delta(k) > 0, `${k} counted (${delta(k)})`);
  }
  t.equal(delta('rx_drop_stale') + delta('rx_drop_window') + delta('rx_drop_wrong_incarnation'), 0, 'no stranger reached the SRD engine');
  const fromA = a.dev.stats.tx_pkts - aTxBefore;
  const received_ = delta('rx_pkts');
  t.ok(received_ <= blasted + fromA, `B received no more than was sent to it (${received_} <= ${blasted} + ${fromA})`);
  // Kernel buffers may drop some of the blast; most of it must arrive and be counted.
  t.ok(received_ - fromA > Math.min(1000, blasted / 100), `the blast reached the device (${received_ - fromA} of ${blasted})`);
  t.ok(delta('rx_drops') > (received_ - fromA) / 2, `most of what arrived was dropped and counted (${delta('rx_drops')})`);
  t.notOk(a.dev.closed || b.dev.closed, 'both devices still open');
  t.equal(sendErrors, 0, 'the blaster never failed to send');

  const growth = heapAfter - heapBefore;
  t.ok(growth < 50 * 1024 * 1024, `heap stayed flat: +${(growth / 1048576).toFixed(1)} MB`);
  t.comment(
    `forged deliveries ${forged}; blasted ${blasted} datagrams in ${blastMs.toFixed(0)} ms (traffic ${posted} messages in ${totalMs.toFixed(0)} ms) (${JSON.stringify(blaster.counts)}); B rx_pkts +${received_}, rx_drops +${delta('rx_drops')}: ` +
      causes
        .filter((k) => delta(k) > 0)
        .map((k) => `${k}=${delta(k)}`)
        .join(' ') +
      `; A retrans_pkts ${a.dev.stats.retrans_pkts}; heap ${(heapBefore / 1048576).toFixed(1)} -> ${(heapAfter / 1048576).toFixed(1)} MB`,
  );
});

t.test('a socket the fabric does not know cannot speak for a real device: forged packets with its GID do not disturb its traffic', async (t) => {
  const daemon = await startDaemon({ port: 0, logger: silentLogger() });
  t.teardown(() => daemon.close());
  const a = await makeEnd(daemon.port, `spoofed-a-${process.pid}`);
  t.teardown(() => a.dev.close());
  const b = await makeEnd(daemon.port, `spoofed-b-${process.pid}`);
  t.teardown(() => b.dev.close());
  const ah = await a.dev.createAh((a.qp as any).pd, { gid: b.dev.gidText });
  const s = createSocket('udp4');
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  for (let i = 0; i < RECV_SLOTS; i++) b.dev.postRecv(b.qp, { wrId: i, sgList: [{ addr: i * SLOT, length: SLOT, lkey: b.mr.lkey }] });

  // SRD data claiming A's GID, with sessions newer than A's incarnation and garbage PSNs.
  const rnd = prng(0x5b00f);
  const aGid = a.dev.gid;
  const forge = (): Buffer => {
    const len = SRD_DATA_HDR_LEN + 16;
    const buf = Buffer.alloc(len);
    encodeHeader(buf, PacketType.SRD_DATA, 0, SRD_DATA_HDR_LEN, 1, b.qp.qpNum, 16, QKEY, 0, aGid);
    writeSrdData(buf, (a.dev.incarnation + 1 + (rnd() % 1000)) >>> 0, rnd() % 256, rnd() % 64, rnd(), 0);
    sealPacket(buf, len);
    return buf;
  };
  let forgedSent = 0;
  let stop = false;
  const spoofDone = new Promise<void>((resolve) => {
    const tick = (): void => {
      if (stop || forgedSent >= 2000) return resolve();
      forgedSent++;
      s.send(forge(), b.dev.endpoint.port, b.dev.endpoint.host, () => setImmediate(tick));
    };
    tick();
  });
  const before = b.dev.stats.toJSON();
  const traffic = await runTraffic(a, b, ah, () => false);
  stop = true;
  await spoofDone;
  const after = b.dev.stats.toJSON();
  const ok = traffic.sendStatus[EfaStatus.SUCCESS] ?? 0;
  t.equal(ok, traffic.posted, `every real send completed SUCCESS (statuses ${JSON.stringify(traffic.sendStatus)})`);
  t.equal(traffic.received, traffic.posted, 'every real message arrived');
  t.equal(traffic.duplicates + traffic.corrupt, 0, 'nothing twice or corrupt');
  t.equal(traffic.forged, 0, 'no forged datagram reached the application');
  t.ok(after.rx_drop_unknown_endpoint - before.rx_drop_unknown_endpoint >= forgedSent - 10, `the forgeries were dropped as coming from the wrong endpoint (${after.rx_drop_unknown_endpoint - before.rx_drop_unknown_endpoint} of ${forgedSent})`);
  t.comment(
    `forged sent ${forgedSent}, delivered ${traffic.forged}; real posted ${traffic.posted}, ok ${ok}, received ${traffic.received}; B rx_drop_stale +${after.rx_drop_stale - before.rx_drop_stale}, rx_drop_window +${after.rx_drop_window - before.rx_drop_window}; A unresponsive ${a.dev.stats.unresponsive_remote_events}`,
  );
});
