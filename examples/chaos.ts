/*
 * Chaos: while every rank streams SRD messages to every other rank, the last rank kills
 * itself with SIGKILL and rank 0 has the launcher restart the control daemon. The survivors
 * must keep talking to each other with nothing lost or duplicated, their sends to the dead
 * rank must fail with LOCAL_ERROR_UNRESP_REMOTE (never hang), and everyone must re-register
 * with the restarted daemon.
 *
 * Every survivor prints what it observed itself, counted from its own completions and events:
 *
 *   {"observed_by", "posted", "send_ok": {rank: n}, "send_failed": {rank: {status: n}},
 *    "peer_down": [ranks], "daemon_disconnects", "daemon_reconnects"}
 *
 * and rank 0 then prints one JSON line for the whole job, from the survivors' reports:
 *
 *   {"sent", "delivered", "duplicates", "missing_from_live_peers", "unresponsive_errors",
 *    "daemon_restarts", "peer_kills", "survivors_told_peer_down", ...}
 *
 * (`daemon_restarts`: the reconnections rank 0's daemon client went through; `peer_kills`: the
 * ranks some survivor was told went down.) The launcher reports, on its own stderr, the
 * restart it did and how each rank ended.
 *
 *   npx efa-emu launch -n 4 examples/chaos.ts [-- --seconds 4]
 */
import { parseArgs } from 'node:util';
import { AccessFlags, QpState, QpType, WcOpcode, WcStatus, EfaStatus, WorkCompletion, openDevice, efaStatusStr, type AddressHandle, type EfaDevice } from '../src/index';

const QKEY = 0xc4a05;
const MSG = 64;
const RECV_DEPTH = 2048;
const OUTSTANDING = 64;

interface Report {
  rank: number;
  posted: number;
  okTo: Record<number, number>;
  /** Failed send completions by destination rank, then by status name. */
  failedTo: Record<number, Record<string, number>>;
  recvFrom: Record<number, number>;
  duplicates: number;
  unresponsive: number;
  otherErrors: number;
  /** Ranks the device reported down (PEER_DOWN async events), in the order it did. */
  peerDown: number[];
  daemonDisconnects: number;
  daemonReconnects: number;
}

/** A daemon call that may land while the daemon is restarting: retried until it answers. */
async function withDaemon<T>(what: string, call: () => Promise<T>, limitMs = 20_000): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    try {
      return await call();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'ENOTCONN' || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: { seconds: { type: 'string', default: '4' } } });
  const seconds = Number(values.seconds);
  // The kill (0.8 s in) and the restart (1.5 s in) must land while the stream still runs.
  if (!(seconds >= 2)) throw new Error(`--seconds must be at least 2, got ${values.seconds}`);
  const timeoutMs = 1000;
  const dev: EfaDevice = await openDevice({ srd: { unresponsiveTimeoutMs: timeoutMs } });
  try {
    await chaos(dev, seconds, timeoutMs);
  } finally {
    // Also on failure: an open device's socket would keep the process alive.
    await dev.close();
  }
}

async function chaos(dev: EfaDevice, seconds: number, timeoutMs: number): Promise<void> {
  const rank = dev.rank ?? 0;
  const world = dev.worldSize ?? 1;
  if (world < 3) throw new Error('chaos needs at least 3 ranks (one dies, two keep talking)');
  const victim = world - 1;
  const job = process.env.EFA_EMU_JOB_ID ?? 'chaos';

  const pd = await dev.allocPd();
  const cq = await dev.createCq({ cqe: RECV_DEPTH + 1024 });
  const qp = await dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 512, maxRecvWr: RECV_DEPTH } });
  const recvBuf = Buffer.alloc(RECV_DEPTH * MSG);
  const recvMr = await dev.regMr(pd, recvBuf, AccessFlags.LOCAL_WRITE);
  const sendBuf = Buffer.alloc(MSG);
  const sendMr = await dev.regMr(pd, sendBuf, 0);
  await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
  await dev.modifyQp(qp, { qpState: QpState.RTR });
  await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
  const postRecv = (slot: number): void => dev.postRecv(qp, { wrId: slot, sgList: [{ addr: slot * MSG, length: MSG, lkey: recvMr.lkey }] });
  for (let i = 0; i < RECV_DEPTH; i++) postRecv(i);

  await dev.daemon.put(`${job}/chaos/${rank}`, JSON.stringify({ gid: dev.gidText, qpn: qp.qpNum }));
  const peers: Array<{ rank: number; gid: string; ah: AddressHandle; qpn: number }> = [];
  for (let r = 0; r < world; r++) {
    if (r === rank) continue;
    const info = JSON.parse(await dev.daemon.get(`${job}/chaos/${r}`, 60_000)) as { gid: string; qpn: number };
    peers.push({ rank: r, gid: info.gid, ah: await dev.createAh(pd, { gid: info.gid }), qpn: info.qpn });
  }
  await dev.daemon.barrier(`${job}/chaos/ready`, world, 60_000);

  const report: Report = {
    rank,
    posted: 0,
    okTo: {},
    failedTo: {},
    recvFrom: {},
    duplicates: 0,
    unresponsive: 0,
    otherErrors: 0,
    peerDown: [],
    daemonDisconnects: 0,
    daemonReconnects: 0,
  };
  // What the survivors report of the kill and of the restart is what reached them, not what
  // this program planned: any peer the device is told is down counts, whoever it is.
  dev.on('async_event', (ev: { eventType: string; gid?: string }) => {
    if (ev.eventType !== 'PEER_DOWN') return;
    const peer = peers.find((p) => p.gid === ev.gid);
    report.peerDown.push(peer === undefined ? -1 : peer.rank);
  });
  dev.daemon.on('disconnected', () => report.daemonDisconnects++);
  dev.daemon.on('reconnected', () => report.daemonReconnects++);
  const seen = new Map<number, Set<number>>();
  const destOf = new Map<number, number>(); // wrId -> destination rank
  let seq = 0;
  let outstanding = 0;
  let stop = false;
  const wcs: WorkCompletion[] = [];
  const start = Date.now();

  if (rank === victim) {
    // Tell the launcher this death is planned, then die mid-stream.
    await new Promise<void>((resolve) => (process.send ? process.send({ efaEmu: 'expect-exit' }, () => resolve()) : resolve()));
    setTimeout(() => process.kill(process.pid, 'SIGKILL'), 800);
  }
  if (rank === 0 && process.send) {
    setTimeout(() => process.send?.({ efaEmu: 'restart-daemon', downMs: 500 }), 1500);
  }

  // One loop polls all along: it posts while the stream runs and keeps reposting receives
  // until the end, so slower peers never meet a receiver that stopped listening.
  let finished = false;
  let sendsDone: () => void = () => undefined;
  const allSendsDone = new Promise<void>((resolve) => (sendsDone = resolve));
  const spin = (): void => {
    if (finished) return;
    if (Date.now() - start > seconds * 1000) stop = true;
    while (!stop && outstanding < OUTSTANDING) {
      const peer = peers[seq % peers.length];
      sendBuf.writeUInt32BE(rank, 0);
      sendBuf.writeUInt32BE(seq, 4);
      destOf.set(seq, peer.rank);
      dev.postSend(qp, { wrId: seq, sgList: [{ addr: 0, length: MSG, lkey: sendMr.lkey }], ah: peer.ah, remoteQpn: peer.qpn, remoteQkey: QKEY });
      seq++;
      outstanding++;
      report.posted++;
    }
    const n = dev.pollCq(cq, 128, wcs);
    for (let i = 0; i < n; i++) {
      const wc = wcs[i];
      if (wc.opcode === WcOpcode.RECV) {
        if (wc.status === WcStatus.SUCCESS) {
          const from = recvBuf.readUInt32BE(wc.wrId * MSG);
          const s = recvBuf.readUInt32BE(wc.wrId * MSG + 4);
          let set = seen.get(from);
          if (set === undefined) seen.set(from, (set = new Set()));
          if (set.has(s)) report.duplicates++;
          else set.add(s);
        }
        postRecv(wc.wrId);
        continue;
      }
      outstanding--;
      const dest = destOf.get(wc.wrId) as number;
      destOf.delete(wc.wrId);
      if (wc.status === WcStatus.SUCCESS) {
        report.okTo[dest] = (report.okTo[dest] ?? 0) + 1;
        continue;
      }
      const byStatus = (report.failedTo[dest] ??= {});
      const name = efaStatusStr(wc.vendorErr);
      byStatus[name] = (byStatus[name] ?? 0) + 1;
      if (wc.vendorErr === EfaStatus.LOCAL_ERROR_UNRESP_REMOTE || wc.vendorErr === EfaStatus.LOCAL_ERROR_UNREACH_REMOTE) report.unresponsive++;
      else report.otherErrors++;
    }
    // Sending is over once every send has its completion (the dead rank's fail after the timeout).
    if (stop && outstanding === 0) sendsDone();
    setImmediate(spin);
  };
  spin();
  await allSendsDone;

  // Every survivor is done sending (and its successful sends are in our CQ) past this barrier.
  const survivors = world - 1;
  await withDaemon('barrier', () => dev.daemon.barrier(`${job}/chaos/sent`, survivors, 60_000));
  // A few more turns of the loop drain what arrived last.
  for (let k = 0; k < 20; k++) await new Promise((r) => setImmediate(r));
  finished = true;
  for (const [from, set] of seen) report.recvFrom[from] = set.size;
  process.stdout.write(
    `${JSON.stringify({
      observed_by: rank,
      posted: report.posted,
      send_ok: report.okTo,
      send_failed: report.failedTo,
      peer_down: report.peerDown,
      daemon_disconnects: report.daemonDisconnects,
      daemon_reconnects: report.daemonReconnects,
    })}\n`,
  );
  await withDaemon('put', () => dev.daemon.put(`${job}/chaos/report/${rank}`, JSON.stringify(report)));
  await withDaemon('barrier', () => dev.daemon.barrier(`${job}/chaos/reported`, survivors, 60_000));

  if (rank === 0) {
    const reports: Report[] = [];
    for (let r = 0; r < world; r++) {
      if (r === victim) continue;
      reports.push(JSON.parse(await withDaemon('get', () => dev.daemon.get(`${job}/chaos/report/${r}`, 10_000))) as Report);
    }
    let missing = 0;
    for (const s of reports) {
      for (const r of reports) {
        if (s.rank === r.rank) continue;
        // Every message a live peer completed successfully to a live receiver must be there.
        missing += Math.max(0, (s.okTo[r.rank] ?? 0) - (r.recvFrom[s.rank] ?? 0));
      }
    }
    const summary = {
      ranks: world,
      seconds,
      sent: reports.reduce((a, r) => a + r.posted, 0),
      delivered: reports.reduce((a, r) => a + Object.values(r.recvFrom).reduce((x, y) => x + y, 0), 0),
      duplicates: reports.reduce((a, r) => a + r.duplicates, 0),
      missing_from_live_peers: missing,
      unresponsive_errors: reports.reduce((a, r) => a + r.unresponsive, 0),
      other_send_errors: reports.reduce((a, r) => a + r.otherErrors, 0),
      survivors_told_peer_down: reports.filter((r) => r.peerDown.includes(victim)).length,
      daemon_restarts: report.daemonReconnects,
      peer_kills: new Set(reports.flatMap((r) => r.peerDown)).size,
    };
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    const ok = summary.duplicates === 0 && summary.missing_from_live_peers === 0 && summary.other_send_errors === 0 && summary.unresponsive_errors > 0;
    if (!ok) process.exitCode = 2;
  }
}

main().catch((err: Error & { code?: string }) => {
  process.stderr.write(`chaos: ${err.code ? `${err.code}: ` : ''}${err.stack ?? err.message}\n`);
  process.exitCode = 1;
});
