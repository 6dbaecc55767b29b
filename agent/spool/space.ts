import { statfsSync } from 'node:fs';
import type Database from 'better-sqlite3';
import type { Ballast } from './ballast.js';

/** Free-space accounting: the one place that measures the disk under the data directory. */

/**
 * Space the queue keeps free for delivery (claims, outcomes, a WAL cycle of ~1000 pages and its checkpoint):
 * new mail is refused before the disk is this close to full.
 */
export const STORAGE_HEADROOM = 8 * 1024 * 1024;

/** Bytes free for this user on the filesystem holding `dir`; undefined where statfs is not available. */
export function freeDiskBytes(dir: string): number | undefined {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

/**
 * Whether new mail still fits. Found by the fault suite: when the queue itself filled its disk, every later
 * write failed (claiming due rows, recording outcomes, checkpointing the WAL into the database file), so even
 * with the next hop back nothing could be delivered and no space ever came back. Like Postfix's queue_minfree,
 * new mail is refused (452 4.3.1) while the space left (free disk plus free pages inside the database) is under
 * twice the message (WAL + database) plus a headroom for delivery's writes.
 */
export class SpaceAccount {
  /** Last measured space for new mail, minus what was committed since (re-measured every 250 ms). */
  private room = { at: 0, bytes: 0 };
  private readonly freePages;
  private readonly pageSize;

  constructor(
    private readonly dataDir: string,
    db: Database.Database,
    private readonly headroom = STORAGE_HEADROOM,
    private readonly ballast?: Ballast,
  ) {
    this.freePages = db.prepare('PRAGMA freelist_count').pluck();
    this.pageSize = db.prepare('PRAGMA page_size').pluck();
    this.measure(Date.now());
  }

  hasRoomFor(size: number, now = Date.now()): boolean {
    if (now - this.room.at > 250) this.measure(now);
    return this.room.bytes >= 2 * size + this.headroom;
  }

  /**
   * For a drain write (claim, outcome) that failed on a full disk: removes the ballast so that it can be
   * retried. True when that freed space; new mail stays refused until the headroom is back.
   */
  releaseBallast(): boolean {
    if (!this.ballast?.release()) return false;
    this.room.at = 0;
    return true;
  }

  /** Re-measures the room; writes the ballast again first when the disk has space for it beside the headroom. */
  private measure(now: number): void {
    let bytes = this.availableBytes();
    if (this.ballast && !this.ballast.present && bytes >= this.headroom + this.ballast.bytes && this.ballast.restore()) {
      bytes -= this.ballast.bytes;
    }
    this.room = { at: now, bytes };
  }

  /** Free disk space under the data directory plus the database's own free pages (reused before it grows). */
  availableBytes(): number {
    // No statfs: rely on SQLITE_FULL at commit.
    const disk = freeDiskBytes(this.dataDir) ?? Number.MAX_SAFE_INTEGER;
    return disk + (this.freePages.get() as number) * (this.pageSize.get() as number);
  }

  /** Until the next measurement, counts what a commit of `bytes` took: once in the WAL, once in the database file. */
  took(bytes: number): void {
    this.room.bytes -= 2 * bytes;
  }
}
