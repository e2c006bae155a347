// The daemon's wire protocol from the outside: framing, bad input on raw sockets, and the
// guarantee that no bad request takes the connection or the daemon down.
import t from 'tap';
import * as net from 'node:net';
import { once } from 'node:events';
import { LineSplitter, encodeLine, type LineSink } from '../src/control/framing';
import { startDaemon, type DaemonServer } from '../src/control/server';
import { parseDaemonAddress } from '../src/control/client';
import { MAX_LINE_BYTES, PROTOCOL, ownField } from '../src/control/protocol';

/** Messages in arrival order, handed to waiters as they come. */
class Inbox {
  private readonly queue: Record<string, unknown>[] = [];
  private readonly waiting: ((m: Record<string, unknown>) => void)[] = [];

  push(m: Record<string, unknown>): void {
    const w = this.waiting.shift();
    if (w) w(m);
    else this.queue.push(m);
  }

  next(): Promise<Record<string, unknown>> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve) => this.waiting.push(resolve));
  }
}

/** True once `socket` closes, false if it is still open after `ms`. */
function closedWithin(socket: net.Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

/** A raw protocol connection: send lines, await the next reply or the next pushed event. */
class Raw {
  readonly socket: net.Socket;
  private readonly replies = new Inbox();
  private readonly events = new Inbox();
  private buf = '';

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(this.buf.slice(0, nl)) as Record<string, unknown>;
        this.buf = this.buf.slice(nl + 1);
        (typeof m.event === 'string' ? this.events : this.replies).push(m);
      }
    });
  }

  static async open(port: number): Promise<Raw> {
    const s = net.createConnection({ host: '127.0.0.1', port });
    await once(s, 'connect');
    return new Raw(s);
  }

  write(text: string | Buffer): void {
    this.socket.write(text);
  }

  next(): Promise<Record<string, unknown>> {
    return this.replies.next();
  }

  nextEvent(): Promise<Record<string, unknown>> {
    return this.events.next();
  }

  async call(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    this.write(JSON.stringify(req) + '\n');
    return this.next();
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The part of a tap test the helpers need: resources register their own teardown. */
interface HasTeardown {
  teardown(fn: () => unknown): void;
}

async function daemon(t: HasTeardown): Promise<DaemonServer> {
  const d = await startDaemon({ heartbeatTimeoutMs: 5000 });
  t.teardown(() => d.close());
  return d;
}

async function raw(t: HasTeardown, d: DaemonServer): Promise<Raw> {
  const r = await Raw.open(d.port);
  t.teardown(() => r.close());
  return r;
}


/** A sink recording what a splitter delivers. */
function collect(): { sink: LineSink; lines: string[]; oversize: number; bad: number } {
  const out = { lines: [] as string[], oversize: 0, bad: 0, sink: undefined as unknown as LineSink };
  out.sink = {
    line: (s) => out.lines.push(s),
    oversize: () => out.oversize++,
    badEncoding: () => out.bad++,
  };
  return out;
}

t.test('protocol constants', async (t) => {
  t.equal(PROTOCOL.MAX_LINE_BYTES, 65536);
  t.equal(PROTOCOL.DEFAULT_DAEMON_PORT, 18515);
  t.equal(PROTOCOL.DEFAULT_HEARTBEAT_MS, 1000);
  t.equal(PROTOCOL.DEFAULT_HEARTBEAT_TIMEOUT_MS, 3000);
  t.ok(Object.isFrozen(PROTOCOL));
});

t.test('ownField never answers from Object.prototype', async (t) => {
  const o = JSON.parse('{"a":1,"__proto__":{"x":1}}') as object;
  t.equal(ownField(o, 'a'), 1);
  t.equal(ownField(o, 'constructor'), undefined);
  t.equal(ownField(o, 'toString'), undefined);
  t.same(ownField(o, '__proto__'), { x: 1 });
});

t.test('line splitter', async (t) => {
  t.test('splits lines across chunk boundaries', async (t) => {
    const c = collect();
    const s = new LineSplitter(100, c.sink);
    s.push(Buffer.from('{"a":'));
    s.push(Buffer.from('1}\n{"b":2}\n{"c"'));
    s.push(Buffer.from(':3}\r\n\n   \n'));
    t.same(c.lines, ['{"a":1}', '{"b":2}', '{"c":3}']);
    t.equal(s.bufferedBytes, 0);
  });

  t.test('a line of exactly the limit passes, one byte more does not', async (t) => {
    const c = collect();
    const s = new LineSplitter(10, c.sink);
    s.push(Buffer.from('0123456789\n01234567890\nok\n'));
    t.same(c.lines, ['0123456789', 'ok']);
    t.equal(c.oversize, 1);
  });

  t.test('an oversize line is reported once and discarded without buffering', async (t) => {
    const c = collect();
    const s = new LineSplitter(16, c.sink);
    s.push(Buffer.from('x'.repeat(10)));
    for (let i = 0; i < 100; i++) {
      s.push(Buffer.alloc(1000, 0x79));
      t.ok(s.bufferedBytes <= 16, 'buffer stays bounded');
    }
    t.equal(c.oversize, 1, 'reported as soon as the limit is crossed, once');
    t.ok(s.isDiscarding);
    s.push(Buffer.from('yyy\nnext\n'));
    t.same(c.lines, ['next']);
    t.notOk(s.isDiscarding);
  });

  t.test('invalid UTF-8 is reported, not replaced', async (t) => {
    const c = collect();
    const s = new LineSplitter(100, c.sink);
    s.push(Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a]));
    s.push(Buffer.from('"é"\n'));
    t.equal(c.bad, 1);
    t.same(c.lines, ['"é"']);
  });

  t.test('stop ignores the rest', async (t) => {
    const lines: string[] = [];
    const s: LineSplitter = new LineSplitter(100, {
      line: (x) => {
        lines.push(x);
        s.stop();
      },
      oversize: () => undefined,
      badEncoding: () => undefined,
    });
    s.push(Buffer.from('a\nb\nc\n'));
    t.same(lines, ['a']);
  });

  t.test('rejects a bad limit', async (t) => {
    t.throws(() => new LineSplitter(0, collect().sink));
  });

  t.test('encodeLine keeps a message on one line', async (t) => {
    const line = encodeLine({ v: 'a\nb' });
    t.equal(line.indexOf('\n'), line.length - 1);
    t.same(JSON.parse(line), { v: 'a\nb' });
  });
});

t.test('parseDaemonAddress', async (t) => {
  t.same(parseDaemonAddress('10.0.0.5:18515'), { host: '10.0.0.5', port: 18515 });
  t.same(parseDaemonAddress('localhost:1'), { host: 'localhost', port: 1 });
  t.same(parseDaemonAddress(':4000'), { host: '127.0.0.1', port: 4000 });
  t.same(parseDaemonAddress('4000'), { host: '127.0.0.1', port: 4000 });
  t.same(parseDaemonAddress(' [::1]:65535 '), { host: '::1', port: 65535 });
  for (const bad of ['', ':', 'host:', 'host:0', 'host:65536', 'host:12x', '::1:80', '[::1]', '[]:80', 'a b:80', '-1', '1e3']) {
    t.throws(() => parseDaemonAddress(bad), { code: 'EINVAL' }, `rejects ${JSON.stringify(bad)}`);
  }
});

t.test('raw socket: bad requests get coded errors and the connection lives on', async (t) => {
  const d = await daemon(t);
  const r = await raw(t, d);

  t.test('malformed JSON -> EBADMSG with id null, then a good request works', async (t) => {
    r.write('{"id": 1, "op": \n');
    const e = await r.next();
    t.match(e, { id: null, ok: false, error: { code: 'EBADMSG' } });
    const ok = await r.call({ id: 2, op: 'list' });
    t.match(ok, { id: 2, ok: true, fabricId: d.fabricId, devices: [] });
  });

  t.test('unknown op -> ENOSYS, including prototype names', async (t) => {
    for (const op of ['frobnicate', 'constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const e = await r.call({ id: 3, op });
      t.match(e, { id: 3, ok: false, error: { code: 'ENOSYS' } }, op);
    }
  });

  t.test('not an object / missing op / bad id -> EINVAL naming the field', async (t) => {
    t.match(await r.call([1, 2] as unknown as Record<string, unknown>), { id: null, error: { code: 'EINVAL' } });
    r.write('42\n');
    t.match(await r.next(), { id: null, error: { code: 'EINVAL' } });
    r.write('null\n');
    t.match(await r.next(), { id: null, error: { code: 'EINVAL' } });
    t.match(await r.call({ op: 'list' }), { id: null, error: { code: 'EINVAL', message: /"id"/ } });
    t.match(await r.call({ id: 'x', op: 'list' }), { id: null, error: { code: 'EINVAL', message: /"id"/ } });
    t.match(await r.call({ id: 4 }), { id: 4, error: { code: 'EINVAL', message: /"op"/ } });
    t.match(await r.call({ id: 5, op: 7 }), { id: 5, error: { code: 'EINVAL', message: /"op"/ } });
  });

  t.test('bad argument types -> EINVAL naming the field', async (t) => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ op: 'register', endpoint: { host: 'h', port: 1 } }, /"name"/],
      [{ op: 'register', name: 'a b', endpoint: { host: 'h', port: 1 } }, /"name"/],
      [{ op: 'register', name: 'x'.repeat(65), endpoint: { host: 'h', port: 1 } }, /"name"/],
      [{ op: 'register', name: 'ok' }, /"endpoint"/],
      [{ op: 'register', name: 'ok', endpoint: { host: 'h', port: 0 } }, /"endpoint.port"/],
      [{ op: 'register', name: 'ok', endpoint: { host: 'h', port: 1.5 } }, /"endpoint.port"/],
      [{ op: 'register', name: 'ok', endpoint: { host: '', port: 1 } }, /"endpoint.host"/],
      [{ op: 'register', name: 'ok', endpoint: { host: 'h', port: 1 }, rank: 'zero' }, /"rank"/],
      [{ op: 'register', name: 'ok', endpoint: { host: 'h', port: 1 }, rank: -1 }, /"rank"/],
      [{ op: 'resolve' }, /"gid"/],
      [{ op: 'resolve', gid: 'not-a-gid' }, /gid/],
      [{ op: 'resolve', gid: 'fe80::1:2:3:4:5:6:7:8' }, /gid/],
      [{ op: 'put', key: 'k' }, /"value"/],
      [{ op: 'put', key: '', value: 'v' }, /"key"/],
      [{ op: 'put', key: 'k'.repeat(257), value: 'v' }, /"key"/],
      [{ op: 'get', key: 'k', timeoutMs: -1 }, /"timeoutMs"/],
      [{ op: 'get', key: 'k', timeoutMs: 600001 }, /"timeoutMs"/],
      [{ op: 'get', key: 'k', timeoutMs: 'soon' }, /"timeoutMs"/],
      [{ op: 'barrier', name: 'b', n: 0 }, /"n"/],
      [{ op: 'barrier', name: 'b', n: 2.5 }, /"n"/],
      [{ op: 'barrier', n: 2 }, /"name"/],
      [{ op: 'heartbeat', stats: [1] }, /"stats"/],
      [{ op: 'heartbeat', stats: { a: 'x' } }, /"stats.a"/],
    ];
    let id = 100;
    for (const [req, field] of cases) {
      const e = await r.call({ id: ++id, ...req });
      t.match(e, { id, ok: false, error: { code: 'EINVAL', message: field } }, JSON.stringify(req).slice(0, 80));
    }
  });

  t.test('a line over 64 KiB -> EMSGSIZE, rest discarded, connection still works', async (t) => {
    // Sent in pieces, as a slow or hostile peer would; the reply comes before the newline.
    const piece = 'x'.repeat(16 * 1024);
    r.write('{"id": 9, "op": "put", "key": "k", "value": "');
    for (let i = 0; i < 5; i++) r.write(piece);
    const e = await r.next();
    t.match(e, { id: null, ok: false, error: { code: 'EMSGSIZE' } });
    for (let i = 0; i < 20; i++) r.write(piece);
    r.write('"}\n');
    const ok = await r.call({ id: 10, op: 'list' });
    t.match(ok, { id: 10, ok: true });
    // And one oversize line that arrives in a single write, followed by a good one in the same write.
    r.write('y'.repeat(MAX_LINE_BYTES + 1) + '\n' + JSON.stringify({ id: 11, op: 'list' }) + '\n');
    t.match(await r.next(), { id: null, error: { code: 'EMSGSIZE' } });
    t.match(await r.next(), { id: 11, ok: true });
  });

  t.test('invalid UTF-8 -> EBADMSG', async (t) => {
    r.write(Buffer.from([0x7b, 0xc3, 0x28, 0x7d, 0x0a]));
    t.match(await r.next(), { id: null, error: { code: 'EBADMSG' } });
  });

  t.test('bad requests are counted by code', async (t) => {
    const s = d.stats.toJSON() as { badRequests: Record<string, number>; badRequestsTotal: number };
    t.equal(s.badRequests.EBADMSG, 2);
    t.equal(s.badRequests.ENOSYS, 5);
    t.equal(s.badRequests.EMSGSIZE, 2);
    t.ok(s.badRequests.EINVAL >= 30);
    t.equal(s.badRequestsTotal, Object.values(s.badRequests).reduce((a, b) => a + b, 0));
    t.equal(d.stats.connectionsOpen, 1);
  });
});

t.test('raw socket: registration rules', async (t) => {
  const d = await daemon(t);
  const a = await raw(t, d);
  const b = await raw(t, d);

  t.test('heartbeat before register -> ENODEV', async (t) => {
    t.match(await a.call({ id: 1, op: 'heartbeat' }), { id: 1, ok: false, error: { code: 'ENODEV' } });
  });

  t.test('one device per connection -> EALREADY; a name up elsewhere -> EADDRINUSE', async (t) => {
    const r1 = await a.call({ id: 2, op: 'register', name: 'dev0', endpoint: { host: '127.0.0.1', port: 5000 }, rank: 0 });
    t.match(r1, { id: 2, ok: true, ahn: 1, deviceIndex: 1, fabricId: d.fabricId });
    t.match(await a.call({ id: 3, op: 'register', name: 'dev1', endpoint: { host: '127.0.0.1', port: 5001 } }), {
      error: { code: 'EALREADY' },
    });
    t.match(await b.call({ id: 4, op: 'register', name: 'dev0', endpoint: { host: '127.0.0.1', port: 5002 } }), {
      error: { code: 'EADDRINUSE' },
    });
    t.match(await a.call({ id: 5, op: 'heartbeat', stats: { tx: 1 } }), { id: 5, ok: true });
  });

  t.test('prototype-looking names and counters are ordinary data', async (t) => {
    const r = await b.call({ id: 6, op: 'register', name: '__proto__', endpoint: { host: '127.0.0.1', port: 5003 } });
    t.match(r, { ok: true, ahn: 2 });
    t.match(await b.call({ id: 7, op: 'heartbeat', stats: JSON.parse('{"__proto__": 5, "constructor": 6}') }), { ok: true });
    const res = await a.call({ id: 8, op: 'resolve', gid: r.gid });
    t.match(res, { ok: true, name: '__proto__', ahn: 2, up: true });
    const stats = res.stats as Record<string, number>;
    t.ok(Object.prototype.hasOwnProperty.call(stats, '__proto__'));
    t.equal(stats.constructor, 6);
    t.match(await a.call({ id: 9, op: 'put', key: '__proto__', value: 'v' }), { ok: true });
    t.match(await a.call({ id: 10, op: 'get', key: '__proto__' }), { ok: true, value: 'v' });
    t.match(await a.call({ id: 11, op: 'get', key: 'constructor', timeoutMs: 0 }), { error: { code: 'ETIMEDOUT' } });
  });

  t.test('resolve of an unknown GID -> ENOENT', async (t) => {
    t.match(await a.call({ id: 12, op: 'resolve', gid: 'fe80::1:2:3:4' }), { ok: false, error: { code: 'ENOENT' } });
  });

  t.test('unregister announces peer_down; re-register announces peer_up', async (t) => {
    t.match(await b.call({ id: 13, op: 'unregister' }), { id: 13, ok: true });
    t.match(await a.nextEvent(), { event: 'peer_up', name: '__proto__', endpoint: { port: 5003 } }, 'from the first register');
    t.match(await a.nextEvent(), { event: 'peer_down', name: '__proto__' });
    t.match(await b.call({ id: 14, op: 'unregister' }), { id: 14, ok: true }, 'unregister twice is harmless');
    t.match(await b.call({ id: 15, op: 'register', name: '__proto__', endpoint: { host: '127.0.0.1', port: 5004 } }), { ok: true, ahn: 2 });
    t.match(await a.nextEvent(), { event: 'peer_up', name: '__proto__', endpoint: { host: '127.0.0.1', port: 5004 } });
  });
});

t.test('the daemon binds loopback by default and close() is idempotent', async (t) => {
  const d = await startDaemon();
  t.equal(d.host, '127.0.0.1');
  t.ok(d.port > 0);
  const r = await Raw.open(d.port);
  const p1 = d.close();
  t.equal(d.close(), p1, 'same promise');
  await p1;
  // Bounded: a connection close() left open would otherwise hang here until tap's timeout.
  const ended = r.socket.destroyed || (await closedWithin(r.socket, 5000));
  t.ok(ended, 'close() ended the open connection');
});

t.test('startDaemon validates options and reports a busy port', async (t) => {
  await t.rejects(startDaemon({ port: 70000 }), { code: 'EINVAL', message: /port/ });
  await t.rejects(startDaemon({ heartbeatTimeoutMs: 0 }), { code: 'EINVAL', message: /heartbeatTimeoutMs/ });
  const d = await daemon(t);
  await t.rejects(startDaemon({ port: d.port }), { code: 'EADDRINUSE', message: new RegExp(String(d.port)) });
});
