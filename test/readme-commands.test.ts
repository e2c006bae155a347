/*
 * Runs every command of the README's shell blocks, as written, so the README cannot rot.
 * `npx efa-emu` runs this checkout's CLI; `npm ci` and `npm test` are what CI itself runs, so
 * they are only checked to be there. The daemon line starts the daemon (it runs until
 * stopped) and the status line after it talks to that daemon.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { CLI, ROOT, runCli } from './helpers/run-cli';
import { tsharkProblem } from './helpers/tshark';

/** The commands of the README's ```sh blocks, comments removed. */
function readmeCommands(): string[] {
  const text = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const out: string[] = [];
  let inSh = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) {
      inSh = line.trim() === '```sh';
      continue;
    }
    if (inSh && line.trim() !== '') out.push(stripComment(line).trim());
  }
  return out;
}

function stripComment(line: string): string {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '"') quoted = !quoted;
    if (!quoted && line[i] === '#' && (i === 0 || line[i - 1] === ' ')) return line.slice(0, i);
  }
  return line;
}

/** Splits a command line into words; double quotes group, as the shell does for these lines. */
function words(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  let any = false;
  for (const ch of line) {
    if (ch === '"') {
      quoted = !quoted;
      any = true;
    } else if (ch === ' ' && !quoted) {
      if (any) out.push(cur);
      cur = '';
      any = false;
    } else {
      cur += ch;
      any = true;
    }
  }
  if (any) out.push(cur);
  return out;
}

/** `port N is taken` when something else listens on the README daemon's port, else false. */
function daemonPortProblem(port: number): string | false {
  // A child process so the check stays synchronous: the skip is decided when tests are declared.
  const probe = spawnSync(
    process.execPath,
    ['-e', `require('node:net').createServer().on('error', (e) => process.exit(e.code === 'EADDRINUSE' ? 3 : 1)).listen(${port}, '127.0.0.1', () => process.exit(0))`],
    { encoding: 'utf8', timeout: 10_000 },
  );
  // Any other trouble is the daemon's to report: its test then fails with the real error.
  return probe.status === 3 ? `port ${port} is taken on this machine` : false;
}

const isDaemonLine = (argv: string[]): boolean => argv[0] === 'npx' && argv[1] === 'efa-emu' && argv[2] === 'daemon';
const isStatusLine = (argv: string[]): boolean => argv[0] === 'npx' && argv[1] === 'efa-emu' && argv[2] === 'status';

const commands = readmeCommands();
const hasDaemon = commands.some((line) => isDaemonLine(words(line)));
const noDaemon = hasDaemon ? daemonPortProblem(18515) : 'the README starts no daemon';
const noTshark = commands.some((line) => words(line)[0] === 'tshark') ? tsharkProblem() : false;
/** Why a README command cannot run on this machine, or false when it can. */
function skipReason(argv: string[]): string | false {
  if (isDaemonLine(argv)) return noDaemon;
  // The status line asks the daemon the daemon line started: it goes when that one does.
  if (isStatusLine(argv) && noDaemon !== false) return `no daemon of this test to ask: ${noDaemon}`;
  if (argv[0] === 'tshark') return noTshark;
  return false;
}

const stateHome = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-readme-'));
t.teardown(() => fs.rmSync(stateHome, { recursive: true, force: true }));
// The standalone daemon keeps its state under XDG_STATE_HOME: never the user's real one.
const env = { XDG_STATE_HOME: stateHome };
let daemon: ChildProcess | null = null;
t.teardown(() => daemon?.kill('SIGKILL'));

// Every README demo runs for real, one after another (several compile a .ts program first):
// together they take longer than the per-file default, each command being bounded below.
t.setTimeout(360_000);

t.ok(commands.length >= 8, `the README has its commands (${commands.length})`);
t.ok(commands.includes('npm ci') && commands.includes('npm test'), 'the two commands: npm ci, then npm test');

for (const line of commands) {
  const argv = words(line);
  if (argv[0] === 'npm') continue;
  t.test(line, { skip: skipReason(argv) }, async (t) => {
    if (isDaemonLine(argv)) {
      daemon = spawn(process.execPath, [CLI, ...argv.slice(2)], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      const started = await new Promise<string>((resolve) => {
        let out = '';
        const guard = setTimeout(() => resolve(`timeout: ${out}`), 15_000);
        daemon?.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('listening on')) {
            clearTimeout(guard);
            resolve(out);
          }
        });
        daemon?.on('exit', () => {
          clearTimeout(guard);
          resolve(`exited: ${out}`);
        });
      });
      t.match(started, /efa-emu daemon listening on 127\.0\.0\.1:18515/);
      return;
    }
    if (argv[0] === 'npx' && argv[1] === 'efa-emu') {
      const run = await runCli(argv.slice(2), { timeoutMs: 180_000, env });
      t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-2000)})`);
      if (argv[2] === 'status') t.match(run.stdout, /NAME\s+RANK\s+GID/);
      if (argv.includes('--json')) t.doesNotThrow(() => JSON.parse(run.stdout.trim().split('\n').pop() ?? ''), 'the last line is JSON');
      return;
    }
    if (argv[0] === 'tshark') {
      const run = spawnSync(argv[0], argv.slice(1), { cwd: ROOT, encoding: 'utf8' });
      t.equal(run.status, 0, run.stderr);
      t.match(run.stdout, /SRD_DATA/);
      return;
    }
    t.fail(`the README runs a command this test does not know how to run: ${line}`);
  });
}

t.test('the daemon started above stops cleanly', { skip: noDaemon }, async (t) => {
  t.ok(daemon !== null && daemon.exitCode === null && daemon.signalCode === null, 'the daemon is still running');
  if (daemon === null || daemon.exitCode !== null || daemon.signalCode !== null) return;
  const code = await new Promise<number | null>((resolve) => {
    daemon?.on('exit', (c) => resolve(c));
    daemon?.kill('SIGTERM');
  });
  t.equal(code, 0);
  daemon = null;
});
