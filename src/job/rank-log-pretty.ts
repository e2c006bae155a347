import type { prettyFactory as PrettyFactory } from 'pino-pretty';

/**
 * Renders the JSON log lines ranks write (their stderr is a pipe, so pino writes JSON) the
 * way the launcher's own logs look on a terminal. Returns the pretty text, or null for a line
 * that is not a pino record (a program's own stderr output passes through unchanged).
 */
export function rankLogFormatter(colorize: boolean): (line: string) => string | null {
  // Loaded here, by the launcher that renders, not by every rank that imports the package
  // (pino-pretty and its dependencies are some 40 modules).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { prettyFactory } = require('pino-pretty') as { prettyFactory: typeof PrettyFactory };
  const pretty = prettyFactory({ colorize });
  return (line: string): string | null => {
    // Cheap test first: every pino record starts with its numeric level.
    if (!line.startsWith('{"level":')) return null;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      return null;
    }
    if (rec === null || typeof rec !== 'object' || typeof (rec as { level?: unknown }).level !== 'number' || typeof (rec as { time?: unknown }).time !== 'number') return null;
    return pretty(rec).replace(/\n+$/, '');
  };
}
