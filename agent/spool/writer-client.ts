import type { Worker } from 'node:worker_threads';
import { startModuleWorker } from '../../shared/module-worker.js';
import { QueueStorageError } from './types.js';
import type { Writer, WriteOp, WriteReply, WriterOptions } from './writer.js';

type Waiter = { resolve: (value: unknown) => void; reject: (err: Error) => void };

/**
 * The spool's side of the writer thread (see Writer): each call is one message to the thread and resolves with
 * the method's value once its transaction has committed, or rejects with a QueueStorageError (full or not, as a
 * write on this thread would). The thread starts with the first write (a look at the queue that only reads
 * never starts one), keeps the process alive only while a write is under way, and after it died unexpectedly
 * (everything under way is rejected) the next write starts a new one.
 */
export class WriterClient {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, Waiter>();
  private lastId = 0;
  /** After close no thread starts again: a write that comes too late fails. */
  private closed = false;

  constructor(private readonly options: WriterOptions) {}

  /** Runs `op` in the writer thread; `transfer`: ArrayBuffers of `args` that move there (see wire.ts). */
  call<K extends WriteOp>(op: K, args: Parameters<Writer[K]>, transfer: ArrayBuffer[] = []): Promise<ReturnType<Writer[K]>> {
    if (this.closed) return Promise.reject(new QueueStorageError(false, 'the queue is closed'));
    const worker = (this.worker ??= this.start());
    const id = ++this.lastId;
    return new Promise((resolve, reject) => {
      worker.postMessage({ id, op, args }, transfer);
      if (this.waiting.size === 0) worker.ref();
      this.waiting.set(id, { resolve: resolve as (value: unknown) => void, reject });
    });
  }

  /** The page limit of the writes (a full disk, simulated), also for a thread started later. */
  limitPages(max: number): void {
    this.options.maxPages = max;
    if (this.worker) this.call('limitPages', [max]).catch(() => undefined);
  }

  /** Closes the writer's connection and ends the thread; callers first wait for the writes they started. */
  async close(): Promise<void> {
    if (this.closed) return;
    const worker = this.worker;
    const closing = worker && this.call('close', []);
    this.closed = true;
    if (!worker) return;
    await closing;
    this.worker = undefined;
    await worker.terminate();
  }

  private start(): Worker {
    const worker = startModuleWorker(import.meta.url, './writer-thread', this.options);
    worker.unref();
    worker.on('message', (reply: WriteReply) => this.answered(worker, reply));
    worker.on('error', (err) => this.lost(worker, err.message));
    worker.on('exit', (code) => this.lost(worker, `exited with code ${code}`));
    return worker;
  }

  private answered(worker: Worker, reply: WriteReply): void {
    const waiter = this.waiting.get(reply.id);
    this.waiting.delete(reply.id);
    if (this.waiting.size === 0) worker.unref();
    if ('error' in reply) waiter?.reject(new QueueStorageError(reply.error.full, reply.error.message));
    else waiter?.resolve(reply.value);
  }

  private lost(worker: Worker, why: string): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    const error = new QueueStorageError(false, `queue writer thread stopped: ${why}`);
    for (const waiter of this.waiting.values()) waiter.reject(error);
    this.waiting.clear();
  }
}
