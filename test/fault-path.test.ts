// Faults aimed at one path: the `path=N` key scopes every fault but partitions to packets
// on path N; partition targets ending in `#N` cut off only path N (spec and API, with
// SRC/DST and *); the injector reads the path from each packet's header (0 for anything
// without our magic); the receive-side keys `bottleneck` and `bottleneck-buffer` parse,
// check and format so that specs round-trip.
import t from 'tap';
import { InvalidArgumentError } from '../src/common/errors';
import { FaultInjector, packetPathOf } from '../src/io/fault-injector';
import { FaultPlan, makeFaultDecision, splitPartitionTarget } from '../src/io/fault-plan';
import {
  checkFaultSpec,
  DEFAULT_BOTTLENECK_BUFFER,
  FaultSpecError,
  formatFaultSpec,
  isNoFaults,
  isNoSendFaults,
  NO_FAULTS,
  parseFaultSpec,
  toFaultSpec,
  type FaultSpec,
} from '../src/io/fault-spec';
import { BASE_HEADER_LEN, encodeHeader, FLAG_HAS_IMM, PacketType, setPacketPath } from '../src/wire/header';

function thrown(fn: () => unknown): any {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

const spec = (over: Partial<FaultSpec>): FaultSpec => ({ ...NO_FAULTS, partitions: [], ...over });

/** A buffer that starts like one of our packets, on `path`. */
function pkt(path: number, size = 64): Buffer {
  const b = Buffer.alloc(size);
  b[0] = 0xef;
  b[1] = 0xa1;
  setPacketPath(b, path);
  return b;
}

t.test('path=N: a path number 0..63, null by default', async (t) => {
  t.equal(NO_FAULTS.path, null);
  t.equal(parseFaultSpec('loss=1%').path, null);
  t.equal(parseFaultSpec('path=0').path, 0);
  t.equal(parseFaultSpec('loss=5%, path = 63').path, 63);
  for (const bad of ['path=64', 'path=-1', 'path=1.5', 'path=x', 'path=0x3', 'path=1e1']) {
    const err = thrown(() => parseFaultSpec(bad, '--fault'));
    t.type(err, FaultSpecError, bad);
    t.equal(err.field, 'path', bad);
    t.match(err.message, /^--fault: path=\S+: /, bad);
  }
  t.equal(thrown(() => parseFaultSpec('path=64')).message, 'fault spec: path=64: path must be 0..63');
  t.equal(thrown(() => parseFaultSpec('path=2,path=3')).message, 'fault spec: duplicate field "path"');
  t.ok(isNoFaults(spec({ path: 3 })), 'a path alone changes nothing');
});

t.test('bottleneck=RATE and bottleneck-buffer=SIZE', async (t) => {
  t.equal(NO_FAULTS.bottleneckBytesPerSec, null);
  t.equal(NO_FAULTS.bottleneckBufferBytes, DEFAULT_BOTTLENECK_BUFFER);
  t.equal(DEFAULT_BOTTLENECK_BUFFER, 65536);
  t.equal(parseFaultSpec('bottleneck=10mbit').bottleneckBytesPerSec, 1.25e6);
  t.equal(parseFaultSpec('bottleneck=2mbps').bottleneckBytesPerSec, 2e6);
  const sizes: Array<[string, number]> = [
    ['1B', 1],
    ['1500b', 1500],
    ['64KiB', 65536],
    ['64kib', 65536],
    ['2KB', 2000],
    ['1.5KB', 1500],
    ['1.1KB', 1100],
    ['1MiB', 1048576],
    ['3MB', 3e6],
    ['0.5KiB', 512],
  ];
  for (const [text, bytes] of sizes) t.equal(parseFaultSpec(`bottleneck-buffer=${text}`).bottleneckBufferBytes, bytes, text);
  const bad: Array<[string, string, RegExp]> = [
    ['bottleneck=10', 'bottleneck', /bottleneck=10: missing unit/],
    ['bottleneck=0mbit', 'bottleneck', /bottleneck must be greater than 0/],
    ['bottleneck=1furlong', 'bottleneck', /unknown rate unit/],
    ['bottleneck-buffer=4096', 'bottleneck-buffer', /bottleneck-buffer=4096: missing unit \(B, KB, KiB, MB, MiB\)/],
    ['bottleneck-buffer=1.5B', 'bottleneck-buffer', /bottleneck-buffer must be a whole number of bytes/],
    ['bottleneck-buffer=0B', 'bottleneck-buffer', /bottleneck-buffer must be 1B\.\.1024MiB/],
    ['bottleneck-buffer=2048MiB', 'bottleneck-buffer', /bottleneck-buffer must be 1B\.\.1024MiB/],
    ['bottleneck-buffer=2000MB', 'bottleneck-buffer', /must be 1B\.\./],
    ['bottleneck-buffer=4pkts', 'bottleneck-buffer', /unknown size unit "pkts"/],
    ['bottleneck-buffer=-1KB', 'bottleneck-buffer', /expected a size/],
  ];
  for (const [text, field, re] of bad) {
    const err = thrown(() => parseFaultSpec(text, 'EFA_EMU_FAULTS'));
    t.type(err, FaultSpecError, text);
    t.equal(err.field, field, text);
    t.match(err.message, /^EFA_EMU_FAULTS: /, text);
    t.match(err.message, re, text);
  }
  // The receive side does not touch what is sent.
  t.notOk(isNoFaults(spec({ bottleneckBytesPerSec: 1000 })));
  t.ok(isNoSendFaults(spec({ bottleneckBytesPerSec: 1000 })));
  t.ok(isNoFaults(spec({ bottleneckBufferBytes: 10 })), 'a buffer without a rate changes nothing');
  t.ok(new FaultPlan(parseFaultSpec('bottleneck=1mbit')).inert, 'a plan with only a bottleneck passes sends through');
});

t.test('partition targets may end in #N', async (t) => {
  const s = parseFaultSpec('partition=efa1#2@1s+300ms,partition=*#0@0ms+inf,partition=efa0/efa1#63@5ms+1ms,partition=h:4000@0s+1s');
  t.same(
    s.partitions.map((p) => p.target),
    ['efa1#2', '*#0', 'efa0/efa1#63', 'h:4000'],
  );
  t.same(splitPartitionTarget('efa1#2'), { source: null, dest: 'efa1', path: 2 });
  t.same(splitPartitionTarget('*#7'), { source: null, dest: '*', path: 7 });
  t.same(splitPartitionTarget('efa0/efa1#3'), { source: 'efa0', dest: 'efa1', path: 3 });
  t.same(splitPartitionTarget('efa0/efa1'), { source: 'efa0', dest: 'efa1', path: -1 });
  t.same(splitPartitionTarget('[::1]:4000'), { source: null, dest: '[::1]:4000', path: -1 });
  for (const bad of ['partition=efa1#64@1s+1s', 'partition=efa1#@1s+1s', 'partition=efa1#x@1s+1s', 'partition=#2@1s+1s', 'partition=efa1#-1@1s+1s']) {
    const err = thrown(() => parseFaultSpec(bad, '--fault'));
    t.type(err, FaultSpecError, bad);
    t.equal(err.field, 'partition', bad);
    t.match(err.message, /^--fault: partition=.*: target ".*": /, bad);
  }
  t.match(thrown(() => parseFaultSpec('partition=efa1#64@1s+1s')).message, /the path after "#" must be 0\.\.63 \(got "64"\)/);
  t.match(thrown(() => parseFaultSpec('partition=#2@1s+1s')).message, /use \*#N for every target/);
  const api = thrown(() => splitPartitionTarget('efa1#99'));
  t.type(api, InvalidArgumentError);
  t.equal(api.code, 'EINVAL');
});

t.test('spec objects: the new fields are checked, and may be missing from an older hand-built spec', async (t) => {
  const cases: Array<[Partial<FaultSpec>, string]> = [
    [{ path: 64 }, 'path'],
    [{ path: -1 }, 'path'],
    [{ path: 1.5 }, 'path'],
    [{ bottleneckBytesPerSec: 0 }, 'bottleneck'],
    [{ bottleneckBytesPerSec: Infinity }, 'bottleneck'],
    [{ bottleneckBufferBytes: 0 }, 'bottleneck-buffer'],
    [{ bottleneckBufferBytes: 1.5 }, 'bottleneck-buffer'],
    [{ partitions: [{ target: 'efa1#64', startMs: 0, durationMs: 1 }] }, 'partition'],
  ];
  for (const [over, field] of cases) {
    const err = thrown(() => checkFaultSpec(spec(over), 'options.faults'));
    t.type(err, FaultSpecError, JSON.stringify(over));
    t.equal(err.field, field, JSON.stringify(over));
    t.match(err.message, /^options\.faults: /);
  }
  const old = { ...NO_FAULTS, partitions: [], loss: 0.1 } as Partial<FaultSpec>;
  delete old.path;
  delete old.bottleneckBytesPerSec;
  delete old.bottleneckBufferBytes;
  const full = toFaultSpec(old as FaultSpec);
  t.equal(full.path, null);
  t.equal(full.bottleneckBytesPerSec, null);
  t.equal(full.bottleneckBufferBytes, DEFAULT_BOTTLENECK_BUFFER);
  t.equal(formatFaultSpec(old as FaultSpec), 'loss=10%');
});

t.test('the new keys format canonically and round-trip', async (t) => {
  const cases: Array<[string, string]> = [
    ['path=3', 'path=3'],
    ['seed=2,path=0,loss=1%', 'loss=1%,path=0,seed=2'],
    ['bottleneck=1250000bps', 'bottleneck=10mbit'],
    ['bottleneck=1mbit,bottleneck-buffer=64KiB', 'bottleneck=1mbit'],
    ['bottleneck-buffer=65536B', ''],
    ['bottleneck-buffer=1024B', 'bottleneck-buffer=1KiB'],
    ['bottleneck-buffer=1000B', 'bottleneck-buffer=1KB'],
    ['bottleneck-buffer=1.5KB', 'bottleneck-buffer=1500B'],
    ['bottleneck-buffer=2048KiB', 'bottleneck-buffer=2MiB'],
    ['bottleneck-buffer=4000KB', 'bottleneck-buffer=4MB'],
    ['bottleneck-buffer=1536B', 'bottleneck-buffer=1536B'],
    ['bottleneck-buffer=1.1KB', 'bottleneck-buffer=1100B'],
    ['partition=efa1#2@1s+300ms', 'partition=efa1#2@1s+0.3s'],
    [
      'bottleneck-buffer=8KiB, seed=4, bottleneck=100mbit, path=5, partition=*#1@0ms+inf, loss=3%',
      'loss=3%,partition=*#1@0s+inf,path=5,bottleneck=100mbit,bottleneck-buffer=8KiB,seed=4',
    ],
  ];
  for (const [input, canonical] of cases) {
    const parsed = parseFaultSpec(input);
    const text = formatFaultSpec(parsed);
    t.equal(text, canonical, input);
    t.same(parseFaultSpec(text), parsed, `${input} round-trips`);
  }
  // Every size a spec can hold formats to text that reads back to the same byte count.
  let checked = 0;
  for (let bytes = 1; bytes <= 5000; bytes += 7) {
    const s = spec({ bottleneckBufferBytes: bytes });
    t.equal(parseFaultSpec(formatFaultSpec(s)).bottleneckBufferBytes, bytes === DEFAULT_BOTTLENECK_BUFFER ? DEFAULT_BOTTLENECK_BUFFER : bytes);
    checked++;
  }
  for (const bytes of [65535, 65537, 1e6 + 1, 1048576 * 3, 1_000_000_000, 1024 * 1024 * 1024]) {
    t.equal(parseFaultSpec(formatFaultSpec(spec({ bottleneckBufferBytes: bytes }))).bottleneckBufferBytes, bytes, String(bytes));
  }
  t.ok(checked > 700);
});

t.test('path=N: the faults hit packets on path N only, the others pass untouched', async (t) => {
  const plan = new FaultPlan(parseFaultSpec('loss=100%,path=2'));
  const d = makeFaultDecision();
  for (let path = 0; path < 64; path++) {
    plan.decide(path, 100, 'peer', d, path);
    t.equal(d.copies, path === 2 ? 0 : 1, `path ${path}`);
  }
  t.equal(plan.stats.injected_loss, 1);
  t.equal(plan.stats.passed, 63);
  // The existing four-argument call is path 0.
  const zero = new FaultPlan(parseFaultSpec('loss=100%,path=0'));
  zero.decide(0, 100, 'peer', d);
  t.equal(d.copies, 0, 'decide() without a path is path 0');

  // Delay, duplication, corruption and the rate queue are scoped too.
  const busy = new FaultPlan(parseFaultSpec('delay=5ms,dup=100%,corrupt=100%,rate=1mbps,path=1'));
  busy.decide(10, 1000, 'peer', d, 0);
  t.same({ copies: d.copies, at: d.releaseAtMs[0], bit: d.corruptBit[0] }, { copies: 1, at: 10, bit: -1 }, 'path 0: untouched');
  busy.decide(10, 1000, 'peer', d, 1);
  t.equal(d.copies, 2, 'path 1: duplicated');
  t.equal(d.releaseAtMs[0], 10 + 1 + 5, 'behind the rate queue (1000 B at 1 MB/s) and the delay');
  t.ok(d.corruptBit[0] >= 0 && d.corruptBit[1] >= 0, 'and corrupted');
  busy.decide(10, 1000, 'peer', d, 3);
  t.equal(d.releaseAtMs[0], 10, 'another path does not wait behind path 1 in the rate queue');
});

t.test('path=N: the scoped path draws the PRNG as a link of its own would', async (t) => {
  // The same seed: path 5's packets in a mixed stream meet the same fates as a lone stream.
  const scoped = new FaultPlan(parseFaultSpec('loss=30%,dup=20%,seed=9,path=5'));
  const alone = new FaultPlan(parseFaultSpec('loss=30%,dup=20%,seed=9'));
  const d = makeFaultDecision();
  const mixed: number[] = [];
  const lone: number[] = [];
  for (let i = 0; i < 400; i++) {
    const path = i % 3 === 0 ? 5 : i % 7;
    scoped.decide(i, 64, 'peer', d, path);
    if (path === 5) mixed.push(d.copies);
  }
  for (let i = 0; i < mixed.length; i++) {
    alone.decide(i, 64, 'peer', d, 0);
    lone.push(d.copies);
  }
  t.same(mixed, lone);
  t.ok(mixed.includes(0) && mixed.includes(2), 'losses and duplicates both happened');
});

t.test('#N partitions: spec windows cut off one path of a target', async (t) => {
  const plan = new FaultPlan(parseFaultSpec('partition=efa1#2@10ms+20ms,partition=*#3@0ms+inf,partition=efa0/efa2#4@0ms+inf'), { self: 'efa0' });
  plan.start(0);
  const d = makeFaultDecision();
  const fate = (now: number, target: string, path: number): number => {
    plan.decide(now, 64, target, d, path);
    return d.copies;
  };
  t.equal(fate(5, 'efa1', 2), 1, 'before the window');
  t.equal(fate(15, 'efa1', 2), 0, 'efa1 path 2 in the window');
  t.equal(fate(15, 'efa1', 1), 1, 'efa1 path 1 passes');
  t.equal(fate(15, 'efa9', 2), 1, 'another target on path 2 passes');
  t.equal(fate(31, 'efa1', 2), 1, 'after the window');
  t.equal(fate(50, 'efa1', 3), 0, '*#3: every target on path 3');
  t.equal(fate(50, 'efa9', 3), 0);
  t.equal(fate(50, 'efa2', 4), 0, 'efa0/efa2#4 applies in efa0');
  t.equal(fate(50, 'efa2', 5), 1);
  const other = new FaultPlan(parseFaultSpec('partition=efa0/efa2#4@0ms+inf'), { self: 'efa1' });
  other.decide(1, 64, 'efa2', d, 4);
  t.equal(d.copies, 1, 'and not in efa1');
  // A device naming itself with #N goes dark on that path only.
  const dark = new FaultPlan(parseFaultSpec('partition=efa0#1@0ms+inf'), { self: 'efa0' });
  dark.decide(1, 64, 'efa5', d, 1);
  t.equal(d.copies, 0);
  dark.decide(1, 64, 'efa5', d, 0);
  t.equal(d.copies, 1);
  // Partitions are not scoped by `path=`: it scopes the other faults.
  const both = new FaultPlan(parseFaultSpec('partition=efa1@0ms+inf,path=3'));
  both.decide(1, 64, 'efa1', d, 0);
  t.equal(d.copies, 0, 'a plain partition still cuts every path');
});

t.test('#N partitions through the API; heal matches the exact target', async (t) => {
  const plan = new FaultPlan(NO_FAULTS);
  const d = makeFaultDecision();
  const fate = (target: string, path: number): number => {
    plan.decide(1, 64, target, d, path);
    return d.copies;
  };
  plan.partition('efa1#2', Infinity);
  plan.partition('efa1', Infinity);
  t.equal(fate('efa1', 0), 0);
  plan.heal('efa1');
  t.equal(fate('efa1', 0), 1, 'healing efa1 ...');
  t.equal(fate('efa1', 2), 0, '... leaves efa1#2 in force');
  plan.heal('efa1#2');
  t.equal(fate('efa1', 2), 1);
  t.ok(plan.inert, 'nothing left');
  plan.partition('*#5', Infinity);
  t.equal(fate('x', 5), 0);
  t.equal(fate('x', 4), 1);
  plan.heal('*');
  t.equal(fate('x', 5), 1, "heal('*') ends every partition");
  const err = thrown(() => plan.partition('efa1#64', Infinity));
  t.type(err, InvalidArgumentError);
  t.match(err.message, /partition target "efa1#64": the path after "#" must be 0\.\.63/);
  t.ok(plan.inert, 'a refused partition leaves nothing behind');
  t.type(thrown(() => plan.schedulePartition('efa1#x', 0, 1)), FaultSpecError);
});

t.test('the injector reads the path from the packet; foreign bytes count as path 0', async (t) => {
  t.equal(packetPathOf(pkt(9), 64), 9);
  t.equal(packetPathOf(pkt(63), 64), 63);
  const foreign = pkt(9);
  foreign[0] = 0x45;
  t.equal(packetPathOf(foreign, 64), 0, 'no magic');
  t.equal(packetPathOf(pkt(9), 4), 0, 'too short for the flags');
  // A real header: encodeHeader then setPacketPath, as the SRD requester does.
  const real = Buffer.alloc(64);
  encodeHeader(real, PacketType.UD_SEND, FLAG_HAS_IMM, BASE_HEADER_LEN, 1, 2, 24, 3, 4, Buffer.alloc(16));
  setPacketPath(real, 6);
  t.equal(real[4] & FLAG_HAS_IMM, FLAG_HAS_IMM, 'the other flags stay');
  t.equal(packetPathOf(real, 64), 6);

  const sent: number[] = [];
  const inj = new FaultInjector({ spec: 'loss=100%,path=4', send: (buf) => sent.push(packetPathOf(buf, buf.length)), clock: () => 0 });
  t.teardown(() => inj.close());
  for (const p of [0, 4, 5, 4, 63]) inj.send(pkt(p), 64, '127.0.0.1', 4000);
  const f = pkt(4);
  f[1] = 0;
  inj.send(f, 64, '127.0.0.1', 4000);
  t.same(sent, [0, 5, 63, 0], 'path 4 lost, the rest sent at once; a foreign packet is path 0');
  t.equal(inj.stats.injected_loss, 2);

  const cut: number[] = [];
  const inj2 = new FaultInjector({ spec: 'partition=127.0.0.1:4000#1@0ms+inf', send: (buf) => cut.push(packetPathOf(buf, buf.length)), clock: () => 0 });
  t.teardown(() => inj2.close());
  for (const p of [0, 1, 2, 1]) inj2.send(pkt(p), 64, '127.0.0.1', 4000);
  inj2.send(pkt(1), 64, '127.0.0.1', 4001);
  t.same(cut, [0, 2, 1], 'only path 1 to that endpoint is cut');
  inj2.heal('127.0.0.1:4000#1');
  inj2.partition('*#2');
  for (const p of [1, 2]) inj2.send(pkt(p), 64, '127.0.0.1', 4000);
  t.same(cut, [0, 2, 1, 1], 'after heal and a new *#2 through the API');
});
