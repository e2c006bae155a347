/*
 * Running the scenarios of `efa-emu lab`: each scenario is one launch of a rank program
 * against one embedded daemon, inside one time budget for the whole lab. A rank prints its
 * figures as one `{"lab": ...}` line on stdout; every other line of the ranks is relayed.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { EfaError } from '../../common/errors';
import { rootLogger, type Logger } from '../../common/logger';
import { ENV_FAULTS } from '../../env';
import { startEmbeddedDaemon, type EmbeddedDaemon } from '../embedded-daemon';
import { EXIT_TIMEOUT, launch, type RankResult } from '../launch';
import { ENV_JOB_ID } from '../run-job';

/** `efa-emu lab failover`'s rank (two ranks: 0 sends, 1 receives). */
export const FAILOVER_RANK_PROGRAM = path.join(__dirname, 'failover-rank.js');
/** `efa-emu lab incast`'s rank (N + 1 ranks: 0 receives, the others send). */
export const INCAST_RANK_PROGRAM = path.join(__dirname, 'incast-rank.js');

/** Whole-lab time limit when none is given: start-up of a few ranks twice over, and the streams. */
export const DEFAULT_LAB_TIMEOUT_S = 120;

/**
 * A lab scenario that did not produce its figures: a rank failed, the lab ran past its time
 * limit (code ETIMEDOUT; the ranks still running were stopped and are named), or a rank
 * ended without its figures (ENODATA). `exitCode` is what the command exits with.
 */
export class LabError extends EfaError {
  constructor(
    code: string,
    message: string,
    readonly exitCode: number,
  ) {
    super(code, message);
    this.name = 'LabError';
  }
}

/** Shared by the scenarios of one lab run. */
export interface LabContext {
  daemon: EmbeddedDaemon;
  logger: Logger;
  /** performance.now() by which every scenario must be done. */
  deadline: number;
  timeoutS: number;
  /** Receives the ranks' lines other than their figures (default: stderr, prefixed). */
  relay: (scenario: string, rank: number, stream: 'stdout' | 'stderr', line: string) => void;
  signal?: AbortSignal;
}

/** Common options of the labs' library entry points. */
export interface LabRunOptions {
  /** Whole-lab time limit in seconds (default {@link DEFAULT_LAB_TIMEOUT_S}). */
  timeoutS?: number;
  logLevel?: string;
  /** Where the ranks' other output goes; default: the command's stderr, prefixed `[scenario rank]`. */
  relay?: LabContext['relay'];
  signal?: AbortSignal;
}

/** Starts the lab's daemon, runs `body`, and stops the daemon. */
export async function withLab<T>(o: LabRunOptions, body: (ctx: LabContext) => Promise<T>): Promise<T> {
  const logger = rootLogger(o.logLevel);
  const timeoutS = o.timeoutS ?? DEFAULT_LAB_TIMEOUT_S;
  const daemon = await startEmbeddedDaemon({ logger });
  try {
    return await body({
      daemon,
      logger,
      deadline: performance.now() + timeoutS * 1000,
      timeoutS,
      relay: o.relay ?? ((scenario, rank, _stream, line) => process.stderr.write(`[${scenario} ${rank}] ${line}\n`)),
      signal: o.signal,
    });
  } finally {
    await daemon.close();
  }
}

/** One scenario to run: `n` ranks of `program`; `role` names a rank in reports. */
export interface ScenarioLaunch {
  name: string;
  n: number;
  program: string;
  args: string[];
  role: (rank: number) => string;
}

/**
 * Runs one scenario and returns each rank's figures (the object of its `{"lab": ...}` line),
 * in rank order.
 * @throws LabError when a rank fails, the lab's time runs out, or a rank prints no figures
 */
export async function runScenario(ctx: LabContext, s: ScenarioLaunch): Promise<Array<Record<string, unknown>>> {
  const left = ctx.deadline - performance.now();
  if (left <= 0) throw new LabError('ETIMEDOUT', `scenario ${s.name} not started: the lab ran past --timeout ${ctx.timeoutS} s`, EXIT_TIMEOUT);
  const figures = new Array<Record<string, unknown> | null>(s.n).fill(null);
  const env: NodeJS.ProcessEnv = {
    [ENV_JOB_ID]: `lab-${s.name}-${randomBytes(4).toString('hex')}`,
    // The lab sets each scenario's faults itself; inherited ones would change the experiment.
    [ENV_FAULTS]: undefined,
  };
  const res = await launch({
    n: s.n,
    program: s.program,
    args: s.args,
    daemon: ctx.daemon.address,
    env,
    logger: ctx.logger,
    timeoutMs: Math.max(1, Math.round(left)),
    signal: ctx.signal,
    onLine: (rank, stream, line) => {
      if (stream === 'stdout' && line.startsWith('{"lab":')) {
        try {
          figures[rank] = (JSON.parse(line) as { lab: Record<string, unknown> }).lab;
          return;
        } catch {
          // Not ours after all: relayed as it is.
        }
      }
      ctx.relay(s.name, rank, stream, line);
    },
  });
  if (res.exitCode !== 0) {
    const how = res.ranks.map((r) => `rank ${r.rank} (${s.role(r.rank)}) ${rankOutcome(r)}`).join(', ');
    if (res.timedOut) {
      throw new LabError('ETIMEDOUT', `scenario ${s.name} ran past --timeout ${ctx.timeoutS} s, so its ranks still running were stopped: ${how}`, EXIT_TIMEOUT);
    }
    if (res.interrupted) throw new LabError('EINTR', `scenario ${s.name} interrupted: ${how}`, res.exitCode);
    throw new LabError('ERANK', `scenario ${s.name} failed: ${how}`, res.exitCode);
  }
  const missing = figures.flatMap((f, rank) => (f === null ? [`rank ${rank} (${s.role(rank)})`] : []));
  if (missing.length > 0) throw new LabError('ENODATA', `scenario ${s.name}: ${missing.join(', ')} ended without its figures`, 1);
  return figures as Array<Record<string, unknown>>;
}

function rankOutcome(r: RankResult): string {
  if (r.code !== null) return `exit ${r.code}`;
  if (r.signal !== null) return `killed by ${r.signal}`;
  return 'never started';
}
