import { pino, type DestinationStream, type Logger } from 'pino';
import { prettyLine } from './log-pretty.js';

export type { Logger };

/** `log.format`: JSON lines for machines (journald, Loki, jq), or one readable line per record for people. */
export type LogFormat = 'json' | 'pretty';

export interface LogOptions {
  /** pino level name; default MXSWITCH_LOG_LEVEL, else info. */
  level?: string | undefined;
  /** Default: pretty when stderr is a terminal, else json. */
  format?: LogFormat | undefined;
}

/** The format a logger writes when `log.format` is not set: people read a terminal, programs read the rest. */
export function defaultLogFormat(stream: { isTTY?: boolean } = process.stderr): LogFormat {
  return stream.isTTY ? 'pretty' : 'json';
}

/** pretty: each pino JSON line re-written as one readable line (see log-pretty.ts), synchronously to stderr. */
function prettyDestination(color: boolean): DestinationStream {
  // Synchronous: pretty output goes to a person's terminal, where a line lost at exit is worse than the cost.
  const out = pino.destination({ fd: 2, sync: true });
  return { write: (line: string) => void out.write(prettyLine(line, color)) };
}

/**
 * Logs on stderr (stdout stays free for command output): ISO 8601 timestamps ("time":"2026-12-03T14:05:00.123Z")
 * and level names ("level":"info") in both formats, so a line reads the same in a terminal and in jq.
 */
export function createLogger(name: string, opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.MXSWITCH_LOG_LEVEL ?? 'info';
  const format = opts.format ?? defaultLogFormat();
  const destination = format === 'pretty' ? prettyDestination(!!process.stderr.isTTY && !process.env.NO_COLOR) : pino.destination({ fd: 2, sync: false });
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}

export const silentLogger: Logger = pino({ level: 'silent' });
