import { FI_ADDR_UNSPEC } from './rdm-peer';

/** What a posted receive and an arrived message are matched on. */
export interface Matchable {
  tagged: boolean;
  /** Tag halves (tagged only). */
  tagLo: number;
  tagHi: number;
}

/** A posted receive's criteria: the source it accepts and the tag bits it ignores. */
export interface RecvCriteria extends Matchable {
  /** fi_addr of the only sender accepted, or FI_ADDR_UNSPEC for any (FI_DIRECTED_RECV). */
  src: number;
  ignoreLo: number;
  ignoreHi: number;
}

/** An arrived message's identity: its sender's fi_addr (FI_ADDR_NOTAVAIL when not in the AV). */
export interface ArrivedMessage extends Matchable {
  srcAddr: number;
}

/**
 * libfabric's matching rule: the source matches when the receive names no source or exactly
 * this one; a tagged message matches when every tag bit not ignored is equal.
 */
export function matches(r: RecvCriteria, m: ArrivedMessage): boolean {
  if (r.tagged !== m.tagged) return false;
  if (r.src !== FI_ADDR_UNSPEC && r.src !== m.srcAddr) return false;
  if (!r.tagged) return true;
  return ((r.tagLo ^ m.tagLo) & ~r.ignoreLo) === 0 && ((r.tagHi ^ m.tagHi) & ~r.ignoreHi) === 0;
}

/**
 * Two ordered lists per kind, as the provider keeps them: receives posted and not yet matched
 * (matched oldest first), and messages that arrived before any receive matched them
 * (unexpected, taken oldest first).
 */
export class TagMatcher<R extends RecvCriteria, U extends ArrivedMessage> {
  private readonly posted: [R[], R[]] = [[], []];
  private readonly unexpected: [U[], U[]] = [[], []];

  /** The oldest posted receive that matches `m`, removed; null when none. */
  takePosted(m: ArrivedMessage): R | null {
    const list = this.posted[m.tagged ? 1 : 0];
    for (let i = 0; i < list.length; i++) {
      if (matches(list[i], m)) return list.splice(i, 1)[0];
    }
    return null;
  }

  /** The oldest unexpected message `r` matches, removed; null when none. */
  takeUnexpected(r: RecvCriteria): U | null {
    const list = this.unexpected[r.tagged ? 1 : 0];
    for (let i = 0; i < list.length; i++) {
      if (matches(r, list[i])) return list.splice(i, 1)[0];
    }
    return null;
  }

  addPosted(r: R): void {
    this.posted[r.tagged ? 1 : 0].push(r);
  }

  addUnexpected(u: U): void {
    this.unexpected[u.tagged ? 1 : 0].push(u);
  }

  /** Removes a posted receive (cancel); false when it was not posted. */
  removePosted(r: R): boolean {
    const list = this.posted[r.tagged ? 1 : 0];
    const i = list.indexOf(r);
    if (i < 0) return false;
    list.splice(i, 1);
    return true;
  }

  /** Removes an unexpected message (its sender failed). */
  removeUnexpected(u: U): void {
    const list = this.unexpected[u.tagged ? 1 : 0];
    const i = list.indexOf(u);
    if (i >= 0) list.splice(i, 1);
  }

  /** Removes every unexpected message `pred` picks. */
  removeUnexpectedWhere(pred: (u: U) => boolean): void {
    for (const list of this.unexpected) {
      for (let i = list.length - 1; i >= 0; i--) if (pred(list[i])) list.splice(i, 1);
    }
  }

  /** Posted receives still waiting (both kinds). */
  postedReceives(): R[] {
    return [...this.posted[0], ...this.posted[1]];
  }

  get unexpectedCount(): number {
    return this.unexpected[0].length + this.unexpected[1].length;
  }

  get postedCount(): number {
    return this.posted[0].length + this.posted[1].length;
  }
}
