import type { Gid } from '../common/gid';

/** Where a remote device is reached on the emulated fabric. */
export interface Endpoint {
  host: string;
  port: number;
}

/**
 * A remote device this device knows: its GID, UDP endpoint and fabric-wide AH number.
 * Shared by every AH (of any PD) that names the same GID. Datagrams claiming its GID are
 * accepted only from its endpoint.
 */
export class Peer {
  /** False while the daemon reports the device down. */
  up = true;
  /**
   * True once the control plane confirmed the endpoint. A peer first seen through its own
   * packets is trusted on first use and checked against the daemon in the background.
   */
  verified = true;
  /** A background check against the control plane is running. */
  verifying = false;
  /** Earliest time (device clock, ms) of the next check. */
  nextVerifyAt = 0;
  /** The remote device's incarnation as the control plane reported it (0: unknown). */
  incarnation = 0;

  constructor(
    readonly gid: Gid,
    readonly gidText: string,
    readonly deviceIndex: number,
    public host: string,
    public port: number,
    public ahn: number,
    public name: string,
  ) {}
}
