/*
 * The data check of `efa-emu fi-pingpong` / `fi-bw` (fabtests' -v, on by default here). fabtests
 * fills every message with the same alphabet, which cannot tell one message from another; here
 * message `i` is its own slice of a shared pseudo-random pattern, so a receiver also notices a
 * message delivered into another's buffer, twice, or not at all.
 */
import { EfaError } from '../../common/errors';

/**
 * Message `i` is the pattern from offset `i mod PATTERN_SLIDE`: neighbouring messages differ.
 * Larger than the largest window, so a buffer's stale content from the previous window never
 * equals a message the current one expects.
 */
export const PATTERN_SLIDE = 8191;

/** A message's bytes differ from what was sent (fabtests' "Data check error"). */
export class DataCheckError extends EfaError {
  constructor(message: string) {
    super('EIO', message);
  }
}

/**
 * The bytes every message is cut from: the same on both ranks (a fixed xorshift32 stream), so
 * a sender sends a slice of it without copying and a receiver compares against a slice.
 */
export function makePattern(len: number): Buffer {
  const words = new Uint32Array(Math.ceil(len / 4) + 1);
  let x = 0x2545f491;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x;
  }
  return Buffer.from(words.buffer, 0, len);
}

/**
 * The messages of one size, and the check of what arrived: each receive is expected to hold one
 * of the messages posted for ({@link expect}), each taken once. Tagged, the tag names which;
 * untagged, any still outstanding may come (SRD does not keep order, so untagged receives of a
 * window complete with its messages in any order).
 */
export class MessageCheck {
  /** Messages checked since {@link reset}. */
  checked = 0;
  private size = 0;
  private outstanding: number[] = [];

  /** `pattern` must hold the largest size plus {@link PATTERN_SLIDE} bytes. */
  constructor(private readonly pattern: Buffer) {}

  /** Starts a size: nothing outstanding, nothing checked. */
  reset(size: number): void {
    if (size + PATTERN_SLIDE > this.pattern.length) throw new RangeError(`size ${size}: the pattern holds ${this.pattern.length - PATTERN_SLIDE} bytes at most`);
    this.size = size;
    this.outstanding = [];
    this.checked = 0;
  }

  /** The bytes of message `index` of the current size (a view of the pattern: never write to it). */
  message(index: number): Buffer {
    const off = index % PATTERN_SLIDE;
    return this.pattern.subarray(off, off + this.size);
  }

  /** A receive was posted for message `index`. */
  expect(index: number): void {
    this.outstanding.push(index);
  }

  /** Messages expected and not yet checked. */
  get pending(): number {
    return this.outstanding.length;
  }

  /**
   * Checks a received message of `len` bytes in `buf`; `tag` is the tagged receive's tag (a
   * message index), null when untagged. Throws {@link DataCheckError} when it is wrong.
   */
  check(buf: Uint8Array, len: number, tag: bigint | null): void {
    if (len !== this.size) throw new DataCheckError(`received ${len} bytes for buffer size ${this.size}`);
    const got = Buffer.from(buf.buffer, buf.byteOffset, this.size);
    let at: number;
    if (tag !== null) {
      at = this.outstanding.indexOf(Number(tag));
      if (at < 0) throw new DataCheckError(`a message tagged ${tag}, which no outstanding receive was posted for (buffer size ${this.size})`);
      const want = this.message(this.outstanding[at]);
      if (!got.equals(want)) this.fail(got, want);
    } else {
      // The likeliest candidate is the oldest; a wrong one differs within a byte or two.
      at = this.outstanding.findIndex((i) => got.equals(this.message(i)));
      if (at < 0) {
        if (this.outstanding.length === 0) throw new DataCheckError(`a message of size ${this.size} that no receive was posted for`);
        this.fail(got, this.message(this.outstanding[0]));
      }
    }
    this.outstanding.splice(at, 1);
    this.checked++;
  }

  private fail(got: Buffer, want: Buffer): never {
    let i = 0;
    while (i < got.length && got[i] === want[i]) i++;
    const hex = (b: number): string => `0x${b.toString(16).padStart(2, '0')}`;
    throw new DataCheckError(`Data check error (${hex(want[i])}!=${hex(got[i])}) at byte ${i} for buffer size ${this.size}`);
  }
}
