/*
 * The daemon is killed and restarted while SRD traffic flows between two devices: the data
 * path never touches the daemon, so no message is lost or duplicated; the clients reconnect
 * and re-register; GIDs and AH numbers stay the same (state file); key/value calls made while
 * it is down fail at once with ENOTCONN instead of hanging.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { once } from 'node:events';
import { silentLogger } from '../src/common/logger';
import { startDaemon, type DaemonServer } from '../src/control/server';
import { AccessFlags, QpState, QpType, WcOpcode, EfaStatus } from '../src/device/constants';
import type { WorkCompletion } from '../src/device/work-completion';
import { openDevice, type EfaDevice } from '../src/open-device';

t.test('daemon restart mid-traffic: traffic undisturbed, clients re-register, leases kept', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-restart-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const statePath = path.join(dir, 'state.json');
  let daemon: DaemonServer = await startDaemon({ port: 0, statePath, logger: silentLogger() });
  const port = daemon.port;
  t.teardown(() => daemon.close());
  const addr = `127.0.0.1:${port}`;
  const open = async (name: string): Promise<EfaDevice> => {
    const dev = await openDevice({ daemon: addr, name, logger: silentLogger(), faults: null, capture: null });
    t.teardown(() => dev.close());
    return dev;
  };
  const a = await open('restart-a');
  const b = await open('restart-b');
  const gids = [a.gidText, b.gidText];

  const setup = async (dev: EfaDevice) => {
    const pd = await dev.allocPd();
    const cq = await dev.createCq({ cqe: 4096 });
    const qp = await dev.createQp(pd, { qpType: QpType.SRD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 256, maxRecvWr: 1024 } });
    const buf = Buffer.alloc(1024 * 64);
    const mr = await dev.regMr(pd, buf, AccessFlags.LOCAL_WRITE);
    await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: 1 });
    await dev.modifyQp(qp, { qpState: QpState.RTR });
    await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
    return { dev, pd, cq, qp, buf, mr };
  };
  const A = await setup(a);
  const B = await setup(b);
  for (let i = 0; i < 1024; i++) b.postRecv(B.qp, { wrId: i, sgList: [{ addr: i * 64, length: 64, lkey: B.mr.lkey }] });
  const ah = await a.createAh(A.pd, { gid: b.gidText });
  const ahNumBefore = ah.ahNum;

  // Traffic: A streams numbered messages to B, 64 in flight, until told to stop.
  const seen = new Map<number, number>();
  let posted = 0;
  let done = 0;
  let failed = 0;
  let stop = false;
  const wcs: WorkCompletion[] = [];
  const traffic = new Promise<void>((resolve) => {
    const spin = (): void => {
      while (!stop && posted - done < 64) {
        A.buf.writeUInt32BE(posted, 0);
        a.postSend(A.qp, { wrId: posted++, sgList: [{ addr: 0, length: 64, lkey: A.mr.lkey }], ah, remoteQpn: B.qp.qpNum, remoteQkey: 1 });
      }
      let n = a.pollCq(A.cq, 64, wcs);
      for (let i = 0; i < n; i++) {
        done++;
        if (wcs[i].vendorErr !== EfaStatus.SUCCESS) failed++;
      }
      n = b.pollCq(B.cq, 64, wcs);
      for (let i = 0; i < n; i++) {
        const wc = wcs[i];
        if (wc.opcode !== WcOpcode.RECV) continue;
        const seq = B.buf.readUInt32BE(wc.wrId * 64);
        seen.set(seq, (seen.get(seq) ?? 0) + 1);
        b.postRecv(B.qp, { wrId: wc.wrId, sgList: [{ addr: wc.wrId * 64, length: 64, lkey: B.mr.lkey }] });
      }
      if (stop && done === posted && seen.size === posted) return resolve();
      setImmediate(spin);
    };
    spin();
  });

  const disconnected = Promise.all([once(a.daemon, 'disconnected'), once(b.daemon, 'disconnected')]);
  await daemon.close();
  await disconnected;
  const postedWhileDown = posted;
  const err = await a.daemon.put('k', 'v').then(
    () => null,
    (e: { code?: string }) => e,
  );
  t.equal(err?.code, 'ENOTCONN', 'a key/value call while the daemon is down fails at once');

  // The data path does not need the daemon: messages keep arriving while it is gone.
  const arrivedDown = seen.size;
  const flowing = await new Promise<boolean>((resolve) => {
    const deadline = performance.now() + 10_000;
    const check = (): void => {
      if (seen.size >= arrivedDown + 500) return resolve(true);
      if (performance.now() > deadline) return resolve(false);
      setImmediate(check);
    };
    check();
  });
  t.ok(flowing, `traffic kept flowing with the daemon down (${seen.size - arrivedDown} more messages, ${posted - postedWhileDown} more posted)`);
  const reconnected = Promise.all([once(a.daemon, 'reconnected'), once(b.daemon, 'reconnected')]);
  daemon = await startDaemon({ port, statePath, logger: silentLogger() });
  await reconnected;
  const resolved = await a.daemon.resolve(b.gidText);
  t.equal(resolved.up, true, 'b re-registered with the new daemon');
  t.same([a.gidText, b.gidText], gids, 'GIDs unchanged');
  t.equal(resolved.ahn, ahNumBefore, 'AH number unchanged');
  await a.daemon.put('after', 'restart');
  t.equal(await b.daemon.get('after', 5000), 'restart', 'key/value works again');

  stop = true;
  await traffic;
  t.equal(failed, 0, 'no send failed');
  t.equal(seen.size, posted, 'every message arrived');
  t.ok([...seen.values()].every((c) => c === 1), 'none twice');
});
