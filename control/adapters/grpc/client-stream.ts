import type { sendUnaryData, ServerReadableStream } from '@grpc/grpc-js';
import { MxError, errorMessage } from '../../../shared/errors.js';
import type { Logger } from '../../../shared/logger.js';
import { toServiceError } from './grpc-util.js';

/**
 * A client-streamed import (recipient lists, routes): the chunks are collected, at most `max` items in all (a
 * larger import is refused before it is held in memory), and `finish` runs once at the end with the first chunk
 * (its options count) and every item: one answer, nothing applied on an error.
 */
export function collectImport<Req, Item, Res>(
  call: ServerReadableStream<Req, Res>,
  callback: sendUnaryData<Res>,
  spec: { what: string; max: number; items: (chunk: Req) => readonly Item[]; finish: (head: Req | undefined, items: Item[]) => Res | Promise<Res>; log: Logger },
): void {
  let head: Req | undefined;
  const items: Item[] = [];
  let failed = false;
  const fail = (err: unknown) => {
    if (failed) return;
    failed = true;
    callback(toServiceError(err));
  };
  call.on('data', (chunk: Req) => {
    head ??= chunk;
    const part = spec.items(chunk);
    if (items.length + part.length > spec.max) {
      fail(new MxError('INVALID_ARGUMENT', `more than ${spec.max} ${spec.what} in one import`));
      call.destroy();
      return;
    }
    for (const item of part) items.push(item);
  });
  call.on('error', (err) => spec.log.warn({ error: errorMessage(err) }, `${spec.what} import stream failed`));
  call.on('end', () => {
    if (failed) return;
    Promise.resolve()
      .then(() => spec.finish(head, items))
      .then((res) => callback(null, res), fail);
  });
}
