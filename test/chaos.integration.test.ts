/*
 * examples/chaos.ts under the real launcher. What is checked here was observed by someone
 * other than the code that planned it: the launcher says which rank died, how, and whether it
 * had announced it, and what became of the daemon restart it was asked for; each survivor
 * says which peers its device was told went down, how each of its sends completed (counted
 * from the completions it polled), and how often its daemon client lost and regained the
 * daemon. The test then checks that these accounts agree.
 */
import t from 'tap';
import { runCli } from './helpers/run-cli';

const N = 4;

interface Observed {
  observed_by: number;
  posted: number;
  send_ok: Record<string, number>;
  send_failed: Record<string, Record<string, number>>;
  peer_down: number[];
  daemon_disconnects: number;
  daemon_reconnects: number;
}

/** `0-2,5` -> [0, 1, 2, 5], as the launcher's summary lists ranks. */
function parseRanks(text: string): number[] {
  return text.split(',').flatMap((part) => {
    const [a, b] = part.split('-').map(Number);
    return b === undefined ? [a] : Array.from({ length: b - a + 1 }, (_, i) => a + i);
  });
}

t.test('examples/chaos.ts: a rank SIGKILLed and the daemon restarted while traffic flows', async (t) => {
  const run = await runCli(['launch', '-n', String(N), '--allow-daemon-restart', 'examples/chaos.ts', '--', '--seconds', '3'], { timeoutMs: 90_000 });
  // Shown with a failing assertion only.
  const output = { stdout: run.stdout.slice(-3000), stderr: run.stderr.slice(-3000) };
  t.equal(run.code, 0, 'the job succeeds although a rank died (planned)', output);

  // The launcher's own lines are the unprefixed ones on its stderr.
  const launcher = run.stderr.split('\n').filter((l) => l.startsWith('efa-emu launch: '));
  const restarts = launcher.filter((l) => /^efa-emu launch: daemon restart/.test(l));
  t.equal(restarts.length, 1, `the launcher acted on exactly one restart request (${JSON.stringify(restarts)})`);
  const restarted = /^efa-emu launch: daemon restarted at rank (\d+)'s request: down (\d+) ms, listening again on /.exec(restarts[0] ?? '');
  t.ok(restarted, `and the restart succeeded: ${restarts[0]}`);
  t.ok(Number(restarted?.[2]) >= 500, `the daemon was down for at least the 500 ms asked (${restarted?.[2]} ms)`);

  const summary = launcher.filter((l) => l.startsWith('efa-emu launch: job ended'));
  t.equal(summary.length, 1, 'the launcher printed one exit summary', output);
  const m = /^efa-emu launch: job ended, exit 0: (.*); daemon restarts: (.*)$/.exec(summary[0] ?? '');
  t.ok(m, `the summary reads as expected: ${summary[0]}`);
  t.equal(m?.[2], '1 requested, 1 done', 'the summary counts one restart, done');
  const ended = new Map<string, number[]>();
  for (const part of (m?.[1] ?? '').split('; ')) {
    const g = /^ranks? ([\d,-]+) (.+)$/.exec(part);
    if (g) ended.set(g[2], parseRanks(g[1]));
  }
  const killed = ended.get('SIGKILL (announced)') ?? [];
  t.equal(killed.length, 1, `exactly one rank died, by SIGKILL, having announced it (${m?.[1]})`);
  const victim = killed[0];
  const survivors = Array.from({ length: N }, (_, r) => r).filter((r) => r !== victim);
  t.same(ended.get('exit 0'), survivors, 'every other rank exited 0');
  t.equal(ended.size, 2, 'and no rank ended any other way');

  // Each survivor's account, printed by the survivor itself.
  const observed = new Map<number, Observed>();
  for (const line of run.stdout.split('\n')) {
    const l = /^\[(\d+)\] (\{"observed_by".*)$/.exec(line);
    if (l === null) continue;
    const o = JSON.parse(l[2]) as Observed;
    t.equal(o.observed_by, Number(l[1]), `rank ${l[1]} reports for itself`);
    observed.set(o.observed_by, o);
  }
  t.same([...observed.keys()].sort((a, b) => a - b), survivors, 'every survivor, and only survivors, reported', output);
  for (const rank of survivors) {
    const o = observed.get(rank);
    if (o === undefined) continue;
    t.test(`survivor ${rank}`, async (t) => {
      t.same(o.peer_down, [victim], `its device was told that rank ${victim}, and no other, went down`);
      t.ok((o.send_ok[victim] ?? 0) > 0, `sends to rank ${victim} succeeded before the kill (${o.send_ok[victim]})`);
      t.same(Object.keys(o.send_failed), [String(victim)], 'only sends to the killed rank failed');
      const failed = o.send_failed[victim] ?? {};
      t.same(Object.keys(failed), ['LOCAL_ERROR_UNRESP_REMOTE'], 'all of them with LOCAL_ERROR_UNRESP_REMOTE');
      t.ok((failed.LOCAL_ERROR_UNRESP_REMOTE ?? 0) > 0, `${failed.LOCAL_ERROR_UNRESP_REMOTE} sends failed that way`);
      for (const peer of survivors) {
        if (peer !== rank) t.ok((o.send_ok[peer] ?? 0) > 0, `it kept sending to survivor ${peer} (${o.send_ok[peer]})`);
      }
      const completed = Object.values(o.send_ok).reduce((a, b) => a + b, 0) + Object.values(failed).reduce((a, b) => a + b, 0);
      t.equal(completed, o.posted, 'every send it posted completed (none hung)');
      t.equal(o.daemon_disconnects, 1, 'its daemon client lost the daemon once');
      t.equal(o.daemon_reconnects, 1, 'and got it back once, after the restart');
    });
  }

  // Rank 0's job summary: built from what every survivor received and completed.
  const line = run.stdout.split('\n').filter((l) => l.startsWith('[0] {"ranks"')).pop();
  t.ok(line, 'rank 0 printed the job summary');
  const s = JSON.parse((line ?? '[0] {}').slice(4)) as Record<string, number>;
  t.ok(s.sent > 0 && s.delivered > 0, `traffic flowed (sent ${s.sent}, delivered ${s.delivered})`);
  t.equal(s.duplicates, 0, 'nothing delivered twice');
  t.equal(s.missing_from_live_peers, 0, 'nothing missing between live peers');
  t.equal(s.other_send_errors, 0, 'no other send error');
});
