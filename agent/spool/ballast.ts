import { closeSync, existsSync, fsyncSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const CHUNK = Buffer.alloc(1024 * 1024);

/**
 * A reserve file (`dataDir/ballast`) that holds disk space for the queue's own drain writes, like CockroachDB's
 * ballast file. Found by the fault suite: when another process filled the disk, the headroom the queue kept free
 * was gone too, and at some points of the WAL cycle a delete of a delivered row needs the WAL to grow (or its
 * checkpoint to grow queue.db): SQLITE_FULL, the delivered mail stayed queued and no space ever came back. The
 * ballast is given up on such a failure so that delivered mail can leave the queue, and it is written again once
 * the disk has room for it and the headroom.
 */
export class Ballast {
  readonly file: string;
  /** Whether the file is in place (known after the first look; only this class writes or removes it). */
  present: boolean;
  /** After a failed write, when to try again (not on every measurement). */
  private retryAt = 0;

  constructor(
    dataDir: string,
    readonly bytes: number,
    private readonly onRelease: (bytes: number) => void = () => undefined,
  ) {
    this.file = join(dataDir, 'ballast');
    this.present = existsSync(this.file);
  }

  /** Writes the file (fsynced) when it is missing; a partial file is removed. True when it is in place. */
  restore(now = Date.now()): boolean {
    if (this.present || now < this.retryAt) return this.present;
    let fd: number | undefined;
    try {
      fd = openSync(this.file, 'w', 0o600);
      for (let left = this.bytes; left > 0; left -= CHUNK.length) writeSync(fd, CHUNK, 0, Math.min(left, CHUNK.length));
      fsyncSync(fd);
      this.present = true;
    } catch {
      rmSync(this.file, { force: true });
      this.retryAt = now + 60_000;
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    return this.present;
  }

  /** Gives the space back to the filesystem; true when there was a file to remove. */
  release(): boolean {
    if (!this.present) return false;
    rmSync(this.file, { force: true });
    this.present = false;
    this.onRelease(this.bytes);
    return true;
  }
}
