import type { Writable } from 'node:stream';

/**
 * Writes messages to a gRPC stream (or, through `encode`, an HTTP response) without ignoring backpressure: when
 * `write` returns false the rest waits for 'drain'. Messages with the same coalesce key replace an unsent earlier
 * one (a newer route table or health report makes the older one worthless), so a slow peer costs bounded memory
 * for state-of-the-world messages.
 */
export class Outbox<T> {
  private readonly pending: { msg: T; key: string | undefined }[] = [];
  private blocked = false;
  private closed = false;
  private ending = false;

  constructor(
    private readonly stream: Writable,
    private readonly coalesceKey: (msg: T) => string | undefined = () => undefined,
    private readonly encode: (msg: T) => unknown = (msg) => msg,
  ) {
    stream.on('drain', () => {
      this.blocked = false;
      this.flush();
    });
  }

  send(msg: T): void {
    if (this.closed || this.ending) return;
    const key = this.coalesceKey(msg);
    if (key !== undefined) {
      const i = this.pending.findIndex((p) => p.key === key);
      if (i !== -1) this.pending.splice(i, 1);
    }
    this.pending.push({ msg, key });
    this.flush();
  }

  /** Unsent messages (for tests and metrics). */
  get backlog(): number {
    return this.pending.length;
  }

  /** Drops whatever is unsent (the stream is gone or being torn down). */
  close(): void {
    this.closed = true;
    this.pending.length = 0;
  }

  /** Ends the stream after everything queued has been written (a final message must not be lost to `end`). */
  end(): void {
    if (this.closed || this.ending) return;
    this.ending = true;
    this.flush();
  }

  private flush(): void {
    while (!this.blocked && !this.closed && this.pending.length > 0) {
      if (this.stream.destroyed || this.stream.writableEnded) {
        this.close();
        return;
      }
      const { msg } = this.pending.shift()!;
      try {
        if (!this.stream.write(this.encode(msg))) this.blocked = true;
      } catch {
        this.close();
      }
    }
    if (this.ending && !this.closed && this.pending.length === 0) {
      this.closed = true;
      try {
        this.stream.end();
      } catch {
        // already gone
      }
    }
  }
}
