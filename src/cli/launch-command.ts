import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { addSrdFlags, intOption, type SrdFlags } from './cli-options';
import type { RestartOutcome } from '../job/embedded-daemon';
import { MAX_RANKS, type LaunchResult, type RankResult } from '../job/launch';
import { runJob } from '../job/run-job';

export { ENV_JOB_ID } from '../job/run-job';

/** Longest down time a rank may ask for in a restart request. */
const MAX_RESTART_DOWN_MS = 60_000;
/** Down time of a restart request that names none (or an invalid one). */
const DEFAULT_RESTART_DOWN_MS = 500;

/** What became of one `restart-daemon` request of a rank. */
export interface RestartRecord {
  rank: number;
  /**
   * The outcome, or the error the restart failed with. `not-allowed`: the launch was not
   * started with `--allow-daemon-restart`, so the request was ignored.
   */
  outcome: RestartOutcome | { restarted: false; reason: 'not-allowed' } | { error: { code: string; message: string } };
}

export function registerLaunchCommand(program: Command): void {
  addSrdFlags(
    program
      .command('launch')
      .description('start N ranks of a program (.js or .ts), each with its own emulated EFA device')
      .requiredOption('-n, --np <n>', 'number of ranks', intOption(1, MAX_RANKS))
      .option('--daemon <host:port>', 'use this daemon instead of starting one')
      .option('--generation <gen>', 'EFA device generation of every rank: efa0 (the 2018 device: send/receive only) .. efa3 (default, the newest)')
      .option('--fault <spec>', 'fault spec for every device, passed as EFA_EMU_FAULTS'),
  )
    .option('--state <file>', 'state file for the daemon this command starts')
    .option('--timeout <seconds>', 'stop every rank after this long', intOption(1, 7 * 24 * 3600))
    .option('--no-prefix', 'do not prefix output lines with the rank')
    .option('--no-memory-check', 'start the ranks even when their estimated memory (64 MiB each) exceeds what the machine has available')
    .option('--no-typecheck', 'a .ts program: compile it without type-checking (it is still compiled once, before any rank starts)')
    .option('--capture <file>', 'write every datagram the ranks send and receive to this pcap file (see contrib/wireshark)')
    .option('--log-level <level>', 'log level of the launcher and its daemon (EFA_EMU_LOG)')
    .option('--allow-daemon-restart', "let a rank restart the launcher's embedded daemon (chaos testing): process.send({ efaEmu: 'restart-daemon', downMs })")
    .argument('<program>', 'the program every rank runs')
    .argument('[args...]', 'arguments for the program (after --)')
    .passThroughOptions()
    .action(async (prog: string, args: string[], o: SrdFlags & { np: number; typecheck: boolean; memoryCheck: boolean; daemon?: string; fault?: string; generation?: string; state?: string; timeout?: number; prefix: boolean; capture?: string; logLevel?: string; allowDaemonRestart?: boolean }) => {
      const rest = args[0] === '--' ? args.slice(1) : args;
      const restarts: RestartRecord[] = [];
      const pending: Promise<void>[] = [];
      // Reported as it happens, on the launcher's own stream (rank output is prefixed), so a
      // test or a user can tell what the launcher did from what the ranks say.
      const note = (rec: RestartRecord): void => {
        restarts.push(rec);
        process.stderr.write(`efa-emu launch: ${describeRestart(rec)}\n`);
      };
      process.exitCode = await runJob(
        o,
        randomBytes(6).toString('hex'),
        (daemon, logger) => ({
          n: o.np,
          program: prog,
          args: rest,
          prefix: o.prefix,
          typecheck: o.typecheck,
          memoryLimitBytes: o.memoryCheck ? undefined : 0,
          timeoutMs: o.timeout !== undefined ? o.timeout * 1000 : null,
          // A rank may ask for the embedded daemon to be restarted (chaos testing), only when
          // the user said so: a program that does it by mistake must not take the daemon down
          // under the other ranks.
          onMessage: (rank, msg) => {
            const m = msg as { efaEmu?: unknown; downMs?: unknown } | null;
            if (m?.efaEmu !== 'restart-daemon') return;
            if (o.allowDaemonRestart !== true) {
              note({ rank, outcome: { restarted: false, reason: 'not-allowed' } });
              return;
            }
            const downMs = typeof m.downMs === 'number' && m.downMs >= 0 && m.downMs <= MAX_RESTART_DOWN_MS ? m.downMs : DEFAULT_RESTART_DOWN_MS;
            logger.debug({ rank, downMs }, 'restarting the daemon on request');
            pending.push(
              daemon.restart(downMs).then(
                (outcome) => note({ rank, outcome }),
                (err: Error & { code?: string }) => note({ rank, outcome: { error: { code: err.code ?? 'EUNKNOWN', message: err.message } } }),
              ),
            );
          },
        }),
        async (result) => {
          // runJob stopped the daemon first, which ends a restart under way: all have settled.
          await Promise.all(pending);
          const summary = jobSummary(result, restarts, o.timeout ?? null);
          if (summary !== null) process.stderr.write(`efa-emu launch: ${summary}\n`);
        },
      );
    });
}

/** One line on a daemon restart a rank asked for. */
export function describeRestart(rec: RestartRecord): string {
  const o = rec.outcome;
  if ('error' in o) return `daemon restart asked by rank ${rec.rank} failed: ${o.error.code}: ${o.error.message}; the job has no daemon now`;
  if (o.restarted) return `daemon restarted at rank ${rec.rank}'s request: down ${o.downMs} ms, listening again on ${o.address.host}:${o.address.port}`;
  const why = {
    external: 'the daemon was given with --daemon',
    busy: 'a restart was already under way',
    gone: 'an earlier restart failed, there is no daemon to restart',
    closing: 'the job was ending',
    'not-allowed': 'the launch was not started with --allow-daemon-restart',
  }[o.reason];
  return `daemon restart asked by rank ${rec.rank} not done: ${why}`;
}

/**
 * The launcher's exit summary: how each rank ended (ranks alike grouped) and what became of
 * the daemon restarts asked for. Null for a job with nothing to tell (every rank exited 0 on
 * its own, no rank announced its exit, no restart asked for), which stays quiet.
 */
export function jobSummary(result: LaunchResult, restarts: RestartRecord[], timeoutSeconds: number | null = null): string | null {
  const eventful = result.exitCode !== 0 || restarts.length > 0 || result.ranks.some((r) => r.exitAnnounced || r.code !== 0);
  if (!eventful) return null;
  const groups = new Map<string, number[]>();
  for (const r of result.ranks) {
    const how = rankOutcome(r);
    const ranks = groups.get(how);
    if (ranks === undefined) groups.set(how, [r.rank]);
    else ranks.push(r.rank);
  }
  const parts = [...groups].map(([how, ranks]) => `${ranks.length === 1 ? 'rank' : 'ranks'} ${rankList(ranks)} ${how}`);
  // Says what timed out: the whole job, after the --timeout it was given.
  const cause = result.timedOut
    ? ` (timed out${timeoutSeconds === null ? '' : `: the job ran past --timeout ${timeoutSeconds} s, so every rank still running was stopped`})`
    : result.interrupted
      ? ' (interrupted)'
      : '';
  let text = `job ended, exit ${result.exitCode}${cause}: ${parts.join('; ')}`;
  if (restarts.length > 0) {
    const done = restarts.filter((r) => !('error' in r.outcome) && r.outcome.restarted).length;
    const failed = restarts.filter((r) => 'error' in r.outcome).length;
    text += `; daemon restarts: ${restarts.length} requested, ${done} done`;
    if (failed > 0) text += `, ${failed} failed`;
    if (restarts.length - done - failed > 0) text += `, ${restarts.length - done - failed} not done`;
  }
  return text;
}

function rankOutcome(r: RankResult): string {
  const how = r.code !== null ? `exit ${r.code}` : r.signal !== null ? r.signal : 'never started';
  return r.exitAnnounced ? `${how} (announced)` : how;
}

/** `0-2,5,7-8`: ranks in order, runs shortened. */
function rankList(ranks: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < ranks.length; ) {
    let j = i;
    while (j + 1 < ranks.length && ranks[j + 1] === ranks[j] + 1) j++;
    out.push(j === i ? String(ranks[i]) : `${ranks[i]}-${ranks[j]}`);
    i = j + 1;
  }
  return out.join(',');
}
