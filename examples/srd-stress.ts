/*
 * SRD stress: every rank sends M messages (sizes mixed up to the MTU) to every other rank.
 * Each message carries (sender, sequence) and a CRC of its payload; every receiver checks
 * that each message arrived exactly once and intact. Rank 0 prints one JSON line of totals.
 *
 *   npx efa-emu launch -n 4 --fault "loss=5%,dup=5%,reorder=25%,corrupt=1%,seed=3" examples/srd-stress.ts -- --messages 2000
 *
 * `out_of_order` counts messages completed after a later-sent one from the same sender: SRD
 * does not promise order, and under reordering faults this is expected to be above zero.
 *
 * `--poll event` (the default) sleeps until the CQ's completion channel fires, so many ranks
 * share a few cores without starving one another; `--poll busy` spins as perftest does.
 */
import { parseArgs } from 'node:util';
import { crc32 } from 'node:zlib';
import { AccessFlags, CompletionPoller, QpState, QpType, WcOpcode, WcStatus, WorkCompletion, openDevice, type AddressHandle, type PollMode } from '../src/index';

const QKEY = 0x5eed;
/** (31 i) mod 256 for i up to 2 × 8 KiB: message bytes are a window of it. */
const PATTERN = Buffer.from(Array.from({ length: 16384 + 256 }, (_, i) => (i * 31) & 0xff));
const MAGIC = 0x53545253; // "STRS"
const TAG = 16; // magic, sender, seq, crc
const RECV_DEPTH = 1024;
const SEND_DEPTH = 512;

interface Totals {
  delivered: number;
  expected: number;
  duplicates: number;
  missing: number;
  corrupt: number;
  out_of_order: number;
  retransmits: number;
  send_errors: number;
}

function sizeFor(sender: number, dest: number, seq: number, mtu: number): number {
  // A cheap deterministic hash: mixed sizes from the tag up to the MTU.
  let h = Math.imul(sender + 1, 0x9e3779b1) ^ Math.imul(dest + 7, 0x85ebca6b) ^ Math.imul(seq + 13, 0xc2b2ae35);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d) >>> 0;
  const r = h % 4;
  if (r === 0) return mtu; // full-size messages, a quarter of the time
  return TAG + (h % (mtu - TAG + 1));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      messages: { type: 'string', default: '1000' },
      'idle-timeout-ms': { type: 'string', default: '15000' },
      poll: { type: 'string', default: 'event' },
    },
  });
  const messages = Number(values.messages);
  const idleTimeoutMs = Number(values['idle-timeout-ms']);
  const mode = values.poll as PollMode;
  if (!Number.isInteger(messages) || messages < 1) throw new Error(`--messages must be a positive integer, got ${values.messages}`);
  if (mode !== 'event' && mode !== 'busy') throw new Error(`--poll must be event or busy, got ${values.poll}`);

  const dev = await openDevice();
  try {
    await stress(dev, messages, idleTimeoutMs, mode);
  } finally {
    // Also on failure: an open device's socket would keep the process alive.
    await dev.close();
  }
}

async function stress(dev: Awaited<ReturnType<typeof openDevice>>, messages: number, idleTimeoutMs: number, mode: PollMode): Promise<void> {
  const rank = dev.rank ?? 0;
  const world = dev.worldSize ?? 1;
  const job = process.env.EFA_EMU_JOB_ID ?? 'stress';
  const mtu = (await dev.queryDevice()).mtu;

  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: RECV_DEPTH + SEND_DEPTH + 64, channel: mode === 'event' ? dev.createCompChannel() : null });
  const qp = await dev.createQp(pd, {
    qpType: QpType.SRD,
    sendCq: cq,
    recvCq: cq,
    cap: { maxSendWr: SEND_DEPTH, maxRecvWr: RECV_DEPTH, maxSendSge: 1, maxRecvSge: 1 },
  });
  const recvBuf = Buffer.alloc(RECV_DEPTH * mtu);
  const recvMr = await dev.regMr(pd, recvBuf, AccessFlags.LOCAL_WRITE);
  // One send buffer per outstanding send: a send's bytes must stay put until it completes.
  const sendBuf = Buffer.alloc(SEND_DEPTH * mtu);
  const sendMr = await dev.regMr(pd, sendBuf, 0);
  await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
  await dev.modifyQp(qp, { qpState: QpState.RTR });
  await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
  const postRecv = (slot: number): void => dev.postRecv(qp, { wrId: slot, sgList: [{ addr: slot * mtu, length: mtu, lkey: recvMr.lkey }] });
  for (let i = 0; i < RECV_DEPTH; i++) postRecv(i);

  await dev.daemon.put(`${job}/stress/${rank}`, JSON.stringify({ gid: dev.gidText, qpn: qp.qpNum }));
  // Every peer's address is asked for at once: one at a time, a rank among 64 on two cores
  // would wait out 63 daemon round trips in a row.
  const others = Array.from({ length: world }, (_, r) => r).filter((r) => r !== rank);
  const infos = await Promise.all(others.map(async (r) => JSON.parse(await dev.daemon.get(`${job}/stress/${r}`, 60_000)) as { gid: string; qpn: number }));
  const peers: Array<{ rank: number; ah: AddressHandle; qpn: number }> = await Promise.all(
    others.map(async (r, i) => ({ rank: r, ah: await dev.createAh(pd, { gid: infos[i].gid }), qpn: infos[i].qpn })),
  );
  await dev.daemon.barrier(`${job}/stress/ready`, world, 60_000);
  // Milliseconds since this process started: its start-up and set-up, then the transfer alone.
  const readyAt = performance.now();

  const expected = messages * (world - 1);
  const seen = Array.from({ length: world }, () => new Uint8Array(messages));
  const maxSeq = new Int32Array(world).fill(-1);
  const t: Totals = { delivered: 0, expected, duplicates: 0, missing: 0, corrupt: 0, out_of_order: 0, retransmits: 0, send_errors: 0 };
  const freeSlots: number[] = [];
  for (let i = SEND_DEPTH - 1; i >= 0; i--) freeSlots.push(i);
  let sent = 0;
  let sendsDone = 0;
  const totalSends = messages * peers.length;
  let lastProgress = performance.now();

  const onRecv = (wc: WorkCompletion): void => {
    const slot = wc.wrId;
    if (wc.status !== WcStatus.SUCCESS) {
      t.corrupt++;
      postRecv(slot);
      return;
    }
    const off = slot * mtu;
    const ok = wc.byteLen >= TAG && recvBuf.readUInt32BE(off) === MAGIC;
    const sender = ok ? recvBuf.readUInt32BE(off + 4) : -1;
    const seq = ok ? recvBuf.readUInt32BE(off + 8) : -1;
    const sum = ok ? recvBuf.readUInt32BE(off + 12) : -1;
    if (!ok || sender >= world || seq >= messages || crc32(recvBuf.subarray(off + TAG, off + wc.byteLen)) >>> 0 !== sum) {
      t.corrupt++;
    } else if (seen[sender][seq] === 1) {
      t.duplicates++;
    } else {
      seen[sender][seq] = 1;
      t.delivered++;
      if (seq < maxSeq[sender]) t.out_of_order++;
      else maxSeq[sender] = seq;
    }
    postRecv(slot);
  };

  const postSends = (): void => {
    while (sent < totalSends && freeSlots.length > 0) {
      const seq = Math.floor(sent / peers.length);
      const peer = peers[sent % peers.length];
      const slot = freeSlots.pop() as number;
      const len = sizeFor(rank, peer.rank, seq, mtu);
      const off = slot * mtu;
      // Bytes (31 i + seq) mod 256, copied from one precomputed run (31 is odd, so seq is a
      // shift of it): a byte loop per message would cost more than the send itself.
      PATTERN.copy(sendBuf, off + TAG, (seq * 223) & 0xff, ((seq * 223) & 0xff) + len - TAG);
      sendBuf.writeUInt32BE(MAGIC, off);
      sendBuf.writeUInt32BE(rank, off + 4);
      sendBuf.writeUInt32BE(seq, off + 8);
      sendBuf.writeUInt32BE(crc32(sendBuf.subarray(off + TAG, off + len)) >>> 0, off + 12);
      dev.postSend(qp, { wrId: slot, sgList: [{ addr: off, length: len, lkey: sendMr.lkey }], ah: peer.ah, remoteQpn: peer.qpn, remoteQkey: QKEY });
      sent++;
    }
  };

  await new Promise<void>((resolve, reject) => {
    let finished = false;
    const finish = (err?: Error): void => {
      if (finished) return;
      finished = true;
      poller.stop();
      clearInterval(idle);
      if (err === undefined) resolve();
      else reject(err);
    };
    const poller = new CompletionPoller(dev, cq, mode, (wcs: readonly WorkCompletion[], n: number) => {
      try {
        lastProgress = performance.now();
        for (let i = 0; i < n; i++) {
          const wc = wcs[i];
          if (wc.opcode === WcOpcode.RECV) onRecv(wc);
          else {
            sendsDone++;
            if (wc.status !== WcStatus.SUCCESS) t.send_errors++;
            freeSlots.push(wc.wrId);
          }
        }
        postSends();
        if (sendsDone === totalSends && t.delivered + t.corrupt >= expected) finish();
      } catch (err) {
        finish(err as Error);
      }
    });
    // Reports what is missing instead of waiting for ever.
    const idle = setInterval(() => {
      if (performance.now() - lastProgress > idleTimeoutMs) finish();
    }, 250);
    postSends();
    poller.start();
    if (sendsDone === totalSends && t.delivered + t.corrupt >= expected) finish();
  });

  const transferMs = performance.now() - readyAt;
  t.missing = expected - t.delivered;
  t.retransmits = dev.stats.retrans_pkts;
  if (t.missing > 0 || t.send_errors > 0) {
    // What the device saw, for whoever has to explain the failure from a log.
    const s = await dev.queryStats();
    const keys = ['retrans_pkts', 'retrans_timeout_events', 'unresponsive_remote_events', 'unreachable_remote_events', 'path_down_events', 'path_probes', 'rx_drops', 'cc_decreases', 'cwnd_sum', 'rnr_received'];
    process.stderr.write(`srd-stress rank ${rank}: missing ${t.missing}, send errors ${t.send_errors}; device ${JSON.stringify(Object.fromEntries(keys.map((k) => [k, s[k]])))}\n`);
  }
  // The rank's peak resident set (KiB), for the summary's max_rss_mib: what N peers cost a process.
  await dev.daemon.put(`${job}/stress/result/${rank}`, JSON.stringify({ ...t, max_rss_kib: process.resourceUsage().maxRSS, ready_ms: readyAt, transfer_ms: transferMs }));
  // Everyone stays up until all are done: a rank that left early could not ack retransmissions.
  await dev.daemon.barrier(`${job}/stress/done`, world, 600_000);
  if (rank === 0) {
    const sum: Totals = { delivered: 0, expected: 0, duplicates: 0, missing: 0, corrupt: 0, out_of_order: 0, retransmits: 0, send_errors: 0 };
    let maxRssKib = 0;
    let readyMs = 0;
    let transferMs = 0;
    for (let r = 0; r < world; r++) {
      const part = JSON.parse(await dev.daemon.get(`${job}/stress/result/${r}`, 60_000)) as Totals & { max_rss_kib?: number; ready_ms?: number; transfer_ms?: number };
      for (const k of Object.keys(sum) as Array<keyof Totals>) sum[k] += part[k];
      maxRssKib = Math.max(maxRssKib, part.max_rss_kib ?? 0);
      readyMs = Math.max(readyMs, part.ready_ms ?? 0);
      transferMs = Math.max(transferMs, part.transfer_ms ?? 0);
    }
    process.stdout.write(`${JSON.stringify({ ranks: world, messages, ...sum, max_rss_mib: Math.round(maxRssKib / 102.4) / 10, ready_s: Math.round(readyMs / 100) / 10, transfer_s: Math.round(transferMs / 100) / 10 })}\n`);
    if (sum.missing !== 0 || sum.duplicates !== 0 || sum.corrupt !== 0 || sum.send_errors !== 0) process.exitCode = 2;
  }
}

main().catch((err: Error & { code?: string }) => {
  process.stderr.write(`srd-stress: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
  process.exitCode = 1;
});
