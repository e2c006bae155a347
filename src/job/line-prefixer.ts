import { StringDecoder } from 'node:string_decoder';

/** Longest partial line kept waiting for its newline; longer text is emitted in pieces. */
export const DEFAULT_MAX_LINE_CHARS = 64 * 1024;

/**
 * Splits a byte stream into lines, whatever the chunk boundaries: a line (or a UTF-8
 * character) cut across two chunks comes out whole. The last line, when it has no newline,
 * comes out on {@link LineSplitter.end}.
 *
 * Lines are handed out without their `\n`, so the launcher can prefix them and so that lines
 * of concurrent ranks never interleave mid-line.
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private pending = '';
  private ended = false;

  /**
   * @param onLine - called once per complete line, without the newline
   * @param maxLineChars - a partial line longer than this is emitted as is, so a rank writing
   *   endless text without a newline cannot make the launcher's memory grow without bound
   */
  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxLineChars: number = DEFAULT_MAX_LINE_CHARS,
  ) {}

  /** Feeds a chunk; emits every line it completes. */
  write(chunk: Buffer | string): void {
    if (this.ended) return;
    const text = this.pending + (typeof chunk === 'string' ? chunk : this.decoder.write(chunk));
    let start = 0;
    for (let nl = text.indexOf('\n', start); nl >= 0; nl = text.indexOf('\n', start)) {
      this.onLine(text.slice(start, nl));
      start = nl + 1;
    }
    this.pending = start === 0 ? text : text.slice(start);
    while (this.pending.length > this.maxLineChars) {
      this.onLine(this.pending.slice(0, this.maxLineChars));
      this.pending = this.pending.slice(this.maxLineChars);
    }
  }

  /** Emits the unterminated last line, if any; later writes are ignored. Idempotent. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    const rest = this.pending + this.decoder.end();
    this.pending = '';
    if (rest !== '') this.onLine(rest);
  }
}
