import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { EfaError, InvalidArgumentError } from '../src/common/errors';
import {
  EXIT_SIGINT,
  EXIT_SIGTERM,
  EXIT_TIMEOUT,
  launch,
  MAX_RANKS,
  type LaunchOptions,
  type LaunchResult,
  type RankResult,
} from '../src/job/launch';
import { describeRestart, jobSummary } from '../src/cli/launch-command';
import { daemonForCommand } from '../src/job/embedded-daemon';
import { silentLogger } from '../src/common/logger';
import { DaemonClient } from '../src/control/client';
import { LineSplitter } from '../src/job/line-prefixer';
import { runCli } from './helpers/run-cli';

// Tests run from dist/test; fixtures that ranks run stay in the source tree (the .ts one is run
// through ts-node from there), the launcher fixture is compiled next to this file.
const FIXTURES = path.resolve(__dirname, '..', '..', 'test', 'fixtures');
const fixture = (name: string): string => path.join(FIXTURES, name);
const BOOTSTRAP = path.resolve(__dirname, '..', 'src', 'job', 'rank-bootstrap.js');
const LAUNCHER_CHILD = path.resolve(__dirname, 'fixtures', 'launcher-child.js');
const DAEMON = { host: '127.0.0.1', port: 1 };

interface Line {
  rank: number;
  stream: 'stdout' | 'stderr';
  line: string;
}

function collector(): { lines: Line[]; onLine: NonNullable<LaunchOptions['onLine']> } {
  const lines: Line[] = [];
  return { lines, onLine: (rank, stream, line) => lines.push({ rank, stream, line }) };
}

function linesOf(lines: Line[], rank: number, stream: 'stdout' | 'stderr' = 'stdout'): string[] {
  return lines.filter((l) => l.rank === rank && l.stream === stream).map((l) => l.line);
}

/** A process is gone when it no longer exists, or is a zombie someone else must reap. */
function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** Waits (bounded) until every pid is gone; returns the ones still alive at the deadline. */
async function waitGone(pids: number[], withinMs = 5000): Promise<number[]> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const alive = pids.filter((p) => !isGone(p));
    if (alive.length === 0 || Date.now() > deadline) return alive;
    await new Promise((r) => setTimeout(r, 25));
  }
}

function tempDir(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-launch-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function pidsOf(result: LaunchResult): number[] {
  return result.ranks.map((r) => r.pid).filter((p): p is number => p !== null);
}

/** Runs test/fixtures/launcher-child.ts: a launcher in its own process. */
function launcherChild(cfg: object): {
  pid: number;
  stdoutLines: string[];
  stderrText: () => string;
  waitForLines: (pred: (lines: string[]) => boolean) => Promise<void>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
} {
  const child = spawn(process.execPath, [LAUNCHER_CHILD, JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const stdoutLines: string[] = [];
  let stderr = '';
  const waiters: Array<{ pred: (l: string[]) => boolean; resolve: () => void }> = [];
  const splitter = new LineSplitter((line) => {
    stdoutLines.push(line);
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i].pred(stdoutLines)) {
        waiters[i].resolve();
        waiters.splice(i, 1);
      }
    }
  });
  child.stdout.on('data', (c: Buffer) => splitter.write(c));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => {
      splitter.end();
      resolve({ code, signal });
    }),
  );
  return {
    pid: child.pid!,
    stdoutLines,
    stderrText: () => stderr,
    waitForLines: (pred) =>
      pred(stdoutLines)
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiters.push({ pred, resolve });
            void done.then(() => reject(new Error(`launcher exited first; stdout:\n${stdoutLines.join('\n')}\nstderr:\n${stderr}`)));
          }),
    done,
  };
}

function resultLine(lines: string[]): LaunchResult & { listeners: { SIGINT: number; SIGTERM: number } } {
  const last = lines.filter((l) => l.startsWith('RESULT ')).pop();
  if (last === undefined) throw new Error(`no RESULT line in:\n${lines.join('\n')}`);
  return JSON.parse(last.slice('RESULT '.length));
}

const pidLines = (lines: string[]): number[] =>
  lines.map((l) => /^LINE \d+ stdout pid=(\d+)$/.exec(l)).flatMap((m) => (m ? [Number(m[1])] : []));

t.test('LineSplitter keeps lines whole across chunk boundaries', async (t) => {
  const text = 'alpha\nbé\u00e9ta\n\ngamma 🚀 delta\nlast without newline';
  const bytes = Buffer.from(text, 'utf8');
  const expected = ['alpha', 'bé\u00e9ta', '', 'gamma 🚀 delta', 'last without newline'];
  // Every split point, including ones inside a multi-byte character.
  for (let cut = 0; cut <= bytes.length; cut++) {
    const got: string[] = [];
    const s = new LineSplitter((l) => got.push(l));
    s.write(bytes.subarray(0, cut));
    s.write(bytes.subarray(cut));
    s.end();
    t.same(got, expected, `cut at byte ${cut}`);
  }
  const got: string[] = [];
  const s = new LineSplitter((l) => got.push(l));
  for (const b of bytes) s.write(Buffer.from([b]));
  s.end();
  s.end();
  s.write('ignored after end\n');
  t.same(got, expected, 'one byte at a time; end is idempotent');
});

t.test('LineSplitter bounds an endless line', async (t) => {
  const got: string[] = [];
  const s = new LineSplitter((l) => got.push(l), 4);
  s.write('abcdefghij\nxy');
  s.end();
  t.same(got, ['abcdefghij', 'xy'], 'complete lines are never cut');
  const got2: string[] = [];
  const s2 = new LineSplitter((l) => got2.push(l), 4);
  s2.write('abcdefghij');
  s2.write('k\n');
  t.same(got2, ['abcd', 'efgh', 'ijk']);
});

t.test('3 ranks get their rank, size, daemon, faults and args', async (t) => {
  const { lines, onLine } = collector();
  const savedDevice = process.env.EFA_EMU_DEVICE_NAME;
  process.env.EFA_EMU_DEVICE_NAME = 'inherited-name';
  t.teardown(() => {
    if (savedDevice === undefined) delete process.env.EFA_EMU_DEVICE_NAME;
    else process.env.EFA_EMU_DEVICE_NAME = savedDevice;
  });
  const sigintBefore = process.listenerCount('SIGINT');
  const result = await launch({
    n: 3,
    program: fixture('print-env.js'),
    args: ['--x', 'two words'],
    daemon: { host: '127.0.0.1', port: 4242 },
    faults: 'loss=1%,seed=7',
    env: { EFA_EMU_TEST_EXTRA: 'yes', EFA_EMU_RANK: '99' },
    onLine,
  });
  t.equal(result.exitCode, 0);
  t.equal(result.timedOut, false);
  t.equal(result.interrupted, false);
  t.same(
    result.ranks.map((r) => [r.rank, r.code, r.signal]),
    [
      [0, 0, null],
      [1, 0, null],
      [2, 0, null],
    ],
  );
  for (let rank = 0; rank < 3; rank++) {
    const pid = result.ranks[rank].pid;
    t.same(linesOf(lines, rank), [
      `rank=${rank} size=3 daemon=127.0.0.1:4242 launched=1 faults=loss=1%,seed=7 device=- extra=yes pid=${pid}`,
      `argv=["--x","two words"] main=true script=${fixture('print-env.js')}`,
    ]);
    t.same(linesOf(lines, rank, 'stderr'), [`stderr of rank ${rank}`]);
  }
  t.equal(process.listenerCount('SIGINT'), sigintBefore, 'signal handlers removed');
});

t.test('ranks that outnumber the cores get a small young generation; a flag of the user wins', async (t) => {
  const cores = os.availableParallelism();
  const newSpace = async (n: number, env: NodeJS.ProcessEnv = {}): Promise<number[]> => {
    const { lines, onLine } = collector();
    const saved = process.env.EFA_EMU_NODE_ARGS;
    if (env.EFA_EMU_NODE_ARGS !== undefined) process.env.EFA_EMU_NODE_ARGS = env.EFA_EMU_NODE_ARGS;
    try {
      const result = await launch({ n, program: fixture('young-generation.js'), daemon: DAEMON, onLine });
      t.equal(result.exitCode, 0);
    } finally {
      if (saved === undefined) delete process.env.EFA_EMU_NODE_ARGS;
      else process.env.EFA_EMU_NODE_ARGS = saved;
    }
    return Array.from({ length: n }, (_, r) => Number(/new_space_mib=([\d.]+)/.exec(linesOf(lines, r).join('\n'))?.[1]));
  };
  // Two 1 MiB semi-spaces at most, where V8's default lets this churn grow it past 8 MiB.
  const crowded = await newSpace(cores + 1);
  t.ok(crowded.every((m) => m > 0 && m <= 2), `oversubscribed ranks: ${crowded.join(', ')} MiB`);
  const alone = await newSpace(1);
  t.ok(alone[0] > 8, `one rank keeps V8's default: ${alone[0]} MiB`);
  const own = await newSpace(cores + 1, { EFA_EMU_NODE_ARGS: '--max-semi-space-size=16' });
  t.ok(own.every((m) => m > 8), `EFA_EMU_NODE_ARGS wins: ${own.join(', ')} MiB`);
});

t.test('a device name can still be given explicitly through env', async (t) => {
  const { lines, onLine } = collector();
  const result = await launch({
    n: 1,
    program: fixture('print-env.js'),
    daemon: DAEMON,
    env: { EFA_EMU_DEVICE_NAME: 'mine' },
    onLine,
  });
  t.equal(result.exitCode, 0);
  t.match(linesOf(lines, 0)[0], / faults=- device=mine /);
});

t.test('output is printed with "[rank] " prefixes on the matching stream', async (t) => {
  const c = launcherChild({ n: 3, program: fixture('print-env.js'), print: true });
  const { code } = await c.done;
  t.equal(code, 0, c.stderrText());
  const out = c.stdoutLines.filter((l) => !l.startsWith('RESULT '));
  t.equal(out.length, 6);
  for (let rank = 0; rank < 3; rank++) {
    t.ok(
      out.some((l) => l.startsWith(`[${rank}] rank=${rank} size=3 daemon=127.0.0.1:1 launched=1`)),
      `rank ${rank} env line`,
    );
    t.ok(out.includes(`[${rank}] argv=[] main=true script=${fixture('print-env.js')}`), `rank ${rank} argv line`);
  }
  const errLines = c.stderrText().split('\n').filter(Boolean).sort();
  t.same(errLines, ['[0] stderr of rank 0', '[1] stderr of rank 1', '[2] stderr of rank 2']);
  t.same(resultLine(c.stdoutLines).listeners, { SIGINT: 0, SIGTERM: 0 });
});

t.test('prefix: false prints lines as they are', async (t) => {
  const c = launcherChild({ n: 2, program: fixture('print-env.js'), print: true, prefix: false });
  const { code } = await c.done;
  t.equal(code, 0);
  t.ok(c.stdoutLines.some((l) => l.startsWith('rank=1 size=2 ')));
  t.notOk(c.stdoutLines.some((l) => l.startsWith('[')));
  t.same(c.stderrText().split('\n').filter(Boolean).sort(), ['stderr of rank 0', 'stderr of rank 1']);
});

t.test('a .ts program runs through ts-node', async (t) => {
  const { lines, onLine } = collector();
  const result = await launch({ n: 2, program: fixture('ts-rank.ts'), args: ['a'], daemon: DAEMON, onLine });
  t.equal(result.exitCode, 0, JSON.stringify(lines));
  t.same(linesOf(lines, 0), ['ts rank=0 size=2 argv=["a"] main=true']);
  t.same(linesOf(lines, 1), ['ts rank=1 size=2 argv=["a"] main=true']);
});

t.test('a .mjs program runs as ESM', async (t) => {
  const { lines, onLine } = collector();
  const result = await launch({ n: 2, program: fixture('print-env.mjs'), args: ['b'], daemon: DAEMON, onLine });
  t.equal(result.exitCode, 0, JSON.stringify(lines));
  t.same(linesOf(lines, 1), ['esm rank=1 size=2 argv=["b"]', 'main=true']);
});

t.test('a relative program path resolves from the cwd', async (t) => {
  const { lines, onLine } = collector();
  const rel = path.relative(process.cwd(), fixture('print-env.js'));
  const result = await launch({ n: 1, program: rel, daemon: DAEMON, onLine });
  t.equal(result.exitCode, 0);
  t.match(linesOf(lines, 0)[1], `script=${fixture('print-env.js')}`);
});

t.test('a rank exiting 3 stops the others, which would run forever', async (t) => {
  const dir = tempDir(t);
  const { lines, onLine } = collector();
  const before = process.listenerCount('SIGINT');
  const termBefore = process.listenerCount('SIGTERM');
  let during = -1;
  const result = await launch({
    n: 4,
    program: fixture('hang-or-fail.js'),
    args: [dir, '2', '3'],
    daemon: DAEMON,
    onLine: (rank, stream, line) => {
      during = process.listenerCount('SIGINT');
      onLine(rank, stream, line);
    },
  });
  t.equal(result.exitCode, 3);
  t.same(result.ranks[2], { rank: 2, pid: result.ranks[2].pid, code: 3, signal: null, exitAnnounced: false });
  for (const r of [0, 1, 3]) {
    t.same([result.ranks[r].code, result.ranks[r].signal], [null, 'SIGTERM'], `rank ${r} was stopped`);
    t.same(linesOf(lines, r), [`pid=${result.ranks[r].pid}`], 'pid printed by the rank matches');
  }
  t.ok(linesOf(lines, 2).includes('failing now'));
  t.equal(during, before + 1, 'SIGINT handler installed while running');
  t.equal(process.listenerCount('SIGINT'), before, 'and removed after');
  t.equal(process.listenerCount('SIGTERM'), termBefore, 'SIGTERM handler removed too');
  // Every child was awaited: their pids are gone already, no waiting needed.
  for (const pid of pidsOf(result)) {
    t.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `pid ${pid} no longer exists`);
  }
});

t.test('ranks ignoring SIGTERM get SIGKILL after the grace', async (t) => {
  const dir = tempDir(t);
  const { lines, onLine } = collector();
  const started = Date.now();
  const result = await launch({
    n: 3,
    program: fixture('hang-or-fail.js'),
    args: [dir, '0', '5', 'ignore-term'],
    daemon: DAEMON,
    killGraceMs: 300,
    onLine,
  });
  t.equal(result.exitCode, 5);
  t.same(result.ranks.map((r) => r.signal), [null, 'SIGKILL', 'SIGKILL']);
  t.ok(Date.now() - started >= 300, 'waited for the grace');
  t.ok(linesOf(lines, 1).includes('ignoring SIGTERM'));
  for (const pid of pidsOf(result)) t.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
});

t.test('an uncaught exception in a rank fails the job with code 1', async (t) => {
  const dir = tempDir(t);
  const { lines, onLine } = collector();
  const result = await launch({ n: 2, program: fixture('hang-or-fail.js'), args: [dir, '1', 'throw'], daemon: DAEMON, onLine });
  t.equal(result.exitCode, 1);
  t.equal(result.ranks[1].code, 1);
  t.ok(linesOf(lines, 1, 'stderr').some((l) => l.includes('boom from rank 1')));
  t.equal(result.ranks[0].signal, 'SIGTERM');
});

t.test('a rank killed by a signal gives 128 + its number', async (t) => {
  const dir = tempDir(t);
  const result = await launch({
    n: 2,
    program: fixture('hang-or-fail.js'),
    args: [dir, '0', 'kill'],
    daemon: DAEMON,
    onLine: () => {},
  });
  t.equal(result.exitCode, 128 + 9);
  t.same(result.ranks[0].signal, 'SIGKILL');
  t.equal(result.ranks[0].exitAnnounced, false, 'it had not announced its death');
  t.same(result.ranks[1].signal, 'SIGTERM');
});

t.test('a rank that announced its exit may die without failing the job', async (t) => {
  for (const how of ['kill', '7']) {
    // Repeated: the announcement and the death race each other in the launcher every time.
    for (let i = 0; i < 5; i++) {
      const messages: Array<[number, unknown]> = [];
      const result = await launch({
        n: 2,
        program: fixture('announced-exit.js'),
        args: [how],
        daemon: DAEMON,
        onLine: () => {},
        onMessage: (rank, msg) => messages.push([rank, msg]),
      });
      const why = `${how}, run ${i}: ${JSON.stringify(result)}`;
      t.equal(result.exitCode, 0, `the job succeeds (${why})`);
      t.match(result.ranks[0], how === 'kill' ? { code: null, signal: 'SIGKILL', exitAnnounced: true } : { code: 7, signal: null, exitAnnounced: true }, why);
      t.match(result.ranks[1], { code: 0, signal: null, exitAnnounced: false }, why);
      t.same(
        messages.sort((a, b) => a[0] - b[0]),
        [
          [0, { hello: 0 }],
          [1, { hello: 1 }],
        ],
        'other messages reach onMessage; the announcement does not',
      );
    }
  }
});

t.test('16 ranks start together and exit 0', async (t) => {
  const { lines, onLine } = collector();
  const started = Date.now();
  const result = await launch({ n: 16, program: fixture('print-env.js'), daemon: DAEMON, onLine });
  const elapsed = Date.now() - started;
  t.equal(result.exitCode, 0);
  t.equal(result.ranks.length, 16);
  t.ok(result.ranks.every((r) => r.code === 0));
  t.equal(new Set(pidsOf(result)).size, 16);
  for (let rank = 0; rank < 16; rank++) t.match(linesOf(lines, rank)[0], `rank=${rank} size=16 `);
  t.ok(elapsed < 30000, `took ${elapsed} ms`);
  t.comment(`16 ranks in ${elapsed} ms`);
});

t.test('lines cut across chunks come out whole; a last line without newline is flushed', async (t) => {
  const { lines, onLine } = collector();
  const result = await launch({ n: 2, program: fixture('partial.js'), daemon: DAEMON, onLine });
  t.equal(result.exitCode, 0);
  for (const rank of [0, 1]) {
    t.same(linesOf(lines, rank), ['hello world', 'second line', 'no newline at end']);
    t.same(linesOf(lines, rank, 'stderr'), ['stderr without newline']);
  }
  const c = launcherChild({ n: 1, program: fixture('partial.js'), print: true });
  t.equal((await c.done).code, 0);
  t.same(c.stdoutLines.slice(0, 3), ['[0] hello world', '[0] second line', '[0] no newline at end']);
  t.equal(c.stderrText(), '[0] stderr without newline\n');
});

t.test('timeoutMs stops the whole job', async (t) => {
  const dir = tempDir(t);
  const result = await launch({
    n: 3,
    program: fixture('hang-or-fail.js'),
    args: [dir, '-1', '0'],
    daemon: DAEMON,
    timeoutMs: 500,
    onLine: () => {},
  });
  t.equal(result.timedOut, true);
  t.equal(result.interrupted, false);
  t.equal(result.exitCode, EXIT_TIMEOUT);
  t.ok(result.ranks.every((r) => r.signal === 'SIGTERM'));
  for (const pid of pidsOf(result)) t.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
});

t.test('an AbortSignal stops the job early', async (t) => {
  const dir = tempDir(t);
  const ac = new AbortController();
  let seen = 0;
  const result = await launch({
    n: 3,
    program: fixture('hang-or-fail.js'),
    args: [dir, '-1', '0'],
    daemon: DAEMON,
    signal: ac.signal,
    onLine: (_rank, _stream, line) => {
      if (line.startsWith('pid=') && ++seen === 3) ac.abort();
    },
  });
  t.equal(result.interrupted, true);
  t.equal(result.exitCode, EXIT_SIGINT);
  t.ok(result.ranks.every((r) => r.signal === 'SIGTERM'));

  const pre = await launch({ n: 2, program: fixture('print-env.js'), daemon: DAEMON, signal: AbortSignal.abort() });
  t.same(pre, {
    exitCode: EXIT_SIGINT,
    ranks: [
      { rank: 0, pid: null, code: null, signal: null, exitAnnounced: false },
      { rank: 1, pid: null, code: null, signal: null, exitAnnounced: false },
    ],
    timedOut: false,
    interrupted: true,
  });
});

t.test('a throwing onLine does not break the launch', async (t) => {
  const result = await launch({
    n: 2,
    program: fixture('print-env.js'),
    daemon: DAEMON,
    onLine: () => {
      throw new Error('callback bug');
    },
  });
  t.equal(result.exitCode, 0);
});

for (const [sig, code] of [
  ['SIGTERM', EXIT_SIGTERM],
  ['SIGINT', EXIT_SIGINT],
] as const) {
  t.test(`${sig} to the launcher stops every rank; exit code ${code}`, async (t) => {
    const dir = tempDir(t);
    const c = launcherChild({ n: 3, program: fixture('hang-or-fail.js'), args: [dir, '-1', '0'] });
    await c.waitForLines((l) => pidLines(l).length === 3);
    const pids = pidLines(c.stdoutLines);
    process.kill(c.pid, sig);
    const { code: exit } = await c.done;
    t.equal(exit, code, c.stderrText());
    const result = resultLine(c.stdoutLines);
    t.equal(result.interrupted, true);
    t.equal(result.exitCode, code);
    t.same(result.ranks.map((r) => r.signal), ['SIGTERM', 'SIGTERM', 'SIGTERM']);
    t.same(result.listeners, { SIGINT: 0, SIGTERM: 0 }, 'handlers removed after the launch');
    t.same(await waitGone(pids), [], 'every rank is gone');
  });
}

t.test('ranks exit when their launcher is SIGKILLed', async (t) => {
  const dir = tempDir(t);
  const c = launcherChild({ n: 3, program: fixture('hang-or-fail.js'), args: [dir, '-1', '0', 'ignore-term'] });
  await c.waitForLines((l) => pidLines(l).length === 3);
  const pids = pidLines(c.stdoutLines);
  t.same(pids.filter(isGone), [], 'ranks are running');
  process.kill(c.pid, 'SIGKILL');
  const { signal } = await c.done;
  t.equal(signal, 'SIGKILL');
  t.same(await waitGone(pids), [], 'every rank is gone');
});

t.test('invalid options are rejected, naming the option', async (t) => {
  const base: LaunchOptions = { n: 1, program: fixture('print-env.js'), daemon: DAEMON };
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'hi');
  fs.mkdirSync(path.join(dir, 'folder.js'));
  const cases: Array<[Partial<LaunchOptions> & Record<string, unknown>, string | RegExp]> = [
    [{ n: 0 }, /^n must/],
    [{ n: MAX_RANKS + 1 }, /^n must/],
    [{ n: 1.5 }, /^n must/],
    [{ n: '2' as unknown as number }, /^n must/],
    [{ program: '' }, /^program/],
    [{ program: path.join(dir, 'missing.js') }, /^program .*missing\.js does not exist/],
    [{ program: path.join(dir, 'notes.txt') }, /^program .* must end in one of \.js, \.cjs, \.mjs, \.ts/],
    [{ program: path.join(dir, 'folder.js') }, /^program .* not a regular file/],
    [{ args: ['ok', 3 as unknown as string] }, /^args/],
    [{ daemon: undefined as unknown as LaunchOptions['daemon'] }, /^daemon/],
    [{ daemon: { host: '', port: 1 } }, /^daemon\.host/],
    [{ daemon: { host: 'h', port: 0 } }, /^daemon\.port/],
    [{ daemon: { host: 'h', port: 65536 } }, /^daemon\.port/],
    [{ faults: 7 as unknown as string }, /^faults/],
    [{ env: { A: 1 as unknown as string } }, /^env\.A/],
    [{ prefix: 'yes' as unknown as boolean }, /^prefix/],
    [{ onLine: 'x' as unknown as LaunchOptions['onLine'] }, /^onLine/],
    [{ killGraceMs: -1 }, /^killGraceMs/],
    [{ timeoutMs: 0 }, /^timeoutMs/],
    [{ timeoutMs: Number.NaN }, /^timeoutMs/],
    [{ signal: {} as AbortSignal }, /^signal/],
  ];
  for (const [patch, message] of cases) {
    await t.rejects(launch({ ...base, ...patch } as LaunchOptions), { code: 'EINVAL', message }, JSON.stringify(patch));
  }
  const err = await launch({ ...base, n: 0 }).catch((e: unknown) => e);
  t.type(err, InvalidArgumentError);
  t.type(err, EfaError);
});

t.test('rank-bootstrap on its own', async (t) => {
  const run = (args: string[], cwd?: string) =>
    spawnSync(process.execPath, [BOOTSTRAP, ...args], { encoding: 'utf8', cwd, env: { ...process.env, EFA_EMU_RANK: '0' } });

  const ok = run([fixture('print-env.js'), 'x']);
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, `argv=["x"] main=true script=${fixture('print-env.js')}`);

  const rel = run(['print-env.js'], FIXTURES);
  t.equal(rel.status, 0, 'a relative path resolves from the cwd');

  const usage = run([]);
  t.equal(usage.status, 1);
  t.match(usage.stderr, /usage: rank-bootstrap <program>/);

  const missing = run([path.join(os.tmpdir(), 'efa-emu-no-such-program.js')]);
  t.equal(missing.status, 1);
  t.match(missing.stderr, /efa-emu rank-bootstrap: cannot run .*efa-emu-no-such-program\.js does not exist/);

  const dir = tempDir(t);
  const txt = path.join(dir, 'prog.txt');
  fs.writeFileSync(txt, '');
  const badExt = run([txt]);
  t.equal(badExt.status, 1);
  t.match(badExt.stderr, /must end in one of/);

  const broken = path.join(dir, 'broken.ts');
  fs.writeFileSync(broken, 'const x: = ;\n');
  const tsErr = run([broken]);
  t.equal(tsErr.status, 1);
  t.match(tsErr.stderr, /efa-emu rank-bootstrap: cannot load .*broken\.ts/);

  const esmInCjs = path.join(dir, 'esm.js');
  fs.writeFileSync(esmInCjs, 'const a = 1;\nexport {};\n');
  fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  const esm = run([esmInCjs]);
  t.equal(esm.status, 0, `a .js program in a "type": "module" package runs as ESM: ${esm.stderr}`);

  const throwing = path.join(dir, 'throws.cjs');
  fs.writeFileSync(throwing, "throw new Error('top-level failure');\n");
  const thrown = run([throwing]);
  t.equal(thrown.status, 1);
  t.match(thrown.stderr, /top-level failure/);
  t.notMatch(thrown.stderr, /cannot load/, "the program's own exception is reported by Node as usual");

  const exits = path.join(dir, 'exits.cjs');
  fs.writeFileSync(exits, 'process.exitCode = 42;\n');
  t.equal(run([exits]).status, 42);
});

t.test('the exit summary of efa-emu launch', async (t) => {
  const rank = (r: number, code: number | null, signal: string | null, exitAnnounced = false): RankResult => ({ rank: r, pid: 100 + r, code, signal, exitAnnounced });
  const ok = (ranks: RankResult[]): LaunchResult => ({ exitCode: 0, ranks, timedOut: false, interrupted: false });
  t.equal(jobSummary(ok([rank(0, 0, null), rank(1, 0, null)]), []), null, 'a job with nothing to tell stays quiet');
  t.equal(
    jobSummary(ok([rank(0, 0, null), rank(1, 0, null), rank(2, 0, null), rank(3, null, 'SIGKILL', true), rank(4, 0, null)]), [
      { rank: 0, outcome: { restarted: true, downMs: 510, address: { host: '127.0.0.1', port: 4000 } } },
      { rank: 2, outcome: { restarted: false, reason: 'busy' } },
      { rank: 1, outcome: { error: { code: 'EADDRINUSE', message: 'port taken' } } },
    ]),
    'job ended, exit 0: ranks 0-2,4 exit 0; rank 3 SIGKILL (announced); daemon restarts: 3 requested, 1 done, 1 failed, 1 not done',
  );
  t.equal(
    jobSummary({ exitCode: 124, ranks: [rank(0, null, 'SIGTERM'), rank(1, null, null)], timedOut: true, interrupted: false }, []),
    'job ended, exit 124 (timed out): rank 0 SIGTERM; rank 1 never started',
  );
  t.equal(
    jobSummary({ exitCode: 124, ranks: [rank(0, null, 'SIGTERM')], timedOut: true, interrupted: false }, [], 5),
    'job ended, exit 124 (timed out: the job ran past --timeout 5 s, so every rank still running was stopped): rank 0 SIGTERM',
    'with the --timeout it was given, the summary says what timed out',
  );
  t.equal(
    describeRestart({ rank: 0, outcome: { restarted: true, downMs: 510, address: { host: '127.0.0.1', port: 4000 } } }),
    "daemon restarted at rank 0's request: down 510 ms, listening again on 127.0.0.1:4000",
  );
  t.equal(describeRestart({ rank: 1, outcome: { restarted: false, reason: 'external' } }), 'daemon restart asked by rank 1 not done: the daemon was given with --daemon');
  t.equal(
    describeRestart({ rank: 1, outcome: { error: { code: 'EADDRINUSE', message: 'port taken' } } }),
    'daemon restart asked by rank 1 failed: EADDRINUSE: port taken; the job has no daemon now',
  );
});

/** Whether something accepts TCP connections at `port` on loopback. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

t.test('the embedded daemon restarts on its port, once at a time, and close ends a restart', async (t) => {
  const d = await daemonForCommand(undefined, { logger: silentLogger(), token: null });
  t.teardown(() => d.close());
  const c = await DaemonClient.connect({ ...d.address, heartbeatMs: 50, token: null });
  t.teardown(() => c.close());
  const back = new Promise<void>((resolve) => c.once('reconnected', () => resolve()));

  const first = d.restart(100);
  t.same(await d.restart(100), { restarted: false, reason: 'busy' }, 'a second request while one is under way is not done');
  const outcome = await first;
  t.match(outcome, { restarted: true, address: d.address }, 'restarted on the same address');
  t.ok(outcome.restarted && outcome.downMs >= 100, `down for at least the 100 ms asked (${outcome.restarted ? outcome.downMs : '-'} ms)`);
  await back;
  t.equal(c.connected, true, 'a client got back to the restarted daemon');
  await c.put('k', 'v');
  t.equal(await c.get('k'), 'v', 'which serves it');
  await c.close();

  // Closing in the middle of the down time neither waits it out nor leaves a daemon behind.
  const late = d.restart(30_000);
  const started = Date.now();
  await d.close();
  t.ok(Date.now() - started < 10_000, `close did not wait for the 30 s down time (${Date.now() - started} ms)`);
  t.same(await late, { restarted: false, reason: 'closing' });
  t.equal(await listening(d.address.port), false, 'nothing listens on the port any more');
  t.same(await d.restart(10), { restarted: false, reason: 'closing' }, 'no restart after close');
});

t.test('a daemon given with --daemon is not restarted', async (t) => {
  const real = await daemonForCommand(undefined, { logger: silentLogger(), token: null });
  t.teardown(() => real.close());
  const d = await daemonForCommand(`${real.address.host}:${real.address.port}`, { logger: silentLogger() });
  t.same(await d.restart(10), { restarted: false, reason: 'external' });
  await d.close();
});

t.test('a --daemon nobody listens on fails before any rank starts, with one line', async (t) => {
  await t.rejects(daemonForCommand('127.0.0.1:1', { logger: silentLogger() }), { code: 'ECONNREFUSED', message: /cannot connect to the daemon at 127\.0\.0\.1:1/ });
  for (const cmd of [['pingpong'], ['bench'], ['launch', '-n', '2', fixture('print-env.js')]]) {
    // Options before launch's program: what follows it is the program's own.
    const run = await runCli([cmd[0], '--daemon', '127.0.0.1:1', ...cmd.slice(1)], { timeoutMs: 60_000 });
    t.equal(run.code, 1, `${cmd[0]} exits 1`);
    t.equal(run.stderr, 'efa-emu: ECONNREFUSED: cannot connect to the daemon at 127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1\n', `${cmd[0]}: one line, from the command, no rank started`);
  }
});

t.test('usage errors are one line with a stable code', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['bench', '--size', 'abc'], /^efa-emu: EINVAL: option '--size <bytes>' argument 'abc' is invalid\. .* \(--help lists the options\)\n$/],
    [['launch'], /^efa-emu: EINVAL: required option '-n, --np <n>' not specified/],
    [['no-such-command'], /^efa-emu: EINVAL: unknown command 'no-such-command'/],
    [['pingpong', '--bogus'], /^efa-emu: EINVAL: unknown option '--bogus'/],
  ];
  for (const [args, re] of cases) {
    const run = await runCli(args, { timeoutMs: 30_000 });
    t.equal(run.code, 1, `${args.join(' ')}: exit 1`);
    t.match(run.stderr, re, `${args.join(' ')}: the message`);
    t.equal(run.stderr.split('\n').length, 2, `${args.join(' ')}: one line`);
  }
});

t.test("a rank's restart request is ignored unless the launch allows it", async (t) => {
  const ask = fixture('asks-daemon-restart.js');
  const refused = await runCli(['launch', '-n', '1', ask], { timeoutMs: 60_000 });
  t.equal(refused.code, 0, 'the job itself succeeds', { stderr: refused.stderr });
  t.match(refused.stderr, /efa-emu launch: daemon restart asked by rank 0 not done: the launch was not started with --allow-daemon-restart/, 'the launcher says why it did nothing');
  t.notMatch(refused.stderr, /daemon restarted/, 'and did not restart');
  const allowed = await runCli(['launch', '-n', '1', '--allow-daemon-restart', ask, 'wait'], { timeoutMs: 60_000 });
  t.equal(allowed.code, 0, 'the job succeeds', { stderr: allowed.stderr });
  t.match(allowed.stderr, /efa-emu launch: daemon restarted at rank 0's request: down \d+ ms/, 'with the flag the daemon is restarted');
});

t.test("prettyLogs renders the ranks' JSON log records as the launcher's own logs look; other lines pass through", async (t) => {
  const run = async (prettyLogs: boolean): Promise<string[]> => {
    const lines: string[] = [];
    const result = await launch({ n: 2, program: fixture('logs-json.js'), daemon: DAEMON, prettyLogs, onLine: (rank, stream, line) => stream === 'stderr' && lines.push(`${rank}|${line}`) });
    t.equal(result.exitCode, 0, 'the job succeeded');
    return lines;
  };
  const pretty = await run(true);
  for (const rank of [0, 1]) {
    const mine = pretty.filter((l) => l.startsWith(`${rank}|`)).map((l) => l.slice(2));
    t.ok(mine.some((l) => /WARN.*hello from a rank/.test(l)), `rank ${rank}: the record as a pretty line (${JSON.stringify(mine)})`);
    t.ok(mine.some((l) => /peers: 3/.test(l)), `rank ${rank}: its fields on lines of their own`);
    t.notOk(mine.some((l) => l.startsWith('{')), `rank ${rank}: no raw JSON`);
    t.ok(mine.includes('plain stderr line'), `rank ${rank}: a plain line unchanged`);
  }
  const raw = await run(false);
  t.ok(raw.some((l) => /^0\|\{"level":40,.*"msg":"hello from a rank"/.test(l)), 'without it the record stays JSON');
});
