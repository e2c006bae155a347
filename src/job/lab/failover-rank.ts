/*
 * One rank of `efa-emu lab failover` (two ranks, started by the lab through the launcher).
 *
 * Rank 0 streams SRD sends to rank 1 at a paced rate and, `--fault-at-ms` into the measured
 * stream, black-holes one path to it for `--fault-for-ms` with its own fault injector. The
 * stream starts `--warmup-ms` earlier: code not yet optimised sends well below the pace at
 * first, and its backlog would read as the fault's. Figures count from the end of the warm-up. Rank 1 counts
 * what arrives and when. Times are on the shared wall clock (sharedNowMs), so the receiver's
 * arrivals line up with the sender's fault window. Each rank ends with one `{"lab": ...}`
 * JSON line on stdout: the sender's latencies and counters, the receiver's arrivals in 1 ms
 * bins.
 */
import { parseArgs } from 'node:util';
import { CompletionPoller } from '../../completion-poller';
import { WcOpcode, WcStatus, wcStatusStr } from '../../device/constants';
import type { WorkCompletion } from '../../device/work-completion';
import { readRankEnv } from '../../env';
import { DAEMON_WAIT_MS, LabEndpoint, nonZeroCounters, parseCc } from './lab-endpoint';
import { Bins, LatencyHistogram, percentiles, Samples, sharedNowMs } from './lab-stats';

/** The receiver's ring: more than the sender can have outstanding, so it never sees RNR. */
const RECV_DEPTH = 2048;
/** Bin width of the receiver's arrival counts. */
export const FAILOVER_BIN_MS = 1;
/** Longest the sender waits for its last sends once the stream has ended. */
const DRAIN_MS = 10_000;
/** The receiver stops waiting for stragglers after this long without an arrival. */
const RECV_IDLE_MS = 1000;
/** From the start barrier to the first send: both ranks are past their set-up by then. */
const START_DELAY_MS = 50;

interface Plan {
  paths: number | null;
  cc: string | undefined;
  durationMs: number;
  warmupMs: number;
  faultAtMs: number;
  faultForMs: number;
  faultPath: number;
  rate: number;
  size: number;
  maxOutstanding: number;
}

function parsePlan(argv: string[]): Plan {
  const { values } = parseArgs({
    args: argv,
    options: {
      paths: { type: 'string' },
      cc: { type: 'string' },
      'duration-ms': { type: 'string', default: '2000' },
      'warmup-ms': { type: 'string', default: '500' },
      'fault-at-ms': { type: 'string', default: '800' },
      'fault-for-ms': { type: 'string', default: '300' },
      'fault-path': { type: 'string', default: '0' },
      rate: { type: 'string', default: '20000' },
      size: { type: 'string', default: '1024' },
      'max-outstanding': { type: 'string', default: '512' },
    },
  });
  return {
    paths: values.paths === undefined ? null : Number(values.paths),
    cc: values.cc,
    durationMs: Number(values['duration-ms']),
    warmupMs: Number(values['warmup-ms']),
    faultAtMs: Number(values['fault-at-ms']),
    faultForMs: Number(values['fault-for-ms']),
    faultPath: Number(values['fault-path']),
    rate: Number(values.rate),
    size: Number(values.size),
    maxOutstanding: Number(values['max-outstanding']),
  };
}

async function main(): Promise<void> {
  const plan = parsePlan(process.argv.slice(2));
  const isSender = (readRankEnv().rank ?? 0) === 0;
  const ep = await LabEndpoint.open({ paths: plan.paths, cc: parseCc(plan.cc), size: plan.size, sendDepth: plan.maxOutstanding + 16, recvDepth: isSender ? 16 : RECV_DEPTH });
  // Closed on failure too: an open device would keep a failed rank alive.
  try {
    const job = process.env.EFA_EMU_JOB_ID ?? 'lab';
    const key = `${job}/lab/failover`;
    await ep.publish(`${key}/qp`);
    if (isSender) await sender(ep, plan, key);
    else await receiver(ep, key);
  } finally {
    await ep.close();
  }
}

async function sender(ep: LabEndpoint, plan: Plan, key: string): Promise<void> {
  const dev = ep.dev;
  const peer = await ep.peer(`${key}/qp`, 1);
  await dev.daemon.barrier(`${key}/ready`, 2, DAEMON_WAIT_MS);
  // startAbs is the figures' time 0; the stream starts a warm-up before it.
  const streamAbs = sharedNowMs() + START_DELAY_MS;
  const startAbs = streamAbs + plan.warmupMs;
  await dev.daemon.put(`${key}/start`, String(startAbs));
  const endAbs = startAbs + plan.durationMs;
  const target = `${peer.name}#${plan.faultPath}`;

  const postedAt = new Float64Array(plan.maxOutstanding);
  const free: number[] = [];
  for (let i = plan.maxOutstanding - 1; i >= 0; i--) free.push(i);
  const latencies = new Samples();
  const hist = new LatencyHistogram();
  const errorStatuses: Record<string, number> = {};
  let posted = 0;
  let warmupPosted = 0;
  let completed = 0;
  let errors = 0;
  let maxBacklog = 0;
  let postFailure: string | null = null;
  let fault: { startMs: number; endMs: number } | null = null;

  const faultTimer = setTimeout(
    () => {
      const at = sharedNowMs();
      dev.faults.partition(target, plan.faultForMs);
      fault = { startMs: at - startAbs, endMs: at - startAbs + plan.faultForMs };
    },
    Math.max(0, startAbs + plan.faultAtMs - sharedNowMs()),
  );

  // Paced, not windowed: message i is due at start + i / rate. A send the outstanding limit
  // holds back goes out as soon as one completes, so a stall shows as a backlog (reported),
  // not as messages never sent.
  const pump = (): void => {
    const now = sharedNowMs();
    const due = Math.floor(((Math.min(now, endAbs) - streamAbs) * plan.rate) / 1000);
    while (posted < due && free.length > 0 && postFailure === null) {
      const slot = free.pop() as number;
      postedAt[slot] = now;
      try {
        ep.postSend(slot, peer);
      } catch (err) {
        // The QP went to an error state: the stream ends here, its reason reported.
        postFailure = (err as Error).message;
        free.push(slot);
        break;
      }
      posted++;
      if (now < startAbs) warmupPosted++;
    }
    if (now >= startAbs) maxBacklog = Math.max(maxBacklog, due - posted);
  };

  await new Promise<void>((resolve) => {
    let done = false;
    let drainTimer: NodeJS.Timeout | null = null;
    const finish = (): void => {
      if (done) return;
      done = true;
      poller.stop();
      clearTimeout(tick);
      if (drainTimer !== null) clearTimeout(drainTimer);
      resolve();
    };
    const check = (): void => {
      if (sharedNowMs() >= endAbs || postFailure !== null) {
        if (completed === posted) finish();
        else drainTimer ??= setTimeout(finish, DRAIN_MS);
      }
    };
    const poller = new CompletionPoller(dev, ep.cq, 'event', (wcs: readonly WorkCompletion[], n: number) => {
      const now = sharedNowMs();
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
        free.push(wc.wrId);
      }
      pump();
      check();
    });
    // A 1 ms tick keeps the pace between completions; the event loop's timer granularity
    // makes sends leave in small bursts, each at most a tick's worth.
    let tick: NodeJS.Timeout = setTimeout(function again() {
      pump();
      check();
      if (!done) tick = setTimeout(again, 1);
    }, Math.max(0, streamAbs - sharedNowMs()));
    poller.start();
  });
  clearTimeout(faultTimer);
  await dev.daemon.put(`${key}/sent`, String(posted));
  const result = {
    role: 'sender',
    rank: dev.rank,
    name: dev.name,
    target,
    posted,
    warmupPosted,
    completed,
    errors,
    errorStatuses,
    outstandingAtEnd: posted - completed,
    maxBacklog,
    postFailure,
    fault,
    ...percentiles(latencies.view()),
    hist: hist.toJSON(),
    stats: nonZeroCounters(dev.statsSnapshot()),
  };
  process.stdout.write(`${JSON.stringify({ lab: result })}\n`);
  // The receiver stays up until the sender is done with it, and the other way round.
  await dev.daemon.barrier(`${key}/done`, 2, DAEMON_WAIT_MS);
}

async function receiver(ep: LabEndpoint, key: string): Promise<void> {
  const dev = ep.dev;
  await dev.daemon.barrier(`${key}/ready`, 2, DAEMON_WAIT_MS);
  const arrivals = new Samples();
  let delivered = 0;
  let errors = 0;
  let expected = Infinity;
  let lastArrival = sharedNowMs();
  const errorStatuses: Record<string, number> = {};
  await new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      poller.stop();
      clearInterval(idle);
      resolve();
    };
    const poller = new CompletionPoller(dev, ep.cq, 'event', (wcs: readonly WorkCompletion[], n: number) => {
      const now = sharedNowMs();
      lastArrival = now;
      for (let i = 0; i < n; i++) {
        const wc = wcs[i];
        if (wc.opcode !== WcOpcode.RECV) continue;
        if (wc.status === WcStatus.SUCCESS) {
          delivered++;
          arrivals.push(now);
        } else {
          errors++;
          const name = wcStatusStr(wc.status);
          errorStatuses[name] = (errorStatuses[name] ?? 0) + 1;
        }
        ep.postRecv(wc.wrId);
      }
      if (delivered + errors >= expected) finish();
    });
    const idle = setInterval(() => {
      if (expected !== Infinity && sharedNowMs() - lastArrival > RECV_IDLE_MS) finish();
    }, 100);
    poller.start();
    dev.daemon.get(`${key}/sent`, DAEMON_WAIT_MS).then((text) => {
      expected = Number(text);
      lastArrival = Math.max(lastArrival, sharedNowMs());
      if (delivered + errors >= expected) finish();
    }, reject);
  });
  const startAbs = Number(await dev.daemon.get(`${key}/start`, DAEMON_WAIT_MS));
  const bins = new Bins(FAILOVER_BIN_MS);
  let warmupDelivered = 0;
  for (const t of arrivals.view()) {
    if (t >= startAbs) bins.add(t - startAbs);
    else warmupDelivered++;
  }
  const result = {
    role: 'receiver',
    rank: dev.rank,
    name: dev.name,
    delivered,
    warmupDelivered,
    expected,
    errors,
    errorStatuses,
    binMs: FAILOVER_BIN_MS,
    bins: bins.counts,
    stats: nonZeroCounters(dev.statsSnapshot()),
  };
  process.stdout.write(`${JSON.stringify({ lab: result })}\n`);
  await dev.daemon.barrier(`${key}/done`, 2, DAEMON_WAIT_MS);
}

main().catch((err: Error & { code?: string }) => {
  process.stderr.write(`lab failover rank: ${err.code ? `${err.code}: ` : ''}${err.message}\n`);
  process.exitCode = 1;
});
