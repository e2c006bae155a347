// Ranks started by Slurm's srun (Debian's slurm-wlm) instead of efa-emu launch: a private
// one-node cluster comes up for the test (test/helpers/slurm.ts), each rank reads its rank and
// size from SLURM_PROCID/SLURM_NTASKS, reaches one daemon through EFA_EMU_DAEMON, and
// examples/srd-stress delivers every message. Skipped, with the reason, without Slurm or root.
import { execFile } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { startDaemon } from '../src/control/server';
import { ROOT } from './helpers/run-cli';
import { slurmProblem, startSlurmCluster } from './helpers/slurm';

const skip = slurmProblem();

t.test('srun -n 4 --oversubscribe node examples/srd-stress.js against one daemon', { skip }, async (t) => {
  const up = Date.now();
  const cluster = await startSlurmCluster({ cpus: 4 });
  t.teardown(() => cluster.stop());
  t.comment(`${cluster.version} up in ${Date.now() - up} ms, daemons on ${cluster.loopbackOnly ? 'loopback only' : 'every interface'}`);
  const daemon = await startDaemon({ port: 0, statePath: null });
  t.teardown(() => daemon.close());
  const args = [
    '-N',
    '1',
    '-n',
    '4',
    '--oversubscribe',
    '--export=ALL',
    '--label',
    '--kill-on-bad-exit=1',
    '--time=2',
    '--job-name=efa-emu-srd-stress',
    process.execPath,
    path.join(ROOT, 'dist', 'examples', 'srd-stress.js'),
    '--messages',
    '50',
  ];
  const env = cluster.env({ EFA_EMU_DAEMON: daemon.address, EFA_EMU_JOB_ID: `srun-${process.pid}` });
  // An efa-emu rank or size in the outer environment would win over Slurm's (first found wins).
  delete env.EFA_EMU_RANK;
  delete env.EFA_EMU_SIZE;
  const started = Date.now();
  const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(cluster.srun, args, { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
    );
  });
  t.comment(`srun took ${Date.now() - started} ms`);
  t.equal(out.code, 0, `srun exit 0 (stderr: ${out.stderr.slice(-1500)})`, out.code === 0 ? {} : { diagnostic: true, logs: cluster.logs() });
  // --label prefixes each line with the task that wrote it, so this is rank 0's own line.
  const line = out.stdout
    .split('\n')
    .map((l) => /^\s*0: (\{"ranks".*)$/.exec(l)?.[1])
    .find((l) => l !== undefined);
  t.ok(line !== undefined, 'rank 0 printed the result');
  const r = JSON.parse(line ?? '{}') as { ranks: number; delivered: number; expected: number; duplicates: number; missing: number; corrupt: number };
  t.equal(r.ranks, 4, 'the world is the 4 tasks srun started');
  t.equal(r.delivered, r.expected, 'every message delivered');
  t.same([r.duplicates, r.missing, r.corrupt], [0, 0, 0], 'no duplicate, none missing, none corrupt');
  t.ok(r.expected === 4 * 3 * 50, 'each rank sent 50 to each other rank');
});
