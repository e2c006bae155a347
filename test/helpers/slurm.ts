/**
 * A private one-node Slurm cluster for one test: its own slurm.conf, state, spool and logs in
 * a temporary directory, its own MUNGE daemon and key, slurmctld and slurmd on free ports, so
 * `srun` can start ranks without touching (or needing) a cluster configured on the machine.
 *
 * Authentication is MUNGE, not auth/none, though Slurm still ships auth/none: with auth/none
 * any local process that reaches slurmctld's port could claim to be root and run commands as
 * root for as long as the test runs. A private munged (its key root's alone, in a 0700
 * directory) vouches for each client's real uid instead, and munge is a dependency of every
 * Debian Slurm daemon package, so it costs no extra install.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { accessSync, chmodSync, constants, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const CLIENTS = ['srun', 'sinfo', 'squeue', 'scancel'] as const;
const DAEMONS = ['slurmctld', 'slurmd'] as const;
type Tool = (typeof CLIENTS)[number] | (typeof DAEMONS)[number] | 'munged';

/** Root's sbin directories are missing from many users' PATH, yet that is where the daemons live. */
const EXTRA_DIRS = ['/usr/sbin', '/sbin', '/usr/local/sbin'];

function findTool(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter((d) => d !== ''), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const file = path.join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this directory
    }
  }
  return null;
}

function findTools(): { tools: Record<Tool, string>; missing: string[] } {
  const tools = {} as Record<Tool, string>;
  const missing: string[] = [];
  for (const name of [...CLIENTS, ...DAEMONS, 'munged'] as const) {
    const file = findTool(name);
    if (file === null) missing.push(name);
    else tools[name] = file;
  }
  return { tools, missing };
}

/**
 * Why a private Slurm cluster cannot be started here, or false when it can: a test's `{ skip }`
 * value. Only what is absent counts (tools, root); a cluster that is installed but does not
 * come up is a failure of `startSlurmCluster`, with the daemons' logs.
 */
export function slurmProblem(): string | false {
  if (process.platform !== 'linux') return `Slurm daemons run on Linux only (this is ${process.platform})`;
  const { missing } = findTools();
  const slurm = missing.filter((m) => m !== 'munged');
  if (slurm.length > 0) return `${slurm.join(', ')} not installed (apt-get install slurm-wlm)`;
  if (missing.includes('munged')) return 'munged not installed (apt-get install munge)';
  // slurmd switches to the submitting user to start tasks, which needs root.
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'a private Slurm cluster needs root (slurmd starts tasks as the submitting user)';
  return false;
}

/** A running private cluster. */
export interface SlurmCluster {
  /** The temporary directory holding everything the cluster writes. */
  readonly dir: string;
  /** Its slurm.conf. */
  readonly conf: string;
  /** The one node's name. */
  readonly node: string;
  /** The srun found next to the daemons (root's sbin may hold tools a PATH lacks). */
  readonly srun: string;
  /** `srun --version`'s answer, e.g. `slurm 22.05.8`. */
  readonly version: string;
  /** True when the daemons listen on loopback only (see `bindToHostname`). */
  readonly loopbackOnly: boolean;
  /** An environment for Slurm commands aimed at this cluster: `base` minus any outer job's variables. */
  env(extra?: NodeJS.ProcessEnv, base?: NodeJS.ProcessEnv): NodeJS.ProcessEnv;
  /** The last lines munged, slurmctld and slurmd logged, for a failure's diagnostics. */
  logs(): string[];
  /** Cancels what still runs, stops the daemons, kills every process of the cluster, removes `dir`. */
  stop(): Promise<void>;
}

export interface SlurmClusterOptions {
  /** CPUs the node advertises, whatever the machine has: enough for the test's tasks. Default 4. */
  cpus?: number;
  /** How long the node has to become idle. Default 30 s. */
  upTimeoutMs?: number;
}

/** Names the processes of one cluster: slurmd's environment reaches slurmstepd, srun's the tasks. */
const MARKER = 'EFA_EMU_SLURM_CLUSTER';

/**
 * Variables an enclosing Slurm job (a CI runner inside an allocation) leaves in the environment:
 * passed on, they would make srun look for that job in the private cluster.
 */
const OUTER_JOB_VARS = /^(SLURM|SRUN|SALLOC|SBATCH|SQUEUE|SINFO|SCANCEL|SCONTROL)_/;

function cleanEnv(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(base)) if (!OUTER_JOB_VARS.test(k)) env[k] = v;
  return env;
}

function freePorts(n: number): Promise<number[]> {
  // All held open at once, so the n ports differ; closed before Slurm binds them.
  return new Promise((resolve, reject) => {
    const servers: net.Server[] = [];
    const ports: number[] = [];
    const done = (err?: Error): void => {
      let open = servers.length;
      if (open === 0) return err ? reject(err) : resolve(ports);
      for (const s of servers)
        s.close(() => {
          if (--open === 0) return err ? reject(err) : resolve(ports);
        });
    };
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      s.once('error', (e) => done(e));
      s.listen(0, '127.0.0.1', () => {
        servers.push(s);
        ports.push((s.address() as net.AddressInfo).port);
        if (ports.length === n) done();
      });
    }
  });
}

/**
 * Slurm's NoInAddrAny/NoCtldInAddrAny bind to whatever the machine's hostname resolves to,
 * not to a configured address: only when that is loopback do they keep the daemons (and srun's
 * I/O sockets) on 127.0.0.0/8. Elsewhere the default, every interface, is the one that works;
 * the MUNGE key still keeps outsiders out.
 */
async function bindToHostname(): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  // A resolver that never answers must not hold the test: no answer means "not loopback".
  const noAnswer = new Promise<[]>((r) => (timer = setTimeout(() => r([]), 5_000)));
  try {
    const addrs = await Promise.race([lookup(os.hostname(), { family: 4, all: true }), noAnswer]);
    return addrs.length > 0 && addrs.every((a) => a.address.startsWith('127.'));
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { env, encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr }),
    );
  });
}

/** Calls `probe` every `everyMs` until it returns a value, throwing once `deadline` (epoch ms) passes. */
async function pollUntil<T>(what: string, deadline: number, everyMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function socketAccepts(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection({ path: file });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** The pids of live processes whose environment carries `marker`, this process excepted. */
function markedPids(marker: Buffer): number[] {
  const pids: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return pids;
  }
  for (const e of entries) {
    if (!/^[0-9]+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    try {
      // A zombie has nothing left to kill and an empty environ.
      if (/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${e}/stat`, 'utf8'))) continue;
      if (readFileSync(`/proc/${e}/environ`).includes(marker)) pids.push(pid);
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}

function killMarked(marker: Buffer): number[] {
  const pids = markedPids(marker);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return pids;
}

function tail(text: string, max = 6000): string {
  return text.length <= max ? text : `...${text.slice(-max)}`;
}

/** Clusters not yet stopped: torn down synchronously if the test process is stopped first. */
const live = new Set<() => void>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // tap stops a test that overruns with SIGTERM, and no teardown of the test runs then.
  process.once('exit', () => {
    for (const kill of live) kill();
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => process.exit(sig === 'SIGTERM' ? 143 : 130));
  }
}

interface Daemon {
  name: string;
  child: ChildProcess;
  output: string;
  exited: string | null;
  gone: Promise<void>;
}

function startDaemon(name: string, file: string, args: string[], env: NodeJS.ProcessEnv): Daemon {
  const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const d: Daemon = { name, child, output: '', exited: null, gone: Promise.resolve() };
  const keep = (chunk: string): void => {
    d.output = tail(d.output + chunk, 20_000);
  };
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  d.gone = new Promise((resolve) => {
    child.once('error', (e) => {
      d.exited = `could not start: ${e.message}`;
      resolve();
    });
    child.once('exit', (code, signal) => {
      d.exited = signal !== null ? `killed by ${signal}` : `exit ${code}`;
      resolve();
    });
  });
  return d;
}

async function stopDaemon(d: Daemon, graceMs: number): Promise<void> {
  if (d.exited !== null) return;
  d.child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), graceMs)));
  if ((await Promise.race([d.gone, late])) === 'late') d.child.kill('SIGKILL');
  clearTimeout(timer);
  await d.gone;
}

function slurmConf(o: { dir: string; node: string; cpus: number; ctldPort: number; slurmdPort: number; munge: string; bindToHostname: boolean }): string {
  const p = (name: string): string => path.join(o.dir, name);
  return [
    '# Written by test/helpers/slurm.ts for one test run; removed with its directory.',
    'ClusterName=efaemu',
    'SlurmctldHost=localhost(127.0.0.1)',
    `SlurmctldPort=${o.ctldPort}`,
    `SlurmdPort=${o.slurmdPort}`,
    'SlurmUser=root',
    'SlurmdUser=root',
    'AuthType=auth/munge',
    'CredType=cred/munge',
    `AuthInfo=socket=${o.munge}`,
    ...(o.bindToHostname ? ['CommunicationParameters=NoInAddrAny,NoCtldInAddrAny'] : []),
    `StateSaveLocation=${p('state')}`,
    `SlurmdSpoolDir=${p('spool')}`,
    `SlurmctldPidFile=${p('run/slurmctld.pid')}`,
    `SlurmdPidFile=${p('run/slurmd.pid')}`,
    // Files, or the daemons would log to the machine's syslog.
    `SlurmctldLogFile=${p('log/slurmctld.log')}`,
    `SlurmdLogFile=${p('log/slurmd.log')}`,
    // The machine's own plugstack (SPANK plugins) must not reach the private cluster.
    `PlugStackConfig=${p('plugstack.conf')}`,
    'MailProg=/bin/true',
    // No cgroup: containers and CI runners rarely delegate a writable cgroup tree.
    'ProctrackType=proctrack/linuxproc',
    'TaskPlugin=task/none',
    'JobAcctGatherType=jobacct_gather/none',
    'AccountingStorageType=accounting_storage/none',
    'JobCompType=jobcomp/none',
    'SwitchType=switch/none',
    'MpiDefault=none',
    'SchedulerType=sched/builtin',
    'SelectType=select/cons_tres',
    'SelectTypeParameters=CR_CPU',
    'ReturnToService=2',
    // A cancelled step is SIGKILLed 2 s after its SIGTERM, not 30 s.
    'KillWait=2',
    // The node advertises the configured CPUs rather than the machine's, so the test's task
    // count fits on a 2-core CI box.
    'SlurmdParameters=config_overrides',
    `NodeName=${o.node} NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=${o.cpus} State=UNKNOWN`,
    `PartitionName=efaemu Nodes=${o.node} Default=YES MaxTime=10 OverSubscribe=YES State=UP`,
    '',
  ].join('\n');
}

/**
 * Starts munged, slurmctld and slurmd (foreground, children of this process) and resolves once
 * the node is idle. On failure everything started is stopped and the error carries the logs.
 */
export async function startSlurmCluster(opts: SlurmClusterOptions = {}): Promise<SlurmCluster> {
  const problem = slurmProblem();
  if (problem !== false) throw new Error(`no Slurm cluster: ${problem}`);
  const { tools } = findTools();
  const cpus = opts.cpus ?? 4;
  const deadline = Date.now() + (opts.upTimeoutMs ?? 30_000);
  const node = 'efaemu';

  const [ctldPort, slurmdPort] = await freePorts(2);
  const loopbackOnly = await bindToHostname();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'efa-emu-slurm-'));
  for (const sub of ['state', 'spool', 'log', 'run', 'munge']) mkdirSync(path.join(dir, sub), { mode: 0o700 });
  // munged refuses a socket that not every user can reach (its clients run as any user), so
  // the path to it is traversable, not listable; the key stays in the 0700 munge/.
  chmodSync(dir, 0o711);
  mkdirSync(path.join(dir, 'munge-socket'), { mode: 0o711 });
  const mungeSocket = path.join(dir, 'munge-socket', 'munge.socket');
  const key = path.join(dir, 'munge', 'munge.key');
  writeFileSync(key, randomBytes(1024), { mode: 0o600 });
  writeFileSync(path.join(dir, 'plugstack.conf'), '');
  const conf = path.join(dir, 'slurm.conf');
  const marker = Buffer.from(`${MARKER}=${dir}\0`);
  writeFileSync(conf, slurmConf({ dir, node, cpus, ctldPort, slurmdPort, munge: mungeSocket, bindToHostname: loopbackOnly }));

  const env = (extra: NodeJS.ProcessEnv = {}, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv => ({
    ...cleanEnv(base),
    SLURM_CONF: conf,
    [MARKER]: dir,
    ...extra,
  });
  const daemonEnv = env();
  const daemons: Daemon[] = [];
  let stopped = false;

  const killNow = (): void => {
    for (const d of daemons) if (d.exited === null) d.child.kill('SIGKILL');
    killMarked(marker);
    rmSync(dir, { recursive: true, force: true });
  };
  installExitHook();
  live.add(killNow);

  // In the foreground the daemons log to stderr as well as to their files: stderr also has
  // what comes before a log file is opened (a bad option, a plugin that will not load).
  const logs = (): string[] => daemons.flatMap((d) => [`--- ${d.name} (${d.exited ?? 'running'}):`, ...tail(d.output).split('\n').filter((l) => l !== '')]);

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // One budget for the whole teardown, so a wedged daemon cannot push the test past tap's timeout.
    const budget = Date.now() + 20_000;
    const left = (capMs: number): number => Math.max(100, Math.min(capMs, budget - Date.now()));
    const ctld = daemons.find((d) => d.name === 'slurmctld');
    if (ctld !== undefined && ctld.exited === null) {
      // Cancelled steps get slurmstepd's own cleanup; whatever survives is killed below.
      const jobs = await run(tools.squeue, ['-h', '-o', '%i'], daemonEnv, left(5_000));
      const ids = jobs.stdout.split('\n').map((s) => s.trim()).filter((s) => s !== '');
      if (ids.length > 0) {
        await run(tools.scancel, ids, daemonEnv, left(5_000));
        await pollUntil('cancelled jobs to end', Date.now() + left(8_000), 200, async () => {
          const r = await run(tools.squeue, ['-h', '-o', '%i'], daemonEnv, left(3_000));
          return r.code !== 0 || r.stdout.trim() === '' ? true : undefined;
        }).catch(() => undefined);
      }
    }
    // slurmd before slurmctld (it reports to it), munged last (both ask it until they exit).
    for (const name of ['slurmd', 'slurmctld', 'munged']) {
      const d = daemons.find((x) => x.name === name);
      if (d !== undefined) await stopDaemon(d, left(3_000));
    }
    killMarked(marker);
    await pollUntil('the cluster processes to die', Date.now() + 3_000, 50, async () => (markedPids(marker).length === 0 ? true : undefined)).catch(() => undefined);
    const survivors = markedPids(marker);
    live.delete(killNow);
    rmSync(dir, { recursive: true, force: true });
    if (survivors.length > 0) throw new Error(`Slurm cluster processes still alive after SIGKILL: ${survivors.join(', ')}`);
  };

  const failed = async (why: string): Promise<never> => {
    // An own property, so tap prints the logs as a block under the failure, lines intact.
    const err = Object.assign(new Error(`private Slurm cluster did not come up: ${why}`), { logs: logs() });
    await stop().catch(() => undefined);
    throw err;
  };
  const anyExited = (): Daemon | undefined => daemons.find((d) => d.exited !== null);

  const version = (await run(tools.srun, ['--version'], daemonEnv, 10_000)).stdout.trim();

  daemons.push(
    startDaemon(
      'munged',
      tools.munged,
      [
        '--foreground',
        `--socket=${mungeSocket}`,
        `--key-file=${key}`,
        `--pid-file=${path.join(dir, 'munge', 'munged.pid')}`,
        `--seed-file=${path.join(dir, 'munge', 'munged.seed')}`,
      ],
      daemonEnv,
    ),
  );
  try {
    await pollUntil('munged to accept on its socket', deadline, 50, async () => {
      if (anyExited() !== undefined) throw new Error(`munged stopped (${daemons[0].exited})`);
      return (await socketAccepts(mungeSocket)) ? true : undefined;
    });
  } catch (e) {
    return failed((e as Error).message);
  }

  daemons.push(startDaemon('slurmctld', tools.slurmctld, ['-D', '-f', conf], daemonEnv));
  daemons.push(startDaemon('slurmd', tools.slurmd, ['-D', '-f', conf, '-N', node], daemonEnv));
  let lastState = '';
  try {
    // sinfo itself waits for a slurmctld that is not listening yet, hence its own bound.
    await pollUntil(`node ${node} to be idle`, deadline, 100, async () => {
      const dead = anyExited();
      if (dead !== undefined) throw new Error(`${dead.name} stopped (${dead.exited})`);
      const r = await run(tools.sinfo, ['-h', '-N', '-n', node, '-o', '%T'], daemonEnv, 5_000);
      lastState = r.code === 0 ? r.stdout.trim() : `sinfo exit ${r.code}: ${r.stderr.trim()}`;
      return lastState === 'idle' ? true : undefined;
    });
  } catch (e) {
    return failed(`${(e as Error).message} (last sinfo: ${lastState || 'nothing'})`);
  }

  return { dir, conf, node, srun: tools.srun, version, loopbackOnly, env, logs, stop };
}
