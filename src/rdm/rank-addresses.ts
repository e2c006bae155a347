import { InvalidArgumentError } from '../common/errors';
import type { DaemonClient } from '../control/client';
import type { RdmEndpoint } from './rdm-endpoint';

/**
 * The out-of-band address exchange every RDM job starts with (what a PMI or MPI's modex does
 * for libfabric): each rank publishes its endpoint's raw address under `key/<rank>` in the
 * daemon's store, reads every other rank's and inserts them all into its AV, in rank order.
 * Returns the fi_addr of each rank (its own included, as fabtests and MPI insert themselves too).
 */
export async function insertRanks(ep: RdmEndpoint, daemon: DaemonClient, rank: number, world: number, key: string, timeoutMs = 60_000): Promise<number[]> {
  if (!Number.isInteger(world) || world < 1 || !Number.isInteger(rank) || rank < 0 || rank >= world) {
    throw new InvalidArgumentError(`insertRanks: rank ${rank} of ${world} is not a rank of the job`);
  }
  await daemon.put(`${key}/${rank}`, Buffer.from(ep.getName()).toString('base64'));
  const out: number[] = [];
  for (let r = 0; r < world; r++) {
    const text = r === rank ? Buffer.from(ep.getName()).toString('base64') : await daemon.get(`${key}/${r}`, timeoutMs);
    out.push(await ep.av.insert(Buffer.from(text, 'base64')));
  }
  return out;
}
