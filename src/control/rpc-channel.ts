/**
 * One TCP connection of a daemon client: requests out with fresh ids, replies matched back
 * to them, each request bounded by its own timeout, events handed up. It knows nothing of
 * registering or reconnecting; when the socket closes it tells its owner, which decides what
 * the requests still pending fail with.
 *
 * The socket is unref'd while no request that holds the process is pending, so a program
 * whose only handle left is this connection can exit.
 */
import * as net from 'node:net';
import { DaemonError } from '../common/errors';
import type { Logger } from '../common/logger';
import type { Clock, ClockTimer } from './clock';
import { encodeLine, LineSplitter, type LineSink } from './framing';
import { MAX_LINE_BYTES, formatAddress, type Op, type OpArgs, type OpResults } from './protocol';

/** The client reads larger lines than it sends: a `list` of a big fabric can exceed 64 KiB. */
const MAX_REPLY_BYTES = 16 * 1024 * 1024;

/** A request waiting for its reply. */
export interface PendingRequest {
  readonly op: string;
  readonly resolve: (msg: Record<string, unknown>) => void;
  readonly reject: (err: Error) => void;
  timer: ClockTimer | null;
  /** Whether this request holds the process open (user calls do, heartbeats don't). */
  readonly holdsRef: boolean;
}

/** What an {@link RpcChannel} is built with. */
export interface RpcChannelOptions {
  clock: Clock;
  log: Logger;
  /** `host:port` of the daemon, for messages. */
  address: string;
  /** Request ids; the owner's, so ids keep growing across reconnects. */
  nextId: () => number;
  /** A pushed event (a line with an `event` field). */
  onEvent: (message: Record<string, unknown>) => void;
  /** The socket closed. Called once; requests still pending are the owner's to reject. */
  onClose: (channel: RpcChannel) => void;
}

/**
 * Opens a TCP connection, mapping failures to DaemonError with the address in the message.
 * `holdRef` false makes the attempt itself unref'd (background reconnects must not keep a
 * finished program alive).
 */
export function openSocket(host: string, port: number, timeoutMs: number, holdRef: boolean, clock: Clock): Promise<net.Socket> {
  const where = formatAddress(host, port);
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host, port });
    if (!holdRef) socket.unref();
    const timer = clock.setTimeout(() => {
      cleanup();
      socket.destroy();
      reject(new DaemonError('ETIMEDOUT', `connecting to the daemon at ${where} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    if (!holdRef) timer.unref();
    const onConnect = (): void => {
      cleanup();
      resolve(socket);
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      cleanup();
      socket.destroy();
      reject(new DaemonError(err.code ?? 'ECONNREFUSED', `cannot connect to the daemon at ${where}: ${err.message}`, { cause: err }));
    };
    const cleanup = (): void => {
      clock.clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('error', onError);
    };
    socket.once('connect', onConnect);
    socket.once('error', onError);
  });
}

/** Requests and replies over one connected socket. */
export class RpcChannel {
  readonly socket: net.Socket;
  /**
   * An error the daemon sent with id null (connection limit, idle close, auth failure),
   * usually just before closing: what the pending requests should fail with then.
   */
  refusal: DaemonError | null = null;
  private readonly opts: RpcChannelOptions;
  private readonly pending = new Map<number, PendingRequest>();
  private refHolders = 0;

  /** Takes over a connected socket. */
  constructor(socket: net.Socket, opts: RpcChannelOptions) {
    this.socket = socket;
    this.opts = opts;
    socket.setNoDelay(true);
    socket.unref();
    const sink: LineSink = {
      line: (text) => this.onLine(text),
      oversize: () => {
        opts.log.error(`daemon sent a line longer than ${MAX_REPLY_BYTES} bytes; dropping the connection`);
        socket.destroy();
      },
      badEncoding: () => opts.log.warn('daemon sent a line that is not UTF-8; ignored'),
    };
    const splitter = new LineSplitter(MAX_REPLY_BYTES, sink);
    socket.on('data', (chunk: Buffer) => splitter.push(chunk));
    socket.on('error', (err) => opts.log.debug({ err }, 'daemon connection error'));
    socket.on('close', () => {
      splitter.stop();
      opts.onClose(this);
    });
  }

  /** False once the socket is destroyed. */
  get open(): boolean {
    return !this.socket.destroyed;
  }

  /**
   * Sends a request and resolves with its ok reply. Rejects with the daemon's DaemonError,
   * `ETIMEDOUT` when no reply came within `timeoutMs`, or `EMSGSIZE` for a request longer
   * than the daemon reads. `holdsRef` keeps the process alive until it settles.
   */
  call<O extends Op>(op: O, args: OpArgs[O], timeoutMs: number, holdsRef: boolean): Promise<OpResults[O]> {
    const id = this.opts.nextId();
    const line = encodeLine({ id, op, ...args });
    const bytes = Buffer.byteLength(line) - 1;
    if (bytes > MAX_LINE_BYTES) {
      return Promise.reject(new DaemonError('EMSGSIZE', `${op}: request is ${bytes} bytes, the daemon reads at most ${MAX_LINE_BYTES}`));
    }
    return new Promise<OpResults[O]>((resolve, reject) => {
      const p: PendingRequest = {
        op,
        resolve: resolve as (msg: Record<string, unknown>) => void,
        reject,
        timer: null,
        holdsRef,
      };
      p.timer = this.opts.clock.setTimeout(() => {
        if (this.pending.get(id) !== p) return;
        this.settle(id, p);
        reject(new DaemonError('ETIMEDOUT', `${op}: no reply from the daemon at ${this.opts.address} within ${timeoutMs} ms`));
      }, timeoutMs);
      // The socket (ref'd while a user call is pending) is what keeps the process alive.
      p.timer.unref();
      this.pending.set(id, p);
      if (holdsRef && this.refHolders++ === 0) this.socket.ref();
      this.socket.write(line);
    });
  }

  /** Rejects every pending request with the error `makeError` gives for it. */
  rejectAll(makeError: (p: PendingRequest) => Error): void {
    for (const [id, p] of [...this.pending]) {
      this.settle(id, p);
      p.reject(makeError(p));
    }
  }

  /**
   * Ends the socket and resolves once it is closed. end() lets replies still in flight
   * drain; the socket is destroyed after `graceMs` if the daemon never closes its side. Ref'd
   * meanwhile so awaiting this returns even when it is the program's last piece of work.
   */
  end(graceMs: number): Promise<void> {
    const socket = this.socket;
    if (socket.destroyed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      socket.ref();
      const timer = this.opts.clock.setTimeout(() => socket.destroy(), graceMs);
      timer.unref();
      socket.once('close', () => {
        this.opts.clock.clearTimeout(timer);
        resolve();
      });
      socket.end();
    });
  }

  /** Closes the socket at once. */
  destroy(): void {
    this.socket.destroy();
  }

  /** Forgets a pending request: its timer and its hold on the process. */
  private settle(id: number, p: PendingRequest): void {
    this.pending.delete(id);
    if (p.timer) this.opts.clock.clearTimeout(p.timer);
    p.timer = null;
    if (p.holdsRef && --this.refHolders === 0) this.socket.unref();
  }

  private onLine(text: string): void {
    const log = this.opts.log;
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      log.warn('daemon sent a line that is not JSON; ignored');
      return;
    }
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) return;
    const m = msg as Record<string, unknown>;
    if (typeof m.event === 'string') {
      this.opts.onEvent(m);
      return;
    }
    const id = m.id;
    if (typeof id !== 'number') {
      const err = m.error as { code?: unknown; message?: unknown } | undefined;
      log.warn({ code: err?.code, message: err?.message }, 'daemon reported an error not tied to a request');
      if (typeof err?.code === 'string') this.refusal = new DaemonError(err.code, typeof err.message === 'string' ? err.message : err.code);
      return;
    }
    const p = this.pending.get(id);
    if (!p) return; // answered after our own timeout: nobody waits for it any more
    this.settle(id, p);
    if (m.ok === true) {
      p.resolve(m);
      return;
    }
    const body = (typeof m.error === 'object' && m.error !== null ? m.error : {}) as { code?: unknown; message?: unknown };
    const code = typeof body.code === 'string' ? body.code : 'EIO';
    const message = typeof body.message === 'string' ? body.message : 'daemon returned an error without a message';
    p.reject(new DaemonError(code, message));
  }
}
