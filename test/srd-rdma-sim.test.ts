// Seeded RDMA scenarios (test/helpers/rdma-scenario.ts): random writes, writes with immediate,
// reads and sends between 2-3 devices under drawn loss, duplication, reordering, corruption
// and partitions, each checked by the scenario's oracle. npm test runs a few hundred seeds;
// the soak (`node dist/test/soak/srd-soak.js --scenario rdma`) runs many more.
// RDMA_SIM_SEED=n replays one seed.
import t from 'tap';
import { describeRdmaParams, drawRdmaParams, runRdmaScenario } from './helpers/rdma-scenario';

const one = process.env.RDMA_SIM_SEED;
const seeds = one !== undefined ? [Number(one)] : Array.from({ length: Number(process.env.RDMA_SIM_SEEDS ?? 300) }, (_, i) => i + 1);

t.test(`${seeds.length} seeded RDMA scenarios: every operation once, in bounded time, data exact`, async (t) => {
  let ops = 0;
  let failed = 0;
  let bytes = 0;
  const bad: string[] = [];
  for (const seed of seeds) {
    const p = drawRdmaParams(seed);
    const res = await runRdmaScenario(p);
    ops += res.ops;
    failed += res.failed;
    bytes += res.bytes;
    if (res.problems.length > 0) bad.push(`seed ${seed}: ${describeRdmaParams(p)}\n  ${res.problems.join('\n  ')}\n  replay: RDMA_SIM_SEED=${seed}`);
  }
  t.same(bad, [], `no seed broke a rule (${ops} operations, ${bytes} bytes moved, ${failed} failed under long partitions)`);
  t.ok(ops > seeds.length * 8, 'the scenarios ran operations');
});
