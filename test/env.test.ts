import t, { type Test } from 'tap';
import { EfaError, InvalidArgumentError } from '../src/common/errors';
import {
  DEFAULT_DAEMON_HOST,
  DEFAULT_DAEMON_PORT,
  ENV_DAEMON,
  ENV_DEVICE_NAME,
  ENV_FAULTS,
  ENV_LAUNCHED,
  ENV_RANK,
  ENV_SIZE,
  formatHostPort,
  parseHostPort,
  rankEnvVars,
  readRankEnv,
} from '../src/env';

function throwsNaming(t: Test, fn: () => unknown, name: string): void {
  try {
    fn();
    t.fail(`expected an error naming ${name}`);
  } catch (err) {
    t.type(err, InvalidArgumentError);
    t.equal((err as EfaError).code, 'EINVAL');
    t.match((err as Error).message, name);
  }
}

t.test('variable names are the documented ones', async (t) => {
  t.equal(ENV_DAEMON, 'EFA_EMU_DAEMON');
  t.equal(ENV_RANK, 'EFA_EMU_RANK');
  t.equal(ENV_SIZE, 'EFA_EMU_SIZE');
  t.equal(ENV_FAULTS, 'EFA_EMU_FAULTS');
  t.equal(ENV_DEVICE_NAME, 'EFA_EMU_DEVICE_NAME');
  t.equal(ENV_LAUNCHED, 'EFA_EMU_LAUNCHED');
});

t.test('an empty environment gives defaults', async (t) => {
  t.same(readRankEnv({}), {
    rank: null,
    size: null,
    daemon: { host: '127.0.0.1', port: 18515 },
    faults: null,
    srd: null,
    deviceName: null,
    generation: null,
    launched: false,
  });
  t.equal(DEFAULT_DAEMON_HOST, '127.0.0.1');
  t.equal(DEFAULT_DAEMON_PORT, 18515);
});

t.test('everything efa-emu launch sets is read back', async (t) => {
  const env = rankEnvVars({ rank: 2, size: 4, daemon: { host: '10.0.0.5', port: 9000 }, faults: 'loss=1%,seed=3' });
  t.same(env, {
    EFA_EMU_DAEMON: '10.0.0.5:9000',
    EFA_EMU_RANK: '2',
    EFA_EMU_SIZE: '4',
    EFA_EMU_LAUNCHED: '1',
    EFA_EMU_FAULTS: 'loss=1%,seed=3',
  });
  t.same(readRankEnv({ ...env, EFA_EMU_DEVICE_NAME: 'efa3', EFA_EMU_GENERATION: 'efa1' }), {
    rank: 2,
    size: 4,
    daemon: { host: '10.0.0.5', port: 9000 },
    faults: 'loss=1%,seed=3',
    srd: null,
    deviceName: 'efa3',
    generation: 'efa1',
    launched: true,
  });
  t.equal(rankEnvVars({ rank: 0, size: 1, daemon: { host: 'h', port: 1 }, generation: 'efa0' }).EFA_EMU_GENERATION, 'efa0', 'the launcher passes the generation on');
  t.notOk('EFA_EMU_FAULTS' in rankEnvVars({ rank: 0, size: 1, daemon: { host: 'h', port: 1 }, faults: null }));
});

t.test('rank and size precedence: EFA_EMU, then Slurm, then Open MPI, then PMI', async (t) => {
  const all = {
    EFA_EMU_RANK: '0',
    EFA_EMU_SIZE: '10',
    SLURM_PROCID: '1',
    SLURM_NTASKS: '11',
    OMPI_COMM_WORLD_RANK: '2',
    OMPI_COMM_WORLD_SIZE: '12',
    PMI_RANK: '3',
    PMI_SIZE: '13',
  };
  const pick = (env: Record<string, string>) => {
    const r = readRankEnv(env);
    return [r.rank, r.size];
  };
  t.same(pick(all), [0, 10]);
  const { EFA_EMU_RANK, EFA_EMU_SIZE, ...slurm } = all;
  t.same(pick(slurm), [1, 11]);
  const { SLURM_PROCID, SLURM_NTASKS, ...ompi } = slurm;
  t.same(pick(ompi), [2, 12]);
  const { OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, ...pmi } = ompi;
  t.same(pick(pmi), [3, 13]);
  // Each is chosen on its own: rank from one launcher's variable, size from another's.
  t.same(pick({ PMI_RANK: '4', SLURM_NTASKS: '5' }), [4, 5]);
  t.same(pick({ SLURM_PROCID: '7' }), [7, null]);
  t.same(pick({ OMPI_COMM_WORLD_SIZE: '3' }), [null, 3]);
  // An empty variable counts as unset, so the next one is used.
  t.same(pick({ EFA_EMU_RANK: '', SLURM_PROCID: '1', EFA_EMU_SIZE: ' ', PMI_SIZE: '2' }), [1, 2]);
  // Surrounding blanks are tolerated.
  t.same(pick({ EFA_EMU_RANK: ' 1 ', EFA_EMU_SIZE: '2\n' }), [1, 2]);
});

t.test('malformed rank and size name the variable', async (t) => {
  throwsNaming(t, () => readRankEnv({ EFA_EMU_RANK: 'one' }), 'EFA_EMU_RANK');
  throwsNaming(t, () => readRankEnv({ EFA_EMU_RANK: '-1' }), 'EFA_EMU_RANK');
  throwsNaming(t, () => readRankEnv({ EFA_EMU_RANK: '1.5' }), 'EFA_EMU_RANK');
  throwsNaming(t, () => readRankEnv({ EFA_EMU_RANK: '1e3' }), 'EFA_EMU_RANK');
  throwsNaming(t, () => readRankEnv({ EFA_EMU_RANK: '99999999999999999999' }), 'EFA_EMU_RANK');
  throwsNaming(t, () => readRankEnv({ SLURM_PROCID: 'x' }), 'SLURM_PROCID');
  throwsNaming(t, () => readRankEnv({ EFA_EMU_SIZE: '0' }), 'EFA_EMU_SIZE');
  throwsNaming(t, () => readRankEnv({ PMI_SIZE: 'many' }), 'PMI_SIZE');
  // A bad value is an error even when a lower-precedence variable is fine.
  throwsNaming(t, () => readRankEnv({ EFA_EMU_RANK: 'x', SLURM_PROCID: '0' }), 'EFA_EMU_RANK');
});

t.test('rank must be below size', async (t) => {
  throwsNaming(t, () => readRankEnv({ EFA_EMU_RANK: '4', EFA_EMU_SIZE: '4' }), 'EFA_EMU_RANK');
  throwsNaming(t, () => readRankEnv({ SLURM_PROCID: '5', OMPI_COMM_WORLD_SIZE: '2' }), 'OMPI_COMM_WORLD_SIZE');
  t.equal(readRankEnv({ EFA_EMU_RANK: '3', EFA_EMU_SIZE: '4' }).rank, 3);
});

t.test('daemon address forms', async (t) => {
  t.same(readRankEnv({ EFA_EMU_DAEMON: 'example.org:7000' }).daemon, { host: 'example.org', port: 7000 });
  t.same(readRankEnv({ EFA_EMU_DAEMON: ':7001' }).daemon, { host: '127.0.0.1', port: 7001 });
  t.same(readRankEnv({ EFA_EMU_DAEMON: '7002' }).daemon, { host: '127.0.0.1', port: 7002 });
  t.same(readRankEnv({ EFA_EMU_DAEMON: '[::1]:7003' }).daemon, { host: '::1', port: 7003 });
  t.same(readRankEnv({ EFA_EMU_DAEMON: '' }).daemon, { host: '127.0.0.1', port: 18515 });
  t.same(parseHostPort('65535', 'x'), { host: '127.0.0.1', port: 65535 });
  t.same(parseHostPort('1', 'x'), { host: '127.0.0.1', port: 1 });
});

t.test('bad daemon addresses name the variable', async (t) => {
  for (const bad of ['0', '65536', 'host', 'host:', 'host:port', ':-1', '::1:80', '[::1]', '[::1]80', 'a b:80', '80.5']) {
    throwsNaming(t, () => readRankEnv({ EFA_EMU_DAEMON: bad }), 'EFA_EMU_DAEMON');
  }
  throwsNaming(t, () => parseHostPort('', '--daemon'), '--daemon');
});

t.test('formatHostPort round-trips through parseHostPort', async (t) => {
  for (const addr of [
    { host: '127.0.0.1', port: 18515 },
    { host: 'node-7.cluster', port: 1 },
    { host: 'fe80::1', port: 65535 },
  ]) {
    t.same(parseHostPort(formatHostPort(addr), 'x'), addr);
  }
});

t.test('faults, device name and launched flag', async (t) => {
  const r = readRankEnv({ EFA_EMU_FAULTS: 'dup=1%', EFA_EMU_DEVICE_NAME: 'rdmap0s6', EFA_EMU_LAUNCHED: '1' });
  t.equal(r.faults, 'dup=1%');
  t.equal(r.deviceName, 'rdmap0s6');
  t.equal(r.launched, true);
  t.equal(readRankEnv({ EFA_EMU_LAUNCHED: '0' }).launched, false);
  t.equal(readRankEnv({ EFA_EMU_FAULTS: '' }).faults, null);
});

t.test('defaults to process.env', async (t) => {
  const saved = process.env.EFA_EMU_RANK;
  const savedSize = process.env.EFA_EMU_SIZE;
  t.teardown(() => {
    if (saved === undefined) delete process.env.EFA_EMU_RANK;
    else process.env.EFA_EMU_RANK = saved;
    if (savedSize === undefined) delete process.env.EFA_EMU_SIZE;
    else process.env.EFA_EMU_SIZE = savedSize;
  });
  process.env.EFA_EMU_RANK = '6';
  process.env.EFA_EMU_SIZE = '8';
  t.equal(readRankEnv().rank, 6);
});
