/**
 * A small seeded pseudo-random generator (sfc32, seeded through splitmix32).
 *
 * Fault schedules must replay exactly from a seed, so nothing here may touch
 * `Math.random()`. sfc32 is fast in 32-bit integer arithmetic, has a period of at least
 * 2^32 and passes the usual statistical batteries, which is plenty for deciding which
 * packets to drop. It is not cryptographic.
 */
export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /** @param seed any number; it is reduced to a uint32, and equal seeds give equal streams. */
  constructor(seed: number) {
    // splitmix32 spreads a small or sparse seed (1, 2, 3...) over all 128 bits of state,
    // so neighbouring seeds do not produce correlated streams.
    let s = seed >>> 0;
    const mix = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = mix();
    this.b = mix();
    this.c = mix();
    this.d = mix();
    // The first outputs of sfc32 still carry visible structure from the seed.
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  /** A uniformly distributed integer in [0, 2^32). */
  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** A uniformly distributed number in [0, 1), with 32 bits of resolution. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /**
   * An integer in [0, n) for a positive integer `n` up to 2^32. The bias of scaling a
   * 32-bit draw is below n / 2^32, negligible for the bit and packet counts used here.
   */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}
