import type { ProtectionDomain } from './protection-domain';

/**
 * A registered memory region, as `ibv_mr`: a window of a caller's buffer that work requests
 * may name by `lkey`. SGE addresses are byte offsets from the start of the region.
 */
export class MemoryRegion {
  /** Becomes false at deregistration: work requests that still name it fail with INVALID_LKEY. */
  valid = true;

  constructor(
    readonly pd: ProtectionDomain,
    readonly lkey: number,
    readonly rkey: number,
    /** The registered bytes (a view over the caller's buffer, not a copy). */
    readonly buffer: Uint8Array,
    readonly access: number,
  ) {}

  /** Length of the region in bytes. */
  get length(): number {
    return this.buffer.length;
  }
}
