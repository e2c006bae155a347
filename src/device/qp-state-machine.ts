import { PORT_NUM, QKEY_PRIVILEGED_BIT, QpState, QP_STATE_NAMES, QpType } from './constants';

/** Attributes of `modifyQp`, as `ibv_qp_attr`; the fields present form the attribute mask. */
export interface QpAttr {
  qpState?: QpState;
  /** IBV_QP_CUR_STATE: when given, must equal the QP's current state. */
  curQpState?: QpState;
  /** IBV_QP_EN_SQD_ASYNC_NOTIFY (RTS -> SQD). */
  enSqdAsyncNotify?: number;
  pkeyIndex?: number;
  portNum?: number;
  qkey?: number;
  sqPsn?: number;
  /** SRD only, on RTR -> RTS: 0..7, 7 retries forever (the SRD default). */
  rnrRetry?: number;
}

/** The attribute mask bits EFA's driver takes (EFA_MODIFY_QP_SUPP_MASK). */
const SUPPORTED = new Set(['qpState', 'curQpState', 'enSqdAsyncNotify', 'pkeyIndex', 'portNum', 'qkey', 'sqPsn', 'rnrRetry']);

/** `ibv_qp_attr` fields of other transports: valid verbs, refused by EFA with EOPNOTSUPP. */
const OTHER_IB_ATTRS = new Set([
  'pathMtu',
  'pathMigState',
  'rqPsn',
  'qpAccessFlags',
  'ahAttr',
  'altAhAttr',
  'maxRdAtomic',
  'maxDestRdAtomic',
  'minRnrTimer',
  'timeout',
  'retryCnt',
  'destQpNum',
  'altPkeyIndex',
  'altPortNum',
  'altTimeout',
  'sqDraining',
  'cap',
  'rateLimit',
]);

type Rule = { required: readonly string[]; optional: readonly string[] };

const S = QpState;
const key = (from: number, to: number): string => `${from}>${to}`;

/**
 * The IB core's state table for UD QPs (drivers/infiniband/core/verbs.c, `qp_state_table`),
 * which EFA's driver applies to UD QPs: required and optional attributes per transition.
 * Moves to RESET and ERR take nothing and are listed separately.
 */
const UD_TABLE: ReadonlyMap<string, Rule> = new Map([
  [key(S.RESET, S.RESET), { required: [], optional: [] }],
  [key(S.RESET, S.INIT), { required: ['pkeyIndex', 'portNum', 'qkey'], optional: [] }],
  [key(S.INIT, S.INIT), { required: [], optional: ['pkeyIndex', 'portNum', 'qkey'] }],
  [key(S.INIT, S.RTR), { required: [], optional: ['pkeyIndex', 'qkey'] }],
  [key(S.RTR, S.RTS), { required: ['sqPsn'], optional: ['curQpState', 'qkey'] }],
  [key(S.RTS, S.RTS), { required: [], optional: ['curQpState', 'qkey'] }],
  [key(S.RTS, S.SQD), { required: [], optional: ['enSqdAsyncNotify'] }],
  [key(S.SQD, S.RTS), { required: [], optional: ['curQpState', 'qkey'] }],
  [key(S.SQD, S.SQD), { required: [], optional: ['pkeyIndex', 'qkey'] }],
  [key(S.SQE, S.RTS), { required: [], optional: ['curQpState', 'qkey'] }],
]);

/**
 * EFA's own table for SRD QPs (efa_verbs.c, `srd_qp_state_table`): the UD one, except that
 * RESET -> ERR is not a transition and RTR -> RTS may also set the RNR retry count.
 */
const SRD_TABLE: ReadonlyMap<string, Rule> = new Map([...UD_TABLE, [key(S.RTR, S.RTS), { required: ['sqPsn'], optional: ['curQpState', 'qkey', 'rnrRetry'] }]]);

/** `curQpState` is only meaningful from these states (ib_modify_qp_is_ok). */
const CUR_STATE_FROM = new Set<number>([S.RTR, S.RTS, S.SQD, S.SQE]);

/** The kind of failure, so the caller picks the admin status (and errno) to report. */
export type TransitionProblem = { kind: 'illegal' | 'privileged' | 'unsupported'; detail: string };

/**
 * Checks a modifyQp request as EFA's driver does: attributes outside its mask are EOPNOTSUPP;
 * a transition the table does not have, a missing required or an unexpected attribute is
 * EINVAL; a port other than 1 or a P_Key index other than 0 is EOPNOTSUPP; a privileged Q_Key
 * EPERM. Returns null when it is valid. Pure: the caller applies the change.
 */
export function checkTransition(qpType: QpType, current: QpState, attr: QpAttr, rnrRetrySupported = true): TransitionProblem | null {
  const illegal = (detail: string): TransitionProblem => ({ kind: 'illegal', detail });
  const unsupported = (detail: string): TransitionProblem => ({ kind: 'unsupported', detail });
  const present: string[] = [];
  for (const k of Object.keys(attr)) {
    if ((attr as Record<string, unknown>)[k] === undefined) continue;
    if (OTHER_IB_ATTRS.has(k)) return unsupported(`attribute "${k}" is not supported by EFA`);
    if (!SUPPORTED.has(k)) return illegal(`unknown QP attribute "${k}"`);
    if (k !== 'qpState') present.push(k);
  }
  if (attr.rnrRetry !== undefined && !rnrRetrySupported) return unsupported('rnrRetry: the device lacks the RNR_RETRY capability');
  const target = attr.qpState ?? current;
  if (QP_STATE_NAMES[target] === undefined) return illegal(`qpState ${String(attr.qpState)} is not a QP state`);
  if (attr.curQpState !== undefined) {
    if (!CUR_STATE_FROM.has(current)) return illegal(`curQpState cannot be given in ${QP_STATE_NAMES[current]}`);
    if (attr.curQpState !== current) {
      return illegal(`curQpState ${QP_STATE_NAMES[attr.curQpState] ?? attr.curQpState} does not match the QP's state ${QP_STATE_NAMES[current]}`);
    }
  }
  const names = `${QP_STATE_NAMES[current]} -> ${QP_STATE_NAMES[target]}`;
  let rule: Rule | undefined;
  if (target === QpState.RESET || target === QpState.ERR) {
    if (attr.qpState === undefined) return illegal(`no transition from ${QP_STATE_NAMES[current]} without qpState`);
    if (qpType === QpType.SRD && current === QpState.RESET && target === QpState.ERR) return illegal(`invalid transition ${names} for an SRD QP`);
    rule = { required: [], optional: [] };
  } else {
    rule = (qpType === QpType.SRD ? SRD_TABLE : UD_TABLE).get(key(current, target));
  }
  if (rule === undefined) return illegal(`invalid transition ${names}`);
  for (const r of rule.required) {
    if ((attr as Record<string, unknown>)[r] === undefined) return illegal(`${names} requires ${r}`);
  }
  for (const p of present) {
    if (!rule.required.includes(p) && !rule.optional.includes(p)) {
      if (p === 'rnrRetry' && qpType !== QpType.SRD) return illegal('rnrRetry applies to SRD QPs only');
      return illegal(`${names} does not take ${p}`);
    }
  }
  if (attr.portNum !== undefined && attr.portNum !== PORT_NUM) return unsupported(`portNum must be ${PORT_NUM}, got ${attr.portNum}`);
  if (attr.pkeyIndex !== undefined && attr.pkeyIndex !== 0) return unsupported(`pkeyIndex must be 0, got ${attr.pkeyIndex}`);
  if (attr.qkey !== undefined) {
    if (!Number.isInteger(attr.qkey) || attr.qkey < 0 || attr.qkey > 0xffffffff) return illegal(`qkey must be a 32-bit unsigned integer, got ${attr.qkey}`);
    if ((attr.qkey & QKEY_PRIVILEGED_BIT) !== 0) {
      return { kind: 'privileged', detail: `qkey 0x${attr.qkey.toString(16)} has the privileged bit set` };
    }
  }
  if (attr.sqPsn !== undefined && (!Number.isInteger(attr.sqPsn) || attr.sqPsn < 0 || attr.sqPsn > 0xffffff)) {
    return illegal(`sqPsn must be a 24-bit unsigned integer, got ${attr.sqPsn}`);
  }
  if (attr.rnrRetry !== undefined && (!Number.isInteger(attr.rnrRetry) || attr.rnrRetry < 0 || attr.rnrRetry > 7)) {
    return illegal(`rnrRetry must be 0..7, got ${attr.rnrRetry}`);
  }
  return null;
}
