import { PORT_NUM, QKEY_PRIVILEGED_BIT, QpState, QP_STATE_NAMES, QpType } from './constants';

/** Attributes of `modifyQp`, as `ibv_qp_attr`; the fields present form the attribute mask. */
export interface QpAttr {
  qpState?: QpState;
  /** When given, must equal the QP's current state (IBV_QP_CUR_STATE). */
  curQpState?: QpState;
  pkeyIndex?: number;
  portNum?: number;
  qkey?: number;
  sqPsn?: number;
  /** SRD only: 0..7, 7 retries forever (the SRD default). */
  rnrRetry?: number;
}

const ALLOWED_ATTRS = new Set(['qpState', 'curQpState', 'pkeyIndex', 'portNum', 'qkey', 'sqPsn', 'rnrRetry']);

/**
 * Which attributes a transition requires and which it may carry, as EFA's driver checks them
 * (DESIGN §6). Keyed "from>to".
 */
const TRANSITIONS: ReadonlyMap<string, { required: readonly string[]; optional: readonly string[] }> = new Map([
  [`${QpState.RESET}>${QpState.INIT}`, { required: ['pkeyIndex', 'portNum', 'qkey'], optional: [] }],
  [`${QpState.INIT}>${QpState.INIT}`, { required: [], optional: ['pkeyIndex', 'portNum', 'qkey'] }],
  [`${QpState.INIT}>${QpState.RTR}`, { required: [], optional: ['qkey'] }],
  [`${QpState.RTR}>${QpState.RTS}`, { required: ['sqPsn'], optional: ['qkey', 'rnrRetry'] }],
  [`${QpState.RTS}>${QpState.RTS}`, { required: [], optional: ['qkey', 'rnrRetry'] }],
  [`${QpState.RTS}>${QpState.SQD}`, { required: [], optional: [] }],
  [`${QpState.SQD}>${QpState.SQD}`, { required: [], optional: ['qkey', 'rnrRetry'] }],
  [`${QpState.SQD}>${QpState.RTS}`, { required: [], optional: ['qkey', 'rnrRetry'] }],
  [`${QpState.SQE}>${QpState.RTS}`, { required: [], optional: ['qkey'] }],
]);

/** The kind of failure, so the caller picks the admin status (and errno) to report. */
export type TransitionProblem = { kind: 'illegal' | 'privileged'; detail: string };

/**
 * Checks a modifyQp request against the state machine. Returns null when it is valid, else
 * what is wrong. Pure: the caller applies the change.
 */
export function checkTransition(qpType: QpType, current: QpState, attr: QpAttr): TransitionProblem | null {
  const illegal = (detail: string): TransitionProblem => ({ kind: 'illegal', detail });
  for (const key of Object.keys(attr)) {
    if (!ALLOWED_ATTRS.has(key)) return illegal(`unknown QP attribute "${key}"`);
  }
  if (attr.curQpState !== undefined && attr.curQpState !== current) {
    return illegal(`curQpState ${QP_STATE_NAMES[attr.curQpState] ?? attr.curQpState} does not match the QP's state ${QP_STATE_NAMES[current]}`);
  }
  const target = attr.qpState ?? current;
  if (QP_STATE_NAMES[target] === undefined) return illegal(`qpState ${String(attr.qpState)} is not a QP state`);
  const present = Object.keys(attr).filter((k) => k !== 'qpState' && k !== 'curQpState' && (attr as Record<string, unknown>)[k] !== undefined);
  if (target === QpState.RESET || target === QpState.ERR) {
    if (attr.qpState === undefined) return illegal(`no transition from ${QP_STATE_NAMES[current]} without qpState`);
    if (present.length > 0) return illegal(`a move to ${QP_STATE_NAMES[target]} takes no attributes, got ${present.join(', ')}`);
    return null;
  }
  const rule = TRANSITIONS.get(`${current}>${target}`);
  if (rule === undefined) return illegal(`invalid transition ${QP_STATE_NAMES[current]} -> ${QP_STATE_NAMES[target]}`);
  for (const r of rule.required) {
    if ((attr as Record<string, unknown>)[r] === undefined) {
      return illegal(`${QP_STATE_NAMES[current]} -> ${QP_STATE_NAMES[target]} requires ${r}`);
    }
  }
  for (const p of present) {
    if (!rule.required.includes(p) && !rule.optional.includes(p)) {
      return illegal(`${QP_STATE_NAMES[current]} -> ${QP_STATE_NAMES[target]} does not take ${p}`);
    }
  }
  if (attr.pkeyIndex !== undefined && attr.pkeyIndex !== 0) return illegal(`pkeyIndex must be 0, got ${attr.pkeyIndex}`);
  if (attr.portNum !== undefined && attr.portNum !== PORT_NUM) return illegal(`portNum must be ${PORT_NUM}, got ${attr.portNum}`);
  if (attr.qkey !== undefined) {
    if (!Number.isInteger(attr.qkey) || attr.qkey < 0 || attr.qkey > 0xffffffff) return illegal(`qkey must be a 32-bit unsigned integer, got ${attr.qkey}`);
    if ((attr.qkey & QKEY_PRIVILEGED_BIT) !== 0) {
      return { kind: 'privileged', detail: `qkey 0x${attr.qkey.toString(16)} has the privileged bit set` };
    }
  }
  if (attr.sqPsn !== undefined && (!Number.isInteger(attr.sqPsn) || attr.sqPsn < 0 || attr.sqPsn > 0xffffff)) {
    return illegal(`sqPsn must be a 24-bit unsigned integer, got ${attr.sqPsn}`);
  }
  if (attr.rnrRetry !== undefined) {
    if (qpType !== QpType.SRD) return illegal('rnrRetry applies to SRD QPs only');
    if (!Number.isInteger(attr.rnrRetry) || attr.rnrRetry < 0 || attr.rnrRetry > 7) return illegal(`rnrRetry must be 0..7, got ${attr.rnrRetry}`);
  }
  return null;
}
