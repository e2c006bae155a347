/*
 * The SRD soak: runs a range of simulation seeds (default 100,000 from seed 1) on every core
 * and prints each failure with its replay lines. `npm run soak -- --seeds 20000 --first 5000
 * --jobs 2`; `--scenario rdma` runs the RDMA scenarios (test/helpers/rdma-scenario.ts) instead
 * of the message ones, `--scenario rdm` the RDM endpoint's (test/helpers/rdm-scenario.ts).
 * Exits 1 when any seed fails, 0 otherwise.
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { drawParams, failureReport, runScenario } from '../helpers/srd-scenario';
import { describeRdmaParams, drawRdmaParams, runRdmaScenario } from '../helpers/rdma-scenario';
import { drawRdmParams, rdmFailureReport, runRdmScenario } from '../helpers/rdm-scenario';

interface Job {
  first: number;
  count: number;
  stride: number;
  offset: number;
  scenario: 'srd' | 'rdma' | 'rdm';
}

type Report = { kind: 'progress'; done: number; msgs: number } | { kind: 'failure'; seed: number; text: string } | { kind: 'done' };

async function work(job: Job): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('srd-soak worker without a parent');
  let done = 0;
  let msgs = 0;
  for (let i = job.offset; i < job.count; i += job.stride) {
    const seed = job.first + i;
    try {
      if (job.scenario === 'rdma') {
        const p = drawRdmaParams(seed);
        const res = await runRdmaScenario(p);
        msgs += res.ops;
        if (res.problems.length > 0) port.postMessage({ kind: 'failure', seed, text: `${describeRdmaParams(p)}\n  ${res.problems.join('\n  ')}\n  replay: RDMA_SIM_SEED=${seed}` } satisfies Report);
      } else if (job.scenario === 'rdm') {
        const p = drawRdmParams(seed);
        const res = await runRdmScenario(p);
        msgs += res.msgs;
        if (res.problems.length > 0) port.postMessage({ kind: 'failure', seed, text: rdmFailureReport(p, res) } satisfies Report);
      } else {
        const p = drawParams(seed);
        const res = await runScenario(p);
        msgs += res.msgs;
        if (res.problems.length > 0) port.postMessage({ kind: 'failure', seed, text: failureReport(p, res, `SRD_SIM_SEED=${seed}`) } satisfies Report);
      }
    } catch (err) {
      const replay = job.scenario === 'rdm' ? 'RDM_SIM_SEED' : job.scenario === 'rdma' ? 'RDMA_SIM_SEED' : 'SRD_SIM_SEED';
      port.postMessage({ kind: 'failure', seed, text: `threw ${(err as Error).stack ?? String(err)}\n  replay in the simulation: ${replay}=${seed}` } satisfies Report);
    }
    if (++done % 500 === 0) {
      port.postMessage({ kind: 'progress', done: 500, msgs } satisfies Report);
      msgs = 0;
    }
  }
  port.postMessage({ kind: 'progress', done: done % 500, msgs } satisfies Report);
  port.postMessage({ kind: 'done' } satisfies Report);
}

function main(): void {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string', default: '100000' },
      first: { type: 'string', default: '1' },
      jobs: { type: 'string', default: String(availableParallelism()) },
      scenario: { type: 'string', default: 'srd' },
    },
  });
  const scenario = values.scenario;
  if (scenario !== 'srd' && scenario !== 'rdma' && scenario !== 'rdm') {
    process.stderr.write(`srd-soak: --scenario must be srd, rdma or rdm, got ${String(scenario)}\n`);
    process.exit(2);
  }
  const count = Number(values.seeds);
  const first = Number(values.first);
  const jobs = Number(values.jobs);
  for (const [name, v, min] of [['--seeds', count, 1], ['--first', first, 0], ['--jobs', jobs, 1]] as const) {
    if (!Number.isInteger(v) || v < min) {
      process.stderr.write(`srd-soak: ${name} must be an integer >= ${min}, got ${String(v)}\n`);
      process.exit(2);
    }
  }
  const started = performance.now();
  let done = 0;
  let msgs = 0;
  let running = jobs;
  const failed: number[] = [];
  let lastShown = 0;
  process.stdout.write(`srd-soak: ${scenario} seeds ${first}..${first + count - 1} on ${jobs} worker(s)\n`);
  for (let w = 0; w < jobs; w++) {
    const worker = new Worker(__filename, { workerData: { first, count, stride: jobs, offset: w, scenario } satisfies Job });
    worker.on('message', (m: Report) => {
      if (m.kind === 'progress') {
        done += m.done;
        msgs += m.msgs;
        const s = (performance.now() - started) / 1000;
        if (s - lastShown >= 10 || done === count) {
          lastShown = s;
          process.stdout.write(`srd-soak: ${done}/${count} seeds, ${msgs} messages, ${failed.length} failed, ${s.toFixed(0)} s\n`);
        }
      } else if (m.kind === 'failure') {
        failed.push(m.seed);
        process.stdout.write(`srd-soak: seed ${m.seed} FAILED: ${m.text}\n`);
      }
    });
    worker.on('error', (err) => {
      process.stderr.write(`srd-soak: worker ${w} died: ${err.stack ?? String(err)}\n`);
      process.exitCode = 1;
    });
    worker.on('exit', () => {
      if (--running > 0) return;
      const s = (performance.now() - started) / 1000;
      process.stdout.write(
        `srd-soak: ${done} seeds (${first}..${first + count - 1}), ${msgs} messages in ${s.toFixed(1)} s: ${failed.length === 0 ? 'all passed' : `${failed.length} failed: ${failed.sort((a, b) => a - b).join(', ')}`}\n`,
      );
      if (failed.length > 0) process.exitCode = 1;
    });
  }
}

if (isMainThread) main();
else void work(workerData as Job);
