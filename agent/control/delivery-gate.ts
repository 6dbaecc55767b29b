import type { Logger } from '../../shared/logger.js';

export interface DeliveryState {
  open: boolean;
  reason: string;
  sinceMs: number;
}

export interface DeliveryGateOptions {
  /** Unreachable time after which the agent delivers with the table it has (static stability). */
  graceMs: number;
  /** Version of the table the agent starts with (persisted, or 0 for the config's bootstrap routes). */
  appliedVersion: number;
  onOpen: () => void;
  log: Logger;
  /** Shadow redundancy is on: also wait for the controller's shadow assignment (a takeover of this agent in it). */
  shadow?: boolean;
}

/**
 * Decides when an agent with a controller may start delivering after start-up (invariants 4 and 5).
 *
 * A returning agent's persisted table may be stale: while it was away a destination may have been held. So it
 * delivers nothing until either it has applied the controller's current table (the controller tells its version:
 * heartbeat over gRPC, the KV entry over NATS), or the controller has been unreachable for `graceMs` in all since
 * start-up (a controller down for hours must not stop delivery). The grace counts only unreachable time, so a
 * reachable controller always wins the race; once open, the gate stays open for the life of the process.
 */
export class DeliveryGate {
  private state: DeliveryState;
  private controllerVersion: number | undefined;
  private appliedVersion: number;
  private graceLeftMs: number;
  private unreachableSince: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private shadowApplied: boolean;

  constructor(private readonly opts: DeliveryGateOptions) {
    this.shadowApplied = !opts.shadow;
    this.appliedVersion = opts.appliedVersion;
    this.graceLeftMs = opts.graceMs;
    this.state = { open: false, reason: `waiting for the controller's current route table (grace ${opts.graceMs} ms while unreachable)`, sinceMs: Date.now() };
  }

  get status(): DeliveryState {
    return { ...this.state };
  }

  get isOpen(): boolean {
    return this.state.open;
  }

  /** Starts the grace clock: at start the controller counts as unreachable until the channel says otherwise. */
  start(): void {
    this.reachable(false);
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  reachable(reachable: boolean): void {
    if (this.state.open) return;
    const now = Date.now();
    if (reachable) {
      if (this.unreachableSince === undefined) return;
      this.graceLeftMs -= now - this.unreachableSince;
      this.unreachableSince = undefined;
      clearTimeout(this.timer);
      this.state = { open: false, reason: this.waitingReason(), sinceMs: this.state.sinceMs };
      return;
    }
    if (this.unreachableSince !== undefined) return;
    this.unreachableSince = now;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.graceOver(), Math.max(0, this.graceLeftMs));
    this.timer.unref();
  }

  /** The controller's current table version, as the controller just said. */
  controllerCurrent(version: number): void {
    this.controllerVersion = version;
    this.check();
  }

  /** A table was applied and settled (nothing in flight still follows an older one). */
  applied(version: number): void {
    if (version > this.appliedVersion) this.appliedVersion = version;
    this.check();
  }

  /**
   * The controller's shadow assignment was applied: a returning agent that was taken over while away has dropped
   * what its peer delivers, so it delivers nothing twice.
   */
  shadowAssigned(): void {
    this.shadowApplied = true;
    this.check();
  }

  /** A table the controller sent could not be applied: the agent stays closed (the controller is reachable). */
  refused(version: number, error: string): void {
    if (this.state.open) return;
    this.state = { open: false, reason: `waiting: the controller's table v${version} was refused (${error})`, sinceMs: this.state.sinceMs };
  }

  private waitingReason(): string {
    return this.controllerVersion === undefined
      ? "waiting for the controller's current route table"
      : `waiting to apply the controller's route table v${this.controllerVersion} (have v${this.appliedVersion})`;
  }

  private check(): void {
    if (this.state.open || this.controllerVersion === undefined) return;
    if (this.appliedVersion < this.controllerVersion) {
      this.state = { open: false, reason: this.waitingReason(), sinceMs: this.state.sinceMs };
      return;
    }
    if (!this.shadowApplied) {
      this.state = { open: false, reason: "waiting for the controller's shadow assignment (takeovers decided while away)", sinceMs: this.state.sinceMs };
      return;
    }
    this.open(`applied the controller's current route table v${this.appliedVersion}${this.opts.shadow ? ' and shadow assignment' : ''}`);
  }

  private graceOver(): void {
    if (this.state.open) return;
    this.open(`controller unreachable for the start-up grace (${this.opts.graceMs} ms): delivering with route table v${this.appliedVersion}`);
  }

  private open(reason: string): void {
    clearTimeout(this.timer);
    this.state = { open: true, reason, sinceMs: Date.now() };
    this.opts.log.info({ reason }, 'delivery starts');
    this.opts.onOpen();
  }
}
