/**
 * Read-your-writes for a cache fed by a KV watch: a writer waits until the watch has brought the cache to the
 * position of its own write (a KV revision, a version), at most a timeout; the cache calls `advanced()` after
 * every entry it took.
 */
export class CatchUp {
  private readonly waiters = new Set<() => void>();

  constructor(private readonly position: () => number) {}

  /** Resolves true once the position is at least `target`, false after `timeoutMs`. */
  reached(target: number, timeoutMs: number): Promise<boolean> {
    if (this.position() >= target) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(ok);
      };
      const check = () => {
        if (this.position() >= target) done(true);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.waiters.add(check);
    });
  }

  advanced(): void {
    for (const check of [...this.waiters]) check();
  }
}
