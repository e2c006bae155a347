import { EfaStatus } from './efa-status';

/** Work-completion statuses, numbered as libibverbs' `enum ibv_wc_status`. */
export const WcStatus = {
  SUCCESS: 0,
  LOC_LEN_ERR: 1,
  LOC_QP_OP_ERR: 2,
  LOC_EEC_OP_ERR: 3,
  LOC_PROT_ERR: 4,
  WR_FLUSH_ERR: 5,
  MW_BIND_ERR: 6,
  BAD_RESP_ERR: 7,
  LOC_ACCESS_ERR: 8,
  REM_INV_REQ_ERR: 9,
  REM_ACCESS_ERR: 10,
  REM_OP_ERR: 11,
  RETRY_EXC_ERR: 12,
  RNR_RETRY_EXC_ERR: 13,
  LOC_RDD_VIOL_ERR: 14,
  REM_INV_RD_REQ_ERR: 15,
  REM_ABORT_ERR: 16,
  INV_EECN_ERR: 17,
  INV_EEC_STATE_ERR: 18,
  FATAL_ERR: 19,
  RESP_TIMEOUT_ERR: 20,
  GENERAL_ERR: 21,
  TM_ERR: 22,
  TM_RNDV_INCOMPLETE: 23,
} as const;
export type WcStatus = (typeof WcStatus)[keyof typeof WcStatus];

// The strings ibv_wc_status_str returns, indexed by status.
const WC_STATUS_TEXT = [
  'success',
  'local length error',
  'local QP operation error',
  'local EE context operation error',
  'local protection error',
  'Work Request Flushed Error',
  'memory management operation error',
  'bad response error',
  'local access error',
  'remote invalid request error',
  'remote access error',
  'remote operation error',
  'transport retry counter exceeded',
  'RNR retry counter exceeded',
  'local RDD violation error',
  'remote invalid RD request',
  'aborted error',
  'invalid EE context number',
  'invalid EE context state',
  'fatal error',
  'response timeout error',
  'general error',
  'TM error',
  'TM software rendezvous',
];

/** The text `ibv_wc_status_str` gives for a status (`wcStatusStr(13)` is `RNR retry counter exceeded`). */
export function wcStatusStr(status: number): string {
  return WC_STATUS_TEXT[status] ?? 'unknown';
}

// By EFA status: the ibv_wc_status the EFA provider reports for it (rdma-core providers/efa).
const FROM_EFA: number[] = [];
FROM_EFA[EfaStatus.SUCCESS] = WcStatus.SUCCESS;
FROM_EFA[EfaStatus.FLUSHED] = WcStatus.WR_FLUSH_ERR;
FROM_EFA[EfaStatus.LOCAL_ERROR_QP_INTERNAL_ERROR] = WcStatus.LOC_QP_OP_ERR;
FROM_EFA[EfaStatus.LOCAL_ERROR_UNSUPPORTED_OP] = WcStatus.LOC_QP_OP_ERR;
FROM_EFA[EfaStatus.LOCAL_ERROR_INVALID_AH] = WcStatus.LOC_QP_OP_ERR;
FROM_EFA[EfaStatus.LOCAL_ERROR_INVALID_LKEY] = WcStatus.LOC_PROT_ERR;
FROM_EFA[EfaStatus.LOCAL_ERROR_BAD_LENGTH] = WcStatus.LOC_LEN_ERR;
FROM_EFA[EfaStatus.REMOTE_ERROR_BAD_ADDRESS] = WcStatus.REM_ACCESS_ERR;
FROM_EFA[EfaStatus.REMOTE_ERROR_ABORT] = WcStatus.REM_ABORT_ERR;
FROM_EFA[EfaStatus.REMOTE_ERROR_BAD_DEST_QPN] = WcStatus.REM_INV_RD_REQ_ERR;
FROM_EFA[EfaStatus.REMOTE_ERROR_RNR] = WcStatus.RNR_RETRY_EXC_ERR;
FROM_EFA[EfaStatus.REMOTE_ERROR_BAD_LENGTH] = WcStatus.REM_INV_REQ_ERR;
FROM_EFA[EfaStatus.REMOTE_ERROR_BAD_STATUS] = WcStatus.BAD_RESP_ERR;
FROM_EFA[EfaStatus.LOCAL_ERROR_UNRESP_REMOTE] = WcStatus.RESP_TIMEOUT_ERR;
FROM_EFA[EfaStatus.REMOTE_ERROR_UNKNOWN_PEER] = WcStatus.REM_OP_ERR;
FROM_EFA[EfaStatus.LOCAL_ERROR_UNREACH_REMOTE] = WcStatus.RESP_TIMEOUT_ERR;
FROM_EFA[EfaStatus.REMOTE_ERROR_FEATURE_MISMATCH] = WcStatus.REM_INV_REQ_ERR;

/** The `ibv_wc_status` a completion with EFA status `efa` carries. */
export function wcStatusFromEfa(efa: number): WcStatus {
  return (FROM_EFA[efa] ?? WcStatus.GENERAL_ERR) as WcStatus;
}
