// Seeded RDM scenarios (test/helpers/rdm-scenario.ts): 2-4 endpoints exchange messages of every
// protocol, tagged and untagged, some with remote CQ data, some to wildcard receives, under
// drawn loss, duplication, reordering and corruption, ordered or not, on devices with and
// without RDMA read; the oracle wants every message received exactly once, intact, and no error.
// The soak (`node dist/test/soak/srd-soak.js --scenario rdm`) runs many more seeds.
// RDM_SIM_SEED=n replays one seed; RDM_SIM_SEEDS=n sets how many run.
import t from 'tap';
import { drawRdmParams, rdmFailureReport, runRdmScenario } from './helpers/rdm-scenario';

const one = process.env.RDM_SIM_SEED;
const seeds = one !== undefined ? [Number(one)] : Array.from({ length: Number(process.env.RDM_SIM_SEEDS ?? 200) }, (_, i) => i + 1);

t.test(`${seeds.length} seeded RDM scenarios: every message exactly once, intact, no errors`, async (t) => {
  let msgs = 0;
  let bytes = 0;
  const bad: string[] = [];
  const sum: Record<string, number> = {};
  for (const seed of seeds) {
    const p = drawRdmParams(seed);
    const res = await runRdmScenario(p);
    msgs += res.msgs;
    bytes += res.bytes;
    for (const [k, v] of Object.entries(res.counters)) sum[k] = (sum[k] ?? 0) + v;
    if (res.problems.length > 0) bad.push(`seed ${seed}: ${rdmFailureReport(p, res)}`);
  }
  t.same(bad, [], `no seed broke a rule (${msgs} messages, ${bytes} bytes)`);
  if (one !== undefined) return;
  // The seeds between them exercise what the scenario is for (a weaker draw would pass vacuously).
  for (const proto of ['eager', 'medium', 'longcts', 'longread']) t.ok(sum[`${proto}_rx_msgs`] > 0, `${proto} messages: ${sum[`${proto}_rx_msgs`]}`);
  for (const k of ['unexpected_msgs', 'unexpected_matched', 'reorder_buffered', 'rnr_packets', 'rnr_backoffs', 'wildcard_recvs', 'data_msgs']) t.ok((sum[k] ?? 0) > 0, `${k}: ${sum[k] ?? 0}`);
});
