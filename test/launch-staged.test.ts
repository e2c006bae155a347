// Ranks start in waves: with startParallel 1, each rank begins only after the previous one's
// program finished loading; a failure while ranks wait for their turn ends the job without
// starting them, and nothing hangs.
import path from 'node:path';
import t from 'tap';
import { launch } from '../src/job/launch';
import { ROOT } from './helpers/run-cli';

const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'staged.js');
// No rank of this fixture talks to a daemon: any address will do.
const DAEMON = { host: '127.0.0.1', port: 9 };

t.test('startParallel 1: one rank loads at a time', async (t) => {
  const spans: Array<[number, number, number]> = [];
  const res = await launch({
    n: 4,
    program: FIXTURE,
    daemon: DAEMON,
    startParallel: 1,
    onLine: (_rank, stream, line) => {
      const m = /^span (\d+) (\d+) (\d+)$/.exec(line);
      if (stream === 'stdout' && m) spans.push([Number(m[1]), Number(m[2]), Number(m[3])]);
    },
  });
  t.equal(res.exitCode, 0);
  spans.sort((a, b) => a[0] - b[0]);
  t.same(spans.map((s) => s[0]), [0, 1, 2, 3], 'every rank ran');
  for (let i = 1; i < spans.length; i++) t.ok(spans[i][1] >= spans[i - 1][2], `rank ${i} began (${spans[i][1]}) after rank ${i - 1} had loaded (${spans[i - 1][2]})`);
});

t.test('a rank failing while others wait for their turn: the rest never start, the job ends', async (t) => {
  const res = await launch({ n: 5, program: FIXTURE, args: ['3'], daemon: DAEMON, startParallel: 1, onLine: () => undefined });
  t.equal(res.exitCode, 3, "the failed rank's exit code");
  const never = res.ranks.filter((r) => r.pid === null).map((r) => r.rank);
  t.ok(never.length >= 3, `ranks that never started: ${never.join(', ')}`);
  t.ok(never.every((r) => r >= 2), 'only ranks after the first two');
});

t.test('a job that would not fit in memory is refused with figures, before anything starts', async (t) => {
  const err = await launch({ n: 100, program: FIXTURE, daemon: DAEMON, memoryLimitBytes: 1024 * 2 ** 20, onLine: () => undefined }).then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  t.equal(err?.code, 'ENOMEM', 'ENOMEM');
  t.match(err?.message, /^100 ranks would need about 6\.3 GiB \(64 MiB each, what a started rank takes\), and 1\.0 GiB is available: run at most 16 ranks here, or pass --no-memory-check$/);
  const fits = await launch({ n: 2, program: FIXTURE, daemon: DAEMON, memoryLimitBytes: 1024 * 2 ** 20, onLine: () => undefined });
  t.equal(fits.exitCode, 0, 'a job that fits runs');
  const unchecked = await launch({ n: 2, program: FIXTURE, daemon: DAEMON, memoryLimitBytes: 0, onLine: () => undefined });
  t.equal(unchecked.exitCode, 0, 'memoryLimitBytes 0: no check');
});
