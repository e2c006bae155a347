/*
 * One rank of `efa-emu lab incast` (N + 1 ranks, started by the lab through the launcher).
 *
 * Rank 0 receives behind an ingress bottleneck (set on its own injector, so only it has one);
 * ranks 1..N stream to it with a fixed number of sends outstanding each, from a common start
 * for a common duration, after a common warm-up (`--warmup-ms`, left out of every figure:
 * code not yet optimised, windows still opening). The receiver counts the bytes of every sender in time bins; each
 * sender measures post-to-completion latency. Each rank ends with one `{"lab": ...}` JSON line.
 */
import { parseArgs } from 'node:util';
import { CompletionPoller } from '../../completion-poller';
import { WcOpcode, WcStatus, wcStatusStr } from '../../device/constants';
import type { WorkCompletion } from '../../device/work-completion';
import { readRankEnv } from '../../env';
import { DEFAULT_SRD_CONFIG } from '../../srd/srd-config';
import { DAEMON_WAIT_MS, LabEndpoint, nonZeroCounters, parseCc, sleepUntil } from './lab-endpoint';
import { Bins, LatencyHistogram, percentiles, Samples, sharedNowMs } from './lab-stats';

/** Bin width of the receiver's per-sender byte counts. */
export const INCAST_BIN_MS = 5;
/** Largest receive ring: with the sends, what one CQ holds (maxCqe 32768) with room to spare. */
const MAX_RECV_DEPTH = 16384;
/** Longest a sender waits for its last sends once the stream has ended. */
const DRAIN_MS = 10_000;
/** From the receiver's go to the common start: every sender has read it by then. */
const START_DELAY_MS = 100;

interface Plan {
  paths: number | null;
  cc: string | undefined;
  durationMs: number;
  warmupMs: number;
  size: number;
  outstanding: number;
  /** The receiver's fault spec (its bottleneck), or '' for none. */
  receiverFaults: string;
}

function parsePlan(argv: string[]): Plan {
  const { values } = parseArgs({
    args: argv,
    options: {
      paths: { type: 'string' },
      cc: { type: 'string' },
      'duration-ms': { type: 'string', default: '3000' },
      'warmup-ms': { type: 'string', default: '500' },
      size: { type: 'string', default: '8192' },
      outstanding: { type: 'string', default: '64' },
      'receiver-faults': { type: 'string', default: '' },
    },
  });
  return {
    paths: values.paths === undefined ? null : Number(values.paths),
    cc: values.cc,
    durationMs: Number(values['duration-ms']),
    warmupMs: Number(values['warmup-ms']),
    size: Number(values.size),
    outstanding: Number(values.outstanding),
    receiverFaults: values['receiver-faults'] as string,
  };
}

async function main(): Promise<void> {
  const plan = parsePlan(process.argv.slice(2));
  const env = readRankEnv();
  const senders = (env.size ?? 2) - 1;
  const isReceiver = (env.rank ?? 0) === 0;
  const ep = await LabEndpoint.open({
    paths: plan.paths,
    cc: parseCc(plan.cc),
    size: plan.size,
    sendDepth: isReceiver ? 16 : plan.outstanding + 16,
    // Room for every sender's whole window: the bottleneck, not the receive ring, drops. (A
    // sender has at most its SRD window in flight, whatever it keeps outstanding; the ring
    // stops at what one CQ can take beside the sends.)
    recvDepth: isReceiver ? Math.min(MAX_RECV_DEPTH, Math.max(1024, 2 * senders * Math.min(plan.outstanding, DEFAULT_SRD_CONFIG.window))) : 16,
  });
  try {
    const job = process.env.EFA_EMU_JOB_ID ?? 'lab';
    const key = `${job}/lab/incast`;
    await ep.publish(`${key}/qp`);
    if (isReceiver) await receiver(ep, plan, key, senders);
    else await sender(ep, plan, key, senders);
  } finally {
    await ep.close();
  }
}

async function receiver(ep: LabEndpoint, plan: Plan, key: string, senders: number): Promise<void> {
  const dev = ep.dev;
  let bottleneckError: string | null = null;
  if (plan.receiverFaults !== '') {
    try {
      dev.faults.setSpec(plan.receiverFaults);
    } catch (err) {
      // Reported with the figures (a device without the bottleneck still runs the stream).
      bottleneckError = (err as Error).message;
      process.stderr.write(`lab incast: the receiver's faults ${JSON.stringify(plan.receiverFaults)} were refused: ${bottleneckError}\n`);
    }
  }
  const bins = Array.from({ length: senders + 1 }, () => new Bins(INCAST_BIN_MS));
  const delivered = new Array<number>(senders + 1).fill(0);
  let errors = 0;
  let unknownSender = 0;
  const errorStatuses: Record<string, number> = {};
  let startAbs = 0;
  const poller = new CompletionPoller(dev, ep.cq, 'event', (wcs: readonly WorkCompletion[], n: number) => {
    const now = sharedNowMs();
    for (let i = 0; i < n; i++) {
      const wc = wcs[i];
      if (wc.opcode !== WcOpcode.RECV) continue;
      if (wc.status === WcStatus.SUCCESS) {
        const from = wc.byteLen >= 4 ? ep.recvBytes(wc.wrId).readUInt32BE(0) : 0;
        if (from >= 1 && from <= senders) {
          delivered[from]++;
          if (now >= startAbs) bins[from].add(now - startAbs, wc.byteLen);
        } else unknownSender++;
      } else {
        errors++;
        const name = wcStatusStr(wc.status);
        errorStatuses[name] = (errorStatuses[name] ?? 0) + 1;
      }
      ep.postRecv(wc.wrId);
    }
  });
  poller.start();
  await dev.daemon.barrier(`${key}/ready`, senders + 1, DAEMON_WAIT_MS);
  // Time 0 of the figures; the senders start a warm-up before it.
  startAbs = sharedNowMs() + START_DELAY_MS + plan.warmupMs;
  await dev.daemon.put(`${key}/start`, String(startAbs));
  // Senders enter once their last sends completed; the poller keeps receiving meanwhile.
  await dev.daemon.barrier(`${key}/senders-done`, senders + 1, DAEMON_WAIT_MS);
  poller.stop();
  const result = {
    role: 'receiver',
    rank: dev.rank,
    name: dev.name,
    faults: plan.receiverFaults,
    bottleneckError,
    delivered: delivered.slice(1),
    errors,
    errorStatuses,
    unknownSender,
    binMs: INCAST_BIN_MS,
    /** Bytes per bin, one array per sender (index 0: rank 1). */
    bins: bins.slice(1).map((b) => b.counts),
    stats: nonZeroCounters(dev.statsSnapshot()),
  };
  process.stdout.write(`${JSON.stringify({ lab: result })}\n`);
}

async function sender(ep: LabEndpoint, plan: Plan, key: string, senders: number): Promise<void> {
  const dev = ep.dev;
  const rank = dev.rank ?? 1;
  ep.sendBuf.writeUInt32BE(rank, 0);
  const peer = await ep.peer(`${key}/qp`, 0);
  await dev.daemon.barrier(`${key}/ready`, senders + 1, DAEMON_WAIT_MS);
  const startAbs = Number(await dev.daemon.get(`${key}/start`, DAEMON_WAIT_MS));
  const endAbs = startAbs + plan.durationMs;
  await sleepUntil(startAbs - plan.warmupMs, sharedNowMs);

  const postedAt = new Float64Array(plan.outstanding);
  const latencies = new Samples();
  const hist = new LatencyHistogram();
  const errorStatuses: Record<string, number> = {};
  let posted = 0;
  let completed = 0;
  let errors = 0;
  let firstPostMs = NaN;
  let lastPostMs = NaN;
  let postFailure: string | null = null;
  const post = (slot: number, now: number): boolean => {
    try {
      ep.postSend(slot, peer);
    } catch (err) {
      postFailure = (err as Error).message;
      return false;
    }
    postedAt[slot] = now;
    posted++;
    if (Number.isNaN(firstPostMs)) firstPostMs = now - startAbs;
    lastPostMs = now - startAbs;
    return true;
  };

  await new Promise<void>((resolve) => {
    let done = false;
    let drainTimer: NodeJS.Timeout | null = null;
    const finish = (): void => {
      if (done) return;
      done = true;
      poller.stop();
      clearTimeout(endTimer);
      if (drainTimer !== null) clearTimeout(drainTimer);
      resolve();
    };
    const ending = (): void => {
      if (completed === posted) finish();
      else drainTimer ??= setTimeout(finish, DRAIN_MS);
    };
    // A closed loop: each completion frees its slot for the next message while the stream runs.
    const poller = new CompletionPoller(dev, ep.cq, 'event', (wcs: readonly WorkCompletion[], n: number) => {
      const now = sharedNowMs();
      const running = now < endAbs && postFailure === null;
      for (let i = 0; i < n; i++) {
        const wc = wcs[i];
        if (wc.opcode === WcOpcode.RECV) continue;
        completed++;
        if (postedAt[wc.wrId] >= startAbs) {
          const ms = now - postedAt[wc.wrId];
          latencies.push(ms);
          hist.add(ms);
        }
        if (wc.status !== WcStatus.SUCCESS) {
          errors++;
          const name = wcStatusStr(wc.status);
          errorStatuses[name] = (errorStatuses[name] ?? 0) + 1;
        }
        if (running) post(wc.wrId, now);
      }
      if (!running) ending();
    });
    const endTimer = setTimeout(ending, Math.max(0, endAbs - sharedNowMs()));
    const now = sharedNowMs();
    for (let slot = 0; slot < plan.outstanding; slot++) if (!post(slot, now)) break;
    poller.start();
  });
  const result = {
    role: 'sender',
    rank,
    name: dev.name,
    posted,
    completed,
    errors,
    errorStatuses,
    outstandingAtEnd: posted - completed,
    postFailure,
    firstPostMs,
    lastPostMs,
    ...percentiles(latencies.view()),
    hist: hist.toJSON(),
    stats: nonZeroCounters(dev.statsSnapshot()),
  };
  process.stdout.write(`${JSON.stringify({ lab: result })}\n`);
  await dev.daemon.barrier(`${key}/senders-done`, senders + 1, DAEMON_WAIT_MS);
}

main().catch((err: Error & { code?: string }) => {
  process.stderr.write(`lab incast rank: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
  process.exitCode = 1;
});
