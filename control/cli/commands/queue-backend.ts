import type { CommonOptions } from './common.js';

export type QueueOptions = CommonOptions & { dataDir?: string; agent?: string; match?: string; state?: string; limit?: string; all?: boolean; timeout?: string; body?: boolean };

/** What a queue subcommand does, on the local file or through the controller. */
export interface QueueBackend {
  ls(opts: QueueOptions): Promise<void> | void;
  show(id: string, opts: QueueOptions): Promise<void> | void;
  rm(id: string, opts: QueueOptions): Promise<void> | void;
  retry(id: string | undefined, opts: QueueOptions): Promise<void> | void;
}
