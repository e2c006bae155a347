// A rank that throws while it starts is reported with its program's own stack (as
// `node program.js` would show it), not with the launcher's bootstrap frames; the launcher's
// summary names the failed rank and its exit status.
import path from 'node:path';
import t from 'tap';
import { ROOT, runCli } from './helpers/run-cli';

for (const fixture of ['throws.js', 'throws-ts.ts']) {
  t.test(`${fixture}: the program's frames, the summary names the rank`, async (t) => {
    const file = path.join(ROOT, 'test', 'fixtures', fixture);
    const run = await runCli(['launch', '-n', '1', file], { timeoutMs: 60_000 });
    t.equal(run.code, 1, 'exit 1');
    t.match(run.stderr, /\[0\] Error: the (TypeScript )?program itself failed/, 'the error');
    t.match(run.stderr, new RegExp(`\\[0\\]\\s+at thrower(Ts)? \\(${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:\\d+:\\d+\\)`), "the program's own frame, with its file and line");
    t.notMatch(run.stderr, /rank-bootstrap/, 'no frame of the launcher');
    t.match(run.stderr, /efa-emu launch: job ended, exit 1: rank 0 exit 1/, 'the summary');
  });
}
