let lastIncarnation = 0;

/**
 * A device incarnation: wall-clock milliseconds mod 2^32, never 0, strictly increasing within
 * this process. A restarted process (same device name, same GID) gets a larger one, compared
 * in serial arithmetic, so its peers tell it from its predecessor.
 */
export function nextIncarnation(): number {
  let inc = Date.now() >>> 0;
  if (lastIncarnation !== 0 && ((inc - lastIncarnation) | 0) <= 0) inc = (lastIncarnation + 1) >>> 0;
  if (inc === 0) inc = 1;
  lastIncarnation = inc;
  return inc;
}

/** True when incarnation `a` is newer than `b` (serial order; 0 means unknown and loses). */
export function isNewerIncarnation(a: number, b: number): boolean {
  return a !== 0 && (b === 0 || ((a - b) | 0) > 0);
}
