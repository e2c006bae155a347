/** Below this many bytes a plain loop beats Buffer#copy, whose call overhead dominates. */
const LOOP_BELOW = 96;

/**
 * Copies `len` bytes from `src[srcOff..]` to `dst[dstOff..]` (the ranges must not overlap).
 * Small copies (64-byte messages, headers) are the common case on the hot path.
 */
export function copyBytes(src: Buffer, srcOff: number, dst: Buffer, dstOff: number, len: number): void {
  if (len < LOOP_BELOW) {
    for (let i = 0; i < len; i++) dst[dstOff + i] = src[srcOff + i];
    return;
  }
  src.copy(dst, dstOff, srcOff, srcOff + len);
}
