import t from 'tap';
import { runCli } from './helpers/run-cli';

t.test('examples/chaos.ts: a rank SIGKILLed and the daemon restarted while traffic flows', async (t) => {
  const run = await runCli(['launch', '-n', '4', 'examples/chaos.ts', '--', '--seconds', '3'], { timeoutMs: 90_000 });
  t.equal(run.code, 0, `the job succeeds although a rank died (planned) (stderr tail: ${run.stderr.slice(-1500)})`);
  const line = run.stdout.trim().split('\n').filter((l) => l.startsWith('[0] {')).pop();
  t.ok(line, 'rank 0 printed the summary');
  const s = JSON.parse((line ?? '[0] {}').slice(4)) as Record<string, number>;
  t.ok(s.sent > 0 && s.delivered > 0, `traffic flowed (sent ${s.sent}, delivered ${s.delivered})`);
  t.equal(s.duplicates, 0, 'nothing delivered twice');
  t.equal(s.missing_from_live_peers, 0, 'nothing missing between live peers');
  t.equal(s.other_send_errors, 0, 'no other send error');
  t.ok(s.unresponsive_errors > 0, 'sends to the killed rank failed with UNRESP_REMOTE, none hung');
  t.equal(s.daemon_restarts, 1);
  t.equal(s.peer_kills, 1);
  t.equal(s.survivors_told_peer_down, 3, 'the daemon told every survivor that the killed rank went down');
});
