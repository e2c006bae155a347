import type { AddressHandle } from './address-handle';

/**
 * A protection domain, as `ibv_pd`. MRs, AHs and QPs belong to exactly one PD and never serve
 * another; the PD cannot be deallocated while any of them exist.
 */
export class ProtectionDomain {
  destroyed = false;
  /** MRs, QPs and AHs that belong to this PD. */
  users = 0;
  /** This PD's AHs by the remote device's index (the GID's low 32 bits), for O(1) lookup per packet. */
  readonly ahByDeviceIndex = new Map<number, AddressHandle>();

  constructor(
    /** Device-wide PD number. */
    readonly pdn: number,
  ) {}
}
