import type { sendUnaryData, ServerReadableStream } from '@grpc/grpc-js';
import { MxError, errorMessage } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import type { AdminServiceServer, ImportRecipientsRequest, ImportRecipientsResponse } from '../../../proto/gen/mxswitch/v1/admin.js';
import type { RecipientStoreApi } from '../../core/ports.js';
import type { AdminCalls } from './admin-calls.js';
import { toServiceError, unauthenticated } from './grpc-util.js';

/** An import larger than this is refused before it is held in memory (a list of every mailbox of a large ISP). */
const MAX_IMPORT = 5_000_000;

type RecipientRpcs = Pick<AdminServiceServer, 'importRecipients' | 'editRecipients' | 'listRecipients'>;

/** The recipient-list part of the AdminService: import (client stream of chunks), edit, list. */
export function recipientHandlers(store: RecipientStoreApi | undefined, { authorized, unary, actor }: AdminCalls, log: Logger): RecipientRpcs {
  const lists = (): RecipientStoreApi => {
    // Both controller modes keep lists; undefined only where a caller built the service without them.
    if (!store) throw new MxError('UNSUPPORTED', 'this controller keeps no recipient lists');
    return store;
  };
  return {
    importRecipients(call: ServerReadableStream<ImportRecipientsRequest, ImportRecipientsResponse>, callback: sendUnaryData<ImportRecipientsResponse>): void {
      if (!authorized(call, 'ImportRecipients')) return callback(unauthenticated('admin'));
      let head: ImportRecipientsRequest | undefined;
      const addresses: string[] = [];
      let failed = false;
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        callback(toServiceError(err));
      };
      call.on('data', (chunk: ImportRecipientsRequest) => {
        head ??= chunk;
        if (addresses.length + chunk.addresses.length > MAX_IMPORT) {
          fail(new MxError('INVALID_ARGUMENT', `more than ${MAX_IMPORT} addresses in one import`));
          call.destroy();
          return;
        }
        for (const a of chunk.addresses) addresses.push(a);
      });
      call.on('error', (err) => log.warn({ error: errorMessage(err) }, 'recipient import stream failed'));
      call.on('end', () => {
        if (failed) return;
        void (async () => {
          if (!head) throw new MxError('INVALID_ARGUMENT', 'empty import: no domain given');
          const who = actor(call);
          const change = await lists().import(head.domain, addresses, { replace: head.replace, actor: who });
          log.info({ domain: head.domain, replace: head.replace, ...change, actor: who }, 'recipient list imported');
          callback(null, { change });
        })().catch(fail);
      });
    },

    editRecipients: unary('EditRecipients', async (req, call) => {
      const who = actor(call);
      const change = await lists().edit({ add: req.add, remove: req.remove, dropDomains: req.dropDomains, actor: who });
      log.info({ ...change, actor: who }, 'recipient lists edited');
      return { change };
    }),

    listRecipients: unary('ListRecipients', (req) => {
      const s = lists();
      if (!req.domain) return { version: s.version, domains: s.counts(), addresses: [] };
      const l = s.list(req.domain, req.limit);
      return { version: s.version, domains: [{ domain: l.domain, count: l.count }], addresses: l.addresses };
    }),
  };
}
