import { spawn } from 'node:child_process';
import { join } from 'node:path';

/** The repository root (tests run from dist/test/...). */
export const ROOT = join(__dirname, '..', '..', '..');
export const CLI = join(ROOT, 'bin', 'efa-emu.js');

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** CLIs still running: killed if this test process is stopped (tap's timeout sends SIGTERM). */
const running = new Set<import('node:child_process').ChildProcess>();
let reaperInstalled = false;

function installReaper(): void {
  if (reaperInstalled) return;
  reaperInstalled = true;
  const killAll = (): void => {
    for (const c of running) c.kill('SIGKILL');
  };
  process.once('exit', killAll);
  process.once('SIGTERM', () => {
    killAll();
    process.exit(143);
  });
}

/**
 * Runs the efa-emu CLI as a user would and collects its output. The child is killed when
 * `timeoutMs` passes, so a hang fails the test instead of stalling the suite.
 */
export function runCli(args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    installReaper();
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      running.delete(child);
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The last non-empty line of a text, parsed as JSON. */
export function lastJsonLine(text: string): Record<string, unknown> {
  const lines = text.trim().split('\n').filter((l) => l.trim() !== '');
  return JSON.parse(lines[lines.length - 1]) as Record<string, unknown>;
}
