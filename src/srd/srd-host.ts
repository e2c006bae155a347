import type { PacketHeader } from '../wire/header';
import type { SendOp } from './send-op';
import type { SrdPeer } from './srd-channel';

/**
 * What the SRD engine asks of the device it runs in. The engine never touches a socket, a
 * timer or the clock: it calls these, and the device (sans-IO too) passes them on.
 */
export interface SrdHost {
  /**
   * Sends a finished datagram. With `onSent`, the transport calls it exactly once, when it no
   * longer reads `buf` (at once, or when a queued socket send finished): until then the engine
   * neither rewrites the buffer nor hands it back for reuse.
   */
  transmit(buf: Buffer, len: number, host: string, port: number, onSent: (() => void) | null): void;
  /**
   * Delivers a message to the local QP the header names. Returns EfaStatus.SUCCESS (0) when it
   * was placed in a posted receive, REMOTE_ERROR_RNR (10) when no receive is posted (the
   * sender will retry), or the final status the sender reports. `peer` sent it (an RDMA read
   * request is answered to it).
   */
  deliver(buf: Buffer, hdr: PacketHeader, payloadOff: number, payloadLen: number, peer: SrdPeer): number;
  /** Completes a send work request with `status`. */
  completeSend(op: SendOp, status: number): void;
  /** Neither the engine nor the socket needs this send buffer any more: it may be reused. */
  releaseBuffer(buf: Buffer): void;
}

/** Counters the engine keeps; the device's counter object has these fields. */
export interface SrdCounters {
  retrans_pkts: number;
  retrans_bytes: number;
  retrans_timeout_events: number;
  unresponsive_remote_events: number;
  unreachable_remote_events: number;
  rnr_sent: number;
  rnr_received: number;
  rnr_retry_exceeded: number;
  rnr_retries: number;
  rx_drop_duplicate: number;
  rx_drop_stale: number;
  rx_drop_window: number;
  rx_drop_bad_header: number;
  /** Packets refused because they were meant for an earlier incarnation of this device. */
  rx_drop_wrong_incarnation: number;
  rx_drops: number;
  acks_sent: number;
  acks_received: number;
  acks_piggybacked: number;
}
