import { EfaStatus, efaStatusStr } from '../common/efa-status';

/*
 * libfabric's error numbers (include/rdma/fi_errno.h): the POSIX ones keep their errno values,
 * libfabric's own start at 256. Calls return them negated, error completions carry them positive.
 */
export const FI_SUCCESS = 0;
export const FI_EIO = 5;
export const FI_EAGAIN = 11;
export const FI_ENOMEM = 12;
export const FI_EINVAL = 22;
export const FI_ENOMSG = 42;
export const FI_EMSGSIZE = 90;
export const FI_ECONNABORTED = 103;
export const FI_ENOTCONN = 107;
export const FI_ETIMEDOUT = 110;
export const FI_EHOSTDOWN = 112;
export const FI_EHOSTUNREACH = 113;
export const FI_EREMOTEIO = 121;
export const FI_ECANCELED = 125;
export const FI_EOTHER = 256;
export const FI_EAVAIL = 259;
export const FI_ETRUNC = 265;
export const FI_ENORX = 269;

const NAMES: Record<number, string> = {
  [FI_SUCCESS]: 'Success',
  [FI_EIO]: 'Input/output error',
  [FI_EAGAIN]: 'Resource temporarily unavailable',
  [FI_ENOMEM]: 'Cannot allocate memory',
  [FI_EINVAL]: 'Invalid argument',
  [FI_ENOMSG]: 'No message of desired type',
  [FI_EMSGSIZE]: 'Message too long',
  [FI_EREMOTEIO]: 'Remote I/O error',
  [FI_ECONNABORTED]: 'Software caused connection abort',
  [FI_ENOTCONN]: 'Transport endpoint is not connected',
  [FI_ETIMEDOUT]: 'Connection timed out',
  [FI_EHOSTDOWN]: 'Host is down',
  [FI_EHOSTUNREACH]: 'No route to host',
  [FI_ECANCELED]: 'Operation canceled',
  [FI_EOTHER]: 'Unspecified error',
  [FI_EAVAIL]: 'Error available',
  [FI_ETRUNC]: 'Truncation error',
  [FI_ENORX]: 'Receiver not ready, no receive buffers available',
};

/** Text for an fi errno (either sign), as `fi_strerror`. */
export function fiStrerror(err: number): string {
  return NAMES[Math.abs(err)] ?? `Unknown error ${Math.abs(err)}`;
}

/** Provider errnos of the efa provider (FI_EFA_ERR_*) the endpoint reports. */
export const EfaProvErrno = {
  OTHER: 4096,
  /** A peer that had completed the handshake stopped answering (promoted from UNRESP_REMOTE). */
  ESTABLISHED_RECV_UNRESP: 4124,
  /** A peer that never completed the handshake did not answer (promoted from UNRESP_REMOTE). */
  UNESTABLISHED_RECV_UNRESP: 4126,
} as const;

/**
 * The prov_errno an error completion carries for a device status: the EFA status itself, except
 * that an unresponsive peer is told apart by whether the handshake had completed, as the efa
 * provider does.
 */
export function provErrnoFromEfa(status: number, handshakeReceived: boolean): number {
  if (status === EfaStatus.LOCAL_ERROR_UNRESP_REMOTE) return handshakeReceived ? EfaProvErrno.ESTABLISHED_RECV_UNRESP : EfaProvErrno.UNESTABLISHED_RECV_UNRESP;
  return status;
}

/**
 * The fi errno an error completion carries for a prov_errno: the efa provider's `to_fi_errno`
 * choice, so an application's error handling branches as it would on hardware.
 */
export function fiErrnoFromProv(provErrno: number): number {
  switch (provErrno) {
    case EfaStatus.SUCCESS:
      return FI_SUCCESS;
    case EfaStatus.FLUSHED:
      return FI_ECANCELED;
    case EfaStatus.LOCAL_ERROR_QP_INTERNAL_ERROR:
    case EfaStatus.LOCAL_ERROR_UNSUPPORTED_OP:
    case EfaStatus.LOCAL_ERROR_INVALID_AH:
    case EfaStatus.LOCAL_ERROR_INVALID_LKEY:
    case EfaStatus.REMOTE_ERROR_BAD_ADDRESS:
    case EfaStatus.REMOTE_ERROR_FEATURE_MISMATCH:
      return FI_EINVAL;
    case EfaStatus.LOCAL_ERROR_BAD_LENGTH:
    case EfaStatus.REMOTE_ERROR_BAD_LENGTH:
      return FI_EMSGSIZE;
    case EfaStatus.LOCAL_ERROR_UNREACH_REMOTE:
      return FI_EHOSTUNREACH;
    case EfaStatus.REMOTE_ERROR_ABORT:
    case EfaStatus.LOCAL_ERROR_UNRESP_REMOTE:
    case EfaProvErrno.ESTABLISHED_RECV_UNRESP:
    case EfaProvErrno.UNESTABLISHED_RECV_UNRESP:
      return FI_ECONNABORTED;
    case EfaStatus.REMOTE_ERROR_BAD_DEST_QPN:
    case EfaStatus.REMOTE_ERROR_UNKNOWN_PEER:
      return FI_ENOTCONN;
    case EfaStatus.REMOTE_ERROR_RNR:
      return FI_ENORX;
    case EfaStatus.REMOTE_ERROR_BAD_STATUS:
      return FI_EREMOTEIO;
    default:
      return FI_EOTHER;
  }
}

/** The name of a prov_errno (an EFA status or an FI_EFA_ERR_* code). */
export function provErrnoStr(provErrno: number): string {
  for (const [name, v] of Object.entries(EfaProvErrno)) if (v === provErrno) return `FI_EFA_ERR_${name}`;
  return efaStatusStr(provErrno);
}
