import { execFile, spawnSync } from 'node:child_process';
import path from 'node:path';

/** The project's Wireshark dissector. */
export const DISSECTOR = path.resolve(__dirname, '..', '..', '..', 'contrib', 'wireshark', 'efa-emu.lua');

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

/**
 * Runs tshark on `file` with the dissector loaded and a private config dir (the user's
 * preferences must not change what is decoded); rejects on a non-zero exit or a Lua error.
 */
export function tshark(file: string, args: string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'tshark',
      ['-n', '-r', file, '-X', `lua_script:${DISSECTOR}`, ...args],
      { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, WIRESHARK_CONFIG_DIR: path.dirname(file) } },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`tshark ${args.join(' ')}: ${err.message}\n${stderr}`));
        if (/lua.*error/i.test(stderr) || /Lua Error/.test(stdout)) return reject(new Error(`Lua error:\n${stderr}\n${stdout}`));
        resolve(stdout);
      },
    );
  });
}

/**
 * tshark's `-T fields` output for `fields`, one row per packet (every occurrence of a field
 * joined by commas). Tab-separated: an Info column may itself hold " | ".
 */
export async function tsharkFields<F extends string>(file: string, fields: readonly F[], extra: string[] = []): Promise<Array<Record<F, string>>> {
  const args = [...extra, '-T', 'fields', '-E', 'separator=/t', '-E', 'occurrence=a', '-E', 'aggregator=,'];
  for (const f of fields) args.push('-e', f);
  const out = await tshark(file, args);
  return out
    .split('\n')
    .filter((l) => l.length > 0)
    .map((line) => {
      const cols = line.split('\t');
      const row = {} as Record<F, string>;
      fields.forEach((f, i) => (row[f] = cols[i] ?? ''));
      return row;
    });
}
