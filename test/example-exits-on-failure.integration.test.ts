/*
 * An example whose main fails ends by itself, with one clear line: a lone rank is refused at
 * once instead of waiting for a partner that cannot exist, and a failure after the device is
 * open still closes it (an open device's UDP socket would keep the process alive for ever).
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { startDaemon } from '../src/control/server';
import { DaemonClient } from '../src/control/client';
import { ROOT, runCli } from './helpers/run-cli';

/** Each run must end well within this; runCli kills it after, which fails the exit assertions. */
const TIMEOUT_MS = 30_000;
const EXAMPLES = path.join(__dirname, '..', 'examples');

t.test('launch -n 1 examples/hello-ud.ts says it needs 2 ranks and exits 1', async (t) => {
  const run = await runCli(['launch', '-n', '1', 'examples/hello-ud.ts'], { timeoutMs: TIMEOUT_MS });
  t.equal(run.signal, null, `ended by itself (stderr: ${run.stderr})`);
  t.equal(run.code, 1);
  t.match(run.stderr, /^\[0\] hello-ud: EINVAL: needs exactly 2 ranks \(npx efa-emu launch -n 2 examples\/hello-ud\.ts\), got 1$/m);
  t.notMatch(run.stderr, /ETIMEDOUT/, 'refused at once, not after a timeout');
  t.notMatch(run.stderr, /^\[0\]\s+at /m, 'no stack trace');
});

t.test('launch -n 1 of the ping-pong example says it needs 2 ranks and exits 1', async (t) => {
  const run = await runCli(['launch', '-n', '1', path.join(EXAMPLES, 'ud-pingpong.js'), '--', '--iters', '10'], { timeoutMs: TIMEOUT_MS });
  t.equal(run.signal, null, `ended by itself (stderr: ${run.stderr})`);
  t.equal(run.code, 1);
  t.match(run.stderr, /^\[0\] ud-pingpong: EINVAL: the ping-pong needs 2 ranks or more .*the world size is 1$/m);
  t.notMatch(run.stderr, /^\[0\]\s+at /m, 'no stack trace');
});

t.test('hello-ud exits when its main fails with the device open', async (t) => {
  // Rank 0 of 2, alone: it opens its device, publishes its QP and waits for rank 1's. Then
  // the daemon goes away, so that wait fails (ENOTCONN) while the device is open.
  const daemon = await startDaemon({ port: 0 });
  t.teardown(() => daemon.close());
  const job = `exit-test-${process.pid}`;
  const child = spawn(process.execPath, [path.join(EXAMPLES, 'hello-ud.js')], {
    cwd: ROOT,
    env: { ...process.env, EFA_EMU_DAEMON: `127.0.0.1:${daemon.port}`, EFA_EMU_RANK: '0', EFA_EMU_SIZE: '2', EFA_EMU_JOB_ID: job },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

  // The rank's key appears once its device is open and its QP is ready.
  const probe = await DaemonClient.connect({ host: '127.0.0.1', port: daemon.port, reconnect: false });
  const info = JSON.parse(await probe.get(`${job}/qp/0`, TIMEOUT_MS)) as { gid: string; qpn: number };
  t.type(info.qpn, 'number', 'rank 0 opened its device and published its QP');
  await probe.close();
  await daemon.close();

  const guard = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
  const { code, signal } = await exited;
  clearTimeout(guard);
  t.equal(signal, null, `exited by itself (stderr: ${stderr})`);
  t.equal(code, 1);
  t.match(stderr, /^hello-ud: ENOTCONN: /m, 'the failure, in one line');
  t.notMatch(stderr, /^\s+at /m, 'no stack trace');
});
