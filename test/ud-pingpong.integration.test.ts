import t from 'tap';
import { lastJsonLine, runCli } from './helpers/run-cli';

t.test('efa-emu pingpong --type ud --json completes every iteration across two processes', async (t) => {
  const run = await runCli(['pingpong', '--type', 'ud', '--iters', '500', '--size', '256', '--json']);
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr})`);
  const res = lastJsonLine(run.stdout);
  t.equal(res.type, 'ud');
  t.equal(res.size, 256);
  t.equal(res.iters, 500);
  t.equal(res.completed, 500);
  t.equal(res.errors, 0);
  t.type(res.usec_per_iter, 'number');
  t.ok((res.usec_per_iter as number) > 0);
});

t.test('efa-emu pingpong prints like ibv_ud_pingpong without --json', async (t) => {
  const run = await runCli(['pingpong', '--iters', '50', '--poll', 'busy']);
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr})`);
  t.match(run.stdout, /^6400 bytes in \d+\.\d\d seconds = \d+\.\d\d Mbit\/sec$/m);
  t.match(run.stdout, /^50 iters in \d+\.\d\d seconds = \d+\.\d\d usec\/iter$/m);
  // ibv_ud_pingpong's preamble on both sides: each names itself and the other, crosswise.
  const addr = (text: string, which: 'local' | 'remote'): [string, string] => {
    const sep = which === 'local' ? ':' : ',';
    const m = new RegExp(`^(?:\\[1\\] )?  ${which} address: {1,2}LID 0x0000, QPN 0x([0-9a-f]{6}), PSN 0x000000${sep} GID ([0-9a-f:]+)$`, 'm').exec(text);
    if (m === null) throw new Error(`no ${which} address line in:\n${text}`);
    return [m[1], m[2]];
  };
  const server = run.stderr.split('\n').filter((l) => l.startsWith('[1] ')).join('\n');
  const [cQpn, cGid] = addr(run.stdout, 'local');
  const [sQpn, sGid] = addr(server, 'local');
  t.same(addr(run.stdout, 'remote'), [sQpn, sGid], "the client's remote address is the server's local one");
  t.same(addr(server, 'remote'), [cQpn, cGid], "the server's remote address is the client's local one");
  t.not(cGid, sGid, 'two devices');
  // The server prints its own result too.
  t.match(server, /^\[1\] 50 iters in \d+\.\d\d seconds = \d+\.\d\d usec\/iter$/m);
});

t.test('efa-emu launch -n 4 runs the TypeScript example as two pairs', async (t) => {
  const run = await runCli(['launch', '-n', '4', 'examples/ud-pingpong.ts', '--', '--iters', '100', '--json']);
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr})`);
  const lines = run.stdout.trim().split('\n');
  const results = lines.map((l) => /^\[(\d+)\] (\{.*\})$/.exec(l)).filter((m) => m !== null);
  t.same(results.map((m) => Number(m[1])).sort(), [0, 2], 'the two clients (ranks 0 and 2) report');
  for (const m of results) {
    const res = JSON.parse(m[2]) as { completed: number; errors: number; peer: number; rank: number };
    t.equal(res.completed, 100);
    t.equal(res.errors, 0);
    t.equal(res.peer, res.rank + 1, 'rank 2k pairs with rank 2k+1');
  }
});

t.test('a bad option gets a clear error and a non-zero exit', async (t) => {
  const run = await runCli(['pingpong', '--iters', 'many']);
  t.not(run.code, 0);
  t.match(run.stderr, /--iters/);
});
