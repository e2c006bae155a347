import { EfaError } from '../common/errors';

/**
 * The admin-command layer. Every control operation of a device (create/modify/destroy of
 * its objects, queries) is submitted here as a command with an EFA opcode and finishes with
 * an EFA admin status, the way the EFA driver talks to the device's admin queue. Failures
 * reach the caller as AdminCommandError, whose `code` is the errno the driver would return.
 */

/** Admin opcodes, numbered as EFA's `efa_admin_aq_opcode`. */
export const AdminOpcode = {
  CREATE_QP: 1,
  MODIFY_QP: 2,
  QUERY_QP: 3,
  DESTROY_QP: 4,
  CREATE_AH: 5,
  DESTROY_AH: 6,
  REG_MR: 7,
  DEREG_MR: 8,
  CREATE_CQ: 9,
  DESTROY_CQ: 10,
  GET_FEATURE: 11,
  SET_FEATURE: 12,
  GET_STATS: 13,
  ALLOC_PD: 14,
  DEALLOC_PD: 15,
} as const;
export type AdminOpcode = (typeof AdminOpcode)[keyof typeof AdminOpcode];

const OPCODE_NAMES: string[] = [];
for (const [name, value] of Object.entries(AdminOpcode)) OPCODE_NAMES[value] = name;

/** Admin completion statuses, numbered as EFA's `efa_admin_aq_completion_status`. */
export const AdminStatus = {
  SUCCESS: 0,
  RESOURCE_ALLOCATION_FAILURE: 1,
  BAD_OPCODE: 2,
  UNSUPPORTED_OPCODE: 3,
  MALFORMED_REQUEST: 4,
  ILLEGAL_PARAMETER: 5,
  UNKNOWN_ERROR: 6,
  RESOURCE_BUSY: 7,
} as const;
export type AdminStatus = (typeof AdminStatus)[keyof typeof AdminStatus];

/** The errno the EFA driver maps each admin status to. */
export function adminStatusToErrno(status: number): string {
  switch (status) {
    case AdminStatus.RESOURCE_ALLOCATION_FAILURE:
      return 'ENOMEM';
    case AdminStatus.UNSUPPORTED_OPCODE:
      return 'EOPNOTSUPP';
    case AdminStatus.RESOURCE_BUSY:
      return 'EBUSY';
    default:
      return 'EINVAL';
  }
}

export function adminOpcodeName(opcode: number): string {
  return OPCODE_NAMES[opcode] ?? `OPCODE_${opcode}`;
}

/**
 * A failed admin command. The message names the command the way the EFA driver logs it:
 * `REG_MR (opcode 7) failed: status 1, ENOMEM: <detail>`.
 */
export class AdminCommandError extends EfaError {
  readonly opcode: number;
  readonly status: number;

  constructor(opcode: number, status: number, detail: string, errno = adminStatusToErrno(status)) {
    super(errno, `${adminOpcodeName(opcode)} (opcode ${opcode}) failed: status ${status}, ${errno}: ${detail}`);
    this.opcode = opcode;
    this.status = status;
  }
}

/**
 * Thrown by a command handler to finish the command with a non-success status. `errno`
 * overrides the status's usual errno where the driver answers otherwise (EPERM for an
 * object used outside its protection domain).
 */
export class AdminFailure extends Error {
  constructor(
    readonly status: AdminStatus,
    readonly detail: string,
    readonly errno?: string,
  ) {
    super(detail);
  }
}

/** Counts of admin commands, by opcode name and outcome. */
export class AdminStats {
  readonly submitted = new Map<string, number>();
  readonly failed = new Map<string, number>();

  toJSON(): { submitted: Record<string, number>; failed: Record<string, number> } {
    return { submitted: Object.fromEntries(this.submitted), failed: Object.fromEntries(this.failed) };
  }
}

/**
 * Runs admin commands one at a time, in submission order. Handlers are synchronous (the
 * emulated device owns its tables); the promise keeps the control calls async as the verbs
 * API is, so a later version can put real latency or a remote device behind it.
 */
export class AdminQueue {
  readonly stats = new AdminStats();

  /** Executes `handler` as command `opcode`; a thrown AdminFailure becomes an AdminCommandError. */
  execute<T>(opcode: AdminOpcode, handler: () => T): Promise<T> {
    try {
      return Promise.resolve(this.executeSync(opcode, handler));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** The synchronous form, for destroy paths that run during close. */
  executeSync<T>(opcode: AdminOpcode, handler: () => T): T {
    this.count(this.stats.submitted, opcode);
    try {
      return handler();
    } catch (err) {
      throw this.fail(opcode, err);
    }
  }

  /** For commands that first wait on something else (CREATE_AH resolves its GID). */
  async executeAsync<T>(opcode: AdminOpcode, handler: () => Promise<T>): Promise<T> {
    this.count(this.stats.submitted, opcode);
    try {
      return await handler();
    } catch (err) {
      throw this.fail(opcode, err);
    }
  }

  private count(map: Map<string, number>, opcode: number): void {
    const name = adminOpcodeName(opcode);
    map.set(name, (map.get(name) ?? 0) + 1);
  }

  private fail(opcode: number, err: unknown): Error {
    this.count(this.stats.failed, opcode);
    if (err instanceof AdminFailure) return new AdminCommandError(opcode, err.status, err.detail, err.errno);
    if (err instanceof EfaError) return err;
    return new AdminCommandError(opcode, AdminStatus.UNKNOWN_ERROR, (err as Error)?.message ?? String(err));
  }
}
