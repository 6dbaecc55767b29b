/** Every machine-readable error code (the admin API maps each to a gRPC status: see control/grpc-util.ts). */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'USAGE'
  | 'CONFIG'
  | 'NOT_FOUND'
  | 'VERSION_CONFLICT'
  | 'FAILED_PRECONDITION'
  | 'AGENTS_DISCONNECTED'
  | 'OPERATION_RUNNING'
  | 'STALE_VERSION'
  | 'QUEUE_OPEN'
  | 'QUEUE_FULL'
  | 'QUEUE_ERROR'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'UNAVAILABLE'
  | 'DEADLINE_EXCEEDED'
  | 'UNSUPPORTED'
  | 'CONTROLLER';

/** An error that carries a stable machine-readable code next to its human message. */
export class MxError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'MxError';
  }
}

/** A configuration problem; `key` is the dotted path of the offending key ("smtp.listen"). */
export class ConfigError extends MxError {
  constructor(
    readonly key: string,
    problem: string,
  ) {
    super('CONFIG', key ? `${key}: ${problem}` : problem);
    this.name = 'ConfigError';
  }
}

/** A bad command-line argument: the CLI prints it on one line and exits 2. */
export class UsageError extends MxError {
  constructor(message: string) {
    super('USAGE', message);
    this.name = 'UsageError';
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Client input quoted for an error text, cut to `max` characters: an error must say what was wrong without
 * copying a 15 MB argument back to the caller (or into the log).
 */
export function quoteInput(input: string | number, max = 100): string {
  const text = String(input);
  return text.length <= max ? `"${text}"` : `"${text.slice(0, max)}..." (${text.length} characters)`;
}
