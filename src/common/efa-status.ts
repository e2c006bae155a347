/*
 * EFA's completion statuses (DESIGN §6). They live below every layer because the transports
 * (SRD) produce them and the device reports them: as `wc.vendorErr`, the way the EFA provider
 * reports the device's status beside the `ibv_wc_status` it maps it to.
 */

/** Completion statuses, numbered as EFA's `efa_io_comp_status` (rdma-core efa_io_defs.h). */
export const EfaStatus = {
  SUCCESS: 0,
  FLUSHED: 1,
  LOCAL_ERROR_QP_INTERNAL_ERROR: 2,
  LOCAL_ERROR_UNSUPPORTED_OP: 3,
  LOCAL_ERROR_INVALID_AH: 4,
  LOCAL_ERROR_INVALID_LKEY: 5,
  LOCAL_ERROR_BAD_LENGTH: 6,
  REMOTE_ERROR_BAD_ADDRESS: 7,
  REMOTE_ERROR_ABORT: 8,
  REMOTE_ERROR_BAD_DEST_QPN: 9,
  REMOTE_ERROR_RNR: 10,
  REMOTE_ERROR_BAD_LENGTH: 11,
  REMOTE_ERROR_BAD_STATUS: 12,
  LOCAL_ERROR_UNRESP_REMOTE: 13,
  REMOTE_ERROR_UNKNOWN_PEER: 14,
  LOCAL_ERROR_UNREACH_REMOTE: 15,
  /**
   * The peer lacks a feature the request needs (rdma-core 2026; 16 and 17 are not defined).
   * The emulator never produces it: every device of one fabric speaks the same protocol.
   */
  REMOTE_ERROR_FEATURE_MISMATCH: 18,
} as const;
export type EfaStatus = (typeof EfaStatus)[keyof typeof EfaStatus];

const STATUS_NAMES: string[] = [];
for (const [name, value] of Object.entries(EfaStatus)) STATUS_NAMES[value] = name;

/** The name of an EFA completion status (`efaStatusStr(13)` is `LOCAL_ERROR_UNRESP_REMOTE`). */
export function efaStatusStr(status: number): string {
  return STATUS_NAMES[status] ?? `UNKNOWN_STATUS_${status}`;
}
