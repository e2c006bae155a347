import fs from 'node:fs';
import path from 'node:path';
import { EfaError } from '../common/errors';
import { mergePcapFiles } from '../io/pcap-merge';

/**
 * `--capture FILE` for commands that start ranks: each rank writes its own part
 * (`FILE.rank<N>.part`, through EFA_EMU_CAPTURE), and when the job ends the parts are merged
 * into FILE in time order and removed.
 */
export function captureEnv(file: string | undefined): NodeJS.ProcessEnv {
  return file === undefined ? {} : { EFA_EMU_CAPTURE: `${path.resolve(file)}.rank{rank}.part` };
}

/**
 * Merges the parts the ranks wrote into `file` in time order, streaming (memory stays flat
 * however large the capture), and removes them; returns how many packets it holds. On failure
 * the parts are kept, so nothing is lost and the merge can be done again.
 */
export async function mergeCapture(file: string | undefined): Promise<number> {
  if (file === undefined) return 0;
  const target = path.resolve(file);
  const dir = path.dirname(target);
  const prefix = `${path.basename(target)}.rank`;
  const parts = fs
    .readdirSync(dir)
    .filter((f) => f.startsWith(prefix) && f.endsWith('.part'))
    .sort(byRank)
    .map((f) => path.join(dir, f));
  if (parts.length === 0) return 0;
  let n: number;
  try {
    n = mergePcapFiles(parts, target);
  } catch (err) {
    const e = err as Error & { code?: string };
    throw new EfaError(e.code ?? 'EIO', `--capture ${file}: the merge failed (${e.message}); the ranks' parts are kept (${parts.length} files ${prefix}*.part)`);
  }
  for (const p of parts) fs.rmSync(p, { force: true });
  return n;
}

/** Parts in rank order, so packets with equal stamps come out lower rank first. */
function byRank(a: string, b: string): number {
  const rank = (f: string): number => Number(/\.rank(\d+)\.part$/.exec(f)?.[1] ?? 0);
  return rank(a) - rank(b);
}
