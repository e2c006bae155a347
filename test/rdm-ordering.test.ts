/*
 * Send-after-send ordering. SRD delivers out of order, so with `ordered` the endpoint holds a
 * REQ that arrived ahead of its turn until the messages before it were matched: one sender's
 * messages, of mixed sizes and protocols, match untagged receives in the order they were sent,
 * whether the receives wait already or come after the messages. Without `ordered` they match
 * as they arrive, and under reordering that is visibly not send order.
 */
import t from 'tap';
import { Prng } from '../src/common/prng';
import { FI_ADDR_UNSPEC } from '../src/rdm/rdm-peer';
import type { RdmProtocol } from '../src/rdm/rdm-wire';
import { cqLogs, describeErr, pattern, pollLogs } from './helpers/rdm-scenario';
import { rdmSim } from './helpers/rdm-sim';

const COUNT = 60;
/** Long-read from 128 KiB here, so all four protocols fit in small buffers. */
const READ_MIN = 128 * 1024;

function sizes(seed: number, eagerMax: number): number[] {
  const r = new Prng(seed);
  return Array.from({ length: COUNT }, () => {
    switch (r.int(6)) {
      case 0:
      case 1:
        return r.int(eagerMax + 1);
      case 2:
      case 3:
        return eagerMax + 1 + r.int(65536 - eagerMax);
      case 4:
        return 65537 + r.int(READ_MIN - 65537);
      default:
        return READ_MIN + r.int(70_000);
    }
  });
}

/** Sends COUNT messages from 0 to 1; returns, per receive in posting order, the message it got. */
async function run(ordered: boolean, receivesFirst: boolean, seed: number) {
  const s = await rdmSim({ n: 2, seed, faults: `reorder=30%,loss=2%,seed=${seed}`, rdm: { ordered, readMinSize: READ_MIN } });
  const [a, b] = s.eps;
  const logs = cqLogs(s);
  const lens = sizes(seed, a.eagerMaxSize);
  const cap = Math.max(...lens);
  // Each message is told apart by its content (its pattern, and its index in the first bytes).
  const msgs = lens.map((len, i) => {
    const m = pattern(1000 + i, Math.max(len, 4));
    m.writeUInt32LE(i, 0);
    return m;
  });
  const bufs = msgs.map(() => Buffer.alloc(cap));
  const post = (): void => bufs.forEach((buf, i) => b.recv(buf, FI_ADDR_UNSPEC, i));
  if (receivesFirst) post();
  for (const [i, m] of msgs.entries()) {
    if (a.send(m, s.addr[0][1], `s${i}`) !== 0) throw new Error('send refused');
  }
  if (!receivesFirst) {
    // Every message's REQ is in before a receive is posted.
    await s.run(() => (pollLogs(logs), b.statsSnapshot().unexpected_queued === COUNT), 10_000);
    post();
  }
  const done = await s.run(() => (pollLogs(logs), logs[1].ok.length + logs[1].errs.length === COUNT && logs[0].ok.length + logs[0].errs.length === COUNT), 20_000);
  const got = bufs.map((buf, i) => {
    const e = logs[1].okOf(i);
    if (e === undefined) return -1;
    const id = buf.readUInt32LE(0);
    return e.len === msgs[id]?.length && buf.subarray(0, e.len).equals(msgs[id]) ? id : -2;
  });
  const protos = new Set<RdmProtocol>((['eager', 'medium', 'longcts', 'longread'] as const).filter((p) => b.stats.rxMessages(p) > 0));
  const result = { done, got, errs: [...logs[0].errs, ...logs[1].errs].map(describeErr), protos, reorderBuffered: b.stats.get('reorder_buffered'), unexpected: b.stats.get('unexpected_msgs') };
  await a.close();
  await b.close();
  return result;
}

const inOrder = Array.from({ length: COUNT }, (_, i) => i);

for (const receivesFirst of [true, false]) {
  t.test(`ordered: mixed sizes match in send order under reordering and loss (receives posted ${receivesFirst ? 'first' : 'after the messages arrived'})`, async (t) => {
    const r = await run(true, receivesFirst, 5);
    t.ok(r.done, 'every send and receive completed');
    t.same(r.errs, [], 'no errors');
    t.same(r.got, inOrder, 'receive i got message i, intact');
    t.same([...r.protos].sort(), ['eager', 'longcts', 'longread', 'medium'], 'all four protocols took part');
    t.ok(r.reorderBuffered > 0, `REQs arrived ahead of their turn and waited (${r.reorderBuffered})`);
    if (!receivesFirst) t.equal(r.unexpected, COUNT, 'all were unexpected');
  });
}

t.test('unordered: under the same reordering, messages match as they arrive, out of send order', async (t) => {
  const r = await run(false, true, 5);
  t.ok(r.done, 'every send and receive completed');
  t.same(r.errs, [], 'no errors');
  t.same([...r.got].sort((x, y) => x - y), inOrder, 'every message received once, intact');
  let inversions = 0;
  for (let i = 1; i < r.got.length; i++) if (r.got[i] < r.got[i - 1]) inversions++;
  t.ok(inversions > 0, `receives took messages out of send order (${inversions} inversions): ordering is not always on`);
  t.equal(r.reorderBuffered, 0, 'nothing was held back');
});
