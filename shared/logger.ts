import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON lines on stderr (stdout stays free for command output); MXSWITCH_LOG_LEVEL overrides the level. */
export function createLogger(name: string, level = process.env.MXSWITCH_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: false }));
}

export const silentLogger: Logger = pino({ level: 'silent' });
