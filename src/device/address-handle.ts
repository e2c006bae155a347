import type { ProtectionDomain } from './protection-domain';
import type { Peer } from './peer';

/**
 * An address handle, as `ibv_ah`: a PD-scoped reference to a remote device. EFA keeps one AH
 * per (PD, GID); creating it again returns the same AH with its reference count raised.
 */
export class AddressHandle {
  refCount = 1;
  destroyed = false;

  constructor(
    readonly pd: ProtectionDomain,
    /** The AH number, as `efadv_query_ah` reports: the same on every device of the fabric for this GID. */
    readonly ahNum: number,
    readonly peer: Peer,
  ) {}

  /** The remote device's GID in IPv6 text. */
  get gid(): string {
    return this.peer.gidText;
  }
}
