import type { Gid } from '../common/gid';

/** Where a remote device is reached on the emulated fabric. */
export interface Endpoint {
  host: string;
  port: number;
}

/**
 * A remote device this device has resolved: its GID, UDP endpoint and fabric-wide AH number.
 * Shared by every AH (of any PD) that names the same GID.
 */
export class Peer {
  /** False while the daemon reports the device down. */
  up = true;
  /** The remote device's incarnation as the control plane reported it (0: unknown). */
  incarnation = 0;

  constructor(
    readonly gid: Gid,
    readonly gidText: string,
    readonly deviceIndex: number,
    public host: string,
    public port: number,
    readonly ahn: number,
    readonly name: string,
  ) {}
}
