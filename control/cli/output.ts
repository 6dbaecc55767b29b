import { ConfigError, errorMessage, MxError, UsageError } from '../../shared/errors.js';

export interface OutputOptions {
  json?: boolean;
}

/** Prints a value as JSON (for scripts) or through a human renderer. */
export function emit<T>(opts: OutputOptions, value: T, human: (v: T) => string): void {
  process.stdout.write(opts.json ? `${JSON.stringify(value, null, 2)}\n` : `${human(value)}\n`);
}

/** A plain aligned table; columns as wide as their widest cell. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** Exit status: 2 for bad arguments or config, 1 for anything else that failed. One line on stderr. */
export function fail(err: unknown): never {
  const usage = err instanceof UsageError || err instanceof ConfigError || (err instanceof MxError && err.code === 'USAGE');
  process.stderr.write(`mxswitch: ${usage && err instanceof ConfigError ? 'config error: ' : ''}${errorMessage(err)}\n`);
  process.exit(usage ? 2 : 1);
}

/** Wraps a command action so any error becomes a one-line message and the right exit status. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      fail(err);
    }
  };
}
