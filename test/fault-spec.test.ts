// The fault spec grammar: every key with its units and defaults, whitespace, the empty
// spec, canonical formatting that round-trips, and errors that name the field and source.
import t from 'tap';
import { EfaError } from '../src/common/errors';
import { Prng } from '../src/common/prng';
import {
  checkFaultSpec,
  DEFAULT_RATE_LIMIT,
  FAULT_SPEC_KEYS,
  FaultSpecError,
  formatFaultSpec,
  isNoFaults,
  NO_FAULTS,
  parseFaultSpec,
  toFaultSpec,
  type FaultSpec,
} from '../src/io/fault-spec';

function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

const spec = (over: Partial<FaultSpec>): FaultSpec => ({ ...NO_FAULTS, partitions: [], ...over });

t.test('empty and blank specs mean no faults', async (t) => {
  for (const text of ['', '   ', ',', ' , ,']) {
    const s = parseFaultSpec(text);
    t.same(s, NO_FAULTS, JSON.stringify(text));
    t.ok(isNoFaults(s));
  }
  t.equal(formatFaultSpec(NO_FAULTS), '');
  t.ok(Object.isFrozen(NO_FAULTS));
  t.equal(NO_FAULTS.seed, 1);
  t.equal(NO_FAULTS.limit, DEFAULT_RATE_LIMIT);
  t.equal(NO_FAULTS.limit, 1000);
  t.equal(NO_FAULTS.burst, 1);
  t.equal(NO_FAULTS.reorderDelayMs, null);
  t.equal(NO_FAULTS.rateBytesPerSec, null);
});

t.test('the example of the design parses', async (t) => {
  const s = parseFaultSpec('loss=2%,dup=1%,reorder=10%,delay=200us,jitter=100us,corrupt=0.1%,seed=7');
  t.same(s, spec({ loss: 0.02, dup: 0.01, reorder: 0.1, delayMs: 0.2, jitterMs: 0.1, corrupt: 0.001, seed: 7 }));
  t.notOk(isNoFaults(s));
});

t.test('percentages', async (t) => {
  t.equal(parseFaultSpec('loss=0%').loss, 0);
  t.equal(parseFaultSpec('loss=100%').loss, 1);
  t.equal(parseFaultSpec('loss=2.5%').loss, 0.025);
  t.equal(parseFaultSpec('loss=.5%').loss, 0.005);
  t.equal(parseFaultSpec('dup=3%').dup, 0.03);
  t.equal(parseFaultSpec('reorder=25%').reorder, 0.25);
  t.equal(parseFaultSpec('corrupt=0.01%').corrupt, 0.0001);
  for (const bad of ['loss=2', 'loss=0.02', 'loss=-1%', 'loss=1e1%', 'loss=abc%', 'loss=%', 'loss=2%%']) {
    const err = thrown(() => parseFaultSpec(bad, '--fault'));
    t.type(err, FaultSpecError, bad);
    t.match(err.message, /^--fault: loss=.*: expected a percentage/, bad);
    t.equal(err.field, 'loss');
  }
  const err = thrown(() => parseFaultSpec('loss=200%', 'EFA_EMU_FAULTS'));
  t.equal(err.message, 'EFA_EMU_FAULTS: loss=200%: loss must be 0%..100%');
  t.equal(err.field, 'loss');
  t.equal(err.source, 'EFA_EMU_FAULTS');
  t.match(thrown(() => parseFaultSpec('corrupt=100.5%')).message, /corrupt=100\.5%: corrupt must be 0%\.\.100%/);
});

t.test('times need a unit: us, ms, s', async (t) => {
  t.equal(parseFaultSpec('delay=200us').delayMs, 0.2);
  t.equal(parseFaultSpec('delay=1.5ms').delayMs, 1.5);
  t.equal(parseFaultSpec('delay=2s').delayMs, 2000);
  t.equal(parseFaultSpec('delay=0ms').delayMs, 0);
  t.equal(parseFaultSpec('delay=3MS').delayMs, 3);
  t.equal(parseFaultSpec('jitter=50us').jitterMs, 0.05);
  t.equal(parseFaultSpec('reorder-delay=4ms').reorderDelayMs, 4);
  t.equal(parseFaultSpec('reorder=1%').reorderDelayMs, null, 'reorder-delay defaults to null (derived from delay)');
  const bare = thrown(() => parseFaultSpec('delay=200', '--fault'));
  t.type(bare, FaultSpecError);
  t.equal(bare.message, '--fault: delay=200: missing unit (us, ms or s)');
  t.equal(bare.field, 'delay');
  t.match(thrown(() => parseFaultSpec('jitter=5min')).message, /jitter=5min: unknown time unit "min"/);
  t.match(thrown(() => parseFaultSpec('delay=-1ms')).message, /delay=-1ms: expected a time/);
  t.match(thrown(() => parseFaultSpec('reorder-delay=ms')).message, /reorder-delay=ms: expected a time/);
});

t.test('burst: a mean burst length of at least 1, reachable for the loss rate', async (t) => {
  t.equal(parseFaultSpec('loss=5%,burst=4').burst, 4);
  t.equal(parseFaultSpec('burst=1').burst, 1);
  t.equal(parseFaultSpec('loss=1%,burst=2.5').burst, 2.5);
  t.equal(parseFaultSpec('loss=100%,burst=3').burst, 3, 'total loss needs no model');
  t.match(thrown(() => parseFaultSpec('burst=0.5')).message, /burst=0\.5: burst must be at least 1/);
  t.match(thrown(() => parseFaultSpec('burst=x')).message, /burst=x: expected a number/);
  // With 80% loss, good runs of one packet already force bursts of 4 on average.
  const err = thrown(() => parseFaultSpec('loss=80%,burst=2', '--fault'));
  t.type(err, FaultSpecError);
  t.equal(err.field, 'burst');
  t.match(err.message, /^--fault: burst=2: too short for loss=80% \(the mean burst must be at least 4\)/);
  t.equal(parseFaultSpec('loss=80%,burst=4').burst, 4);
});

t.test('rates: bits or bytes per second, decimal as in tc', async (t) => {
  t.equal(parseFaultSpec('rate=1mbit').rateBytesPerSec, 125000);
  t.equal(parseFaultSpec('rate=8bit').rateBytesPerSec, 1);
  t.equal(parseFaultSpec('rate=100kbit').rateBytesPerSec, 12500);
  t.equal(parseFaultSpec('rate=10gbit').rateBytesPerSec, 1.25e9);
  t.equal(parseFaultSpec('rate=100Mbit').rateBytesPerSec, 12.5e6);
  t.equal(parseFaultSpec('rate=500bps').rateBytesPerSec, 500);
  t.equal(parseFaultSpec('rate=2kbps').rateBytesPerSec, 2000);
  t.equal(parseFaultSpec('rate=10mbps').rateBytesPerSec, 1e7);
  t.equal(parseFaultSpec('rate=1gbps').rateBytesPerSec, 1e9);
  t.equal(parseFaultSpec('rate=1kibps').rateBytesPerSec, 1024);
  t.equal(parseFaultSpec('rate=1mibit').rateBytesPerSec, 131072);
  t.match(thrown(() => parseFaultSpec('rate=100')).message, /rate=100: missing unit/);
  t.match(thrown(() => parseFaultSpec('rate=0mbit')).message, /rate=0mbit: rate must be greater than 0/);
  t.match(thrown(() => parseFaultSpec('rate=5furlongs')).message, /rate=5furlongs: unknown rate unit "furlongs"/);
  t.equal(thrown(() => parseFaultSpec('rate=1mbit/s')).field, 'rate');
});

t.test('limit: whole packets, default 1000', async (t) => {
  t.equal(parseFaultSpec('rate=1mbit').limit, 1000);
  t.equal(parseFaultSpec('rate=1mbit,limit=5').limit, 5);
  for (const bad of ['limit=0', 'limit=2.5', 'limit=-3', 'limit=2000000']) {
    const err = thrown(() => parseFaultSpec(bad, 'opts.faults'));
    t.type(err, FaultSpecError, bad);
    t.equal(err.field, 'limit');
    t.match(err.message, new RegExp(`^opts\\.faults: ${bad}: `));
  }
});

t.test('seed: uint32, default 1', async (t) => {
  t.equal(parseFaultSpec('loss=1%').seed, 1);
  t.equal(parseFaultSpec('seed=0').seed, 0);
  t.equal(parseFaultSpec('seed=7').seed, 7);
  t.equal(parseFaultSpec('seed=4294967295').seed, 4294967295);
  for (const bad of ['seed=4294967296', 'seed=-1', 'seed=1.5', 'seed=0x10', 'seed=abc']) {
    const err = thrown(() => parseFaultSpec(bad));
    t.type(err, FaultSpecError, bad);
    t.equal(err.field, 'seed');
    t.match(err.message, /^fault spec: seed=/, 'the default source is "fault spec"');
  }
});

t.test('partitions: TARGET@START+DURATION, repeatable', async (t) => {
  const s = parseFaultSpec('partition=127.0.0.1:4000@1s+500ms, partition=rank3@0ms+inf,partition=*@2.5s+10ms');
  t.same(s.partitions, [
    { target: '127.0.0.1:4000', startMs: 1000, durationMs: 500 },
    { target: 'rank3', startMs: 0, durationMs: Infinity },
    { target: '*', startMs: 2500, durationMs: 10 },
  ]);
  t.same(parseFaultSpec('partition=[::1]:4000@1ms+1ms').partitions[0].target, '[::1]:4000');
  t.same(parseFaultSpec('partition=a@b@1ms+1ms').partitions[0].target, 'a@b', 'the window follows the last @');
  t.same(parseFaultSpec('partition=dev+1@1ms+2ms').partitions[0], { target: 'dev+1', startMs: 1, durationMs: 2 });
  t.same(parseFaultSpec('partition=x@1ms+INF').partitions[0].durationMs, Infinity);
  for (const bad of ['partition=foo', 'partition=@1s+2s', 'partition=a@1s', 'partition=a@1+2s', 'partition=a@1s+2', 'partition=a@1s+forever']) {
    const err = thrown(() => parseFaultSpec(bad, '--fault'));
    t.type(err, FaultSpecError, bad);
    t.equal(err.field, 'partition', bad);
    t.match(err.message, /^--fault: partition=/, bad);
  }
  t.match(thrown(() => parseFaultSpec('partition=a@1+2s')).message, /start: missing unit/);
  t.match(thrown(() => parseFaultSpec('partition=a@1s+2')).message, /duration: missing unit/);
});

t.test('whitespace around items, keys and values is ignored', async (t) => {
  t.same(parseFaultSpec('  loss = 2% ,\tdup=1%  ,  delay= 1ms '), spec({ loss: 0.02, dup: 0.01, delayMs: 1 }));
});

t.test('structural errors name the field and the source', async (t) => {
  const unknown = thrown(() => parseFaultSpec('los=2%', '--fault'));
  t.type(unknown, FaultSpecError);
  t.type(unknown, EfaError);
  t.equal(unknown.code, 'EFAULTSPEC');
  t.equal(unknown.name, 'FaultSpecError');
  t.equal(unknown.source, '--fault');
  t.equal(unknown.field, 'los');
  t.equal(unknown.message, `--fault: unknown field "los" (known: ${FAULT_SPEC_KEYS.join(', ')})`);
  t.match(unknown.message, /known: loss, burst, dup, reorder, reorder-delay, delay, jitter, corrupt, rate, limit, partition, path, bottleneck, bottleneck-buffer, seed\)/);

  const dup = thrown(() => parseFaultSpec('loss=1%,dup=1%,loss=2%', 'EFA_EMU_FAULTS'));
  t.equal(dup.message, 'EFA_EMU_FAULTS: duplicate field "loss"');
  t.equal(dup.field, 'loss');

  const noEq = thrown(() => parseFaultSpec('loss', '--fault'));
  t.equal(noEq.message, '--fault: "loss": expected key=value');
  t.equal(noEq.field, 'loss');

  const empty = thrown(() => parseFaultSpec('delay=', '--fault'));
  t.equal(empty.message, '--fault: delay=: missing value');
  t.equal(empty.field, 'delay');

  t.match(thrown(() => parseFaultSpec(42 as unknown as string)).message, /expected a string/);
});

t.test('format is canonical and round-trips', async (t) => {
  const cases: Array<[string, string]> = [
    ['', ''],
    ['seed=7,loss=2%', 'loss=2%,seed=7'],
    ['delay=0.2ms', 'delay=200us'],
    ['delay=1500us', 'delay=1.5ms'],
    ['delay=2000ms', 'delay=2s'],
    ['jitter=0.1ms', 'jitter=100us'],
    ['rate=125000bps', 'rate=1mbit'],
    ['rate=10mbps', 'rate=80mbit'],
    ['rate=1kibps', 'rate=8192bit'],
    ['rate=1000bps', 'rate=8kbit'],
    ['loss=7%', 'loss=7%'],
    ['corrupt=0.1%', 'corrupt=0.1%'],
    ['loss=1%,burst=1', 'loss=1%'],
    ['rate=1mbit,limit=1000', 'rate=1mbit'],
    ['seed=1,loss=1%', 'loss=1%'],
    ['reorder=5%,reorder-delay=3ms', 'reorder=5%,reorder-delay=3ms'],
    ['partition=b@1s+inf,partition=a@0s+0.5s', 'partition=b@1s+inf,partition=a@0s+0.5s'],
    [
      'seed=9, partition=x@1ms+2ms, limit=10, rate=2gbit, corrupt=1%, jitter=1us, delay=3s, reorder-delay=4ms, reorder=5%, dup=6%, burst=2, loss=7%',
      'loss=7%,burst=2,dup=6%,reorder=5%,reorder-delay=4ms,delay=3s,jitter=1us,corrupt=1%,rate=2gbit,limit=10,partition=x@1ms+2ms,seed=9',
    ],
  ];
  for (const [input, canonical] of cases) {
    const parsed = parseFaultSpec(input);
    const text = formatFaultSpec(parsed);
    t.equal(text, canonical, input);
    t.same(parseFaultSpec(text), parsed, `${input} round-trips`);
  }
});

t.test('random specs round-trip exactly', async (t) => {
  const rng = new Prng(2024);
  const pct = (): string => (rng.next() < 0.05 ? '100%' : `${rng.int(100)}${rng.next() < 0.5 ? '' : '.' + rng.int(1000)}%`);
  const num = (): string => `${rng.int(5000)}${rng.next() < 0.5 ? '' : '.' + rng.int(100000)}`;
  const time = (): string => num() + ['us', 'ms', 's'][rng.int(3)];
  const rate = (): string =>
    `${rng.int(10000) + 1}${rng.next() < 0.3 ? '.' + rng.int(1000) : ''}` +
    ['bit', 'kbit', 'mbit', 'gbit', 'bps', 'kbps', 'mbps', 'gbps', 'kibit', 'mibps'][rng.int(10)];
  let checked = 0;
  for (let i = 0; i < 2000; i++) {
    const items: string[] = [];
    if (rng.next() < 0.5) items.push(`loss=${rng.int(50)}.${rng.int(100)}%`);
    if (rng.next() < 0.3) items.push(`burst=${1 + rng.int(10)}`);
    if (rng.next() < 0.5) items.push(`dup=${pct()}`);
    if (rng.next() < 0.5) items.push(`reorder=${pct()}`);
    if (rng.next() < 0.5) items.push(`reorder-delay=${time()}`);
    if (rng.next() < 0.5) items.push(`delay=${time()}`);
    if (rng.next() < 0.5) items.push(`jitter=${time()}`);
    if (rng.next() < 0.5) items.push(`corrupt=${pct()}`);
    if (rng.next() < 0.5) items.push(`rate=${rate()}`);
    if (rng.next() < 0.5) items.push(`limit=${1 + rng.int(100000)}`);
    for (let p = rng.int(3); p > 0; p--) items.push(`partition=h${rng.int(9)}:${rng.int(65536)}@${time()}+${rng.next() < 0.2 ? 'inf' : time()}`);
    if (rng.next() < 0.5) items.push(`seed=${rng.nextU32()}`);
    const text = items.join(',');
    let parsed: FaultSpec;
    try {
      parsed = parseFaultSpec(text);
    } catch (err) {
      // Only the loss/burst combination may be unreachable.
      t.equal((err as FaultSpecError).field, 'burst', text);
      continue;
    }
    const canonical = formatFaultSpec(parsed);
    const again = parseFaultSpec(canonical);
    if (JSON.stringify(again) !== JSON.stringify(parsed) || formatFaultSpec(again) !== canonical) {
      t.same(again, parsed, `${text} -> ${canonical}`);
      t.equal(formatFaultSpec(again), canonical);
    }
    checked++;
  }
  t.ok(checked > 1500, `${checked} random specs round-tripped`);
});

t.test('isNoFaults looks at what changes traffic only', async (t) => {
  t.ok(isNoFaults(spec({ seed: 9, limit: 3, burst: 4, reorderDelayMs: 5 })));
  t.notOk(isNoFaults(spec({ loss: 0.1 })));
  t.notOk(isNoFaults(spec({ delayMs: 0.001 })));
  t.notOk(isNoFaults(spec({ jitterMs: 1 })));
  t.notOk(isNoFaults(spec({ rateBytesPerSec: 1 })));
  t.notOk(isNoFaults(spec({ partitions: [{ target: 'x', startMs: 0, durationMs: 1 }] })));
});

t.test('spec objects from the API are checked field by field', async (t) => {
  t.equal(checkFaultSpec(spec({ loss: 0.5 })).loss, 0.5);
  const cases: Array<[Partial<FaultSpec>, string]> = [
    [{ loss: 2 }, 'loss'],
    [{ dup: -0.1 }, 'dup'],
    [{ reorder: NaN }, 'reorder'],
    [{ corrupt: 1.5 }, 'corrupt'],
    [{ burst: 0 }, 'burst'],
    [{ delayMs: -1 }, 'delay'],
    [{ jitterMs: Infinity }, 'jitter'],
    [{ reorderDelayMs: -2 }, 'reorder-delay'],
    [{ rateBytesPerSec: 0 }, 'rate'],
    [{ limit: 1.5 }, 'limit'],
    [{ seed: -1 }, 'seed'],
    [{ partitions: [{ target: 'a,b', startMs: 0, durationMs: 1 }] }, 'partition'],
    [{ partitions: [{ target: 'a', startMs: -1, durationMs: 1 }] }, 'partition'],
    [{ loss: 0.8, burst: 2 }, 'burst'],
  ];
  for (const [over, field] of cases) {
    const err = thrown(() => checkFaultSpec(spec(over), 'options.faults'));
    t.type(err, FaultSpecError, JSON.stringify(over));
    t.equal(err.field, field, JSON.stringify(over));
    t.match(err.message, /^options\.faults: /);
  }
  t.match(thrown(() => checkFaultSpec(spec({ loss: 2 }))).message, /^fault spec: loss: must be a fraction 0\.\.1 \(got 2\)/);
});

t.test('toFaultSpec accepts text, objects and nothing', async (t) => {
  t.same(toFaultSpec(undefined), NO_FAULTS);
  t.same(toFaultSpec('loss=1%').loss, 0.01);
  const mine = spec({ partitions: [{ target: 'a', startMs: 1, durationMs: 2 }] });
  const copy = toFaultSpec(mine);
  t.same(copy, mine);
  t.not(copy.partitions, mine.partitions, 'a copy, not the caller object');
  t.match(thrown(() => toFaultSpec('bogus=1', 'EFA_EMU_FAULTS')).message, /^EFA_EMU_FAULTS: unknown field "bogus"/);
});
