// Hostile daemon clients: floods of idle sockets, the connection and device limits, a client
// dribbling a request one byte at a time, and the shared token. Each limit must answer with
// its own code, and good clients must keep being served meanwhile. Nothing here sleeps to
// let things settle: every wait is for an event, bounded by a timeout.
import t from 'tap';
import * as net from 'node:net';
import { once } from 'node:events';
import { startDaemon, type DaemonOptions, type DaemonServer } from '../src/control/server';
import { DaemonClient } from '../src/control/client';

type Msg = Record<string, unknown>;

/** The part of a tap test the helpers need: resources register their own teardown. */
interface HasTeardown {
  teardown(fn: () => unknown): void;
}

/** Rejects if `p` does not settle within `ms`, naming what was awaited. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Polls a condition the daemon exposes only as state (e.g. how many connections it accepted). */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A raw protocol connection: every line it receives, and a promise of its close. */
class Raw {
  readonly socket: net.Socket;
  readonly closed: Promise<void>;
  private readonly lines: Msg[] = [];
  private readonly waiting: ((m: Msg) => void)[] = [];
  private buf = '';

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(this.buf.slice(0, nl)) as Msg;
        this.buf = this.buf.slice(nl + 1);
        if (typeof m.event === 'string') continue;
        const w = this.waiting.shift();
        if (w) w(m);
        else this.lines.push(m);
      }
    });
  }

  static async open(port: number): Promise<Raw> {
    const s = net.createConnection({ host: '127.0.0.1', port });
    const raw = new Raw(s);
    await within(once(s, 'connect'), 5000, 'TCP connect');
    return raw;
  }

  next(ms = 5000): Promise<Msg> {
    const m = this.lines.shift();
    if (m) return Promise.resolve(m);
    return within(new Promise<Msg>((resolve) => this.waiting.push(resolve)), ms, 'a reply line');
  }

  call(req: Msg): Promise<Msg> {
    this.socket.write(JSON.stringify(req) + '\n');
    return this.next();
  }

  waitClosed(ms = 5000): Promise<void> {
    return within(this.closed, ms, 'the daemon to close the connection');
  }

  close(): void {
    this.socket.destroy();
  }
}

function code(m: Msg): unknown {
  return (m.error as { code?: unknown } | undefined)?.code;
}

function message(m: Msg): string {
  return String((m.error as { message?: unknown } | undefined)?.message);
}

async function daemon(tt: HasTeardown, opts: DaemonOptions = {}): Promise<DaemonServer> {
  const d = await startDaemon(opts);
  tt.teardown(() => d.close());
  return d;
}

async function client(tt: HasTeardown, d: DaemonServer, extra: Partial<Parameters<typeof DaemonClient.connect>[0]> = {}): Promise<DaemonClient> {
  const c = await DaemonClient.connect({ host: '127.0.0.1', port: d.port, reconnect: false, token: null, ...extra });
  tt.teardown(() => c.close());
  return c;
}

/** The good client's routine: register, resolve, put, get. Returns how long it took. */
async function goodClientWork(c: DaemonClient, name: string): Promise<number> {
  const start = performance.now();
  const reg = await c.register({ name, endpoint: { host: '127.0.0.1', port: 4000 } });
  const rec = await c.resolve(reg.gid);
  if (rec.name !== name) throw new Error(`resolved ${rec.name}, expected ${name}`);
  await c.put(`k-${name}`, 'v');
  const v = await c.get(`k-${name}`, 1000);
  if (v !== 'v') throw new Error(`got ${v}`);
  return performance.now() - start;
}


t.test('the daemon binds to loopback unless told otherwise', async (tt) => {
  const d = await daemon(tt);
  tt.equal(d.host, '127.0.0.1');
  tt.equal(d.tokenRequired, false);
});

t.test('300 idle connections: a good client is served quickly, the idle ones are closed after the idle limit', async (tt) => {
  const idleTimeoutMs = 400;
  const d = await daemon(tt, { idleTimeoutMs });
  const idle = await Promise.all(Array.from({ length: 300 }, () => Raw.open(d.port)));
  tt.teardown(() => idle.forEach((r) => r.close()));
  await until(() => d.connectionCount === 300, 5000, 'the daemon to accept 300 connections');

  const c = await client(tt, d);
  const took = await goodClientWork(c, 'good');
  tt.ok(took < 1000, `register/resolve/put/get took ${took.toFixed(1)} ms with 300 idle connections open`);

  // Each idle connection is told why, then closed; the good one (it made requests) stays.
  const lasts = await Promise.all(idle.map(async (r) => {
    const m = await r.next(idleTimeoutMs + 5000);
    await r.waitClosed();
    return m;
  }));
  tt.ok(lasts.every((m) => m.id === null && m.ok === false && code(m) === 'ETIMEDOUT'), 'every idle connection got ETIMEDOUT with id null');
  tt.match(message(lasts[0]), /idleTimeoutMs=400/, 'the message names the limit');
  tt.equal(d.stats.idleConnectionsClosed, 300);
  tt.equal(d.connectionCount, 1);
  tt.ok(c.connected, 'the good client is still connected');
  await c.put('after', 'x');
  tt.equal(await c.get('after'), 'x');
});

t.test('a connection sending only garbage is still closed as idle', async (tt) => {
  const d = await daemon(tt, { idleTimeoutMs: 200 });
  const r = await Raw.open(d.port);
  tt.teardown(() => r.close());
  tt.equal(code(await r.call({ id: 1, op: 'nope' })), 'ENOSYS');
  const last = await r.next(5000);
  tt.equal(code(last), 'ETIMEDOUT');
  await r.waitClosed();
});

t.test('a get waiting longer than the idle limit is not cut short', async (tt) => {
  const d = await daemon(tt, { idleTimeoutMs: 200 });
  const getter = await Raw.open(d.port);
  tt.teardown(() => getter.close());
  getter.socket.write(JSON.stringify({ id: 1, op: 'get', key: 'late', timeoutMs: 10000 }) + '\n');
  await until(() => d.stats.waitsOpen === 1, 5000, 'the get to wait');
  // Opened after the getter, so once it is closed for idling the getter's deadline has passed too.
  const witness = await Raw.open(d.port);
  tt.teardown(() => witness.close());
  tt.equal(code(await witness.next()), 'ETIMEDOUT');
  await witness.waitClosed();
  const putter = await Raw.open(d.port);
  tt.teardown(() => putter.close());
  tt.equal((await putter.call({ id: 1, op: 'put', key: 'late', value: 'here' })).ok, true);
  const got = await getter.next();
  tt.same({ id: got.id, ok: got.ok, value: got.value }, { id: 1, ok: true, value: 'here' });
});

t.test('the connection limit answers EMFILE and closes; a slot freed is usable again', async (tt) => {
  const d = await daemon(tt, { maxConnections: 5 });
  const held = await Promise.all(Array.from({ length: 5 }, () => Raw.open(d.port)));
  tt.teardown(() => held.forEach((r) => r.close()));
  await until(() => d.connectionCount === 5, 5000, 'five connections accepted');

  const extra = await Raw.open(d.port);
  const m = await extra.next();
  tt.same({ id: m.id, ok: m.ok, code: code(m) }, { id: null, ok: false, code: 'EMFILE' });
  tt.match(message(m), /maxConnections=5/, 'the message names the limit');
  await extra.waitClosed();
  tt.equal(d.stats.connectionsRefused, 1);

  // DaemonClient surfaces the daemon's code, not a bare "connection lost".
  const c = await DaemonClient.connect({ host: '127.0.0.1', port: d.port, reconnect: false, token: null });
  tt.teardown(() => c.close());
  await tt.rejects(c.list(), { code: 'EMFILE' });

  // The held connections are still served, and a freed slot takes a new connection.
  tt.equal((await held[0].call({ id: 1, op: 'list' })).ok, true);
  held[4].close();
  await until(() => d.connectionCount === 4, 5000, 'the daemon to notice a closed connection');
  const again = await Raw.open(d.port);
  tt.teardown(() => again.close());
  tt.equal((await again.call({ id: 1, op: 'list' })).ok, true);
});

t.test('registering a thousand names works up to maxDevices, then ENOSPC; known names still register', async (tt) => {
  const d = await daemon(tt, { maxDevices: 1000 });
  const r = await Raw.open(d.port);
  tt.teardown(() => r.close());
  const endpoint = { host: '127.0.0.1', port: 4000 };
  let id = 1;
  let okCount = 0;
  for (let i = 0; i < 1000; i++) {
    const reg = await r.call({ id: id++, op: 'register', name: `dev${i}`, endpoint });
    if (reg.ok === true) okCount++;
    else tt.fail(`register dev${i}: ${JSON.stringify(reg)}`);
    await r.call({ id: id++, op: 'unregister' });
  }
  tt.equal(okCount, 1000, 'a thousand names leased');
  const over = await r.call({ id: id++, op: 'register', name: 'dev1000', endpoint });
  tt.equal(code(over), 'ENOSPC');
  tt.match(message(over), /maxDevices=1000/, 'the message names the limit');
  const known = await r.call({ id: id++, op: 'register', name: 'dev7', endpoint });
  tt.equal(known.ok, true, 'a name already leased still registers');
  // The connection is unharmed and so is the daemon.
  tt.equal(((await r.call({ id: id++, op: 'list' })).devices as unknown[]).length, 1000);
});

t.test('a request dribbled one byte at a time completes, and others are served meanwhile', async (tt) => {
  const d = await daemon(tt);
  const slow = await Raw.open(d.port);
  tt.teardown(() => slow.close());
  const line = Buffer.from(JSON.stringify({ id: 42, op: 'put', key: 'dribbled', value: 'one byte at a time' }) + '\n');
  const writeByte = (i: number): Promise<void> =>
    new Promise((resolve, reject) => slow.socket.write(line.subarray(i, i + 1), (err) => (err ? reject(err) : resolve())));
  const half = line.length >> 1;
  for (let i = 0; i < half; i++) {
    await writeByte(i);
    await new Promise((r) => setImmediate(r));
  }
  // The daemon is holding half a line from the slow client; a good client is not held up.
  const c = await client(tt, d);
  const took = await goodClientWork(c, 'good');
  tt.ok(took < 1000, `the good client took ${took.toFixed(1)} ms while a line was half sent`);
  for (let i = half; i < line.length; i++) {
    await writeByte(i);
    await new Promise((r) => setImmediate(r));
  }
  const reply = await slow.next();
  tt.same({ id: reply.id, ok: reply.ok }, { id: 42, ok: true });
  tt.equal(await c.get('dribbled'), 'one byte at a time');
});

t.test('token: hello with the right token is required first', async (tt) => {
  const token = 'correct horse battery staple';
  const d = await daemon(tt, { token });
  tt.equal(d.tokenRequired, true);

  await tt.test('no hello: EACCES, and the connection is closed after three failures', async (t2) => {
    const r = await Raw.open(d.port);
    t2.teardown(() => r.close());
    const a = await r.call({ id: 1, op: 'list' });
    t2.same({ id: a.id, code: code(a) }, { id: 1, code: 'EACCES' });
    t2.match(message(a), /hello/, 'the message says what to do');
    t2.equal(code(await r.call({ id: 2, op: 'hello' })), 'EACCES', 'hello without a token');
    t2.equal(code(await r.call({ id: 3, op: 'register', name: 'x', endpoint: { host: '127.0.0.1', port: 1 } })), 'EACCES');
    await r.waitClosed();
  });

  await tt.test('wrong token: EACCES', async (t2) => {
    const r = await Raw.open(d.port);
    t2.teardown(() => r.close());
    t2.equal(code(await r.call({ id: 1, op: 'hello', token: 'wrong' })), 'EACCES');
    t2.equal(code(await r.call({ id: 2, op: 'hello', token: token + 'x' })), 'EACCES', 'a longer token');
    t2.equal(code(await r.call({ id: 3, op: 'hello', token: token.slice(0, 5) })), 'EACCES', 'a prefix');
    await r.waitClosed();
  });

  await tt.test('garbage before hello counts as a failure', async (t2) => {
    const r = await Raw.open(d.port);
    t2.teardown(() => r.close());
    r.socket.write('not json\n{"id":1}\n[]\n');
    t2.equal(code(await r.next()), 'EBADMSG');
    t2.equal(code(await r.next()), 'EINVAL');
    t2.equal(code(await r.next()), 'EINVAL');
    await r.waitClosed();
  });

  await tt.test('right token: served', async (t2) => {
    const r = await Raw.open(d.port);
    t2.teardown(() => r.close());
    const h = await r.call({ id: 1, op: 'hello', token });
    t2.same({ id: h.id, ok: h.ok, tokenRequired: h.tokenRequired }, { id: 1, ok: true, tokenRequired: true });
    t2.equal((await r.call({ id: 2, op: 'list' })).ok, true);
    t2.equal((await r.call({ id: 3, op: 'hello', token: 'anything' })).ok, true, 'a later hello is harmless');
  });

  await tt.test('DaemonClient: token option, wrong token, none, and EFA_EMU_TOKEN', async (t2) => {
    const good = await client(t2, d, { token });
    t2.equal(await goodClientWork(good, 'tok1').then(() => 'ok'), 'ok');

    await t2.rejects(DaemonClient.connect({ host: '127.0.0.1', port: d.port, reconnect: false, token: 'wrong' }), { code: 'EACCES' });

    const none = await client(t2, d, { token: null });
    await t2.rejects(none.list(), { code: 'EACCES' });

    const saved = process.env.EFA_EMU_TOKEN;
    process.env.EFA_EMU_TOKEN = token;
    try {
      const fromEnv = await DaemonClient.connect({ host: '127.0.0.1', port: d.port, reconnect: false });
      t2.teardown(() => fromEnv.close());
      t2.equal((await fromEnv.list()).fabricId, d.fabricId, 'the token came from EFA_EMU_TOKEN');
    } finally {
      if (saved === undefined) delete process.env.EFA_EMU_TOKEN;
      else process.env.EFA_EMU_TOKEN = saved;
    }
  });
});

t.test('DaemonClient sends the token again after reconnecting', async (tt) => {
  const token = 's3cret';
  const first = await startDaemon({ token });
  const port = first.port;
  const c = await DaemonClient.connect({ host: '127.0.0.1', port, token, heartbeatMs: 100 });
  tt.teardown(() => c.close());
  await c.register({ name: 'roamer', endpoint: { host: '127.0.0.1', port: 4000 } });
  const disconnected = once(c, 'disconnected');
  await first.close();
  await within(disconnected, 5000, 'disconnected');

  const second = await startDaemon({ token, port });
  tt.teardown(() => second.close());
  await within(once(c, 'reconnected'), 10000, 'reconnected');
  tt.equal(second.stats.authFailures, 0, 'no request reached the new daemon without the token');
  const list = await c.list();
  tt.same(list.devices.map((x) => [x.name, x.up]), [['roamer', true]]);
});

t.test('a token-less daemon accepts hello with any token, so clients may always send one', async (tt) => {
  const d = await daemon(tt);
  const c = await client(tt, d, { token: 'unneeded' });
  tt.equal((await c.list()).devices.length, 0);
});

t.test('limit options are checked', async (tt) => {
  await tt.rejects(startDaemon({ maxConnections: 0 }), { code: 'EINVAL' });
  await tt.rejects(startDaemon({ maxDevices: 70000 }), { code: 'EINVAL' });
  await tt.rejects(startDaemon({ idleTimeoutMs: -1 }), { code: 'EINVAL' });
  await tt.rejects(startDaemon({ token: '' }), { code: 'EINVAL' });
});
