/*
 * `pingpong` and `bench` refuse a message size the device cannot send before they start
 * anything, as ibv_ud_pingpong refuses a size above the port MTU: one line naming the MTU,
 * exit 1, no stack. Above the MTU a send only fails, so starting ranks would only make them
 * fail (or, before this check, wait for ever).
 */
import net from 'node:net';
import t, { type Test } from 'tap';
import { DEFAULT_ATTRIBUTES } from '../src/device/attributes';
import { lastJsonLine, runCli } from './helpers/run-cli';

const MTU = DEFAULT_ATTRIBUTES.mtu;
/** A refusal needs no rank: it comes well within this, a started job would not. */
const REFUSAL_TIMEOUT_MS = 15_000;

/**
 * A TCP listener standing in for the daemon, passed as `--daemon`: a command that started any
 * rank would connect to it, so zero connections proves the refusal came first.
 */
async function fakeDaemon(t: Test): Promise<{ address: string; connections: () => number }> {
  let connections = 0;
  const server = net.createServer((s) => {
    connections++;
    s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as net.AddressInfo;
  return { address: `127.0.0.1:${port}`, connections: () => connections };
}

const oversize: Array<{ args: string[]; bad: number }> = [
  { args: ['pingpong', '--size', String(MTU + 1)], bad: MTU + 1 },
  { args: ['pingpong', '--type', 'srd', '--size', String(MTU + 1)], bad: MTU + 1 },
  { args: ['pingpong', '--size', '65001'], bad: 65001 },
  { args: ['bench', '--size', `64,${MTU + 1}`], bad: MTU + 1 },
  { args: ['bench', '--type', 'ud', '--test', 'bw', '--size', `${MTU + 1},64`], bad: MTU + 1 },
  { args: ['bench', '--type', 'srd', '--size', `64,${MTU},${MTU + 1}`], bad: MTU + 1 },
];

for (const { args, bad } of oversize) {
  t.test(`${args.join(' ')} is refused up front with the MTU`, async (t) => {
    const daemon = await fakeDaemon(t);
    const run = await runCli([...args, '--daemon', daemon.address], { timeoutMs: REFUSAL_TIMEOUT_MS });
    t.equal(run.signal, null, 'exited by itself');
    t.equal(run.code, 1, 'exit 1, as for the other bad arguments');
    t.equal(run.stderr.trimEnd().split('\n').length, 1, `one line: ${run.stderr}`);
    t.match(run.stderr, new RegExp(`^efa-emu: EINVAL: --size ${bad}: larger than the device MTU \\(${MTU} bytes\\)`));
    t.notMatch(run.stderr, /\n\s+at /, 'no stack trace');
    t.equal(run.stdout, '');
    t.equal(daemon.connections(), 0, 'no rank was started');
  });
}

for (const size of ['0', '-1', '3', '1.5', 'big', '']) {
  for (const cmd of ['pingpong', 'bench']) {
    t.test(`${cmd} --size "${size}" is refused`, async (t) => {
      const daemon = await fakeDaemon(t);
      const run = await runCli([cmd, '--size', size, '--daemon', daemon.address], { timeoutMs: REFUSAL_TIMEOUT_MS });
      t.equal(run.code, 1);
      t.match(run.stderr, /--size/);
      t.match(run.stderr, /an integer of at least 4/);
      t.notMatch(run.stderr, /\n\s+at /, 'no stack trace');
      t.equal(daemon.connections(), 0, 'no rank was started');
    });
  }
}

// The limit is exactly what cannot work: a whole MTU of UD payload fits (the 40-byte GRH is
// in the receive buffer, not in the payload), and raw UDP has no MTU of ours.
for (const type of ['ud', 'srd']) {
  t.test(`pingpong --type ${type} --size ${MTU} (the MTU itself) runs`, async (t) => {
    const run = await runCli(['pingpong', '--type', type, '--size', String(MTU), '--iters', '20', '--json'], { timeoutMs: 60_000 });
    t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
    t.match(lastJsonLine(run.stdout), { type, size: MTU, completed: 20, errors: 0 });
  });
}

t.test(`bench --type raw --size ${MTU + 1} runs: bare UDP has no device MTU`, async (t) => {
  const run = await runCli(['bench', '--type', 'raw', '--size', String(MTU + 1), '--iters', '20', '--json'], { timeoutMs: 60_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
  const out = lastJsonLine(run.stdout) as { results: Array<{ type: string; size: number }> };
  t.same(out.results.map((r) => [r.type, r.size]), [['raw', MTU + 1]]);
});
