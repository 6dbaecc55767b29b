import { timingSafeEqual, createHash } from 'node:crypto';
import { status, type Metadata, type ServerErrorResponse, type ChannelOptions } from '@grpc/grpc-js';
import { MxError, errorMessage, type ErrorCode } from '../../../shared/errors.js';
import { RouteError } from '../../../shared/routes.js';

/** Constant-time comparison of `authorization: Bearer <token>` against the expected token. */
export function bearerMatches(metadata: Metadata, token: string): boolean {
  return secretMatches(bearerSecret(metadata.get('authorization')[0]), token);
}

/** The secret of an `authorization: Bearer <secret>` header value; undefined for anything else. */
export function bearerSecret(header: unknown): string | undefined {
  return typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : undefined;
}

/** Constant-time comparison of a presented secret (undefined: none presented) against the expected token. */
export function secretMatches(presented: string | undefined, token: string): boolean {
  if (presented === undefined) return false;
  // Hash both sides so the comparison is constant-time whatever the lengths.
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

// Exhaustive: a new ErrorCode does not compile until it has a status here.
const CODES: Record<ErrorCode, status> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  USAGE: status.INVALID_ARGUMENT,
  CONFIG: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  VERSION_CONFLICT: status.ABORTED,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  AGENTS_DISCONNECTED: status.FAILED_PRECONDITION,
  OPERATION_RUNNING: status.FAILED_PRECONDITION,
  STALE_VERSION: status.FAILED_PRECONDITION,
  QUEUE_OPEN: status.FAILED_PRECONDITION,
  QUEUE_FULL: status.RESOURCE_EXHAUSTED,
  QUEUE_ERROR: status.INTERNAL,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  UNAVAILABLE: status.UNAVAILABLE,
  DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  UNSUPPORTED: status.UNIMPLEMENTED,
  CONTROLLER: status.UNAVAILABLE,
};

/** A typed error (MxError code, or a route syntax error) as a gRPC status; anything untyped is INTERNAL. */
export function toServiceError(err: unknown): ServerErrorResponse {
  const code = err instanceof MxError ? CODES[err.code] : err instanceof RouteError ? status.INVALID_ARGUMENT : status.INTERNAL;
  return Object.assign(new Error(errorMessage(err)), { code, details: errorMessage(err) });
}

/** A viewer token used for a call that changes something. */
export function readOnlyDenied(what: string): MxError {
  return new MxError('PERMISSION_DENIED', `${what} needs the admin token: the viewer token is read-only`);
}

export function unauthenticated(what: string): ServerErrorResponse {
  return Object.assign(new Error(`invalid or missing ${what} token`), { code: status.UNAUTHENTICATED, details: `invalid or missing ${what} token` });
}

/** HTTP/2 keepalive: both ends ping every 10 s when idle and drop a peer that does not answer in 5 s. */
export const KEEPALIVE_TIME_MS = 10_000;
export const KEEPALIVE_TIMEOUT_MS = 5_000;

export const serverOptions: ChannelOptions = {
  'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
  'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
  'grpc.keepalive_permit_without_calls': 1,
  // Clients ping every 10 s; allow that (the default minimum of 5 min would answer with GOAWAY too_many_pings).
  'grpc.http2.min_ping_interval_without_data_ms': 5_000,
  // What the APIs need (the largest requests are agents' health reports), not the 16 MB a client could make us read.
  'grpc.max_receive_message_length': 4 * 1024 * 1024,
};

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\./.test(h) || h === '::ffff:127.0.0.1';
}
