import { parseFaultSpec } from '../io/fault-spec';
import { generationProfile } from '../device/generations';
import { ENV_CC, ENV_GENERATION, ENV_PATHS } from '../env';
import type { CcMode } from '../srd/srd-config';
import { rootLogger, type Logger } from '../common/logger';
import { captureEnv, mergeCapture } from './capture-merge';
import { daemonForCommand, type EmbeddedDaemon } from './embedded-daemon';
import { launch, type LaunchOptions, type LaunchResult } from './launch';

/** Environment variable naming one launch, so ranks can keep their keys apart on a shared daemon. */
export const ENV_JOB_ID = 'EFA_EMU_JOB_ID';

/** The flags every rank-starting command shares. */
export interface JobFlags {
  daemon?: string;
  fault?: string;
  capture?: string;
  logLevel?: string;
  /** State file of the daemon the command starts. */
  state?: string;
  /** EFA generation of every rank's device (EFA_EMU_GENERATION). */
  generation?: string;
  /** SRD paths of every rank's device (EFA_EMU_PATHS). */
  paths?: number;
  /** SRD congestion control of every rank's device (EFA_EMU_CC). */
  cc?: CcMode;
}

/** What a command decides about its ranks; the rest comes from the shared flags. */
export type JobLaunch = Omit<LaunchOptions, 'daemon' | 'faults' | 'env' | 'logger'>;

/**
 * Runs ranks for a command (`launch`, `pingpong`, `bench`): checks the fault spec before any
 * rank starts (the error names the flag), uses `--daemon` or starts one, gives the ranks the
 * job id, log level and capture settings, merges their captures, and stops the daemon it
 * started. Resolves with the job's exit code.
 *
 * `onEnd` gets the launch's result once the daemon is stopped, so whatever the command did to
 * the daemon during the job (a restart asked for by a rank) has settled when it reports.
 */
export async function runJob(
  flags: JobFlags,
  jobId: string,
  build: (daemon: EmbeddedDaemon, logger: Logger) => JobLaunch,
  onEnd?: (result: LaunchResult) => void | Promise<void>,
): Promise<number> {
  const logger = rootLogger(flags.logLevel);
  if (flags.fault !== undefined) parseFaultSpec(flags.fault, '--fault');
  if (flags.generation !== undefined) generationProfile(flags.generation, '--generation');
  const daemon = await daemonForCommand(flags.daemon, { statePath: flags.state ?? null, logger });
  let res: LaunchResult;
  try {
    const env: NodeJS.ProcessEnv = { [ENV_JOB_ID]: jobId, ...captureEnv(flags.capture) };
    if (flags.logLevel !== undefined) env.EFA_EMU_LOG = flags.logLevel;
    if (flags.generation !== undefined) env[ENV_GENERATION] = flags.generation;
    if (flags.paths !== undefined) env[ENV_PATHS] = String(flags.paths);
    if (flags.cc !== undefined) env[ENV_CC] = flags.cc;
    res = await launch({ ...build(daemon, logger), daemon: daemon.address, faults: flags.fault ?? null, env, logger });
    await mergeCapture(flags.capture);
  } finally {
    await daemon.close();
  }
  await onEnd?.(res);
  return res.exitCode;
}
