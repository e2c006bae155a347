import fs from 'node:fs';
import path from 'node:path';
import { EfaError } from '../common/errors';
import { PcapWriter, readPcap, type PcapRecord } from '../io/pcap-writer';

/**
 * `--capture FILE` for commands that start ranks: each rank writes its own part
 * (`FILE.rank<N>.part`, through EFA_EMU_CAPTURE), and when the job ends the parts are merged
 * into FILE in time order and removed.
 */
export function captureEnv(file: string | undefined): NodeJS.ProcessEnv {
  return file === undefined ? {} : { EFA_EMU_CAPTURE: `${path.resolve(file)}.rank{rank}.part` };
}

/** Merges the parts the ranks wrote into `file`; returns how many packets it holds. */
export async function mergeCapture(file: string | undefined): Promise<number> {
  if (file === undefined) return 0;
  const target = path.resolve(file);
  const dir = path.dirname(target);
  const prefix = `${path.basename(target)}.rank`;
  const parts = fs
    .readdirSync(dir)
    .filter((f) => f.startsWith(prefix) && f.endsWith('.part'))
    .map((f) => path.join(dir, f));
  const records: PcapRecord[] = [];
  let bytes = 0;
  for (const p of parts) {
    bytes += fs.statSync(p).size;
    // One at a time: spreading a few hundred thousand records into push() overflows the stack.
    for (const r of readPcap(p)) records.push(r);
  }
  // Stable: packets with equal stamps keep each part's order.
  records.sort((a, b) => a.tsMs - b.tsMs);
  // Everything is in memory already: the writer may hold all of it rather than drop any
  // record while the disk catches up (its default bound is for live captures).
  const out = PcapWriter.open(target, { bufferBytes: Math.min(2 ** 31, Math.max(16 * 1024 * 1024, 2 * bytes)) });
  for (const r of records) out.writeUdp(r.payload, r.payload.length, r.src.host, r.src.port, r.dst.host, r.dst.port, r.tsMs);
  await out.close();
  if (out.dropped > 0) {
    // The parts are kept: nothing is lost, the merge can be done again.
    throw new EfaError('EIO', `--capture ${file}: the merge lost ${out.dropped} of ${records.length} records writing ${target}; the ranks' parts are kept (${parts.length} files ${prefix}*.part)`);
  }
  for (const p of parts) fs.rmSync(p, { force: true });
  return records.length;
}
