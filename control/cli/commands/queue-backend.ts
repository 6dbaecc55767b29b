import type { BulkAction } from '../../../agent/queue-ops.js';
import type { SelectionFlags } from '../args.js';
import type { CommonOptions } from './common.js';

export type QueueOptions = CommonOptions & SelectionFlags & { dataDir?: string; agent?: string; limit?: string; timeout?: string; body?: boolean; dryRun?: boolean; shadow?: boolean };

/** What a queue subcommand does, on the local file or through the controller. */
export interface QueueBackend {
  ls(opts: QueueOptions): Promise<void> | void;
  show(id: string, opts: QueueOptions): Promise<void> | void;
  /** qshape: recipients by domain and age. */
  shape(opts: QueueOptions): Promise<void> | void;
  /** rm|retry|hold|release: one message by id, or the mail the selection flags pick. */
  change(action: BulkAction, id: string | undefined, opts: QueueOptions): Promise<void> | void;
}
