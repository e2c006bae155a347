/*
 * One rank of `efa-emu bench` (started by the command through the launcher, two ranks).
 * Rank 0 drives and measures, rank 1 answers; for every (test, size, type) they meet at a
 * barrier, run, and rank 0 prints one `{"bench": ...}` JSON line. Progress goes to stderr as
 * `{"progress": done/total}` lines for the command to draw.
 */
import { parseArgs } from 'node:util';
import { EfaError, InvalidArgumentError } from '../../common/errors';
import { openDevice, type EfaDevice } from '../../open-device';
import { bandwidthFigures, BwPeak, latencyFigures } from './bench-stats';
import { isRawType, isRdmaTest, type BenchAddress, type BenchSetup, type BenchTest } from './bench-result';
import { RawEndpoint, VerbsEndpoint, type BenchEndpoint, type BenchType, type PollMode } from './bench-endpoints';
import { RdmaEndpoint, type RdmaPeerInfo } from './bench-rdma';

/** The receiver of a raw or UD stream acks every this many messages. */
const ACK_EVERY = 64;
/** Bytes of such an ack: endpoints are sized for it even when every measured message is smaller. */
const ACK_BYTES = 8;
/** UD and raw datagrams can be lost: this long without progress means "lost", never a hang. */
const STALL_MS = 20;
/**
 * In a stream, a datagram lost to a full socket buffer must not idle the sender for long, or
 * one loss would dominate the figure: a short stall gives up on what is missing.
 */
const STREAM_STALL_MS = 10;


/** Beside an RDMA test, raw UDP streams datagrams of at most this size (the device MTU)... */
const RAW_BASELINE_BW_SIZE = 8192;
/** ...and ping-pongs the same bytes when one datagram holds them. */
const RAW_BASELINE_LAT_MAX = 65000;

interface Plan {
  tests: BenchTest[];
  types: BenchType[];
  sizes: number[];
  iters: number;
  warmup: number;
  window: number;
  poll: PollMode;
}

function parsePlan(argv: string[]): Plan {
  const { values } = parseArgs({
    args: argv,
    options: {
      tests: { type: 'string', default: 'lat' },
      types: { type: 'string', default: 'raw,ud,srd' },
      sizes: { type: 'string', default: '64' },
      iters: { type: 'string', default: '1000' },
      warmup: { type: 'string' },
      window: { type: 'string', default: '128' },
      poll: { type: 'string', default: 'event' },
    },
  });
  const iters = Number(values.iters);
  return {
    tests: (values.tests as string).split(',') as Plan['tests'],
    types: (values.types as string).split(',') as BenchType[],
    sizes: (values.sizes as string).split(',').map(Number),
    iters,
    warmup: values.warmup !== undefined ? Number(values.warmup) : Math.min(1000, Math.ceil(iters / 10)),
    window: Number(values.window),
    poll: values.poll as PollMode,
  };
}

/** The RDMA tests' endpoint, closed with the others. */
let rdmaEndpoint: RdmaEndpoint | null = null;

async function main(): Promise<void> {
  const plan = parsePlan(process.argv.slice(2));
  const dev = await openDevice();
  const endpoints = new Map<BenchType, BenchEndpoint>();
  // Closed on failure too: an open device (its UDP socket) or a raw socket would keep a
  // failed rank alive, and the bench would never end.
  try {
    await run(plan, dev, endpoints);
  } finally {
    for (const ep of endpoints.values()) await ep.close();
    await rdmaEndpoint?.close();
    await dev.close();
  }
}

async function run(plan: Plan, dev: EfaDevice, endpoints: Map<BenchType, BenchEndpoint>): Promise<void> {
  const rank = dev.rank ?? 0;
  const job = process.env.EFA_EMU_JOB_ID ?? 'bench';
  const key = (what: string, r: number): string => `${job}/bench/${what}/${r}`;
  const maxSize = Math.max(...plan.sizes);
  const sendDepth = Math.max(plan.window + 8, 64);
  // The command refuses such sizes already; a rank started some other way must not spin on
  // sends that can only fail.
  const rdmaTests = plan.tests.some(isRdmaTest);
  const msgTests = plan.tests.some((t) => !isRdmaTest(t));
  if (msgTests && plan.types.some((t) => !isRawType(t)) && maxSize > dev.attributes.maxMsgSize) {
    throw new InvalidArgumentError(`--sizes ${maxSize}: larger than the device MTU (${dev.attributes.maxMsgSize} bytes)`);
  }
  if (rdmaTests && maxSize > dev.attributes.maxRdmaSize) {
    throw new InvalidArgumentError(`--sizes ${maxSize}: larger than the device's largest RDMA (${dev.attributes.maxRdmaSize} bytes on ${dev.attributes.generation})`);
  }
  let rdma: RdmaEndpoint | null = null;
  if (rdmaTests) {
    rdma = await RdmaEndpoint.open(dev, maxSize, sendDepth, plan.poll);
    await dev.daemon.put(key('rdma', rank), JSON.stringify(rdma.info()));
    rdmaEndpoint = rdma;
  }

  for (const type of plan.types) {
    if (rdmaTests && !msgTests && type === 'srd') continue;
    if (isRawType(type)) {
      const ep = await RawEndpoint.open(plan.poll, type === 'raw-batched');
      await dev.daemon.put(key(type, rank), String(ep.port));
      endpoints.set(type, ep);
    } else {
      const ep = await VerbsEndpoint.open(dev, type as 'ud' | 'srd', Math.max(maxSize, ACK_BYTES), sendDepth, plan.poll);
      await dev.daemon.put(key(type, rank), JSON.stringify({ gid: dev.gidText, qpn: ep.qp.qpNum }));
      endpoints.set(type, ep);
    }
  }
  // Both ends of every connection, for the banner's address lines.
  const addresses = new Map<BenchType | 'rdma', { local: BenchAddress; remote: BenchAddress }>();
  if (rdma !== null) {
    const peer = JSON.parse(await dev.daemon.get(key('rdma', rank ^ 1), 60_000)) as RdmaPeerInfo;
    await rdma.connect(peer);
    const mine = rdma.info();
    addresses.set('rdma', { local: { qpn: mine.qpn, psn: 0, gid: mine.gid, rkey: mine.rkey, vaddr: 0 }, remote: { qpn: peer.qpn, psn: 0, gid: peer.gid, rkey: peer.rkey, vaddr: 0 } });
  }
  for (const type of plan.types) {
    const ep = endpoints.get(type);
    if (ep === undefined) continue;
    const info = await dev.daemon.get(key(type, rank ^ 1), 60_000);
    if (ep instanceof RawEndpoint) {
      ep.connect('127.0.0.1', Number(info));
      addresses.set(type, { local: { host: '127.0.0.1', port: ep.port }, remote: { host: '127.0.0.1', port: Number(info) } });
    } else if (ep instanceof VerbsEndpoint) {
      const peer = JSON.parse(info) as { gid: string; qpn: number };
      await ep.connect(peer.gid, peer.qpn);
      addresses.set(type, { local: { qpn: ep.qp.qpNum, psn: 0, gid: dev.gidText }, remote: { qpn: peer.qpn, psn: 0, gid: peer.gid } });
    }
  }
  const setupOf = (test: BenchTest, type: BenchType): BenchSetup => {
    const rdmaOp = isRdmaTest(test) && !isRawType(type);
    const lat = test.endsWith('lat');
    const ends = addresses.get(rdmaOp ? 'rdma' : type) ?? { local: {}, remote: {} };
    return {
      device: isRawType(type) ? null : dev.name,
      generation: dev.attributes.generation,
      mtu: isRawType(type) ? null : dev.attributes.maxMsgSize,
      tx_depth: lat ? 1 : plan.window,
      ...(lat ? {} : { cq_mod: type === 'srd' ? 1 : ACK_EVERY }),
      ...(rdmaOp && test.startsWith('read') ? { out_reads: lat ? 1 : plan.window } : {}),
      wr_api: rdmaOp,
      poll: plan.poll,
      warmup: lat ? plan.warmup : 0,
      ...ends,
    };
  };

  const total = plan.tests.length * plan.sizes.length * plan.types.length;
  let done = 0;
  let step = 0;
  for (const test of plan.tests) {
    for (const size of plan.sizes) {
      for (const type of plan.types) {
        await dev.daemon.barrier(`${job}/bench/step/${step++}`, 2, 600_000);
        for (const e of endpoints.values()) e.stop();
        rdma?.stop();
        let figures: Record<string, number>;
        let retransmits = 0;
        if (isRdmaTest(test) && !isRawType(type)) {
          const ep = rdma as RdmaEndpoint;
          const before = ep.retransmits();
          figures = test.endsWith('_lat') ? await rdmaLatency(ep, rank, size, test, plan) : await rdmaBandwidth(dev, ep, rank, size, test, plan, `${job}/bench/${step}`);
          retransmits = ep.retransmits() - before;
        } else {
          const ep = endpoints.get(type) as BenchEndpoint;
          // Beside an RDMA test, raw UDP runs the matching message test: a stream of MTU
          // datagrams for bandwidth, a ping-pong of the same bytes (where a datagram holds them) for latency.
          const base = test.endsWith('lat') ? 'lat' : 'bw';
          const rawSize = isRdmaTest(test) ? (base === 'bw' ? Math.min(size, RAW_BASELINE_BW_SIZE) : Math.min(size, RAW_BASELINE_LAT_MAX)) : size;
          const before = ep.retransmits();
          figures = base === 'lat' ? await latency(ep, rank, rawSize, plan) : await bandwidth(dev, ep, rank, rawSize, type, plan, `${job}/bench/${step}`);
          if (rawSize !== size) figures.raw_size = rawSize;
          retransmits = ep.retransmits() - before;
        }
        if (rank === 0) {
          const setup = setupOf(test, type);
          process.stdout.write(`${JSON.stringify({ bench: { type, test, size, iters: plan.iters, ...figures, retransmits, setup } })}\n`);
          process.stderr.write(`${JSON.stringify({ progress: ++done / total })}\n`);
        }
      }
    }
  }
  await dev.daemon.barrier(`${job}/bench/end`, 2, 600_000);
  rdma?.stop();
  // EFA_EMU_BENCH_STATS=1 prints each rank's device counters, to see where the time goes.
  if (process.env.EFA_EMU_BENCH_STATS === '1') process.stderr.write(`stats rank ${rank}: ${JSON.stringify(nonZero(dev.statsSnapshot()))}\n`);
}

/** Ping-pong: rank 0 measures round trips and reports half of each, as perftest does. */
function latency(ep: BenchEndpoint, rank: number, size: number, plan: Plan): Promise<Record<string, number>> {
  const total = plan.warmup + plan.iters;
  const samples = new Float64Array(plan.iters);
  let n = 0;
  let lost = 0;
  return new Promise((resolve) => {
    let seq = 0;
    let sentAt = 0;
    let finished = false;
    let watchdog: NodeJS.Timeout | null = null;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      if (watchdog !== null) clearInterval(watchdog);
      ep.stop();
      ep.onRecv = () => undefined;
      ep.onSendDone = () => undefined;
      resolve(rank === 0 ? { ...latencyFigures(samples.subarray(0, n)), lost } : {});
    };
    if (rank === 0) {
      let resent = false;
      const ping = (): void => {
        sentAt = performance.now();
        // One ping at a time: the queue is never full; if it were, the watchdog resends.
        ep.send(seq, size);
      };
      ep.onRecv = (tag) => {
        if (tag !== seq) return; // a late answer to a resent ping
        const t = performance.now();
        if (seq >= plan.warmup && !resent) samples[n++] = ((t - sentAt) * 1000) / 2;
        resent = false;
        seq++;
        if (seq === total) finish();
        else ping();
      };
      // UD and raw can lose a ping or pong: resend, and keep that round out of the figures.
      watchdog = setInterval(() => {
        if (performance.now() - sentAt > STALL_MS) {
          lost++;
          resent = true;
          ping();
        }
      }, STALL_MS / 2);
      ep.start();
      ping();
    } else {
      // Echo until the next step's barrier stops this endpoint: the client may still resend.
      ep.onRecv = (tag) => void ep.send(tag, size);
      ep.onSendDone = () => undefined;
      ep.start();
      resolve({});
    }
  });
}

/**
 * One-way stream with `window` messages outstanding. SRD counts its own send completions
 * (a completion means delivered); raw and UD keep the window with one receiver ack per 64,
 * so they measure the socket, not a reliability protocol.
 */
async function bandwidth(dev: EfaDevice, ep: BenchEndpoint, rank: number, size: number, type: BenchType, plan: Plan, stepKey: string): Promise<Record<string, number>> {
  const total = plan.iters;
  const reliable = type === 'srd';
  if (rank === 1) {
    let received = 0;
    let highest = -1;
    await new Promise<void>((resolve) => {
      ep.onRecv = (tag) => {
        received++;
        if (tag > highest) highest = tag;
        // The ack names how far the stream got (highest tag + 1), not how many arrived: after
        // losses the count stays behind what was sent for good, and the sender could never
        // tell progress from an old ack again.
        if (!reliable && (received % ACK_EVERY === 0 || tag === total - 1)) ep.send(highest + 1, ACK_BYTES);
        // SRD delivers out of order and exactly once: the last tag may come first, so only the
        // count says the stream is over (stopping early would leave the rest waiting on RNR).
        // UD and raw may lose messages: the last tag, or the sender's word, ends them.
        if (received === total || (!reliable && tag === total - 1)) resolve();
      };
      ep.onSendDone = () => undefined;
      ep.start();
      // Only now may the sender start: a raw datagram that comes before the handler is lost.
      void dev.daemon.put(`${stepKey}/ready`, '1');
      if (!reliable) {
        // If the last message is lost the stream ends by the sender's word instead.
        void dev.daemon.get(`${stepKey}/sent`, 600_000).then(() => resolve(), () => resolve());
      }
    });
    ep.stop();
    await dev.daemon.put(`${stepKey}/received`, String(received));
    return {};
  }
  await dev.daemon.get(`${stepKey}/ready`, 600_000);
  const peak = new BwPeak();
  let sent = 0;
  let completed = 0;
  let errors = 0;
  let acked = 0;
  let lastProgress = performance.now();
  const start = performance.now();
  let end = start;
  await new Promise<void>((resolve) => {
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      end = performance.now();
      clearInterval(watchdog);
      resolve();
    };
    const pump = (): void => {
      const limit = reliable ? total : Math.min(total, acked + plan.window);
      while (sent < limit && (reliable ? sent - completed < plan.window : true)) {
        const t = performance.now();
        if (!ep.send(sent, size)) break;
        peak.post(t);
        sent++;
      }
    };
    const progress = (count: number): void => {
      lastProgress = performance.now();
      peak.complete(count, lastProgress);
    };
    ep.onSendDone = (ok) => {
      if (!reliable) {
        pump();
        return;
      }
      completed++;
      if (!ok) errors++;
      progress(completed);
      if (completed === total) finish();
      else pump();
    };
    ep.onRecv = (count) => {
      if (reliable || count <= acked) return;
      acked = count;
      progress(acked);
      if (acked >= total) finish();
      else pump();
    };
    const watchdog = setInterval(() => {
      if (performance.now() - lastProgress < STREAM_STALL_MS) return;
      if (!reliable) {
        // Lost datagrams (or a lost ack): give up on them rather than wait forever.
        acked = sent;
        lastProgress = performance.now();
        if (sent >= total) finish();
        else pump();
      }
    }, STREAM_STALL_MS / 2);
    ep.start();
    pump();
  });
  ep.stop();
  let delivered = completed - errors;
  if (!reliable) {
    await dev.daemon.put(`${stepKey}/sent`, String(sent));
    delivered = Number(await dev.daemon.get(`${stepKey}/received`, 600_000));
  } else {
    await dev.daemon.get(`${stepKey}/received`, 600_000);
  }
  return { ...bandwidthFigures(size, delivered, Number.isNaN(peak.firstPostMs) ? start : peak.firstPostMs, end, peak.bestMsPerMessage()), delivered, send_errors: errors };
}

/**
 * RDMA latency. write_lat: a ping-pong of writes with immediate (each side writes the other's
 * buffer; the immediate's receive says it arrived), half of each round trip, as ib_write_lat
 * reports. read_lat: rank 0 reads the peer's buffer, one read at a time, the whole read's
 * time, as ib_read_lat; rank 1 only serves.
 */
function rdmaLatency(ep: RdmaEndpoint, rank: number, size: number, test: BenchTest, plan: Plan): Promise<Record<string, number>> {
  const total = plan.warmup + plan.iters;
  const samples = new Float64Array(plan.iters);
  let n = 0;
  const write = test === 'write_lat';
  return new Promise((resolve, reject) => {
    let seq = 0;
    let sentAt = 0;
    const finish = (): void => {
      ep.stop();
      ep.onImm = () => undefined;
      ep.onSendDone = () => undefined;
      resolve({ ...latencyFigures(samples.subarray(0, n)) });
    };
    const fail = (): void => {
      ep.stop();
      reject(new EfaError('EWCSTATUS', `${test}: an RDMA operation completed with an error`));
    };
    if (rank === 1) {
      // Answers each write until the next step's barrier stops the endpoint.
      ep.onImm = write ? (imm) => void ep.post('writeImm', imm, size) : () => undefined;
      ep.onSendDone = () => undefined;
      ep.start();
      resolve({});
      return;
    }
    const issue = (): void => {
      sentAt = performance.now();
      ep.post(write ? 'writeImm' : 'read', seq, size);
    };
    const done = (): void => {
      const t = performance.now();
      if (seq >= plan.warmup) samples[n++] = write ? ((t - sentAt) * 1000) / 2 : (t - sentAt) * 1000;
      seq++;
      if (seq === total) finish();
      else issue();
    };
    // SRD is reliable: an operation completes or fails in bounded time, so no watchdog.
    if (write) {
      ep.onImm = (imm) => {
        if (imm === seq) done();
      };
      ep.onSendDone = (ok) => {
        if (!ok) fail();
      };
    } else {
      ep.onSendDone = (ok) => (ok ? done() : fail());
    }
    ep.start();
    issue();
  });
}

/**
 * RDMA bandwidth (ib_write_bw / ib_read_bw): rank 0 keeps `window` operations outstanding
 * until `iters` completed; the target's program does nothing (its device serves it).
 */
async function rdmaBandwidth(dev: EfaDevice, ep: RdmaEndpoint, rank: number, size: number, test: BenchTest, plan: Plan, stepKey: string): Promise<Record<string, number>> {
  if (rank === 1) {
    await dev.daemon.get(`${stepKey}/done`, 600_000);
    return {};
  }
  const total = plan.iters;
  const op = test === 'read_bw' ? 'read' : 'write';
  const peak = new BwPeak();
  let sent = 0;
  let completed = 0;
  let errors = 0;
  const start = performance.now();
  let end = start;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (sent < total && sent - completed < plan.window) {
        const t = performance.now();
        if (!ep.post(op, sent, size)) break;
        peak.post(t);
        sent++;
      }
    };
    ep.onSendDone = (ok) => {
      completed++;
      if (!ok) errors++;
      const t = performance.now();
      peak.complete(completed, t);
      if (completed === total) {
        end = t;
        resolve();
      } else pump();
    };
    ep.start();
    pump();
  });
  ep.stop();
  await dev.daemon.put(`${stepKey}/done`, '1');
  return { ...bandwidthFigures(size, completed - errors, Number.isNaN(peak.firstPostMs) ? start : peak.firstPostMs, end, peak.bestMsPerMessage()), delivered: completed - errors, send_errors: errors };
}

function nonZero(stats: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(stats).filter(([, v]) => v !== 0));
}

main().catch((err: Error & { code?: string }) => {
  // The library's own errors are expected failures and say all in one line; others are bugs.
  const text = err instanceof EfaError ? err.message : (err.stack ?? err.message);
  process.stderr.write(`bench: ${err.code ? `${err.code}: ` : ''}${text}\n`);
  process.exitCode = 1;
});
