// The control plane's deadlines, driven by a ManualClock: heartbeat expiry, idle connections,
// get/barrier waits, client request timeouts, client heartbeats and the reconnect back-off.
// Time only moves when a test advances it, so each deadline is checked one millisecond
// before it and at it. Sockets are real; every wait is for a line, an event or a close.
import t from 'tap';
import * as net from 'node:net';
import { once } from 'node:events';
import { DaemonError } from '../src/common/errors';
import { DaemonClient, type DaemonClientOptions } from '../src/control/client';
import type { Clock, ClockTimer } from '../src/control/clock';
import { ManualClock, type ManualTimerInfo } from '../src/control/manual-clock';
import { startDaemon, type DaemonOptions, type DaemonServer } from '../src/control/server';

type Msg = Record<string, unknown>;

interface HasTeardown {
  teardown(fn: () => unknown): void;
}

/**
 * Rejects if `p` does not settle within `ms` of real time. A guard so a broken deadline
 * fails with a message naming what was awaited, rather than at tap's own timeout.
 */
function within<T>(p: Promise<T>, what: string, ms = 10000): Promise<T> {
  let timer: NodeJS.Timeout;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms of real time`)), ms);
  });
  return Promise.race([p, guard]).finally(() => clearTimeout(timer));
}

/** Lets promise continuations and pending I/O callbacks run; time does not move. */
function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A raw protocol connection: replies and events in separate queues, and its close. */
class Raw {
  readonly socket: net.Socket;
  readonly closed: Promise<void>;
  private isClosed = false;
  private nextId = 1;
  private readonly replies: Msg[] = [];
  private readonly events: Msg[] = [];
  private readonly replyWaiters: ((m: Msg) => void)[] = [];
  private readonly eventWaiters: ((m: Msg) => void)[] = [];
  private buf = '';

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    void this.closed.then(() => (this.isClosed = true));
    socket.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(this.buf.slice(0, nl)) as Msg;
        this.buf = this.buf.slice(nl + 1);
        const isEvent = typeof m.event === 'string';
        const w = (isEvent ? this.eventWaiters : this.replyWaiters).shift();
        if (w) w(m);
        else (isEvent ? this.events : this.replies).push(m);
      }
    });
  }

  static async open(t: HasTeardown, port: number): Promise<Raw> {
    const socket = net.createConnection({ host: '127.0.0.1', port });
    t.teardown(() => socket.destroy());
    const raw = new Raw(socket);
    await within(once(socket, 'connect'), 'TCP connect');
    return raw;
  }

  /** True once the daemon closed the connection (as seen so far). */
  get done(): boolean {
    return this.isClosed;
  }

  next(): Promise<Msg> {
    const m = this.replies.shift();
    return m ? Promise.resolve(m) : within(new Promise((resolve) => this.replyWaiters.push(resolve)), 'reply line');
  }

  nextEvent(): Promise<Msg> {
    const m = this.events.shift();
    return m ? Promise.resolve(m) : within(new Promise((resolve) => this.eventWaiters.push(resolve)), 'event line');
  }

  /** Events received so far, taken out of the queue. */
  takeEvents(): Msg[] {
    return this.events.splice(0);
  }

  /** Sends a request (an id is added) without waiting; returns the id. */
  send(req: Msg): number {
    const id = this.nextId++;
    this.socket.write(JSON.stringify({ id, ...req }) + '\n');
    return id;
  }

  /** Sends a request and returns the next reply, which must be its own. */
  async call(req: Msg): Promise<Msg> {
    const id = this.send(req);
    const m = await this.next();
    if (m.id !== id) throw new Error(`expected the reply to ${id}, got ${JSON.stringify(m)}`);
    return m;
  }

  /**
   * A line that is not JSON: answered with EBADMSG but not an accepted request, so it proves
   * the connection is open and served without resetting its idle timer.
   */
  async ping(): Promise<Msg> {
    this.socket.write('not json\n');
    return this.next();
  }

  waitClosed(): Promise<void> {
    return within(this.closed, 'close by the daemon');
  }
}

function code(m: Msg): unknown {
  return (m.error as { code?: unknown } | undefined)?.code;
}

async function daemon(t: HasTeardown, clock: Clock, opts: DaemonOptions = {}): Promise<DaemonServer> {
  const d = await startDaemon({ clock, ...opts });
  t.teardown(() => d.close());
  return d;
}

const ep = (port: number) => ({ host: '127.0.0.1', port });

/** The `list` entry of `name`, asked over `raw`. */
async function listed(raw: Raw, name: string): Promise<Msg | undefined> {
  const r = await raw.call({ op: 'list' });
  return (r.devices as Msg[]).find((d) => d.name === name);
}

t.test('a silent device is declared down by the first sweep after its deadline, not before', async (t) => {
  const clock = new ManualClock();
  // The sweep runs every heartbeatTimeoutMs / 4 = 250 ms of clock time.
  const d = await daemon(t, clock, { heartbeatTimeoutMs: 1000 });
  const dev = await Raw.open(t, d.port);
  const watcher = await Raw.open(t, d.port);
  t.match(await watcher.call({ op: 'register', name: 'watcher', endpoint: ep(1) }), { ok: true });
  t.match(await dev.call({ op: 'register', name: 'dev', endpoint: ep(2) }), { ok: true });
  t.match(await watcher.nextEvent(), { event: 'peer_up', name: 'dev' });

  clock.advanceTo(500);
  t.match(await dev.call({ op: 'heartbeat' }), { ok: true });
  t.match(await watcher.call({ op: 'heartbeat' }), { ok: true });
  clock.advanceTo(1000);
  t.match(await watcher.call({ op: 'heartbeat' }), { ok: true }, 'the watcher stays up throughout');

  // Deadline of dev: 500 + 1000. The sweep at 1500 sees exactly 1000 ms of silence: not late yet.
  clock.advanceTo(1500);
  t.match(await listed(watcher, 'dev'), { up: true, lastSeenMsAgo: 1000 }, 'up at its deadline');
  clock.advanceTo(1749);
  t.match(await listed(watcher, 'dev'), { up: true, lastSeenMsAgo: 1249 }, 'up until the next sweep');
  t.same(watcher.takeEvents(), [], 'no peer_down before the next sweep');
  t.equal(d.stats.heartbeatTimeouts, 0);

  clock.advanceTo(1750);
  t.match(await watcher.nextEvent(), { event: 'peer_down', name: 'dev' }, 'peers are told at the sweep after the deadline');
  t.match(await listed(watcher, 'dev'), { up: false, lastSeenMsAgo: 1250 });
  t.match(await listed(watcher, 'watcher'), { up: true }, 'a device that kept beating stays up');
  t.equal(d.stats.heartbeatTimeouts, 1);

  // Its connection is still open: a late heartbeat brings it back.
  t.match(await dev.call({ op: 'heartbeat' }), { ok: true });
  t.match(await watcher.nextEvent(), { event: 'peer_up', name: 'dev' });
  t.match(await listed(watcher, 'dev'), { up: true, lastSeenMsAgo: 0 });
});

t.test('a connection with no successful request is closed at the idle limit, not before', async (t) => {
  const clock = new ManualClock();
  const d = await daemon(t, clock, { idleTimeoutMs: 5000 });
  const early = await Raw.open(t, d.port);
  t.match(await early.ping(), { id: null, error: { code: 'EBADMSG' } }, 'accepted at 0');
  const established = await Raw.open(t, d.port);
  t.match(await established.call({ op: 'list' }), { ok: true }, 'a successful request at 0');
  clock.advanceTo(2000);
  const late = await Raw.open(t, d.port);
  t.match(await late.ping(), { error: { code: 'EBADMSG' } }, 'accepted at 2000');

  clock.advanceTo(4999);
  t.match(await early.ping(), { id: null, error: { code: 'EBADMSG' } }, 'still served 1 ms before the limit');
  t.equal(d.stats.idleConnectionsClosed, 0);

  clock.advanceTo(5000);
  const last = await early.next();
  t.match(last, { id: null, ok: false, error: { code: 'ETIMEDOUT', message: /idleTimeoutMs=5000/ } }, 'told why, with id null');
  await early.waitClosed();
  t.equal(d.stats.idleConnectionsClosed, 1);
  t.match(await late.ping(), { error: { code: 'EBADMSG' } }, 'a connection opened later has its own deadline');

  clock.advanceTo(6999);
  t.match(await late.ping(), { error: { code: 'EBADMSG' } });
  clock.advanceTo(7000);
  t.match(await late.next(), { id: null, error: { code: 'ETIMEDOUT' } });
  await late.waitClosed();

  clock.advance(600000);
  t.match(await established.call({ op: 'list' }), { ok: true }, 'an established connection is never closed for idling');
  t.notOk(established.done);
  t.equal(d.stats.idleConnectionsClosed, 2);
});

t.test('get and barrier waits time out at their timeoutMs, not before', async (t) => {
  const clock = new ManualClock();
  const d = await daemon(t, clock);
  const r = await Raw.open(t, d.port);
  const getId = r.send({ op: 'get', key: 'never', timeoutMs: 500 });
  const barrierId = r.send({ op: 'barrier', name: 'b', n: 2, timeoutMs: 300 });
  // A reply to a later request proves the two waits were taken and are still waiting.
  t.match(await r.call({ op: 'put', key: 'other', value: 'v' }), { ok: true });
  t.equal(d.stats.waitsOpen, 2);

  clock.advanceTo(299);
  t.match(await r.call({ op: 'put', key: 'other', value: 'v' }), { ok: true }, 'no wait ended 1 ms before the first deadline');
  clock.advanceTo(300);
  t.match(await r.next(), { id: barrierId, ok: false, error: { code: 'ETIMEDOUT', message: /2 callers did not arrive within 300 ms/ } });
  t.equal(d.stats.waitsOpen, 1);

  clock.advanceTo(499);
  t.match(await r.call({ op: 'put', key: 'other', value: 'v' }), { ok: true }, 'the get still waits 1 ms before its deadline');
  clock.advanceTo(500);
  t.match(await r.next(), { id: getId, ok: false, error: { code: 'ETIMEDOUT', message: /no value after 500 ms/ } });
  t.equal(d.stats.waitsOpen, 0);

  // The barrier left its round: a fresh pair meets.
  const other = await Raw.open(t, d.port);
  const first = r.send({ op: 'barrier', name: 'b', n: 2, timeoutMs: 300 });
  t.match(await other.call({ op: 'barrier', name: 'b', n: 2 }), { ok: true });
  t.match(await r.next(), { id: first, ok: true });
});

/**
 * A stand-in daemon that records every request and answers through `answer` (null: never).
 * It lets a client test decide which replies come, and when.
 */
class FakeDaemon {
  readonly server: net.Server;
  readonly requests: Msg[] = [];
  readonly sockets = new Set<net.Socket>();
  answer: (req: Msg) => Msg | null = () => ({});
  private held: { socket: net.Socket; req: Msg }[] = [];

  private constructor(server: net.Server) {
    this.server = server;
  }

  static async start(t: HasTeardown, port = 0): Promise<FakeDaemon> {
    const fake = new FakeDaemon(net.createServer((s) => fake.serve(s)));
    fake.server.listen(port, '127.0.0.1');
    await once(fake.server, 'listening');
    t.teardown(() => fake.stop());
    return fake;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /** The ops received so far, in order. */
  get ops(): unknown[] {
    return this.requests.map((r) => r.op);
  }

  /** Answers every request held back so far with ok. */
  release(): void {
    for (const { socket, req } of this.held.splice(0)) socket.write(JSON.stringify({ id: req.id, ok: true }) + '\n');
  }

  /** Drops every connection; with `refuse`, stops listening too. */
  async stop(refuse = true): Promise<void> {
    for (const s of this.sockets) s.destroy();
    if (refuse && this.server.listening) await new Promise((r) => this.server.close(r));
  }

  private serve(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.setEncoding('utf8');
    let buf = '';
    socket.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const req = JSON.parse(buf.slice(0, nl)) as Msg;
        buf = buf.slice(nl + 1);
        this.requests.push(req);
        const result = this.answer(req);
        if (result === null) this.held.push({ socket, req });
        else socket.write(JSON.stringify({ ...result, id: req.id, ok: true }) + '\n');
      }
    });
  }
}

async function client(t: HasTeardown, port: number, clock: Clock, opts: Partial<DaemonClientOptions> = {}): Promise<DaemonClient> {
  const c = await DaemonClient.connect({ host: '127.0.0.1', port, clock, reconnect: false, token: null, ...opts });
  t.teardown(() => c.close());
  return c;
}

/** Tracks whether a promise has settled, without leaving a rejection unhandled. */
function watch<T>(p: Promise<T>): { settled: () => boolean; result: Promise<T> } {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  return { settled: () => settled, result: p };
}

t.test('a client request with no reply rejects ETIMEDOUT at its timeout, not before', async (t) => {
  const clock = new ManualClock();
  const fake = await FakeDaemon.start(t);
  fake.answer = () => null;
  const c = await client(t, fake.port, clock, { requestTimeoutMs: 2000 });

  const list = watch(c.list());
  // get waits its own timeoutMs plus 5000 ms of slack, so the daemon's ETIMEDOUT wins.
  const get = watch(c.get('k', 1000));
  clock.advanceTo(1999);
  await turn();
  t.notOk(list.settled(), 'list still pending 1 ms before requestTimeoutMs');
  clock.advanceTo(2000);
  const err = await list.result.catch((e: unknown) => e);
  t.type(err, DaemonError);
  t.match(err, { name: 'DaemonError', code: 'ETIMEDOUT', message: /^list: no reply from the daemon at 127\.0\.0\.1:\d+ within 2000 ms$/ });
  t.notOk(get.settled(), 'the get has a longer budget');

  clock.advanceTo(5999);
  await turn();
  t.notOk(get.settled(), 'get still pending 1 ms before timeoutMs + 5000');
  clock.advanceTo(6000);
  await t.rejects(get.result, { code: 'ETIMEDOUT', message: /within 6000 ms/ });
  t.ok(c.connected, 'a timed-out request leaves the connection up');
  t.same(fake.ops, ['list', 'get']);
});

t.test('client heartbeats: one per period, the first one period after register, never two in flight', async (t) => {
  const clock = new ManualClock();
  const fake = await FakeDaemon.start(t);
  fake.answer = (req) => {
    if (req.op === 'register') return { gid: 'fe80::1', ahn: 1, fabricId: 1, deviceIndex: 1, heartbeatTimeoutMs: 3000 };
    if (req.op === 'heartbeat') return null;
    return {};
  };
  const c = await client(t, fake.port, clock, { heartbeatMs: 1000, requestTimeoutMs: 10000 });
  await c.register({ name: 'hb', endpoint: ep(1) });

  // A put is answered in order after anything the client sent before it: a round trip
  // through it shows whether a heartbeat went out.
  clock.advanceTo(999);
  await c.put('k', 'v');
  t.same(fake.ops, ['register', 'put'], 'no heartbeat 1 ms before the period');
  clock.advanceTo(1000);
  await c.put('k', 'v');
  t.same(fake.ops, ['register', 'put', 'heartbeat', 'put'], 'a heartbeat at the period');

  clock.advanceTo(3000);
  await c.put('k', 'v');
  t.same(fake.ops.filter((op) => op === 'heartbeat').length, 1, 'no second heartbeat while the first is unanswered');

  fake.release();
  await c.put('k', 'v');
  clock.advanceTo(3999);
  await c.put('k', 'v');
  t.same(fake.ops.filter((op) => op === 'heartbeat').length, 1, 'the schedule keeps its phase: nothing at 3999');
  clock.advanceTo(4000);
  await c.put('k', 'v');
  t.same(fake.ops.filter((op) => op === 'heartbeat').length, 2, 'the next period after the answer sends again');
});

/** Wraps a ManualClock to record the delay of every timer armed through it. */
function recording(clock: ManualClock): Clock & { delays: number[] } {
  const delays: number[] = [];
  return {
    delays,
    now: () => clock.now(),
    setTimeout: (fn: () => void, ms: number): ClockTimer => {
      delays.push(ms);
      return clock.setTimeout(fn, ms);
    },
    clearTimeout: (timer: ClockTimer) => clock.clearTimeout(timer),
  };
}

t.test('reconnect back-off: 100 ms doubling to 2 s, each attempt not a millisecond early; reset after a success', async (t) => {
  const clock = new ManualClock();
  const connectTimeoutMs = 7777;
  const fake = await FakeDaemon.start(t);
  const port = fake.port;
  const c = await client(t, port, recording(clock), { reconnect: true, connectTimeoutMs });
  const isBackoff = (timer: ManualTimerInfo): boolean => timer.ms !== connectTimeoutMs;

  const lost = once(c, 'disconnected');
  await fake.stop();
  await within(lost, 'disconnected event');
  t.notOk(c.connected);

  const seen: number[] = [];
  for (const delay of [100, 200, 400, 800, 1600, 2000, 2000]) {
    t.same(clock.timers(), [{ at: clock.now() + delay, ms: delay }], `only the back-off timer is armed: ${delay} ms`);
    seen.push(delay);
    clock.advance(delay - 1);
    t.same(clock.timers().map((x) => x.ms), [delay], `no attempt ${delay - 1} ms in`);
    const nextBackoff = clock.whenArmed(isBackoff);
    clock.advance(1);
    t.same(clock.timers().map((x) => x.ms), [connectTimeoutMs], `the attempt starts at ${delay} ms`);
    // The refusal arrives by I/O; the next back-off timer is armed then.
    await within(nextBackoff, 'the next back-off timer');
  }
  t.same(seen, [100, 200, 400, 800, 1600, 2000, 2000]);

  // The daemon is back: the next attempt succeeds and the back-off starts over.
  const again = await FakeDaemon.start(t, port);
  const reconnected = once(c, 'reconnected');
  clock.advance(2000);
  t.same(await within(reconnected, 'reconnected event'), [null], 'reconnected (no registration to renew)');
  t.ok(c.connected);
  const lostAgain = once(c, 'disconnected');
  await again.stop();
  await within(lostAgain, 'second disconnected event');
  t.same(clock.timers(), [{ at: clock.now() + 100, ms: 100 }], 'after a success the back-off starts at 100 ms again');
});

t.test('DaemonOptions.clock and DaemonClientOptions.clock are checked', async (t) => {
  await t.rejects(startDaemon({ clock: {} as Clock }), { code: 'EINVAL', message: /DaemonOptions\.clock/ });
  await t.rejects(DaemonClient.connect({ host: '127.0.0.1', port: 1, clock: { now: () => 0 } as unknown as Clock }), {
    code: 'EINVAL',
    message: /DaemonClientOptions\.clock/,
  });
});
