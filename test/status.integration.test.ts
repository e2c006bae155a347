import t from 'tap';
import { startDaemon } from '../src/control/server';
import { silentLogger } from '../src/common/logger';
import { openDevice, type EfaDevice } from '../src/open-device';
import { AccessFlags, QpState, QpType } from '../src/device/constants';
import { lastJsonLine, runCli } from './helpers/run-cli';

interface StatusJson {
  fabricId: number;
  devices: Array<{ name: string; gid: string; up: boolean; rank: number | null; stats: Record<string, number> | null }>;
}

t.test('efa-emu status --json lists every device with counters that grow', async (t) => {
  const daemon = await startDaemon({ port: 0, logger: silentLogger() });
  t.teardown(() => daemon.close());
  const addr = `127.0.0.1:${daemon.port}`;
  const devs: EfaDevice[] = [];
  for (const [i, name] of ['st0', 'st1'].entries()) {
    const dev = await openDevice({ daemon: addr, name, rank: i, logger: silentLogger(), faults: null, capture: null });
    t.teardown(() => dev.close());
    devs.push(dev);
  }
  const [a, b] = devs;
  const pd = await a.allocPd();
  const cq = await a.createCq({ cqe: 64 });
  const qp = await a.createQp(pd, { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 64, maxRecvWr: 1 } });
  const buf = Buffer.alloc(64);
  const mr = await a.regMr(pd, buf, AccessFlags.LOCAL_WRITE);
  await a.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: 1 });
  await a.modifyQp(qp, { qpState: QpState.RTR });
  await a.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
  const ah = await a.createAh(pd, { gid: b.gidText });
  const send = (n: number): void => {
    for (let i = 0; i < n; i++) {
      a.postSend(qp, { wrId: i, sgList: [{ addr: 0, length: 64, lkey: mr.lkey }], ah, remoteQpn: 2, remoteQkey: 1 });
      a.pollCq(cq, 1, []);
    }
  };
  const status = async (): Promise<StatusJson> => {
    const run = await runCli(['status', '--daemon', addr, '--json']);
    t.equal(run.code, 0, run.stderr);
    return lastJsonLine(run.stdout) as unknown as StatusJson;
  };
  // Counters reach the daemon with heartbeats (once a second): wait for them, boundedly.
  const until = async (pred: (s: StatusJson) => boolean): Promise<StatusJson> => {
    for (let i = 0; i < 40; i++) {
      const s = await status();
      if (pred(s)) return s;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error('status never showed the expected counters');
  };
  send(10);
  const tx = (s: StatusJson): number => s.devices.find((d) => d.name === 'st0')?.stats?.tx_pkts ?? 0;
  const first = await until((s) => tx(s) >= 10);
  t.same(first.devices.map((d) => [d.name, d.gid, d.up, d.rank]).sort(), [['st0', a.gidText, true, 0], ['st1', b.gidText, true, 1]]);
  send(10);
  const second = await until((s) => tx(s) >= 20);
  t.ok(tx(second) > tx(first), `tx_pkts grew (${tx(first)} -> ${tx(second)})`);
  const table = await runCli(['status', '--daemon', addr]);
  t.match(table.stdout, /NAME\s+RANK\s+GID\s+ENDPOINT\s+STATE/);
  t.match(table.stdout, /st0\s+0\s+fe80::/);
  // Per-path counters: the device's paths (4 by default), from the same heartbeats.
  const withPaths = await runCli(['status', '--daemon', addr, '--paths']);
  t.equal(withPaths.code, 0, withPaths.stderr);
  t.match(withPaths.stdout, /NAME\s+PATH\s+TX_PKTS\s+RETRANS\s+LOST\s+RX_PKTS\s+RTT_US\s+DOWN/);
  const rowsOf = (name: string): string[] => withPaths.stdout.split('\n').filter((l) => new RegExp(`^${name}\\s+\\d+\\s+\\d`).test(l));
  t.equal(rowsOf('st0').length, a.srd.config.paths, `one row per path of st0 (${a.srd.config.paths})`);
  t.equal(rowsOf('st1').length, b.srd.config.paths, 'and of st1');
});

t.test("a device's last words: the counters it had when it closed show in status after it left", async (t) => {
  const daemon = await startDaemon({ port: 0, logger: silentLogger() });
  t.teardown(() => daemon.close());
  const addr = `127.0.0.1:${daemon.port}`;
  const a = await openDevice({ daemon: addr, name: 'lw0', rank: 0, logger: silentLogger(), faults: null, capture: null });
  const b = await openDevice({ daemon: addr, name: 'lw1', rank: 1, logger: silentLogger(), faults: null, capture: null });
  t.teardown(() => b.close());
  const pd = await a.allocPd();
  const cq = await a.createCq({ cqe: 64 });
  const qp = await a.createQp(pd, { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 64, maxRecvWr: 1 } });
  const mr = await a.regMr(pd, Buffer.alloc(64), AccessFlags.LOCAL_WRITE);
  await a.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: 1 });
  await a.modifyQp(qp, { qpState: QpState.RTR });
  await a.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
  const ah = await a.createAh(pd, { gid: b.gidText });
  // Sent, then closed at once: no heartbeat (one a second) reports these before the close.
  for (let i = 0; i < 37; i++) {
    a.postSend(qp, { wrId: i, sgList: [{ addr: 0, length: 64, lkey: mr.lkey }], ah, remoteQpn: 2, remoteQkey: 1 });
    a.pollCq(cq, 1, []);
  }
  const sent = a.statsSnapshot().send_wrs;
  await a.close();
  const run = await runCli(['status', '--daemon', addr, '--json']);
  t.equal(run.code, 0, `status exits 0 (stderr: ${run.stderr})`);
  const st = lastJsonLine(run.stdout) as unknown as StatusJson;
  const rec = st.devices.find((d) => d.name === 'lw0');
  t.ok(rec !== undefined, 'the closed device is listed');
  t.equal(rec?.up, false, 'down: it left');
  t.equal(rec?.stats?.send_wrs, sent, `its final send_wrs (${sent}) came with its unregister`);
});
