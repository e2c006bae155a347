/**
 * `efa-emu launch`: starts N ranks of a program, relays their output line by line, and stops
 * them all when one fails, when the job times out, or when the launcher is interrupted.
 *
 * The daemon is not this module's business: the caller starts one if needed and passes its
 * address, which every rank receives in `EFA_EMU_DAEMON`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvalidArgumentError, ResourceExhaustedError } from '../common/errors';
import { silentLogger, type Logger } from '../common/logger';
import { ENV_DEVICE_NAME, rankEnvVars, type HostPort } from '../env';
import { ENV_TS_MANIFEST, programProblem } from './launch-program';
import { buildTsProgram, type TsBuild } from './ts-build';
import { LineSplitter } from './line-prefixer';
import { rankLogFormatter } from './rank-log-pretty';

/** Most ranks one launch may start. */
export const MAX_RANKS = 1024;

/** Longest the launcher waits for a rank to say it started before starting the next ones. */
const START_WAIT_MS = 3000;
/** Default time between SIGTERM and SIGKILL when ranks are stopped. */
export const DEFAULT_KILL_GRACE_MS = 2000;
/** Exit code when the job ran out of time (as coreutils `timeout`). */
export const EXIT_TIMEOUT = 124;
/** Exit code when the launcher got SIGINT or its AbortSignal fired. */
export const EXIT_SIGINT = 130;
/** Exit code when the launcher got SIGTERM. */
export const EXIT_SIGTERM = 143;
/** Exit code when a rank could not be started at all. */
export const EXIT_SPAWN_FAILED = 1;

/** Options of {@link launch}. */
export interface LaunchOptions {
  /** Number of ranks, 1..{@link MAX_RANKS}. */
  n: number;
  /** Path to a `.js`, `.cjs`, `.mjs` or `.ts` file (relative paths resolve from the cwd). */
  program: string;
  /** Arguments passed to the program, seen in its `process.argv.slice(2)`. */
  args?: string[];
  /** Control daemon address, passed as `EFA_EMU_DAEMON`. */
  daemon: HostPort;
  /** Fault spec, passed as `EFA_EMU_FAULTS` when given. */
  faults?: string | null;
  /**
   * Extra environment for every rank, on top of the launcher's own; a key set to `undefined`
   * removes an inherited variable. The rank variables (`EFA_EMU_RANK`, ...) cannot be
   * overridden.
   */
  env?: NodeJS.ProcessEnv;
  /** Prefix every output line with `[rank] ` (default true). */
  prefix?: boolean;
  /** Receives each output line (without newline) instead of it being printed. */
  onLine?: (rank: number, stream: 'stdout' | 'stderr', line: string) => void;
  /**
   * Render the ranks' JSON log lines (pino records on their stderr) as the launcher's own
   * logs look on a terminal. Default: when the launcher's stderr is a terminal and no
   * `onLine` takes the lines.
   */
  prettyLogs?: boolean;
  /** Time between SIGTERM and SIGKILL when ranks are stopped (default 2000 ms). */
  killGraceMs?: number;
  /** Time limit for the whole job; on expiry every rank is stopped. */
  timeoutMs?: number | null;
  /** Stops the job early, as SIGINT would (exit code 130, `interrupted`). */
  signal?: AbortSignal;
  /** Debug logs; silent by default. */
  logger?: Logger;
  /**
   * Receives the messages ranks send over their IPC channel (`process.send`), other than the
   * launcher's own (`{ efaEmu: 'expect-exit' }`: this rank may die, e.g. a chaos test killing
   * itself, without failing the job).
   */
  onMessage?: (rank: number, message: unknown) => void;
  /**
   * A `.ts` program is compiled once by the launcher (the ranks load the result; default) or,
   * with false, by each rank for itself (transpiled as it loads, no type check).
   */
  compileTs?: boolean;
  /** With compileTs: type-check first and refuse to start on an error (default true). */
  typecheck?: boolean;
  /** Ranks starting at once (loading their modules); the next start as they finish. Default max(8, 4 x cores). */
  startParallel?: number;
  /**
   * Memory the ranks may take, in bytes: a job whose estimate (RANK_MEMORY_ESTIMATE per rank)
   * exceeds it is refused with ENOMEM before anything starts. Default: the machine's available
   * memory; 0 or Infinity: no check.
   */
  memoryLimitBytes?: number;
}

/**
 * What one rank takes: a started rank of a small program is 50-65 MB RSS on Node 20 (measured:
 * examples/srd-stress, .js or launcher-compiled .ts), more under load.
 */
export const RANK_MEMORY_ESTIMATE = 64 * 1024 * 1024;

/** Memory the system can give without swapping (Linux MemAvailable), else free memory. */
export function availableMemory(): number {
  try {
    const m = /^MemAvailable:\s+(\d+) kB$/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
    if (m !== null) return Number(m[1]) * 1024;
  } catch {
    // Not Linux: the portable figure.
  }
  return os.freemem();
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** How one rank ended. */
export interface RankResult {
  rank: number;
  /** Its process id, or null when it could not be started. */
  pid: number | null;
  /** Exit code, or null when it died by a signal (or never started). */
  code: number | null;
  /** Name of the signal that ended it, such as `SIGTERM`. */
  signal: string | null;
  /**
   * The rank announced, before it ended, that it may die (`{ efaEmu: 'expect-exit' }` over its
   * IPC channel), so its exit, whatever it was, did not fail the job.
   */
  exitAnnounced: boolean;
}

/** How a launch ended. */
export interface LaunchResult {
  /**
   * 0 when every rank exited 0. Otherwise the cause that came first decides: the first failing
   * rank's exit code (128 + signal number when it died by a signal), {@link EXIT_TIMEOUT},
   * {@link EXIT_SIGINT} or {@link EXIT_SIGTERM}.
   */
  exitCode: number;
  /** One entry per rank, in rank order. */
  ranks: RankResult[];
  /** The job hit `timeoutMs`. */
  timedOut: boolean;
  /** The launcher got SIGINT or SIGTERM, or its AbortSignal fired. */
  interrupted: boolean;
}

interface Settings {
  n: number;
  program: string;
  args: string[];
  daemon: HostPort;
  faults: string | null;
  env: NodeJS.ProcessEnv;
  prefix: boolean;
  onLine: LaunchOptions['onLine'] | null;
  prettyLogs: boolean;
  killGraceMs: number;
  timeoutMs: number | null;
  signal: AbortSignal | null;
  onMessage: LaunchOptions['onMessage'] | null;
  startParallel: number;
}

/**
 * Runs `opts.n` ranks of `opts.program` and resolves when every one of them has exited.
 *
 * Ranks are started in waves of `startParallel` (each wave member starts the next once it has
 * loaded), so all of them run together once started. When one exits non-zero or by a signal, the job times out, the
 * launcher process gets SIGINT/SIGTERM (handlers are installed only while the launch runs), or
 * `opts.signal` aborts, the remaining ranks get SIGTERM and, after `killGraceMs`, SIGKILL; a
 * second SIGINT/SIGTERM sends SIGKILL at once. The promise resolves only after every rank has
 * been reaped. Ranks also exit by themselves if the launcher process dies (see the rank
 * bootstrap).
 *
 * @throws InvalidArgumentError (as a rejection) naming the option when an option is invalid
 */
export async function launch(opts: LaunchOptions): Promise<LaunchResult> {
  const settings = validate(opts);
  const log = (opts.logger ?? silentLogger()).child({ component: 'launch' });
  const limit = opts.memoryLimitBytes ?? availableMemory();
  const need = settings.n * RANK_MEMORY_ESTIMATE;
  if (limit > 0 && Number.isFinite(limit) && need > limit) {
    throw new ResourceExhaustedError(
      `${settings.n} ranks would need about ${gib(need)} (${RANK_MEMORY_ESTIMATE / 2 ** 20} MiB each, what a started rank takes), and ${gib(limit)} is available: run at most ${Math.floor(limit / RANK_MEMORY_ESTIMATE)} ranks here, or pass --no-memory-check`,
    );
  }
  let build: TsBuild | null = null;
  if (path.extname(settings.program).toLowerCase() === '.ts' && opts.compileTs !== false) {
    // Before any rank starts: a type error stops the job here, and N ranks share one compile.
    build = buildTsProgram(settings.program, { typecheck: opts.typecheck !== false });
    log.debug({ files: build.files, ms: Math.round(build.ms) }, 'compiled the TypeScript program');
    settings.env = { ...settings.env, [ENV_TS_MANIFEST]: build.manifest };
  }
  try {
    return await new Promise<LaunchResult>((resolve) => new Job(settings, log, resolve).start());
  } finally {
    build?.remove();
  }
}

interface RankState {
  result: RankResult;
  child: ChildProcess | null;
  exited: boolean;
  closed: boolean;
  out: LineSplitter;
  err: LineSplitter;
  drainTimer: NodeJS.Timeout | null;
  /** The rank announced that its death is expected: it does not fail the job. */
  mayDie: boolean;
  /** Its exit has been weighed (failed the job or not); done once. */
  judged: boolean;
  /** Spawned; and done starting (it said so, ended, or took too long to say). */
  spawned: boolean;
  startDone: boolean;
  startTimer: NodeJS.Timeout | null;
}

type StopReason = 'failure' | 'timeout' | 'signal' | 'abort';

class Job {
  private readonly ranks: RankState[] = [];
  private open: number;
  private stopReason: StopReason | null = null;
  private argv: string[] = [];
  private baseEnv: NodeJS.ProcessEnv = {};
  /** The next rank to spawn, and how many spawned ones are still starting. */
  private nextRank = 0;
  private starting = 0;
  private exitCode = 0;
  private timedOut = false;
  private interrupted = false;
  private graceTimer: NodeJS.Timeout | null = null;
  private jobTimer: NodeJS.Timeout | null = null;
  private finished = false;
  private readonly onSigint = (): void => this.onProcessSignal('SIGINT');
  private readonly onSigterm = (): void => this.onProcessSignal('SIGTERM');
  private readonly onAbort = (): void => this.onInterrupt('abort', EXIT_SIGINT);
  /** Renders ranks' JSON log records (when prettyLogs). */
  private readonly prettyLog: ((line: string) => string | null) | null;

  constructor(
    private readonly s: Settings,
    private readonly log: Logger,
    private readonly resolve: (r: LaunchResult) => void,
  ) {
    this.open = s.n;
    this.prettyLog = s.prettyLogs ? rankLogFormatter(s.onLine === null && process.stderr.isTTY === true) : null;
    for (let rank = 0; rank < s.n; rank++) {
      this.ranks.push({
        result: { rank, pid: null, code: null, signal: null, exitAnnounced: false },
        child: null,
        exited: false,
        closed: false,
        out: new LineSplitter((line) => this.emit(rank, 'stdout', line)),
        err: new LineSplitter((line) => this.emit(rank, 'stderr', line)),
        drainTimer: null,
        mayDie: false,
        judged: false,
        spawned: false,
        startDone: false,
        startTimer: null,
      });
    }
  }

  start(): void {
    if (this.s.signal?.aborted) {
      this.interrupted = true;
      this.exitCode = EXIT_SIGINT;
      this.stopReason = 'abort';
      this.log.debug('aborted before start');
      this.finish();
      return;
    }
    process.on('SIGINT', this.onSigint);
    process.on('SIGTERM', this.onSigterm);
    this.s.signal?.addEventListener('abort', this.onAbort, { once: true });

    const { execArgv, script } = bootstrapCommand();
    const baseEnv: NodeJS.ProcessEnv = { ...process.env };
    // One device name shared by every rank would give them all the same GID lease; a name
    // meant for the job has to come through `env` explicitly.
    delete baseEnv[ENV_DEVICE_NAME];
    Object.assign(baseEnv, this.s.env);
    this.argv = [...execArgv, ...rankHeapArgs(this.s.n), ...extraNodeArgs(), script, this.s.program, ...this.s.args];
    this.baseEnv = baseEnv;
    this.log.debug({ n: this.s.n, argv: this.argv, startParallel: this.s.startParallel }, 'starting ranks');
    this.spawnMore();

    if (this.s.timeoutMs !== null && !this.finished) {
      this.jobTimer = setTimeout(() => this.onTimeout(), this.s.timeoutMs);
    }
  }

  /**
   * Starts ranks while fewer than `startParallel` are still starting: N processes loading
   * their modules at once on a small machine take longer than in waves, and their memory
   * peaks together. A rank is done starting when its bootstrap says so (after the program's
   * synchronous part ran), when it ends, or after START_WAIT_MS at most.
   */
  private spawnMore(): void {
    while (this.nextRank < this.ranks.length && this.starting < this.s.startParallel) {
      const st = this.ranks[this.nextRank++];
      if (this.stopReason !== null) {
        // The job is stopping: ranks not started yet never will be.
        this.neverStarted(st);
        continue;
      }
      this.starting++;
      st.spawned = true;
      st.startTimer = setTimeout(() => this.startDone(st), START_WAIT_MS);
      this.spawnRank(st, this.argv, this.baseEnv);
    }
  }

  private startDone(st: RankState): void {
    if (!st.spawned || st.startDone) return;
    st.startDone = true;
    if (st.startTimer !== null) clearTimeout(st.startTimer);
    st.startTimer = null;
    this.starting--;
    this.spawnMore();
  }

  private neverStarted(st: RankState): void {
    if (st.exited) return;
    st.exited = true;
    this.onClose(st);
  }

  private spawnRank(st: RankState, argv: string[], baseEnv: NodeJS.ProcessEnv): void {
    const rank = st.result.rank;
    const env = {
      ...baseEnv,
      ...rankEnvVars({ rank, size: this.s.n, daemon: this.s.daemon, faults: this.s.faults }),
    };
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, argv, { env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    } catch (err) {
      this.spawnFailed(st, err);
      return;
    }
    st.child = child;
    st.result.pid = child.pid ?? null;
    child.stdout?.on('data', (chunk: Buffer) => st.out.write(chunk));
    child.stderr?.on('data', (chunk: Buffer) => st.err.write(chunk));
    child.on('error', (err) => {
      if (child.pid === undefined) this.spawnFailed(st, err);
      else this.log.debug({ rank, err }, 'rank process error');
    });
    child.on('message', (msg: unknown) => {
      const kind = msg !== null && typeof msg === 'object' ? (msg as { efaEmu?: unknown }).efaEmu : undefined;
      if (kind === 'expect-exit') st.mayDie = true;
      else if (kind === 'started') this.startDone(st);
      else this.s.onMessage?.(rank, msg);
    });
    child.on('exit', (code, signal) => this.onExit(st, code, signal));
    // Messages still in the IPC pipe when the child exits are delivered before this.
    child.on('disconnect', () => this.judge(st));
    child.on('close', () => this.onClose(st));
    this.log.debug({ rank, pid: child.pid }, 'rank started');
  }

  private spawnFailed(st: RankState, err: unknown): void {
    if (st.exited) return;
    const msg = err instanceof Error ? err.message : String(err);
    this.emit(st.result.rank, 'stderr', `efa-emu launch: cannot start rank ${st.result.rank}: ${msg}`);
    this.onExit(st, null, null);
    this.onClose(st);
  }

  private onExit(st: RankState, code: number | null, signal: NodeJS.Signals | null): void {
    if (st.exited) return;
    st.exited = true;
    this.startDone(st);
    st.result.code = code;
    st.result.signal = signal;
    this.log.debug({ rank: st.result.rank, code, signal }, 'rank exited');
    // 'exit' can come before the last IPC messages are read: a rank that announces its death
    // and dies at once would otherwise fail the job. So the exit is weighed once the channel
    // is drained ('disconnect'), or at once when there is no channel left.
    if (!st.child?.connected) this.judge(st);
    if (!st.closed && st.child) {
      // Output is complete once the pipes close, which normally follows the exit at once; a
      // grandchild that inherited the pipes could hold them open forever, so stop waiting
      // after a grace period.
      const child = st.child;
      st.drainTimer = setTimeout(() => {
        this.log.debug({ rank: st.result.rank }, 'output pipes still open after exit; closing them');
        child.stdout?.destroy();
        child.stderr?.destroy();
        // 'close' also waits for the IPC pipe, which a grandchild may hold too.
        if (child.connected) child.disconnect();
      }, Math.max(this.s.killGraceMs, 1000));
    }
  }

  /** Decides whether an exited rank fails the job. */
  private judge(st: RankState): void {
    if (!st.exited || st.judged) return;
    st.judged = true;
    st.result.exitAnnounced = st.mayDie;
    const { code, signal } = st.result;
    if (code !== 0 && this.stopReason === null && !st.mayDie) {
      this.exitCode = code ?? (signal !== null ? 128 + signalNumber(signal as NodeJS.Signals) : EXIT_SPAWN_FAILED);
      this.stop('failure');
    }
  }

  private onClose(st: RankState): void {
    if (st.closed) return;
    // Normally judged on 'disconnect' already; a channel that never reported its end still
    // must not leave the exit unweighed.
    this.judge(st);
    st.closed = true;
    if (st.drainTimer) clearTimeout(st.drainTimer);
    st.drainTimer = null;
    st.out.end();
    st.err.end();
    if (--this.open === 0) this.finish();
  }

  private stop(reason: StopReason): void {
    if (this.stopReason !== null) return;
    this.stopReason = reason;
    this.log.debug({ reason }, 'stopping ranks');
    // Ranks still waiting for their turn to start never will.
    while (this.nextRank < this.ranks.length) this.neverStarted(this.ranks[this.nextRank++]);
    if (this.s.killGraceMs === 0) {
      this.killRunning('SIGKILL');
      return;
    }
    this.killRunning('SIGTERM');
    this.graceTimer = setTimeout(() => this.killRunning('SIGKILL'), this.s.killGraceMs);
  }

  private killRunning(signal: NodeJS.Signals): void {
    for (const st of this.ranks) {
      // A reaped child's pid may already belong to another process: only signal live ones.
      if (st.exited || !st.child) continue;
      try {
        st.child.kill(signal);
      } catch (err) {
        this.log.debug({ rank: st.result.rank, err }, 'kill failed');
      }
    }
  }

  private onProcessSignal(signal: 'SIGINT' | 'SIGTERM'): void {
    this.onInterrupt('signal', signal === 'SIGINT' ? EXIT_SIGINT : EXIT_SIGTERM);
  }

  private onInterrupt(reason: 'signal' | 'abort', exitCode: number): void {
    this.interrupted = true;
    if (this.stopReason === null) {
      this.exitCode = exitCode;
      this.stop(reason);
    } else {
      // Asked again while already stopping: the user does not want to wait for the grace.
      this.killRunning('SIGKILL');
    }
  }

  private onTimeout(): void {
    this.jobTimer = null;
    this.timedOut = true;
    this.log.debug({ timeoutMs: this.s.timeoutMs }, 'job timed out');
    if (this.stopReason === null) {
      this.exitCode = EXIT_TIMEOUT;
      this.stop('timeout');
    }
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    if (this.jobTimer) clearTimeout(this.jobTimer);
    process.removeListener('SIGINT', this.onSigint);
    process.removeListener('SIGTERM', this.onSigterm);
    this.s.signal?.removeEventListener('abort', this.onAbort);
    const result: LaunchResult = {
      exitCode: this.exitCode,
      ranks: this.ranks.map((st) => st.result),
      timedOut: this.timedOut,
      interrupted: this.interrupted,
    };
    this.log.debug({ exitCode: result.exitCode, timedOut: result.timedOut, interrupted: result.interrupted }, 'job done');
    this.resolve(result);
  }

  private emit(rank: number, stream: 'stdout' | 'stderr', line: string): void {
    if (stream === 'stderr' && this.prettyLog !== null) {
      const pretty = this.prettyLog(line);
      if (pretty !== null) {
        // A record may render as several lines (its fields): each carries the rank prefix.
        for (const l of pretty.split('\n')) this.emitLine(rank, stream, l);
        return;
      }
    }
    this.emitLine(rank, stream, line);
  }

  private emitLine(rank: number, stream: 'stdout' | 'stderr', line: string): void {
    if (this.s.onLine) {
      try {
        this.s.onLine(rank, stream, line);
      } catch (err) {
        // A throwing callback must not take down the launcher and orphan the job's output.
        this.log.error({ err, rank, stream }, 'onLine callback threw');
      }
      return;
    }
    const text = this.s.prefix ? `[${rank}] ${line}\n` : `${line}\n`;
    (stream === 'stdout' ? process.stdout : process.stderr).write(text);
  }
}

function signalNumber(signal: NodeJS.Signals): number {
  return os.constants.signals[signal] ?? 0;
}

/**
 * Node options for every rank from `EFA_EMU_NODE_ARGS` (space-separated), for what
 * NODE_OPTIONS refuses, such as `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the ranks.
 */
function extraNodeArgs(): string[] {
  const text = process.env.EFA_EMU_NODE_ARGS;
  return text === undefined ? [] : text.split(/\s+/).filter((a) => a !== '');
}

/**
 * V8 flags for ranks that outnumber the cores. A busy rank's young generation grows to 16 MiB
 * semi-spaces by default, and the garbage it holds between scavenges includes every received
 * datagram's buffer; ranks sharing a few cores are short of memory, not of GC time. Capped at
 * 1 MiB, srd-stress ranks (4 on 2 cores, 5,000 messages each way) peaked 13-15 MB lower with
 * the same transfer time. A `--max-semi-space-size` of the user's (EFA_EMU_NODE_ARGS or
 * NODE_OPTIONS) is left alone.
 */
export function rankHeapArgs(n: number, cores = os.availableParallelism(), env: NodeJS.ProcessEnv = process.env): string[] {
  if (n <= cores) return [];
  const own = `${env.EFA_EMU_NODE_ARGS ?? ''} ${env.NODE_OPTIONS ?? ''}`;
  return own.includes('--max-semi-space-size') ? [] : [SMALL_YOUNG_GENERATION];
}

/** The young-generation cap of oversubscribed ranks (MiB per semi-space). */
export const SMALL_YOUNG_GENERATION = '--max-semi-space-size=1';

/** The node arguments that run the rank bootstrap next to this file (compiled or source). */
function bootstrapCommand(): { execArgv: string[]; script: string } {
  const js = path.join(__dirname, 'rank-bootstrap.js');
  if (fs.existsSync(js)) return { execArgv: ['--enable-source-maps'], script: js };
  // Running efa-emu's own sources under ts-node (its development setup only): the ranks need it too.
  const ts = path.join(__dirname, 'rank-bootstrap.ts');
  return { execArgv: ['--require', require.resolve('ts-node/register/transpile-only')], script: ts };
}

function validate(opts: LaunchOptions): Settings {
  if (opts === null || typeof opts !== 'object') throw new InvalidArgumentError('launch options must be an object');
  const { n } = opts;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_RANKS) {
    throw new InvalidArgumentError(`n must be an integer from 1 to ${MAX_RANKS}, got ${String(n)}`);
  }
  if (typeof opts.program !== 'string' || opts.program === '') {
    throw new InvalidArgumentError('program must be a non-empty path');
  }
  const program = path.resolve(opts.program);
  const problem = programProblem(program);
  if (problem !== null) throw new InvalidArgumentError(`program ${problem}`);

  const args = opts.args ?? [];
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) {
    throw new InvalidArgumentError('args must be an array of strings');
  }
  const d = opts.daemon as HostPort | undefined;
  if (d === null || typeof d !== 'object') throw new InvalidArgumentError('daemon must be { host, port }');
  if (typeof d.host !== 'string' || d.host.trim() === '' || /\s/.test(d.host)) {
    throw new InvalidArgumentError(`daemon.host must be a host name or address, got ${JSON.stringify(d.host)}`);
  }
  if (typeof d.port !== 'number' || !Number.isInteger(d.port) || d.port < 1 || d.port > 65535) {
    throw new InvalidArgumentError(`daemon.port must be an integer from 1 to 65535, got ${String(d.port)}`);
  }
  const faults = opts.faults ?? null;
  if (faults !== null && typeof faults !== 'string') throw new InvalidArgumentError('faults must be a string');
  const env = opts.env ?? {};
  if (env === null || typeof env !== 'object') throw new InvalidArgumentError('env must be an object');
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && typeof v !== 'string') throw new InvalidArgumentError(`env.${k} must be a string`);
  }
  const prefix = opts.prefix ?? true;
  if (typeof prefix !== 'boolean') throw new InvalidArgumentError('prefix must be a boolean');
  const onLine = opts.onLine ?? null;
  if (onLine !== null && typeof onLine !== 'function') throw new InvalidArgumentError('onLine must be a function');
  const prettyLogs = opts.prettyLogs ?? (onLine === null && process.stderr.isTTY === true);
  if (typeof prettyLogs !== 'boolean') throw new InvalidArgumentError('prettyLogs must be a boolean');
  const killGraceMs = opts.killGraceMs ?? DEFAULT_KILL_GRACE_MS;
  if (typeof killGraceMs !== 'number' || !Number.isFinite(killGraceMs) || killGraceMs < 0) {
    throw new InvalidArgumentError(`killGraceMs must be a number >= 0, got ${String(killGraceMs)}`);
  }
  const timeoutMs = opts.timeoutMs ?? null;
  if (timeoutMs !== null && (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0)) {
    throw new InvalidArgumentError(`timeoutMs must be a number > 0 or null, got ${String(timeoutMs)}`);
  }
  const signal = opts.signal ?? null;
  if (signal !== null && !(signal instanceof AbortSignal)) throw new InvalidArgumentError('signal must be an AbortSignal');
  const startParallel = opts.startParallel ?? Math.max(8, 4 * os.availableParallelism());
  if (!Number.isInteger(startParallel) || startParallel < 1) throw new InvalidArgumentError(`startParallel must be an integer >= 1, got ${String(startParallel)}`);
  return {
    n,
    program,
    args: [...args],
    daemon: { host: d.host, port: d.port },
    faults,
    env: { ...env },
    prefix,
    onLine,
    prettyLogs,
    killGraceMs,
    timeoutMs,
    signal,
    onMessage: typeof opts.onMessage === 'function' ? opts.onMessage : null,
    startParallel,
  };
}
