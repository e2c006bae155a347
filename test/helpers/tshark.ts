import { spawnSync } from 'node:child_process';

/**
 * Why tshark cannot run the project's Lua dissector on this machine (not installed, broken, or
 * built without Lua), or false when it can: a test's `{ skip }` value, so the reason is shown.
 */
export function tsharkProblem(): string | false {
  const r = spawnSync('tshark', ['-v'], { encoding: 'utf8', timeout: 60_000 });
  if (r.error !== undefined) return 'tshark not installed';
  if (r.status !== 0) return `tshark -v failed (exit ${r.status})`;
  if (/without Lua/i.test(r.stdout) || !/with Lua/i.test(r.stdout)) return 'tshark built without Lua';
  return false;
}
