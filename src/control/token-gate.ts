/**
 * The daemon's shared token. Only its SHA-256 is kept, so a presented token of any length
 * is compared as an equal-length buffer, in constant time, leaking neither content nor length.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** Checks presented tokens against the daemon's, if it has one. */
export class TokenGate {
  private readonly digest: Buffer | null;

  /** `token` null (or empty): no token needed, every check passes. */
  constructor(token: string | null | undefined) {
    this.digest = token ? digest(token) : null;
  }

  /** True when connections must `hello` with the token first. */
  get required(): boolean {
    return this.digest !== null;
  }

  /** Whether `token` is the daemon's (always true when it has none). */
  matches(token: string): boolean {
    if (!this.digest) return true;
    return timingSafeEqual(digest(token), this.digest);
  }
}
