/*
 * The labs' text report: a title, one column per scenario with a row per figure, and the
 * verdict lines.
 */

/** One check of a lab's done-when targets. */
export interface VerdictCheck {
  /** What is checked, as the table prints it. */
  name: string;
  /** The figure measured, as text ("12 ms", "never", "41x"). */
  value: string;
  pass: boolean;
}

/** The table: `rows` are [label, one cell per scenario]; cells are already text. */
export function formatTable(title: string, header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const all = [['', ...header], ...rows];
  const widths = all[0].map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  const line = (r: readonly string[]): string =>
    r
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
      .join('   ')
      .trimEnd();
  return [title, ...all.map(line), ''].join('\n');
}

/** `verdict: PASS|FAIL: name value; ...` on one line. */
export function formatVerdict(checks: readonly VerdictCheck[]): string {
  if (checks.length === 0) return 'verdict: nothing to check\n';
  const pass = checks.every((c) => c.pass);
  return `verdict: ${pass ? 'PASS' : 'FAIL'}: ${checks.map((c) => `${c.name}: ${c.pass ? 'pass' : 'FAIL'} (${c.value})`).join('; ')}\n`;
}

/** A number with `digits` significant figures at most, without an exponent for the lab's ranges. */
export function fmt(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || Number.isNaN(x)) return '-';
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const abs = Math.abs(x);
  if (abs >= 10 ** digits) return String(Math.round(x));
  return String(Number(x.toPrecision(digits)));
}
