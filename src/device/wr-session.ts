import type { EfaError } from '../common/errors';
import type { SendWr } from './work-requests';

/**
 * The work requests of one `wrStart` .. `wrComplete` batch (the `ibv_wr_*` API): built up by
 * the `wr*` calls and posted together, or not at all. The first error any call meets is kept
 * and raised by `wrComplete`, as EFA's provider does.
 */
export class WrSession {
  /** The requests built so far, in order; the last one is what `wrSet*` calls fill in. */
  readonly wrs: SendWr[] = [];
  /** Each request's opcode, its inline bytes (null: its SGEs are gathered at post time). */
  readonly opcodes: number[] = [];
  readonly inline: Array<Uint8Array | null> = [];
  /** Each request's byte count, from its SGEs or inline data when they were set. */
  readonly totals: number[] = [];
  /** The first error of the batch, or null. */
  error: EfaError | null = null;

  /** The request the `wrSet*` calls apply to. */
  get last(): SendWr | undefined {
    return this.wrs[this.wrs.length - 1];
  }

  fail(err: EfaError): void {
    if (this.error === null) this.error = err;
  }
}
