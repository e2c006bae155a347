// Three hosts in one machine: the control daemon in network namespace D, an SRD ping-pong
// server rank in A and its client in B, joined by a bridge. Each rank binds the address of
// its own namespace (EFA_EMU_HOST) and reaches the daemon at D's address with its token, so
// the control traffic and the datagrams both cross the bridge as they would between hosts.
// Clients without the token, or with a wrong one, are refused with one EACCES line.
// Needs root; skipped, with the reason, otherwise.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import t from 'tap';
import { NetnsFabric, netnsProblem, waitForExit, waitForLine, type NsRun } from './helpers/netns';
import { CLI, ROOT } from './helpers/run-cli';

const skip = netnsProblem();
const PINGPONG = path.join(ROOT, 'dist', 'examples', 'srd-pingpong.js');
const ITERS = 200;
const SIZE = 64;
/** Per process: a rank is done in well under a second, so this only bounds a hang. */
const RUN_TIMEOUT_MS = 30_000;

/**
 * The test's environment without any EFA_EMU_* variable of the caller's: each rank gets
 * exactly the ones the test means it to have.
 */
function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('EFA_EMU_')) env[k] = v;
  return env;
}

/** What a failed assertion about a run shows (tap prints it only on failure). */
function diag(r: NsRun): { signal: NodeJS.Signals | null; timedOut: boolean; stdout: string; stderr: string } {
  return { signal: r.signal, timedOut: r.timedOut, stdout: r.stdout.slice(-2000), stderr: r.stderr.slice(-2000) };
}

t.test('SRD ping-pong between ranks in two network namespaces through a daemon in a third', { skip, timeout: 120_000 }, async (t) => {
  const fabric = await NetnsFabric.create({ roles: ['d', 'a', 'b'] });
  t.teardown(() => fabric.teardown());
  const d = fabric.host('d');
  const a = fabric.host('a');
  const b = fabric.host('b');
  const token = randomBytes(16).toString('hex');

  const daemon = fabric.spawn('d', process.execPath, [CLI, 'daemon', '--host', d.address, '--port', '0', '--token', token, '--state', 'none', '--log-level', 'warn'], {
    env: baseEnv(),
    cwd: ROOT,
  });
  const listening = await waitForLine(daemon, /^efa-emu daemon listening on (\S+):(\d+)(.*)$/, 20_000);
  t.equal(listening[1], d.address, "the daemon listens on its namespace's address");
  t.match(listening[3], /token required/, 'and says it requires a token');
  const daemonAddr = `${d.address}:${listening[2]}`;

  const rankEnv = (rank: number, host: string, tok: string | null, job: string): NodeJS.ProcessEnv => ({
    ...baseEnv(),
    EFA_EMU_DAEMON: daemonAddr,
    EFA_EMU_HOST: host,
    EFA_EMU_RANK: String(rank),
    EFA_EMU_SIZE: '2',
    EFA_EMU_JOB_ID: job,
    ...(tok === null ? {} : { EFA_EMU_TOKEN: tok }),
  });
  const pingpong = (role: string, env: NodeJS.ProcessEnv): Promise<NsRun> =>
    fabric.run(role, process.execPath, [PINGPONG, '--iters', String(ITERS), '--size', String(SIZE)], { env, cwd: ROOT, timeoutMs: RUN_TIMEOUT_MS });

  // Refused before the ping-pong: the daemon keeps serving after them, and no device of
  // theirs is left in its list.
  const refusals: Array<[string, string | null, RegExp]> = [
    ['no token', null, /^srd-pingpong: EACCES: this daemon requires a token/],
    ['a wrong token', `${token}x`, /^srd-pingpong: EACCES: hello: wrong token/],
  ];
  for (const [what, tok, expected] of refusals) {
    const r = await pingpong('b', rankEnv(0, b.address, tok, `netns-refused-${process.pid}`));
    t.equal(r.code, 1, `a client with ${what} exits 1`, diag(r));
    const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
    t.equal(lines.length, 1, `with ${what}: one line on stderr`, diag(r));
    t.match(lines[0] ?? '', expected, `with ${what}: the daemon's EACCES, named by its code`);
    t.equal(r.stdout, '', `with ${what}: nothing on stdout`);
  }

  const job = `netns-${process.pid}-${Date.now()}`;
  const [server, client] = await Promise.all([pingpong('a', rankEnv(1, a.address, token, job)), pingpong('b', rankEnv(0, b.address, token, job))]);
  t.equal(server.code, 0, `the server in ${a.ns} exits 0`, diag(server));
  t.equal(client.code, 0, `the client in ${b.ns} exits 0`, diag(client));

  // Both sides print ibv_ud_pingpong's preamble and their own result.
  const gids = (out: string): { local?: string; remote?: string } => ({
    local: /local address:.*GID (\S+)/.exec(out)?.[1],
    remote: /remote address:.*GID (\S+)/.exec(out)?.[1],
  });
  const s = gids(server.stdout);
  const c = gids(client.stdout);
  t.ok(s.local !== undefined && c.local !== undefined, 'both sides print their address');
  t.equal(c.remote, s.local, "the client's remote GID is the server's");
  t.equal(s.remote, c.local, "the server's remote GID is the client's");
  for (const [side, out] of [
    ['client', client.stdout],
    ['server', server.stdout],
  ] as const) {
    t.match(out, new RegExp(`^${ITERS} iters in \\d+\\.\\d{2} seconds = \\d+\\.\\d{2} usec/iter$`, 'm'), `the ${side} prints its ${ITERS} iterations`);
    t.match(out, new RegExp(`^${SIZE * ITERS * 2} bytes in \\d+\\.\\d{2} seconds = \\d+\\.\\d{2} Mbit/sec$`, 'm'), `the ${side} prints the bytes moved`);
  }

  // The daemon's view: each device announced its own namespace's address, which is where
  // the other sent its datagrams.
  const status = await fabric.run('d', process.execPath, [CLI, 'status', '--daemon', daemonAddr, '--json'], {
    env: { ...baseEnv(), EFA_EMU_TOKEN: token },
    cwd: ROOT,
    timeoutMs: RUN_TIMEOUT_MS,
  });
  t.equal(status.code, 0, 'status exits 0', diag(status));
  const list = JSON.parse(status.stdout.trim().split('\n').pop() ?? '{}') as { devices?: Array<{ name: string; endpoint: { host: string; port: number } }> };
  const endpoints = Object.fromEntries((list.devices ?? []).map((dev) => [dev.name, dev.endpoint.host]));
  t.same(endpoints, { efa0: b.address, efa1: a.address }, "only the two ranks' devices, each at its namespace's address");

  daemon.child.kill('SIGTERM');
  const stopped = await waitForExit(daemon, 10_000);
  t.ok(stopped !== null && stopped.code === 0, 'the daemon stops cleanly on SIGTERM', stopped === null ? { stillRunningAfterMs: 10_000, stderr: daemon.stderr } : diag(stopped));

  fabric.teardown();
  t.same(fabric.remaining(), [], 'no namespace left behind');
});
