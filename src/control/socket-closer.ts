/**
 * Closing sockets the daemon gives up on (refused, idle, failed auth) without trusting the
 * peer to cooperate: a last line is delivered, and the socket is destroyed after a grace
 * period even if the peer never closes its side, so it cannot hold a descriptor.
 */
import type * as net from 'node:net';
import type { Clock } from './clock';

/** How long a closing socket may linger for its peer's FIN. */
const LINGER_MS = 1000;

/** The sockets being closed, so the daemon's own close can destroy them at once. */
export class SocketCloser {
  private readonly clock: Clock;
  private readonly lingering = new Set<net.Socket>();

  constructor(clock: Clock) {
    this.clock = clock;
  }

  /** Writes `line` (if any) and closes the socket. */
  end(socket: net.Socket, line: string | null): void {
    if (socket.destroyed) return;
    // Reading (and discarding) is what lets the peer's FIN be seen and the socket close; a
    // paused socket would wait for the timer.
    socket.removeAllListeners('data');
    socket.resume();
    this.lingering.add(socket);
    socket.once('close', () => this.lingering.delete(socket));
    if (line !== null) socket.end(line);
    else socket.end();
    const timer = this.clock.setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once('close', () => this.clock.clearTimeout(timer));
  }

  /** Destroys every socket still closing. */
  destroyAll(): void {
    for (const socket of [...this.lingering]) socket.destroy();
  }
}
