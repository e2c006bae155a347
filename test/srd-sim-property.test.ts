// Property-based search over SRD scenarios: fast-check builds scenarios field by field (not
// only from a seed), runs each in the simulation and, when one breaks an invariant, shrinks
// it to a minimal failing case (fewer devices, messages and faults, simpler timings) and
// prints it with its replay lines. The run is repeatable: FC_SEED picks another part of the
// space, SRD_PROP_RUNS how much of it (default 150).
import fc from 'fast-check';
import t from 'tap';
import { boundedQueue, failureReport, runScenario, TIMEOUT_MS, type PartitionPlan, type ScenarioParams } from './helpers/srd-scenario';

const FC_SEED = Number(process.env.FC_SEED ?? 0x5eed);
const RUNS = Number(process.env.SRD_PROP_RUNS ?? 150);

/** A number in [min, max] with at most three decimals, so specs print (and shrink) cleanly. */
const num = (min: number, max: number): fc.Arbitrary<number> => fc.integer({ min: Math.round(min * 1000), max: Math.round(max * 1000) }).map((x) => x / 1000);
const round3 = (x: number): number => Math.round(x * 1000) / 1000;
const probability = (max: number) => fc.oneof(fc.constant(0), num(0, max));

const partitionArb = (devices: number): fc.Arbitrary<PartitionPlan | null> =>
  fc.oneof(
    { weight: 2, arbitrary: fc.constant(null) },
    {
      weight: 1,
      arbitrary: fc
        .record({
          kind: fc.constantFrom<PartitionPlan['kind']>('device', 'link', 'link-one-way'),
          a: fc.integer({ min: 1, max: devices }),
          b: fc.integer({ min: 1, max: devices - 1 }),
          from: num(0, 200),
          // Short (no error allowed), long (errors allowed while it lasts) or for ever.
          duration: fc.oneof(
            num(0.05 * TIMEOUT_MS, 0.3 * TIMEOUT_MS),
            num(1.2 * TIMEOUT_MS, 3 * TIMEOUT_MS),
            fc.constant(Infinity),
          ),
        })
        .map(({ kind, a, b, from, duration }) => ({ kind, a, b: b >= a ? b + 1 : b, from, until: round3(from + duration) })),
    },
  );

const scenarioArb: fc.Arbitrary<ScenarioParams> = fc.integer({ min: 2, max: 4 }).chain((devices) =>
  fc
    .record({
      seed: fc.integer({ min: 1, max: 0x7fffffff }),
      qpsPerDevice: fc.integer({ min: 1, max: 2 }),
      msgsPerDevice: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 100, max: 400 })),
      window: fc.constantFrom(1, 2, 4, 8, 32, 128),
      deviceWindow: fc.constantFrom(1, 4, 16, 256),
      ackEvery: fc.constantFrom(1, 2, 8, 32),
      ackDelayMs: fc.oneof(fc.constant(0), num(0, 0.5)),
      dupThresh: fc.integer({ min: 1, max: 4 }),
      rtoBurst: fc.constantFrom(1, 2, 8, 128),
      minRtoMs: fc.constantFrom(0.2, 0.5, 1),
      maxRtoMs: fc.integer({ min: 4, max: 8 }),
      rtoFrac: num(0, 1),
      rnrBackoffMaxMs: fc.constantFrom(1, 4, 8),
      loss: probability(0.15),
      burst: fc.oneof(fc.constant(1), num(2, 4)),
      dup: probability(0.2),
      reorder: probability(0.4),
      reorderDelayMs: fc.oneof(num(0.1, 10), num(500, 3000)),
      delayMs: num(0.05, 2),
      jitterFrac: num(0, 0.5),
      corrupt: probability(0.02),
      rate: fc.oneof(fc.constant(0), fc.integer({ min: 2_000_000, max: 50_000_000 })),
      rateLimit: fc.integer({ min: 8, max: 200 }),
      postWindowMs: fc.oneof(fc.constant(0), num(0, 1000)),
      rnr: fc.oneof(
        fc.constant(null),
        fc.record({ firstPostMs: num(0, 2 * TIMEOUT_MS), repostDelayMaxMs: num(0, 10) }),
      ),
      rnrRetry: fc.oneof(fc.constant(7), fc.integer({ min: 0, max: 6 })),
      recvDepth: fc.integer({ min: 1, max: 32 }),
      partition: partitionArb(devices),
      socketHold: fc.oneof(fc.constant(0), num(0.1, 0.9)),
    })
    .map((r): ScenarioParams => ({
      seed: r.seed,
      devices,
      qpsPerDevice: r.qpsPerDevice,
      msgsPerDevice: devices > 2 ? Math.min(r.msgsPerDevice, 60) : r.msgsPerDevice,
      window: r.window,
      deviceWindow: r.deviceWindow,
      ackEvery: r.ackEvery,
      ackDelayMs: r.ackDelayMs,
      dupThresh: r.dupThresh,
      rtoBurst: r.rtoBurst,
      minRtoMs: r.minRtoMs,
      maxRtoMs: r.maxRtoMs,
      initialRtoMs: round3(r.minRtoMs + r.rtoFrac * (r.maxRtoMs - r.minRtoMs)),
      rnrBackoffMaxMs: r.rnrBackoffMaxMs,
      // Gilbert-Elliott bursts stop only as packets are decided: a sender that backed off to
      // one probe per RTO stays in a long burst for a long time, and past a point that is a
      // peer cut off, which the oracle only allows for partitions. Keep bursts short.
      loss: r.burst > 1 ? Math.min(r.loss, 0.1) : r.loss,
      burst: Math.min(r.burst, 4),
      dup: r.dup,
      // Copies held back for longer than a fraction of the timeout stay rare: a peer whose
      // answers are mostly seconds late is, for all the sender can tell, not answering.
      reorder: r.reorderDelayMs > TIMEOUT_MS / 4 ? Math.min(r.reorder, 0.1) : r.reorder,
      reorderDelayMs: r.reorderDelayMs,
      delayMs: r.delayMs,
      jitterMs: round3(r.delayMs * r.jitterFrac),
      corrupt: r.corrupt,
      rateBytesPerSec: r.rate,
      rateLimit: boundedQueue(r.rate, r.rateLimit),
      postWindowMs: r.postWindowMs,
      rnr: r.rnr,
      // A fast receiver retries for ever; only slow ones are given a finite rnr_retry.
      rnrRetry: r.rnr === null ? 7 : r.rnrRetry,
      recvDepth: r.recvDepth,
      partition: r.partition,
      socketHold: r.socketHold,
    })),
);

t.test(`SRD scenarios built and shrunk by fast-check (${RUNS} runs, seed ${FC_SEED})`, async (t) => {
  let runs = 0;
  let messages = 0;
  const result = await fc.check(
    fc.asyncProperty(scenarioArb, async (p) => {
      const res = await runScenario(p);
      runs++;
      messages += res.msgs;
      return res.problems.length === 0;
    }),
    { numRuns: RUNS, seed: FC_SEED },
  );
  if (result.failed && result.counterexample !== null) {
    const p = result.counterexample[0];
    const res = await runScenario(p);
    t.fail(`a scenario breaks an invariant (shrunk ${result.numShrinks} times): ${failureReport(p, res, `SRD_SIM_PARAMS='${JSON.stringify(p)}'`)}`);
  } else {
    t.notOk(result.failed, `every scenario holds the invariants${result.failed ? `: ${String(result.errorInstance)}` : ''}`);
  }
  t.comment(`${runs} scenarios run, ${messages} messages`);
});
