import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

/** Levels accepted by `--log-level` and `EFA_EMU_LOG`. */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

let root: Logger | undefined;

/**
 * The process-wide root logger: JSON on stderr, pretty when stderr is a terminal.
 * Stdout stays free for program output (tables, JSON results).
 * The level comes from `level`, else `EFA_EMU_LOG`, else `warn`, so a demo prints results,
 * not chatter.
 */
export function rootLogger(level?: string): Logger {
  if (root && level === undefined) return root;
  const wanted = level ?? process.env.EFA_EMU_LOG ?? 'warn';
  const lvl = (LOG_LEVELS as readonly string[]).includes(wanted) ? wanted : 'warn';
  if (root) {
    root.level = lvl;
    return root;
  }
  if (process.stderr.isTTY) {
    // Loaded lazily: only terminals pay for the pretty printer.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pretty = require('pino-pretty') as (o: object) => NodeJS.WritableStream;
    root = pino({ level: lvl }, pretty({ colorize: true, destination: 2, sync: true }));
  } else {
    root = pino({ level: lvl }, pino.destination({ fd: 2, sync: true }));
  }
  return root;
}

/** A logger that writes nothing: the default for objects made in tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
