import { spawn } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { startDaemon } from '../src/control/server';
import { silentLogger } from '../src/common/logger';
import { lastJsonLine, ROOT, runCli } from './helpers/run-cli';

t.test('srd-stress under loss=20%,dup=10%,reorder=30%,corrupt=1%: nothing missing, nothing twice, nothing corrupt', async (t) => {
  const run = await runCli(
    ['launch', '-n', '3', '--fault', 'loss=20%,dup=10%,reorder=30%,corrupt=1%,seed=11', 'examples/srd-stress.ts', '--', '--messages', '300'],
    { timeoutMs: 120_000 },
  );
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const line = run.stdout.trim().split('\n').find((l) => l.startsWith('[0] {'));
  t.ok(line, 'rank 0 printed its totals');
  const res = JSON.parse((line ?? '[0] {}').slice(4)) as Record<string, number>;
  t.equal(res.expected, 3 * 2 * 300);
  t.equal(res.delivered, res.expected);
  t.equal(res.duplicates, 0);
  t.equal(res.missing, 0);
  t.equal(res.corrupt, 0);
  t.equal(res.send_errors, 0);
  t.ok(res.retransmits > 0, 'losses were recovered by retransmission');
  t.ok(res.out_of_order > 0, 'SRD delivers out of order under reordering');
});

t.test('efa-emu pingpong --type srd under faults completes every iteration and reports retransmits', async (t) => {
  const run = await runCli(['pingpong', '--type', 'srd', '--iters', '300', '--fault', 'loss=10%,dup=5%,reorder=20%,seed=1', '--json'], { timeoutMs: 120_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const res = lastJsonLine(run.stdout);
  t.equal(res.type, 'srd');
  t.equal(res.completed, 300);
  t.equal(res.errors, 0);
  t.ok((res.retransmits as number) > 0);
});

t.test('a bad fault spec is refused before any rank starts, naming the field', async (t) => {
  const run = await runCli(['launch', '-n', '2', '--fault', 'loss=150%', 'examples/srd-stress.ts']);
  t.equal(run.code, 1);
  t.match(run.stderr, /EFAULTSPEC: --fault: loss/);
});

t.test('a killed peer: pending sends complete with LOCAL_ERROR_UNRESP_REMOTE within the bound', async (t) => {
  const daemon = await startDaemon({ port: 0, logger: silentLogger() });
  t.teardown(() => daemon.close());
  const timeoutMs = 1000;
  const env = { ...process.env, EFA_EMU_DAEMON: `127.0.0.1:${daemon.port}`, EFA_EMU_JOB_ID: `kill-${process.pid}`, EFA_EMU_FAULTS: '' };
  const fixture = join(ROOT, 'dist', 'test', 'fixtures', 'srd-peer.js');
  const start = (role: string, name: string) =>
    spawn(process.execPath, [fixture, role, String(timeoutMs)], { env: { ...env, EFA_EMU_DEVICE_NAME: name }, stdio: ['ignore', 'pipe', 'pipe'] });
  const receiver = start('receiver', 'victim');
  t.teardown(() => receiver.kill('SIGKILL'));
  const sender = start('sender', 'survivor');
  t.teardown(() => sender.kill('SIGKILL'));
  let out = '';
  let err = '';
  sender.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  sender.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  // Kill the receiver once traffic flows.
  await new Promise<void>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('receiver never got traffic')), 30_000);
    receiver.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (d.includes('ready')) {
        clearTimeout(guard);
        resolve();
      }
    });
  });
  const killedAt = Date.now();
  receiver.kill('SIGKILL');
  const code = await new Promise<number | null>((resolve) => {
    const guard = setTimeout(() => sender.kill('SIGKILL'), 30_000);
    sender.on('exit', (c) => {
      clearTimeout(guard);
      resolve(c);
    });
  });
  const elapsed = Date.now() - killedAt;
  t.equal(code, 0, `sender exits by itself (stderr: ${err})`);
  const res = JSON.parse(out.trim().split('\n').pop() ?? '{}') as { counts: Record<string, number>; posted: number };
  t.ok(res.counts['0'] > 0, 'sends succeeded before the kill');
  t.ok(res.counts['13'] > 0, 'pending sends failed with LOCAL_ERROR_UNRESP_REMOTE (13)');
  t.same(Object.keys(res.counts).sort(), ['0', '13'], 'no other status: no hang, no silent loss');
  t.equal(res.counts['0'] + res.counts['13'], res.posted, 'every posted send completed exactly once');
  t.ok(elapsed < timeoutMs + 5000, `failed within the bound (${elapsed} ms after the kill, timeout ${timeoutMs} ms)`);
});
