import { ReceiveState } from './receive-state';
import { SendState } from './send-state';

/** What the engine needs to know of a remote device; the device's peer record provides it. */
export interface SrdPeer {
  /** The remote device's index (GID low 32 bits). */
  readonly deviceIndex: number;
  /** Its UDP endpoint, kept current by the device (a restarted peer may move). */
  readonly host: string;
  readonly port: number;
  /** The remote device's incarnation from the control plane, 0 when unknown. */
  readonly incarnation: number;
  /** The engine's state for this peer, created on first use; the device only stores it. */
  srd: SrdChannel | null;
}

/**
 * Everything SRD keeps about one remote device, shared by all QPs as on EFA: the requester's
 * state for what we send it and the responder's for what it sends us. The device's peer
 * record holds it, so a packet costs one lookup.
 */
export class SrdChannel {
  constructor(
    readonly peer: SrdPeer,
    readonly tx: SendState,
    readonly rx: ReceiveState,
  ) {}
}
