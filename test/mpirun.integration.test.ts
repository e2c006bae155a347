// Ranks started by Open MPI's mpirun (Debian's openmpi-bin) instead of efa-emu launch: each
// reads its rank and size from OMPI_COMM_WORLD_*, reaches one daemon through EFA_EMU_DAEMON,
// and examples/srd-stress delivers every message. Skipped, with the reason, without mpirun.
import { execFile, spawnSync } from 'node:child_process';
import path from 'node:path';
import t from 'tap';
import { startDaemon } from '../src/control/server';
import { ROOT } from './helpers/run-cli';

function mpirunProblem(): string | false {
  const r = spawnSync('mpirun', ['--version'], { encoding: 'utf8', timeout: 30_000 });
  if (r.error !== undefined) return 'mpirun not installed (apt-get install openmpi-bin)';
  if (r.status !== 0) return `mpirun --version failed (exit ${r.status})`;
  if (!/Open MPI|OpenRTE/i.test(r.stdout + r.stderr)) return 'mpirun is not Open MPI';
  return false;
}

const skip = mpirunProblem();

t.test('mpirun -np 4 --oversubscribe node examples/srd-stress.js against one daemon', { skip }, async (t) => {
  const daemon = await startDaemon({ port: 0, statePath: null });
  t.teardown(() => daemon.close());
  const root = typeof process.getuid === 'function' && process.getuid() === 0 ? ['--allow-run-as-root'] : [];
  const args = [
    ...root,
    '--oversubscribe',
    '-np',
    '4',
    '-x',
    'EFA_EMU_DAEMON',
    '-x',
    'EFA_EMU_JOB_ID',
    process.execPath,
    path.join(ROOT, 'dist', 'examples', 'srd-stress.js'),
    '--messages',
    '50',
  ];
  const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile('mpirun', args, { env: { ...process.env, EFA_EMU_DAEMON: daemon.address, EFA_EMU_JOB_ID: `mpirun-${process.pid}` }, encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
    );
  });
  t.equal(out.code, 0, `mpirun exit 0 (stderr: ${out.stderr.slice(-1500)})`);
  const line = out.stdout.split('\n').find((l) => l.startsWith('{"ranks"'));
  t.ok(line !== undefined, 'rank 0 printed the result');
  const r = JSON.parse(line ?? '{}') as { ranks: number; delivered: number; expected: number; duplicates: number; missing: number; corrupt: number };
  t.equal(r.ranks, 4, 'the world is the 4 ranks mpirun started');
  t.equal(r.delivered, r.expected, 'every message delivered');
  t.same([r.duplicates, r.missing, r.corrupt], [0, 0, 0], 'no duplicate, none missing, none corrupt');
  t.ok(r.expected === 4 * 3 * 50, 'each rank sent 50 to each other rank');
});
