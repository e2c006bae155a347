import dgram from 'node:dgram';
import { isIP } from 'node:net';
import { lookup as dnsLookup } from 'node:dns';
import type { Logger } from '../common/logger';
import { EfaError } from '../common/errors';

/** Receives every datagram that arrives at a UdpPort. */
export type DatagramHandler = (buf: Buffer, fromHost: string, fromPort: number) => void;

export interface UdpPortOptions {
  /** Address to bind; loopback unless told otherwise. */
  host?: string;
  /** Port to bind; 0 (default) lets the OS pick. */
  port?: number;
  /** Socket buffer sizes asked of the kernel (it may grant less). */
  bufferBytes?: number;
  logger: Logger;
}

/**
 * One UDP socket of an emulated device: the only place its datagrams touch the OS.
 * Send errors (a peer's port closed, a full buffer) are counted, never thrown: the
 * transport above treats them as loss.
 */
export class UdpPort {
  readonly host: string;
  port = 0;
  sendErrors = 0;
  private readonly socket: dgram.Socket;
  private handler: DatagramHandler | null = null;
  private closing: Promise<void> | null = null;
  private readonly logger: Logger;

  private constructor(host: string, logger: Logger) {
    this.host = host;
    this.logger = logger;
    this.socket = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', lookup: literalLookup });
    this.socket.on('message', (msg, rinfo) => {
      if (this.handler !== null) this.handler(msg, rinfo.address, rinfo.port);
    });
    // Send failures (an ICMP "port unreachable", a full buffer) surface here, since sends
    // pass no callback: they are loss, not a crash.
    this.socket.on('error', (err) => {
      this.sendErrors++;
      this.logger.debug({ err: err.message }, 'UDP socket error');
    });
  }

  /** Binds a socket and resolves once it is ready. */
  static async open(opts: UdpPortOptions): Promise<UdpPort> {
    const port = new UdpPort(opts.host ?? '127.0.0.1', opts.logger);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(new EfaError((err as NodeJS.ErrnoException).code ?? 'EIO', `cannot bind UDP ${port.host}:${opts.port ?? 0}: ${err.message}`));
      };
      port.socket.once('error', onError);
      port.socket.bind({ address: port.host, port: opts.port ?? 0, exclusive: true }, () => {
        port.socket.off('error', onError);
        resolve();
      });
    });
    port.port = port.socket.address().port;
    const want = opts.bufferBytes ?? 4 * 1024 * 1024;
    try {
      port.socket.setRecvBufferSize(want);
      port.socket.setSendBufferSize(want);
    } catch {
      // The kernel caps buffer sizes (net.core.rmem_max); a smaller buffer only means more loss.
    }
    return port;
  }

  /** Sets the one receiver of incoming datagrams. */
  onDatagram(handler: DatagramHandler): void {
    this.handler = handler;
  }

  /**
   * Sends `len` bytes of `buf`. Without `onSent` the buffer must not be touched by the caller
   * afterwards. With it, `onSent` runs once the socket is done with the buffer: on the next
   * tick when the kernel took the datagram at once, later when it had to queue (a full send
   * buffer), so the caller may then reuse it. Errors arrive as 'error' events either way.
   */
  send(buf: Buffer, len: number, host: string, port: number, onSent?: (() => void) | null): void {
    if (this.closing !== null) {
      onSent?.();
      return;
    }
    if (onSent === undefined || onSent === null) this.socket.send(buf, 0, len, port, host);
    else this.socket.send(buf, 0, len, port, host, onSent);
  }

  /** Closes the socket. Idempotent: every call returns the same promise. */
  close(): Promise<void> {
    if (this.closing === null) {
      this.handler = null;
      this.closing = new Promise<void>((resolve) => {
        try {
          this.socket.close(() => resolve());
        } catch {
          resolve();
        }
      });
    }
    return this.closing;
  }
}

/**
 * Address lookup for sends. Every destination is an IP literal, which dns.lookup answers on
 * the next tick; answering at once lets the datagram go out inside `send()`, saving a tick
 * per packet and letting the sender reuse nothing it still needs. Names still go to DNS.
 */
function literalLookup(address: string, family: unknown, callback: (err: Error | null, address: string, family: number) => void): void {
  const kind = isIP(address);
  if (kind !== 0) {
    callback(null, address, kind);
    return;
  }
  dnsLookup(address, family as number, callback as (err: NodeJS.ErrnoException | null, address: string, family: number) => void);
}
