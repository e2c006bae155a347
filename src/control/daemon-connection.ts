/**
 * One client connection of the daemon: it splits the socket's bytes into request lines,
 * enforces the token (`hello` first) and the idle limit, dispatches each request to the
 * registry or the key/value store, and writes the replies, never buffering without bound.
 *
 * No input can make it throw: a malformed request gets an error reply with a stable code
 * and leaves the connection up; only the limits (idle, failed auth, unread replies) close it.
 */
import type * as net from 'node:net';
import { DaemonError, EfaError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { Clock, ClockTimer } from './clock';
import type { DaemonStats } from './daemon-stats';
import type { Device, DeviceOwner, DeviceRegistry } from './device-registry';
import { encodeLine, LineSplitter, type LineSink } from './framing';
import { DEFERRED, type KvStore, type Wait, type WaitOwner } from './kv-store';
import { MAX_AUTH_FAILURES, MAX_LINE_BYTES, formatAddress, ownField } from './protocol';
import { readBarrier, readGet, readPut, readRegister, readResolveGid, readStats } from './request-args';
import type { SocketCloser } from './socket-closer';
import type { TokenGate } from './token-gate';

/**
 * A connection whose unread replies pile up past this is dropped: a peer that sends
 * requests but never reads must not make the daemon buffer without bound.
 */
const MAX_PENDING_OUTPUT_BYTES = 16 * 1024 * 1024;

type HandlerResult = object | typeof DEFERRED | Promise<object | typeof DEFERRED>;

/** What a connection shares with the daemon that accepted it. */
export interface ConnectionContext {
  readonly clock: Clock;
  readonly stats: DaemonStats;
  readonly log: Logger;
  readonly registry: DeviceRegistry;
  readonly kv: KvStore;
  readonly tokens: TokenGate;
  readonly closer: SocketCloser;
  readonly idleTimeoutMs: number;
  /** Told once, when the connection is torn down, before its device is declared down. */
  forget(conn: DaemonConnection): void;
}

/** One client socket of the daemon. */
export class DaemonConnection implements LineSink, DeviceOwner, WaitOwner {
  readonly id: number;
  readonly socket: net.Socket;
  readonly remote: string;
  readonly waits = new Set<Wait>();
  device: Device | null = null;
  closed = false;
  /** True once a `hello` carried the right token (always true when the daemon has none). */
  private authenticated: boolean;
  /** EACCES replies sent so far. */
  private authFailures = 0;
  /** Closes the connection if it makes no successful request in time; null once it has. */
  private idleTimer: ClockTimer | null = null;
  private readonly splitter: LineSplitter;
  private readonly ctx: ConnectionContext;

  /** Starts serving `socket`: reading requests and timing the connection's idleness. */
  constructor(ctx: ConnectionContext, id: number, socket: net.Socket) {
    this.ctx = ctx;
    this.id = id;
    this.socket = socket;
    this.remote = formatAddress(socket.remoteAddress ?? '?', socket.remotePort ?? 0);
    this.splitter = new LineSplitter(MAX_LINE_BYTES, this);
    this.authenticated = !ctx.tokens.required;
    ctx.log.debug({ conn: id, remote: this.remote }, 'connection opened');
    socket.on('data', (chunk: Buffer) => this.splitter.push(chunk));
    socket.on('error', (err) => ctx.log.debug({ conn: id, err }, 'connection error'));
    socket.on('close', () => this.teardown(true));
    this.idleTimer = ctx.clock.setTimeout(() => {
      this.idleTimer = null;
      ctx.stats.idleConnectionsClosed++;
      this.closeWithError('ETIMEDOUT', `closing idle connection: no successful request within idleTimeoutMs=${ctx.idleTimeoutMs} ms`);
    }, ctx.idleTimeoutMs);
    this.idleTimer.unref();
  }

  // ---- LineSink ----

  line(text: string): void {
    this.onLine(text);
  }

  oversize(): void {
    this.badRequest(null, 'EMSGSIZE', `request line longer than ${MAX_LINE_BYTES} bytes; discarded up to the next newline`);
  }

  badEncoding(): void {
    this.badRequest(null, 'EBADMSG', 'request line is not valid UTF-8');
  }

  // ---- WaitOwner ----

  answer(requestId: number, result: object): void {
    this.markEstablished();
    this.send({ ...result, id: requestId, ok: true });
  }

  fail(requestId: number | null, err: unknown): void {
    let code: string;
    let message: string;
    if (err instanceof EfaError) {
      code = err.code;
      message = err.message;
    } else {
      // A bug in a handler: answer rather than crash, and make it visible in the log.
      this.ctx.log.error({ conn: this.id, err }, 'internal error while serving a request');
      code = 'EIO';
      message = `internal daemon error: ${(err as Error)?.message ?? String(err)}`;
    }
    this.ctx.stats.countError(code);
    this.send({ id: requestId, ok: false, error: { code, message } });
  }

  // ---- lifecycle ----

  /** Writes a message, dropping the connection if its peer lets replies pile up unread. */
  send(message: object): void {
    if (this.closed || this.socket.destroyed) return;
    this.socket.write(encodeLine(message));
    if (this.socket.writableLength > MAX_PENDING_OUTPUT_BYTES) {
      this.ctx.stats.slowConnectionsDropped++;
      this.ctx.log.warn({ conn: this.id, remote: this.remote }, 'dropping a connection that does not read its replies');
      this.socket.destroy();
    }
  }

  /**
   * Forgets the connection: its waits are dropped, its device goes down (announced to the
   * others unless `announce` is false). Leaves the socket to the caller.
   */
  teardown(announce: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.splitter.stop();
    this.clearIdleTimer();
    this.ctx.forget(this);
    this.ctx.kv.dropAll(this);
    this.ctx.registry.ownerGone(this, announce);
    this.ctx.log.debug({ conn: this.id }, 'connection closed');
  }

  /**
   * Sends a last error line (id null) and closes the connection. The socket is ended so the
   * line is delivered, and destroyed shortly after in case the peer never closes its side.
   */
  private closeWithError(code: string, message: string): void {
    if (this.closed) return;
    this.ctx.stats.countError(code);
    this.ctx.log.debug({ conn: this.id, remote: this.remote, code }, message);
    const line = encodeLine({ id: null, ok: false, error: { code, message } });
    this.teardown(true);
    this.ctx.closer.end(this.socket, line);
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) this.ctx.clock.clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }

  /**
   * A request accepted (answered ok, or a get/barrier now waiting) makes the connection
   * established: it is no longer idle-timed, so a long wait is not cut short.
   */
  private markEstablished(): void {
    if (this.authenticated) this.clearIdleTimer();
  }

  // ---- auth ----

  /** Replies to a request the daemon could not accept. */
  private badRequest(id: number | null, code: string, message: string): void {
    this.ctx.log.debug({ conn: this.id, code }, message);
    this.fail(id, new DaemonError(code, message));
    // Before authenticating, garbage counts against the connection like a wrong token does.
    if (!this.authenticated) this.countAuthFailure();
  }

  /** Replies EACCES and closes the connection once it has failed too often. */
  private refuseUnauthenticated(id: number | null, message: string): void {
    this.ctx.stats.authFailures++;
    const left = MAX_AUTH_FAILURES - this.authFailures - 1;
    const suffix = left > 0 ? '' : '; closing the connection';
    this.fail(id, new DaemonError('EACCES', message + suffix));
    this.countAuthFailure();
  }

  private countAuthFailure(): void {
    this.authFailures++;
    if (this.authFailures >= MAX_AUTH_FAILURES && !this.closed) {
      this.ctx.stats.authConnectionsClosed++;
      this.ctx.log.warn({ conn: this.id, remote: this.remote }, 'closing a connection that failed to authenticate');
      this.teardown(true);
      // end(): the EACCES line already written is delivered before the FIN.
      this.ctx.closer.end(this.socket, null);
    }
  }

  // ---- requests ----

  private onLine(text: string): void {
    if (this.closed) return;
    this.ctx.stats.requests++;
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch (err) {
      return this.badRequest(null, 'EBADMSG', `request is not JSON: ${(err as Error).message}`);
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
      return this.badRequest(null, 'EINVAL', 'request must be a JSON object');
    }
    const rawId = ownField(msg, 'id');
    if (typeof rawId !== 'number' || !Number.isSafeInteger(rawId)) {
      return this.badRequest(null, 'EINVAL', '"id" must be an integer');
    }
    const id = rawId;
    const op = ownField(msg, 'op');
    if (typeof op !== 'string') return this.badRequest(id, 'EINVAL', '"op" must be a string naming the operation');
    if (!this.authenticated) {
      if (op !== 'hello') {
        return this.refuseUnauthenticated(id, `this daemon requires a token: send {"id":..,"op":"hello","token":..} first (op ${JSON.stringify(op.slice(0, 64))} refused)`);
      }
      const token = ownField(msg, 'token');
      if (typeof token !== 'string' || token.length === 0) return this.refuseUnauthenticated(id, 'hello: this daemon requires a token and none was given');
      if (!this.ctx.tokens.matches(token)) return this.refuseUnauthenticated(id, 'hello: wrong token');
      this.authenticated = true;
    }
    let result: HandlerResult;
    try {
      result = this.dispatch(id, op, msg);
    } catch (err) {
      return this.fail(id, err);
    }
    if (result === DEFERRED) return this.markEstablished();
    if (result instanceof Promise) {
      result.then(
        (r) => {
          if (r !== DEFERRED) this.answer(id, r);
        },
        (err) => this.fail(id, err),
      );
      return;
    }
    this.answer(id, result);
  }

  // A switch, not an object of handlers: an op named "constructor" or "__proto__" must be
  // unknown, not a property of Object.prototype.
  private dispatch(id: number, op: string, req: object): HandlerResult {
    const { registry, kv } = this.ctx;
    switch (op) {
      case 'hello':
        // Reached unauthenticated only with the right token (checked in onLine); with no
        // daemon token the token is ignored, so clients may always send one.
        return { tokenRequired: this.ctx.tokens.required };
      case 'register':
        return registry.register(this, readRegister(req));
      case 'unregister':
        registry.unregister(this, readStats('unregister', req));
        return {};
      case 'heartbeat':
        registry.heartbeat(this, readStats('heartbeat', req));
        return {};
      case 'resolve':
        return registry.resolve(readResolveGid(req));
      case 'put':
        kv.put(readPut(req));
        return {};
      case 'get':
        return kv.get(this, id, readGet(req));
      case 'barrier':
        return kv.barrier(this, id, readBarrier(req));
      case 'list':
        return registry.list();
      default:
        throw new DaemonError('ENOSYS', `unknown op ${JSON.stringify(op.slice(0, 64))}`);
    }
  }
}
