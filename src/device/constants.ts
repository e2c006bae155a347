/*
 * Names and numbers of the verbs model as EFA defines them (DESIGN §6). The numbers are part
 * of the contract: users compare against them, so never renumber.
 */

/** QP types. SRD is EFA's driver QP type; UD is the InfiniBand one. */
export const QpType = {
  UD: 'UD',
  SRD: 'SRD',
} as const;
export type QpType = (typeof QpType)[keyof typeof QpType];

/** QP states, numbered as `enum ibv_qp_state`. */
export const QpState = {
  RESET: 0,
  INIT: 1,
  RTR: 2,
  RTS: 3,
  SQD: 4,
  SQE: 5,
  ERR: 6,
} as const;
export type QpState = (typeof QpState)[keyof typeof QpState];

export const QP_STATE_NAMES: Record<number, string> = {
  0: 'RESET',
  1: 'INIT',
  2: 'RTR',
  3: 'RTS',
  4: 'SQD',
  5: 'SQE',
  6: 'ERR',
};

export { WcStatus, wcStatusStr, wcStatusFromEfa } from '../common/wc-status';
export { EfaStatus, efaStatusStr } from '../common/efa-status';

/** Completion opcodes, numbered as `enum ibv_wc_opcode`. */
export const WcOpcode = {
  SEND: 0,
  RDMA_WRITE: 1,
  RDMA_READ: 2,
  RECV: 128,
  RECV_RDMA_WITH_IMM: 129,
} as const;
export type WcOpcode = (typeof WcOpcode)[keyof typeof WcOpcode];

/** Work-completion flags, as `enum ibv_wc_flags`. */
export const WcFlags = {
  GRH: 1 << 0,
  WITH_IMM: 1 << 1,
} as const;

/** `efadv_qp_init_attr.flags`, as `enum efadv_qp_flags`. */
export const EfadvQpFlags = {
  /** RDMA writes with immediate complete at this QP without consuming a posted receive. */
  UNSOLICITED_WRITE_RECV: 1 << 0,
} as const;

/** `efadv_cq_init_attr.wc_flags`, as `enum efadv_wc_ex_flags`. */
export const EfadvWcFlags = {
  /** The CQ reports the sender GID of receive completions whose sender has no AH here (efadv_wc_read_sgid). */
  WITH_SGID: 1 << 0,
  /** The CQ tells unsolicited write-with-immediate completions apart (efadv_wc_is_unsolicited). */
  WITH_IS_UNSOLICITED: 1 << 1,
} as const;

/** `efadv_qp_init_attr.driver_qp_type`: the one driver QP type, SRD. */
export const EFADV_QP_DRIVER_TYPE_SRD = 0;

/** `ibv_qp_init_attr_ex.send_ops_flags`, as `enum ibv_qp_create_send_ops_flags`. */
export const QpSendOps = {
  RDMA_WRITE: 1 << 0,
  RDMA_WRITE_WITH_IMM: 1 << 1,
  SEND: 1 << 2,
  SEND_WITH_IMM: 1 << 3,
  RDMA_READ: 1 << 4,
} as const;

/** What the extended CQ's `startPoll` / `nextPoll` return when no completion is there. */
export const ENOENT = 2;

/** Send opcodes, as `enum ibv_wr_opcode`. */
export const WrOpcode = {
  RDMA_WRITE: 0,
  RDMA_WRITE_WITH_IMM: 1,
  SEND: 2,
  SEND_WITH_IMM: 3,
  RDMA_READ: 4,
} as const;
export type WrOpcode = (typeof WrOpcode)[keyof typeof WrOpcode];

/** Send flags, as `enum ibv_send_flags`. */
export const SendFlags = {
  FENCE: 1 << 0,
  SIGNALED: 1 << 1,
  SOLICITED: 1 << 2,
  INLINE: 1 << 3,
} as const;

/** Memory-region access flags, as `enum ibv_access_flags`. */
export const AccessFlags = {
  LOCAL_WRITE: 1 << 0,
  REMOTE_WRITE: 1 << 1,
  REMOTE_READ: 1 << 2,
} as const;
export const ALL_ACCESS_FLAGS = AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE | AccessFlags.REMOTE_READ;

/** The AH number a receive completion reports when the receiver has no AH for the sender. */
export const AH_UNKNOWN = 0xffff;

/** Bytes at the start of every UD receive buffer that hold the Global Routing Header. */
export const GRH_LENGTH = 40;

/** QP numbers are 16-bit; 0 and 1 are reserved (special QPs in InfiniBand). */
export const MAX_QPN = 0xffff;
export const FIRST_QPN = 2;

/** Q_Keys with this bit set are privileged and may not be set by an ordinary QP. */
export const QKEY_PRIVILEGED_BIT = 0x80000000;

/** SRD's rnr_retry default: 7 retries forever. */
export const DEFAULT_RNR_RETRY = 7;

/** The one port of an EFA device. */
export const PORT_NUM = 1;
