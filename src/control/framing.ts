/**
 * Newline-delimited JSON framing for the control protocol. Pure: it is fed bytes and calls
 * its sink; it owns no socket.
 *
 * The splitter's one job beyond splitting is to keep memory bounded against a peer that
 * never sends a newline: once a line grows past the limit it reports the line as oversize
 * at once and then drops bytes up to the next newline without keeping any of them.
 */

/** Receives what a {@link LineSplitter} finds in the byte stream. */
export interface LineSink {
  /** A complete line, decoded from UTF-8, without its `\n` (and without a trailing `\r`). */
  line(text: string): void;
  /** A line exceeded the limit; its bytes up to the next newline are being discarded. */
  oversize(): void;
  /** A complete line was not valid UTF-8. */
  badEncoding(): void;
}

const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;

// Fatal decoding so that invalid UTF-8 is reported rather than turned into U+FFFD and
// silently accepted as a different string than the peer meant.
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Splits a byte stream into lines of at most `maxLineBytes` bytes (newline excluded).
 * Blank lines are skipped so a person typing into `nc` can press Enter without an error.
 */
export class LineSplitter {
  readonly maxLineBytes: number;
  private readonly sink: LineSink;
  private parts: Buffer[] = [];
  private buffered = 0;
  private discarding = false;
  private stopped = false;

  constructor(maxLineBytes: number, sink: LineSink) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError(`maxLineBytes must be a positive integer, got ${maxLineBytes}`);
    }
    this.maxLineBytes = maxLineBytes;
    this.sink = sink;
  }

  /** Bytes of an unfinished line currently held (never more than `maxLineBytes`). */
  get bufferedBytes(): number {
    return this.buffered;
  }

  /** True while the rest of an oversize line is being skipped. */
  get isDiscarding(): boolean {
    return this.discarding;
  }

  /**
   * Feeds bytes. Lines found are delivered synchronously, in order. If the sink calls
   * {@link stop} the rest of the chunk is ignored.
   */
  push(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length && !this.stopped) {
      const nl = chunk.indexOf(NEWLINE, start);
      const end = nl === -1 ? chunk.length : nl;
      if (this.discarding) {
        if (nl === -1) return;
        this.discarding = false;
        start = nl + 1;
        continue;
      }
      const segment = end - start;
      if (this.buffered + segment > this.maxLineBytes) {
        this.parts = [];
        this.buffered = 0;
        if (nl === -1) this.discarding = true;
        start = nl === -1 ? chunk.length : nl + 1;
        this.sink.oversize();
        continue;
      }
      if (nl === -1) {
        // Copy so an unfinished line does not pin the whole (possibly large) chunk.
        this.parts.push(Buffer.from(chunk.subarray(start)));
        this.buffered += segment;
        return;
      }
      let line: Buffer;
      if (this.parts.length === 0) {
        line = chunk.subarray(start, end);
      } else {
        this.parts.push(chunk.subarray(start, end));
        line = Buffer.concat(this.parts, this.buffered + segment);
        this.parts = [];
        this.buffered = 0;
      }
      start = nl + 1;
      this.deliver(line);
    }
  }

  /** Stops delivering: later and remaining input is ignored. Used when the stream is torn down. */
  stop(): void {
    this.stopped = true;
    this.parts = [];
    this.buffered = 0;
  }

  private deliver(line: Buffer): void {
    let len = line.length;
    if (len > 0 && line[len - 1] === CARRIAGE_RETURN) len--;
    let blank = true;
    for (let i = 0; i < len; i++) {
      const c = line[i];
      if (c !== 0x20 && c !== 0x09) {
        blank = false;
        break;
      }
    }
    if (blank) return;
    let text: string;
    try {
      text = utf8.decode(line.subarray(0, len));
    } catch {
      this.sink.badEncoding();
      return;
    }
    this.sink.line(text);
  }
}

/**
 * Encodes one protocol message as a line. JSON escapes newlines inside strings, so the
 * only newline in the result is the terminator.
 */
export function encodeLine(message: object): string {
  return JSON.stringify(message) + '\n';
}
