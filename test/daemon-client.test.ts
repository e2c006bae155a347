// The daemon client against a real daemon: key/value, barriers, membership events,
// heartbeat deadlines, close semantics and reconnecting across a daemon restart.
import t from 'tap';
import * as net from 'node:net';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { DaemonClient, type DaemonClientOptions, type PeerDownInfo, type PeerUpInfo } from '../src/control/client';
import { ManualClock } from '../src/control/manual-clock';
import { startDaemon, type DaemonOptions, type DaemonServer } from '../src/control/server';

interface HasTeardown {
  teardown(fn: () => unknown): void;
}

/**
 * A fresh directory under the OS temp dir, holding `files` (name -> content; a nested object
 * is a subdirectory), removed at teardown. Not tap's testdir: its fixture path is derived
 * from the test name, so two runs of this file at once would share it.
 */
function tempdir(t: HasTeardown, files: Record<string, unknown> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-daemon-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const fill = (at: string, entries: Record<string, unknown>): void => {
    for (const [name, v] of Object.entries(entries)) {
      const p = path.join(at, name);
      if (typeof v === 'string') fs.writeFileSync(p, v);
      else {
        fs.mkdirSync(p);
        fill(p, v as Record<string, unknown>);
      }
    }
  };
  fill(dir, files);
  return dir;
}

async function daemon(t: HasTeardown, opts: DaemonOptions = {}): Promise<DaemonServer> {
  const d = await startDaemon({ heartbeatTimeoutMs: 300, ...opts });
  t.teardown(() => d.close());
  return d;
}

async function client(t: HasTeardown, d: DaemonServer, opts: Partial<DaemonClientOptions> = {}): Promise<DaemonClient> {
  const c = await DaemonClient.connect({ host: d.host, port: d.port, heartbeatMs: 50, reconnect: false, ...opts });
  t.teardown(() => c.close());
  return c;
}

/** Resolves with the first event `name` of `c` whose payload passes `pred`. */
function nextEvent<T>(c: DaemonClient, name: 'peer_down' | 'peer_up', pred: (e: T) => boolean): Promise<T> {
  return new Promise((resolve) => {
    const on = (e: T): void => {
      if (!pred(e)) return;
      c.off(name, on as never);
      resolve(e);
    };
    c.on(name, on as never);
  });
}

/** Reads replies (not events) from a raw protocol socket, one per call. */
function lineReader(socket: net.Socket): () => Promise<Record<string, unknown>> {
  const queue: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  let buf = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => {
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const m = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
      buf = buf.slice(nl + 1);
      if (typeof m.event === 'string') continue;
      const w = waiters.shift();
      if (w) w(m);
      else queue.push(m);
    }
  });
  return () => {
    const m = queue.shift();
    return m ? Promise.resolve(m) : new Promise((resolve) => waiters.push(resolve));
  };
}

/** A port nothing listens on: bound by the OS, then released. */
async function freePort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const ep = (port: number) => ({ host: '127.0.0.1', port });

/**
 * Awaits `p` while holding the event loop open. The client's socket is unref'd when idle by
 * design, so a test waiting only on a client event would otherwise let the process exit.
 */
async function held<T>(p: Promise<T>): Promise<T> {
  const keep = setInterval(() => undefined, 1000);
  try {
    return await p;
  } finally {
    clearInterval(keep);
  }
}

t.test('connect failures name the address', async (t) => {
  const port = await freePort();
  await t.rejects(DaemonClient.connect({ host: '127.0.0.1', port }), {
    name: 'DaemonError',
    code: 'ECONNREFUSED',
    message: new RegExp(`127\\.0\\.0\\.1:${port}`),
  });
  await t.rejects(DaemonClient.connect({ host: '127.0.0.1', port: 0 }), { code: 'EINVAL', message: /port/ });
  await t.rejects(DaemonClient.connect({ host: '127.0.0.1', port: 1, heartbeatMs: -5 }), { code: 'EINVAL', message: /heartbeatMs/ });
});

t.test('resolve', async (t) => {
  const d = await daemon(t);
  const a = await client(t, d);
  await t.rejects(a.resolve('fe80::dead:beef:0:1'), { name: 'DaemonError', code: 'ENOENT' });
  await t.rejects(a.resolve('nonsense'), { code: 'EINVAL' });
  const reg = await a.register({ name: 'r0', endpoint: ep(9000), rank: 3 });
  const b = await client(t, d);
  const rec = await b.resolve(reg.gid);
  t.same(rec, { name: 'r0', gid: reg.gid, ahn: reg.ahn, rank: 3, endpoint: ep(9000), up: true, lastSeenMsAgo: rec.lastSeenMsAgo, stats: null, incarnation: 0 });
  t.ok(rec.lastSeenMsAgo >= 0);
  // GIDs are compared by value, not text.
  t.equal((await b.resolve(reg.gid.toUpperCase())).name, 'r0');
});

t.test('put/get', async (t) => {
  const d = await daemon(t);
  const a = await client(t, d);
  const b = await client(t, d);

  const waiting = b.get('addr/1');
  t.equal(d.stats.waitsOpen, 0, 'the get has not reached the daemon yet');
  await a.put('addr/0', 'unrelated');
  await a.put('addr/1', 'fe80::1');
  t.equal(await waiting, 'fe80::1', 'a get made before the put gets the value');
  await a.put('addr/1', 'fe80::2');
  t.equal(await b.get('addr/1'), 'fe80::2', 'put overwrites');

  await t.rejects(b.get('never', 50), { name: 'DaemonError', code: 'ETIMEDOUT' });
  t.equal(d.stats.waitsOpen, 0, 'timed-out waits are released');

  const big = 'v'.repeat(60000);
  await a.put('big', big);
  t.equal(await b.get('big'), big);
  await t.rejects(a.put('too-big', 'v'.repeat(70000)), { code: 'EMSGSIZE' }, 'refused locally: the line would exceed the limit');
});

t.test('waits are released when their connection closes', async (t) => {
  const d = await daemon(t);
  const a = await client(t, d);
  const b = await client(t, d);
  const g = a.get('k', 60000);
  const br = a.barrier('b', 2, 60000);
  // The waits are in place once a request sent after them on the same connection is answered.
  await a.list();
  t.equal(d.stats.waitsOpen, 2);
  const rejected = Promise.all([t.rejects(g, { name: 'ClosedError', code: 'ECLOSED' }), t.rejects(br, { name: 'ClosedError' })]);
  await a.close();
  await rejected;
  await b.list();
  t.equal(d.stats.waitsOpen, 0, 'the daemon forgot both waits');
  await b.put('k', 'v');
  t.equal(await b.get('k'), 'v');
});

t.test('barrier with 3 clients releases all, and is reusable', async (t) => {
  const d = await daemon(t);
  const cs = await Promise.all([client(t, d), client(t, d), client(t, d)]);
  for (let round = 0; round < 3; round++) {
    let released = 0;
    const first = cs.slice(0, 2).map((c) => c.barrier('sync', 3).then(() => released++));
    // Both early callers are inside the barrier (answered requests after them prove it).
    await Promise.all(cs.slice(0, 2).map((c) => c.list()));
    t.equal(released, 0, `round ${round}: nobody leaves before the third caller`);
    await Promise.all([...first, cs[2].barrier('sync', 3)]);
    t.equal(released, 2, `round ${round}: all released`);
  }
  t.equal(d.stats.waitsOpen, 0);
  // A wait timeout of 0 ms: a barrier of one that waited for anybody would time out instead.
  await t.resolves(cs[0].barrier('solo', 1, 0), 'n = 1 returns at once, even with no time to wait');
  t.equal(d.stats.waitsOpen, 0, 'and leaves no wait behind');
});

t.test('barrier timeout removes the caller from the round', async (t) => {
  const d = await daemon(t);
  const [a, b, c] = await Promise.all([client(t, d), client(t, d), client(t, d)]);
  await t.rejects(a.barrier('late', 2, 50), { name: 'DaemonError', code: 'ETIMEDOUT' });
  // Had the timed-out caller stayed counted, this single caller would be released.
  let released = false;
  const p = b.barrier('late', 2, 5000).then(() => (released = true));
  await b.list();
  t.notOk(released);
  await Promise.all([p, c.barrier('late', 2, 5000)]);
  t.ok(released);
  await b.barrier('late', 2, 50).then(
    () => t.fail('should time out'),
    (e: { code: string }) => t.equal(e.code, 'ETIMEDOUT'),
  );
  await t.rejects(b.barrier('late', 3, 50), { code: 'ETIMEDOUT' }, 'n may change once a round is empty');
  const q = c.barrier('mixed', 2, 5000);
  await c.list();
  await t.rejects(b.barrier('mixed', 3), { code: 'EINVAL', message: /"n"/ }, 'n must agree within a round');
  await Promise.all([q, b.barrier('mixed', 2)]);
});

t.test('membership events', async (t) => {
  const d = await daemon(t);
  const a = await client(t, d);
  await a.register({ name: 'watcher', endpoint: ep(1000) });

  const b = await client(t, d);
  const upB = nextEvent<PeerUpInfo>(a, 'peer_up', (e) => e.name === 'b');
  const regB = await b.register({ name: 'b', endpoint: ep(1001), rank: 1, incarnation: 77 });
  t.same(await upB, { name: 'b', gid: regB.gid, endpoint: ep(1001), incarnation: 77 }, 'register -> peer_up to others, with the incarnation');
  t.equal((await a.resolve(regB.gid)).incarnation, 77, 'resolve reports the incarnation');

  const seenByB: string[] = [];
  b.on('peer_up', (e) => seenByB.push(`up:${e.name}`));
  b.on('peer_down', (e) => seenByB.push(`down:${e.name}`));

  const c = await client(t, d);
  const regC = await c.register({ name: 'c', endpoint: ep(1002) });
  const downC = nextEvent<PeerDownInfo>(a, 'peer_down', (e) => e.name === 'c');
  await c.close();
  t.same(await downC, { name: 'c', gid: regC.gid }, 'close -> peer_down');

  // A connection that dies without a goodbye is marked down at once too.
  const raw = net.createConnection({ host: d.host, port: d.port });
  await once(raw, 'connect');
  raw.write(JSON.stringify({ id: 1, op: 'register', name: 'raw', endpoint: ep(1003) }) + '\n');
  await nextEvent<PeerUpInfo>(a, 'peer_up', (e) => e.name === 'raw');
  const downRaw = nextEvent<PeerDownInfo>(a, 'peer_down', (e) => e.name === 'raw');
  raw.destroy();
  t.equal((await downRaw).name, 'raw', 'connection drop -> peer_down');

  const downB = nextEvent<PeerDownInfo>(a, 'peer_down', (e) => e.name === 'b');
  await b.unregister();
  t.same(await downB, { name: 'b', gid: regB.gid }, 'unregister -> peer_down');
  t.same(seenByB, ['up:c', 'down:c', 'up:raw', 'down:raw'], 'b saw c and raw come and go, but never its own events');

  const list = await a.list();
  t.same(
    list.devices.map((x) => [x.name, x.up]),
    [['watcher', true], ['b', false], ['c', false], ['raw', false]],
  );
});

t.test('heartbeat deadline: a silent device goes down, peers hear it, a heartbeat brings it back', async (t) => {
  const d = await daemon(t, { heartbeatTimeoutMs: 300 });
  const a = await client(t, d, { heartbeatMs: 50 });
  await a.register({ name: 'alive', endpoint: ep(2000) });
  a.setStatsProvider(() => ({ tx_pkts: 42, rx_pkts: 7, bogus: NaN }));

  // A raw connection that registers and then says nothing.
  const raw = net.createConnection({ host: d.host, port: d.port });
  t.teardown(() => raw.destroy());
  await once(raw, 'connect');
  const down = nextEvent<PeerDownInfo>(a, 'peer_down', (e) => e.name === 'silent');
  raw.write(JSON.stringify({ id: 1, op: 'register', name: 'silent', endpoint: ep(2001) }) + '\n');
  const started = Date.now();
  await down;
  t.ok(Date.now() - started >= 250, 'not before the deadline');
  t.equal(d.stats.heartbeatTimeouts, 1);

  const list = await a.list();
  const byName = new Map(list.devices.map((x) => [x.name, x]));
  t.equal(byName.get('silent')?.up, false);
  t.equal(byName.get('alive')?.up, true, 'the heartbeating client stays up');
  t.same(byName.get('alive')?.stats, { tx_pkts: 42, rx_pkts: 7 }, 'heartbeat stats are shown by list, non-finite values dropped');
  t.ok((byName.get('silent')?.lastSeenMsAgo ?? 0) >= 300);

  const up = nextEvent<PeerUpInfo>(a, 'peer_up', (e) => e.name === 'silent');
  raw.write(JSON.stringify({ id: 2, op: 'heartbeat' }) + '\n');
  t.same((await up).endpoint, ep(2001), 'a heartbeat from a down device brings it back up');
});

t.test('a name that went silent can be taken over by a new connection', async (t) => {
  // The daemon's time moves only when advanced: "silent" is decided by the test, not by
  // how fast a loaded machine gets from one register to the next.
  const clock = new ManualClock();
  const d = await daemon(t, { heartbeatTimeoutMs: 300, clock });
  const a = await client(t, d);
  await a.register({ name: 'w', endpoint: ep(1) });
  const stale = await client(t, d, { heartbeatMs: 600000 });
  const reg = await stale.register({ name: 'moving', endpoint: ep(2) });
  const b = await client(t, d);
  await t.rejects(b.register({ name: 'moving', endpoint: ep(3) }), { code: 'EADDRINUSE' });
  const movingDown = nextEvent<PeerDownInfo>(a, 'peer_down', (e) => e.name === 'moving');
  clock.advance(400);
  await movingDown;
  const up = nextEvent<PeerUpInfo>(a, 'peer_up', (e) => e.name === 'moving');
  t.same(await b.register({ name: 'moving', endpoint: ep(3) }), reg, 'same lease');
  t.same((await up).endpoint, ep(3));
  t.match(await a.resolve(reg.gid), { up: true, endpoint: ep(3) });

  // The old owner, still connected, learns at its next heartbeat that it lost the device.
  const raw = net.createConnection({ host: d.host, port: d.port });
  t.teardown(() => raw.destroy());
  await once(raw, 'connect');
  const lines = lineReader(raw);
  raw.write(JSON.stringify({ id: 1, op: 'register', name: 'quiet', endpoint: ep(4) }) + '\n');
  t.match(await lines(), { id: 1, ok: true });
  const quietDown = nextEvent<PeerDownInfo>(a, 'peer_down', (e) => e.name === 'quiet');
  clock.advance(400);
  await quietDown;
  const c = await client(t, d);
  await c.register({ name: 'quiet', endpoint: ep(5) });
  raw.write(JSON.stringify({ id: 2, op: 'heartbeat' }) + '\n');
  t.match(await lines(), { id: 2, ok: false, error: { code: 'ENODEV' } });
  raw.write(JSON.stringify({ id: 3, op: 'register', name: 'quiet', endpoint: ep(4) }) + '\n');
  t.match(await lines(), { id: 3, ok: false, error: { code: 'EADDRINUSE' } }, 'and cannot grab it back while the new owner is up');
});

t.test('close: idempotent, rejects pending calls, later calls fail with ClosedError', async (t) => {
  const d = await daemon(t);
  const w = await client(t, d);
  await w.register({ name: 'w', endpoint: ep(1) });
  const c = await client(t, d);
  await c.register({ name: 'c', endpoint: ep(2) });
  const listed = async (): Promise<unknown> => (await w.list()).devices.find((dev) => dev.name === 'c');
  t.match(await listed(), { up: true }, 'the daemon lists the device as up before close');
  const pending = c.get('nothing', 60000);
  const down = nextEvent<PeerDownInfo>(w, 'peer_down', (e) => e.name === 'c');
  const p = c.close();
  t.equal(c.close(), p, 'same promise');
  await t.rejects(pending, { name: 'ClosedError', code: 'ECLOSED' });
  await p;
  await down;
  t.match(await listed(), { up: false }, 'close unregistered the device: the daemon lists it down');
  await t.rejects(c.list(), { name: 'ClosedError' });
  t.notOk(c.connected);
  await c.close();
});

t.test('reconnect across a daemon restart with the same state file', async (t) => {
  const dir = tempdir(t);
  const statePath = path.join(dir, 'state.json');
  const d1 = await startDaemon({ statePath, heartbeatTimeoutMs: 300 });
  t.teardown(() => d1.close());
  const port = d1.port;
  const c = await DaemonClient.connect({ host: d1.host, port, heartbeatMs: 50 });
  t.teardown(() => c.close());
  const reg = await c.register({ name: 'survivor', endpoint: ep(3000), rank: 0 });
  const pending = c.get('never', 60000);

  const disconnected = once(c, 'disconnected');
  await d1.close();
  await held(disconnected);
  await t.rejects(pending, { name: 'DaemonError', code: 'ENOTCONN' }, 'pending calls fail at once');
  await t.rejects(c.resolve(reg.gid), { name: 'DaemonError', code: 'ENOTCONN' }, 'calls while down fail fast');
  t.notOk(c.connected);

  const reconnected = once(c, 'reconnected');
  const d2 = await startDaemon({ statePath, port, heartbeatTimeoutMs: 300 });
  t.teardown(() => d2.close());
  const [renewed] = (await held(reconnected)) as [unknown];
  t.same(renewed, reg, 'the reconnected event carries the (unchanged) registration');
  t.ok(c.connected);
  t.same(c.currentRegistration, reg);
  const rec = await c.resolve(reg.gid);
  t.match(rec, { name: 'survivor', gid: reg.gid, ahn: reg.ahn, up: true, rank: 0, endpoint: ep(3000) }, 'its own GID resolves again');
  t.equal(d2.fabricId, d1.fabricId);
});

t.test('reconnect: false leaves the client down for good', async (t) => {
  const d = await startDaemon();
  t.teardown(() => d.close());
  const c = await DaemonClient.connect({ host: d.host, port: d.port, reconnect: false });
  t.teardown(() => c.close());
  const disconnected = once(c, 'disconnected');
  await d.close();
  await held(disconnected);
  await t.rejects(c.list(), { code: 'ENOTCONN' });
  await c.close();
});

t.test('a program whose only handle left is the daemon connection exits', async (t) => {
  const d = await daemon(t, { heartbeatTimeoutMs: 5000 });
  const clientModule = path.join(__dirname, '..', 'src', 'control', 'client.js');
  const script = `
    const { DaemonClient } = require(${JSON.stringify(clientModule)});
    (async () => {
      const c = await DaemonClient.connect({ host: '127.0.0.1', port: ${d.port}, heartbeatMs: 20 });
      await c.register({ name: 'child', endpoint: { host: '127.0.0.1', port: 1 } });
      c.setStatsProvider(() => ({ x: 1 }));
      // A pending call holds the process open until its answer arrives.
      setTimeout(() => c.put('from-child', 'hello'), 50).unref();
      console.log(await c.get('from-child', 5000));
      const c2 = await DaemonClient.connect({ host: '127.0.0.1', port: ${d.port} });
      await c2.register({ name: 'child2', endpoint: { host: '127.0.0.1', port: 2 } });
      await c2.close();
      console.log('closed');
    })();
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const killer = setTimeout(() => child.kill('SIGKILL'), 15000);
  t.teardown(() => clearTimeout(killer));
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  t.equal(signal, null, 'not killed');
  t.equal(code, 0, 'exited by itself');
  t.same(out.trim().split('\n'), ['hello', 'closed'], 'a pending get kept it alive until answered; close() returned');
});
