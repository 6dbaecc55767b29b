import type { Metadata, sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import { MxError } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import type { Access } from './access.js';
import { toServiceError, unauthenticated } from './grpc-util.js';

/** How every admin RPC checks the admin token and answers: shared by the admin service's parts. */
export interface AdminCalls {
  authorized(call: { metadata: Metadata; getPeer(): string }, method: string): boolean;
  /** A unary handler: token checked, `fn`'s result or its error (an MxError code -> gRPC status) returned. */
  unary<Req, Res>(method: string, fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Res | Promise<Res>): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void;
}

export function adminCalls(access: Access, log: Logger): AdminCalls {
  const authorized: AdminCalls['authorized'] = (call, method) => {
    if (access.admin(call.metadata)) return true;
    log.warn({ peer: call.getPeer(), method }, 'admin call rejected: invalid or missing admin token');
    return false;
  };
  const unary: AdminCalls['unary'] = (method, fn) => (call, callback) => {
    if (!authorized(call, method)) return callback(unauthenticated('admin'));
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
  return { authorized, unary };
}
