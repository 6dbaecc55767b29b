import type { Metadata, sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { MxError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { mayCall, type Access } from './access.js';
import { readOnlyDenied, toServiceError, unauthenticated } from './grpc-util.js';

/**
 * How every admin RPC checks the caller's token and answers: shared by the admin service's parts. The admin token
 * may call every method, the viewer token the read-only ones (see mayCall).
 */
export interface AdminCalls {
  authorized(call: { metadata: Metadata; getPeer(): string }, method: string): boolean;
  /** A unary handler: token checked, `fn`'s result or its error (an MxError code -> gRPC status) returned. */
  unary<Req, Res>(method: string, fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Res | Promise<Res>): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void;
  /** Who a change is recorded as made by: the caller's token's name, never what the request claims. */
  actor(call: { metadata: Metadata }): string;
}

export function adminCalls(access: Access, log: Logger): AdminCalls {
  /** Why this caller may not call `method` (undefined: it may). */
  const refusal = (call: { metadata: Metadata; getPeer(): string }, method: string) => {
    const role = access.operator(call.metadata);
    if (mayCall(role, method)) return undefined;
    log.warn({ peer: call.getPeer(), method, role }, role ? 'admin call rejected: the viewer token is read-only' : 'admin call rejected: invalid or missing admin token');
    return role ? toServiceError(readOnlyDenied(method)) : unauthenticated('admin');
  };
  const authorized: AdminCalls['authorized'] = (call, method) => refusal(call, method) === undefined;
  const unary: AdminCalls['unary'] = (method, fn) => (call, callback) => {
    const refused = refusal(call, method);
    if (refused) return callback(refused);
    Promise.resolve()
      .then(() => fn(call.request, call))
      .then(
        (res) => callback(null, res),
        (err: unknown) => {
          if (!(err instanceof MxError)) log.error({ err, method }, 'admin call failed');
          callback(toServiceError(err));
        },
      );
  };
  return { authorized, unary, actor: (call) => access.actor(call.metadata) };
}
