// CompletionPoller hands its handler exactly the batch: `wcs.length === count`, so iterating
// the array never reads entries left over from an earlier, larger batch.
import t from 'tap';
import { CompletionPoller } from '../src/completion-poller';
import type { WorkCompletion } from '../src/device/work-completion';
import { poll, sendBytes, udPair } from './helpers/memory-fabric';

t.test('busy mode: each batch is exactly its completions, for-of included', async (t) => {
  const { fabric, a, b, ahAtoB } = await udPair({ a: { cqe: 256, cap: { maxSendWr: 128, maxRecvWr: 16 } } });
  const seen: Array<{ count: number; length: number; iterated: number[] }> = [];
  let total = 0;
  const poller = new CompletionPoller(a.dev, a.sendCq, 'busy', (wcs: readonly WorkCompletion[], count: number) => {
    const iterated: number[] = [];
    for (const wc of wcs) iterated.push(wc.wrId);
    seen.push({ count, length: wcs.length, iterated });
    total += count;
  });
  // 40 sends: a batch of 32 then one of 8 (the poller polls 32 at a time); then 3 more.
  for (let i = 0; i < 40; i++) sendBytes(a, ahAtoB, b, i, Buffer.from([i]));
  fabric.deliverAll();
  poller.start();
  await new Promise<void>((resolve) => {
    const check = (): void => (total >= 40 ? resolve() : void setImmediate(check));
    check();
  });
  for (let i = 100; i < 103; i++) sendBytes(a, ahAtoB, b, i, Buffer.from([i]));
  await new Promise<void>((resolve) => {
    const check = (): void => (total >= 43 ? resolve() : void setImmediate(check));
    check();
  });
  poller.stop();
  t.same(
    seen.map((s) => s.count),
    [32, 8, 3],
    'batches of 32, 8, 3',
  );
  t.ok(seen.every((s) => s.length === s.count), 'wcs.length is the batch size every time');
  t.same(seen[2].iterated, [100, 101, 102], 'for-of over the last, small batch reads its 3 completions only');
  t.same(seen[0].iterated, Array.from({ length: 32 }, (_, i) => i), 'the first batch in order');
  t.equal(poll(a.dev, a.sendCq).length, 0, 'nothing left in the CQ');
});
