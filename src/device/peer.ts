import type { Gid } from '../common/gid';
import type { SrdChannel, SrdPeer } from '../srd/srd-channel';
import type { PacketHeader } from '../wire/header';

/** A UD datagram kept until its sender's endpoint is confirmed, with its decoded header. */
export interface HeldDatagram {
  buf: Buffer;
  hdr: PacketHeader;
}

/** Where a remote device is reached on the emulated fabric. */
export interface Endpoint {
  host: string;
  port: number;
}

/**
 * A remote device this device knows: its GID, UDP endpoint and fabric-wide AH number.
 * Shared by every AH (of any PD) that names the same GID. Datagrams claiming its GID are
 * accepted only from its endpoint, and only once the control plane confirmed that endpoint.
 * It also holds the SRD engine's state for the peer, so a packet costs one lookup.
 */
export class Peer implements SrdPeer {
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
  /** The SRD engine's state for this peer (null until SRD first talks to it). */
  srd: SrdChannel | null = null;
  /**
   * UD datagrams that arrived before the endpoint was confirmed, delivered once it is (and
   * dropped if it is not): a bounded number, so a stranger cannot make us hold much.
   */
  held: HeldDatagram[] = [];

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
