// openDevice's multipath options and the receive-side bottleneck on real devices: `paths`
// and `cc` (and EFA_EMU_PATHS / EFA_EMU_CC) reach the SRD engine's configuration with the
// documented precedence, bad values are one-line EINVAL errors; a receiver whose spec has a
// `bottleneck` queues and drops what two real devices send over loopback, SRD still delivers
// every message once, the counters say what happened, and the capture shows only what got
// through the bottleneck.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../src/control/server';
import { openDevice, type EfaDevice, type OpenDeviceOptions } from '../src/open-device';
import { silentLogger } from '../src/common/logger';
import { InvalidArgumentError } from '../src/common/errors';
import { AccessFlags, QpState, QpType, WcOpcode, WcStatus } from '../src/device/constants';
import { WorkCompletion } from '../src/device/work-completion';
import { ENV_CC, ENV_PATHS, ENV_SRD, parseCcMode, parsePaths, rankEnvVars, readCcEnv, readPathsEnv } from '../src/env';
import { ccOption } from '../src/cli/cli-options';
import { ROOT, runCli } from './helpers/run-cli';

const QKEY = 0x5a;
const MSG = 256;
const RECV = 512;

async function daemonAddr(t: Test): Promise<{ host: string; port: number }> {
  const daemon = await startDaemon({ port: 0, statePath: null, logger: silentLogger() });
  t.teardown(() => daemon.close());
  return { host: '127.0.0.1', port: daemon.port };
}

/** Sets environment variables for one test and puts the old values back after it. */
function withEnv(t: Test, vars: Record<string, string | undefined>): void {
  const old: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(vars)) {
    old[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  t.teardown(() => {
    for (const [k, v] of Object.entries(old)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

async function open(t: Test, addr: { host: string; port: number }, name: string, extra: OpenDeviceOptions = {}): Promise<EfaDevice> {
  const d = await openDevice({ daemon: addr, name, rank: null, logger: silentLogger(), faults: null, capture: null, ...extra });
  t.teardown(() => d.close());
  return d;
}

async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  return undefined;
}

t.test('paths and cc reach the SRD configuration; options beat srd, srd beats the environment', async (t) => {
  withEnv(t, { [ENV_PATHS]: undefined, [ENV_CC]: undefined, [ENV_SRD]: undefined });
  const addr = await daemonAddr(t);
  const plain = await open(t, addr, 'pp-plain');
  t.equal(plain.srd.config.paths, 4, 'default: 4 paths');
  t.equal(plain.srd.config.cc, 'delay', 'default: delay');

  const opt = await open(t, addr, 'pp-opt', { paths: 7, cc: 'off', srd: { paths: 2, cc: 'delay', window: 32 } });
  t.equal(opt.srd.config.paths, 7, 'paths beats srd.paths');
  t.equal(opt.srd.config.cc, 'off', 'cc beats srd.cc');
  t.equal(opt.srd.config.window, 32, 'the rest of srd stays');

  const on = await open(t, addr, 'pp-on', { cc: 'on', srd: { cc: 'off' } });
  t.equal(on.srd.config.cc, 'delay', 'cc "on" is delay');

  process.env[ENV_PATHS] = '3';
  process.env[ENV_CC] = 'off';
  const env = await open(t, addr, 'pp-env');
  t.equal(env.srd.config.paths, 3, 'EFA_EMU_PATHS');
  t.equal(env.srd.config.cc, 'off', 'EFA_EMU_CC');

  const srdWins = await open(t, addr, 'pp-srd', { srd: { paths: 5 } });
  t.equal(srdWins.srd.config.paths, 5, 'srd.paths beats EFA_EMU_PATHS');
  t.equal(srdWins.srd.config.cc, 'off', 'EFA_EMU_CC still applies where srd says nothing');

  process.env[ENV_SRD] = 'paths=9,cc=delay,window=16';
  process.env[ENV_CC] = 'ON';
  const envSrd = await open(t, addr, 'pp-envsrd');
  t.equal(envSrd.srd.config.paths, 3, 'EFA_EMU_PATHS beats EFA_EMU_SRD');
  t.equal(envSrd.srd.config.cc, 'delay', 'EFA_EMU_CC=ON is delay');
  t.equal(envSrd.srd.config.window, 16, 'and EFA_EMU_SRD gives the rest');
});

t.test('bad paths and cc: one-line EINVAL errors naming the option or variable, before anything opens', async (t) => {
  withEnv(t, { [ENV_PATHS]: undefined, [ENV_CC]: undefined, [ENV_SRD]: undefined });
  // No daemon listens there: the checks come first, so the error is about the value.
  const nowhere = { host: '127.0.0.1', port: 1 };
  const cases: Array<[OpenDeviceOptions, Record<string, string | undefined>, string]> = [
    [{ paths: 0 }, {}, 'paths must be an integer in 1..64, got 0'],
    [{ paths: 65 }, {}, 'paths must be an integer in 1..64, got 65'],
    [{ paths: 2.5 }, {}, 'paths must be an integer in 1..64, got 2.5'],
    [{ paths: '4' as unknown as number }, {}, 'paths must be an integer in 1..64, got "4"'],
    [{ cc: 'fast' as 'off' }, {}, 'cc must be one of delay, off, on (on = delay), got "fast"'],
    [{}, { [ENV_PATHS]: '65' }, 'EFA_EMU_PATHS must be an integer in 1..64, got "65"'],
    [{}, { [ENV_PATHS]: 'four' }, 'EFA_EMU_PATHS must be an integer in 1..64, got "four"'],
    [{}, { [ENV_CC]: 'cubic' }, 'EFA_EMU_CC must be one of delay, off, on (on = delay), got "cubic"'],
  ];
  for (const [opts, env, message] of cases) {
    process.env[ENV_PATHS] = env[ENV_PATHS];
    process.env[ENV_CC] = env[ENV_CC];
    if (env[ENV_PATHS] === undefined) delete process.env[ENV_PATHS];
    if (env[ENV_CC] === undefined) delete process.env[ENV_CC];
    const err = await rejection(openDevice({ daemon: nowhere, name: 'bad', logger: silentLogger(), faults: null, capture: null, ...opts }));
    t.type(err, InvalidArgumentError, message);
    t.equal(err?.code, 'EINVAL', message);
    t.equal(err?.message, message);
    t.notMatch(err?.message ?? '', /\n/, 'one line');
  }
  // An option given wins over a bad variable: the variable is not even read.
  process.env[ENV_PATHS] = 'junk';
  t.equal(await rejection(openDevice({ daemon: nowhere, name: 'bad', logger: silentLogger(), faults: null, capture: null, paths: 0 })).then((e: Error) => e.message), 'paths must be an integer in 1..64, got 0');
});

t.test('the environment helpers and the CLI flags', async (t) => {
  t.equal(parsePaths(' 12 ', 'x'), 12);
  t.equal(parseCcMode('off', 'x'), 'off');
  t.equal(parseCcMode('On', 'x'), 'delay');
  t.equal(readPathsEnv({}), null);
  t.equal(readPathsEnv({ [ENV_PATHS]: ' ' }), null, 'empty counts as unset');
  t.equal(readPathsEnv({ [ENV_PATHS]: '64' }), 64);
  t.equal(readCcEnv({ [ENV_CC]: 'delay' }), 'delay');
  t.same(rankEnvVars({ rank: 0, size: 2, daemon: { host: '127.0.0.1', port: 9 }, paths: 8, cc: 'off' }), {
    EFA_EMU_DAEMON: '127.0.0.1:9',
    EFA_EMU_RANK: '0',
    EFA_EMU_SIZE: '2',
    EFA_EMU_LAUNCHED: '1',
    EFA_EMU_PATHS: '8',
    EFA_EMU_CC: 'off',
  });
  t.equal(ccOption('on'), 'delay');
  t.equal(ccOption('off'), 'off');
  t.throws(() => ccOption('bbr'), { message: 'expected one of delay, off, on (on = delay), got "bbr"' });
});

t.test('launch --paths/--cc reach every rank (and nothing is set without them)', async (t) => {
  const fixture = join(ROOT, 'test', 'fixtures', 'print-srd-env.js');
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env[ENV_PATHS];
  delete env[ENV_CC];
  const given = await runCli(['launch', '-n', '2', '--no-prefix', '--paths', '2', '--cc', 'on', fixture], { env });
  t.equal(given.code, 0, given.stderr);
  t.same(given.stdout.trim().split('\n').sort(), ['paths=2 cc=delay', 'paths=2 cc=delay']);
  const none = await runCli(['launch', '-n', '1', '--no-prefix', fixture], { env });
  t.equal(none.code, 0, none.stderr);
  t.equal(none.stdout.trim(), 'paths=- cc=-');
});

/** One SRD QP per device, receives posted on b; streams `n` messages a -> b, resolves once all arrived and completed. */
async function stream(a: EfaDevice, b: EfaDevice, n: number, burst: number): Promise<Map<number, number>> {
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
  let sent = 0;
  let done = 0;
  const wcs = Array.from({ length: 64 }, () => new WorkCompletion());
  const deadline = Date.now() + 60_000;
  await new Promise<void>((resolve, reject) => {
    const tick = (): void => {
      if (Date.now() > deadline) return reject(new Error(`stream stuck: ${seen.size} of ${n} received, ${done} sends done`));
      for (let k = 0; k < burst && sent < n && sent - done < 256; k++, sent++) {
        const off = (sent % 256) * MSG;
        A.buf.writeUInt32BE(sent, off);
        a.postSend(A.qp, { wrId: sent, sgList: [{ addr: off, length: MSG, lkey: A.mr.lkey }], ah, remoteQpn: B.qp.qpNum, remoteQkey: QKEY });
      }
      for (let got = a.pollCq(A.cq, 64, wcs); got > 0; got = a.pollCq(A.cq, 64, wcs)) {
        for (let i = 0; i < got; i++) {
          if (wcs[i].status !== WcStatus.SUCCESS) return reject(new Error(`send ${wcs[i].wrId} failed: status ${wcs[i].status}, vendor ${wcs[i].vendorErr}`));
          done++;
        }
      }
      for (let got = b.pollCq(B.cq, 64, wcs); got > 0; got = b.pollCq(B.cq, 64, wcs)) {
        for (let i = 0; i < got; i++) {
          const wc = wcs[i];
          if (wc.opcode !== WcOpcode.RECV || wc.status !== WcStatus.SUCCESS) return reject(new Error(`receive failed: ${wc.status}`));
          const id = B.buf.readUInt32BE(wc.wrId * MSG);
          seen.set(id, (seen.get(id) ?? 0) + 1);
          b.postRecv(B.qp, { wrId: wc.wrId, sgList: [{ addr: wc.wrId * MSG, length: MSG, lkey: B.mr.lkey }] });
        }
      }
      if (seen.size === n && done === n) return resolve();
      setImmediate(tick);
    };
    tick();
  });
  return seen;
}

t.test('a bottleneck on the receiver queues and drops; SRD delivers every message once; counters and capture agree', async (t) => {
  withEnv(t, { [ENV_PATHS]: undefined, [ENV_CC]: undefined, [ENV_SRD]: undefined });
  const addr = await daemonAddr(t);
  const dir = mkdtempSync(join(tmpdir(), 'efa-bottleneck-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const buffer = 8 * 1024;
  // 20 mbit is 2.5 MB/s: a window of 300-byte packets sent at once overflows 8 KiB. The
  // sender's congestion control is off so that the window, not the controller, sets how
  // much arrives at once: the drops this test needs do not hang on how well it steers.
  const a = await open(t, addr, 'bn-send', { cc: 'off' });
  const b = await open(t, addr, 'bn-recv', { faults: `bottleneck=20mbit,bottleneck-buffer=8KiB`, capture: join(dir, 'b.pcap') });
  const n = 1500;
  const seen = await stream(a, b, n, 64);
  t.equal(seen.size, n, `all ${n} messages arrived`);
  t.equal([...seen.values()].filter((c) => c !== 1).length, 0, 'none twice');

  const s = b.statsSnapshot();
  t.ok(s.rx_bottleneck_pkts > 0, `rx_bottleneck_pkts ${s.rx_bottleneck_pkts}`);
  t.ok(s.rx_bottleneck_drops > 0, `rx_bottleneck_drops ${s.rx_bottleneck_drops}`);
  t.ok(s.rx_bottleneck_queue_max_bytes > 2 * MSG, `packets queued: at most ${s.rx_bottleneck_queue_max_bytes} B waited`);
  t.ok(s.rx_bottleneck_queue_max_bytes <= buffer, 'never more than the buffer');
  t.ok(s.rx_bottleneck_bytes >= n * MSG, `rx_bottleneck_bytes ${s.rx_bottleneck_bytes}`);
  t.equal(typeof s.rx_bottleneck_queue_bytes, 'number');
  // What the device saw is what the bottleneck let through, less what it still holds.
  t.equal(s.rx_pkts, s.rx_bottleneck_pkts - b.faults.heldPackets, 'the device sees only what got through');
  // b injects no send faults: its capture is what it sent plus what got through.
  t.equal(s.capture_pkts, s.tx_pkts + s.rx_pkts, 'the capture shows what got through the bottleneck, not what it dropped');
  const sa = a.statsSnapshot();
  t.ok(sa.retrans_pkts > 0, `the sender retransmitted what the bottleneck dropped (${sa.retrans_pkts})`);
  t.equal(sa.rx_bottleneck_pkts, 0, 'a device without a bottleneck counts nothing there');
  t.equal(sa.rx_bottleneck_drops, 0);

  // Changed at run time: without the bottleneck nothing more is dropped there.
  b.faults.setSpec('');
  const before = b.statsSnapshot();
  const again = await stream(a, b, 300, 64);
  t.equal(again.size, 300);
  const after = b.statsSnapshot();
  t.equal(after.rx_bottleneck_drops, before.rx_bottleneck_drops, 'no drops once removed');
  t.equal(after.rx_bottleneck_pkts, before.rx_bottleneck_pkts, 'and nothing queued');
  t.ok(after.rx_pkts >= before.rx_pkts + 300, `while the packets kept coming (${after.rx_pkts - before.rx_pkts})`);
});
