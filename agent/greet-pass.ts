const DAY_MS = 86_400_000;
const MAX_CLIENTS = 100_000;

/**
 * The early-talker check's memory (like postscreen's cache): a client address that waited for the greeting once is
 * greeted at once for a day, so the pause costs a legitimate sender one delay a day, not one per connection.
 * Bounded: past MAX_CLIENTS addresses the oldest pass is forgotten first.
 */
export class GreetPassCache {
  private readonly passedUntil = new Map<string, number>();

  constructor(private readonly pauseMs: number) {}

  /** The pause for a new connection from `ip`. */
  pauseFor(ip: string, now = Date.now()): number {
    if (this.pauseMs <= 0) return 0;
    const until = this.passedUntil.get(ip);
    if (until !== undefined && until > now) return 0;
    if (until !== undefined) this.passedUntil.delete(ip);
    return this.pauseMs;
  }

  /** `ip` was greeted without talking first. */
  passed(ip: string, now = Date.now()): void {
    if (this.pauseMs <= 0) return;
    this.passedUntil.delete(ip);
    this.passedUntil.set(ip, now + DAY_MS);
    if (this.passedUntil.size > MAX_CLIENTS) this.passedUntil.delete(this.passedUntil.keys().next().value!);
  }
}
